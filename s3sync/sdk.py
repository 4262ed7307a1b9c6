"""The pinned AWS SDK that ships with the code: boto3, botocore and what they need, as hash-pinned wheels.

Why: the Lambda runtime's own boto3 depends on the runtime version and the region (China regions may lag), and the
engine passes botocore options that exist only from botocore 1.36; a worker image built with `pip install boto3>=x`
gets whatever the index has that day. So both artifacts carry one pinned set, and the tests run on it:

- `requirements/runtime.txt` (the lock): every package with its version and the SHA-256 of its one wheel. The
  wheels are pure Python (`py3-none-any`), so the same files serve Lambda's python3.12, the image's Python and this
  environment. `s3sync package` puts their contents in the Lambda zip (Lambda puts the function's directory ahead of
  the runtime's boto3 on sys.path) and the wheels themselves in the image build context.
- `requirements/image-build.txt`: the pip that installs those wheels inside the image build (a build stage, run from
  its own wheel; pip is not in the final image).
- `pyproject.toml` pins the same versions, so this environment runs exactly what ships (tests/test_sdk.py keeps the
  three equal).

Wheels are fetched once with `pip download --require-hashes` (the machine's own package index set-up) into a cache
(`S3SYNC_WHEEL_CACHE`, default `~/.cache/s3sync/wheels`) and checked against the lock every time they are used.
To move to new versions: `python -m s3sync.sdk boto3==X.Y.Z` rewrites the lock with the resolved set and its hashes;
then put the same versions in pyproject.toml.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from s3sync.errors import UserError

RUNTIME_LOCK = "requirements/runtime.txt"
IMAGE_BUILD_LOCK = "requirements/image-build.txt"
CACHE_ENV = "S3SYNC_WHEEL_CACHE"

_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)"
                  r"\s+--hash=sha256:(?P<sha>[0-9a-f]{64})$")
# A pure-Python wheel: {name}-{version}(-{build})?-{python tag}-none-any.whl, python tag py3 or py2.py3.
_PURE = re.compile(r"^[^-]+-[^-]+(-\d[^-]*)?-(py3|py2\.py3)-none-any\.whl$")


def normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of `-_.` as one `-` (the form pip and importlib.metadata agree on)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Pin:
    name: str  # normalized
    version: str
    sha256: str  # of the wheel

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version} --hash=sha256:{self.sha256}"


@dataclass(frozen=True)
class Wheel:
    pin: Pin
    path: Path  # in the cache, verified

    @property
    def filename(self) -> str:
        return self.path.name


def read_lock(path: Path) -> tuple[Pin, ...]:
    """The pins of a lock file (`name==version --hash=sha256:...`, one wheel per package; `#` comments)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror or exc}: package from a source checkout of s3sync") from None
    pins: list[Pin] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = _PIN.match(line)
        if not m:
            raise UserError(f"{path}:{number}: expected `name==version --hash=sha256:<64 hex>`, got {raw.strip()!r}")
        pins.append(Pin(normalize(m["name"]), m["version"], m["sha"]))
    names = [p.name for p in pins]
    if len(set(names)) != len(names):
        raise UserError(f"{path}: a package is pinned twice")
    return tuple(pins)


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "s3sync" / "wheels")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cached(pin: Pin, cache: Path) -> Path | None:
    """The pin's wheel in the cache (stored as <sha256>/<wheel file name>), if present and intact."""
    folder = cache / pin.sha256
    found = sorted(folder.glob("*.whl")) if folder.is_dir() else []
    for path in found:
        if sha256_file(path) == pin.sha256:
            return path
        path.unlink()  # a damaged file: fetched again
    return None


def fetch(pins: Iterable[Pin], cache: Path | None = None) -> list[Wheel]:
    """The wheels of `pins`, from the cache or downloaded into it (`pip download --require-hashes`); each checked
    against its hash and refused unless pure Python."""
    pins = list(pins)
    cache = cache or cache_dir()
    missing = [p for p in pins if _cached(p, cache) is None]
    if missing:
        _download(missing, cache)
    wheels: list[Wheel] = []
    for pin in pins:
        path = _cached(pin, cache)
        if path is None:  # pragma: no cover - _download raises first
            raise UserError(f"{pin.name}=={pin.version}: no wheel with the locked hash")
        if not _PURE.match(path.name):
            raise UserError(f"{path.name}: only pure-Python wheels (py3-none-any) are shipped; the Lambda zip and the "
                            "image would need one per platform and Python version")
        wheels.append(Wheel(pin, path))
    return wheels


def _pip(args: list[str], what: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"{what}: pip failed to run: {exc}") from None
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise UserError(f"{what}: pip download failed:\n{tail}")


def _download(pins: list[Pin], cache: Path) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="s3sync-wheels-", dir=cache) as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text("".join(p.requirement + "\n" for p in pins), encoding="utf-8")
        out = Path(tmp) / "wheels"
        what = "downloading " + ", ".join(f"{p.name}=={p.version}" for p in pins)
        _pip(["download", "--no-deps", "--only-binary=:all:", "--require-hashes", "-q", "-d", str(out),
              "-r", str(req)], what)
        by_sha = {p.sha256: p for p in pins}
        for path in out.glob("*.whl"):
            sha = sha256_file(path)
            if sha in by_sha:
                (cache / sha).mkdir(exist_ok=True)
                shutil.move(str(path), cache / sha / path.name)


def install_entries(wheel: Wheel) -> Iterator[tuple[str, bytes]]:
    """(path, bytes) of what installing a wheel puts in site-packages: its files, `.dist-info` included, and
    `<name>.data/purelib|platlib` moved up; scripts and headers are left out (nothing here runs them)."""
    with zipfile.ZipFile(wheel.path) as zf:
        for info in zf.infolist():
            name = info.filename
            if info.is_dir():
                continue
            top, _, rest = name.partition("/")
            if top.endswith(".data"):
                kind, _, inner = rest.partition("/")
                if kind in ("purelib", "platlib"):
                    name = inner
                elif kind in ("scripts", "headers"):
                    continue
                else:
                    raise UserError(f"{wheel.filename}: {name}: data files are not shipped")
            if name.startswith("/") or ".." in name.split("/"):
                raise UserError(f"{wheel.filename}: unsafe path {name!r}")
            yield name, zf.read(info)


# --- updating the lock ------------------------------------------------------------------------------------------------
def relock(requirements: list[str], lock: Path, header: str) -> tuple[Pin, ...]:
    """Resolve `requirements` (e.g. `boto3==1.44.8`) with their dependencies, and write the lock with the hashes of
    the wheels pip chose."""
    with tempfile.TemporaryDirectory(prefix="s3sync-relock-") as tmp:
        _pip(["download", "--only-binary=:all:", "-q", "-d", tmp, *requirements], "resolving " + " ".join(requirements))
        pins = []
        for path in sorted(Path(tmp).glob("*.whl")):
            name, version = path.name.split("-")[:2]
            pins.append(Pin(normalize(name), version, sha256_file(path)))
    pins.sort(key=lambda p: p.name)
    lock.write_text(header + "".join(p.requirement + "\n" for p in pins), encoding="utf-8")
    return tuple(pins)


_RUNTIME_HEADER = """\
# The AWS SDK that ships with s3sync: its contents go into the Lambda zip, its wheels into the worker image.
# One pure-Python wheel per package, pinned by hash. pyproject.toml pins the same versions (tests/test_sdk.py).
# Update: .venv/bin/python -m s3sync.sdk boto3==X.Y.Z   (rewrites this file), then pyproject.toml.
"""


def main(argv: list[str]) -> int:
    from s3sync.package.sources import source_root

    if not argv:
        print("usage: python -m s3sync.sdk boto3==X.Y.Z [other==V ...]", file=sys.stderr)
        return 2
    for pin in relock(argv, source_root() / RUNTIME_LOCK, _RUNTIME_HEADER):
        print(f"{pin.name}=={pin.version}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


__all__ = [
    "IMAGE_BUILD_LOCK",
    "RUNTIME_LOCK",
    "Pin",
    "Wheel",
    "fetch",
    "install_entries",
    "normalize",
    "read_lock",
]
