"""The worker image with the local Docker engine: `s3sync image build` and `s3sync image base`.

    result = build_image(do_package("out").image_dir, base_image=LOCAL_BASE)   # -> ImageResult(id, size, tag)

`build_image` builds the context `s3sync package` writes (Dockerfile, code, pinned wheels: no package index needed).
Its base is the Dockerfile's `ARG BASE_IMAGE` (the official Python image on ECR Public) unless another is given.

`build_local_base` makes a base where no registry is reachable (this project's CI): Debian bookworm's minimal root
file system from the Debian mirror (`debootstrap --variant=minbase`, with python3, `python` and CA certificates),
trimmed of apt's caches and the docs, imported with `docker import`. It differs from the official image in the
Python it carries (Debian's 3.11 instead of 3.12 built from source; docs/local.md says why that is close enough).
Needs root, debootstrap and a running Docker engine; it is built once and reused by tag.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from s3sync.errors import UserError
from s3sync.package.image_context import DOCKERFILE

LOCAL_BASE = "s3sync-base:bookworm"
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python-is-python3", "ca-certificates")
# What the official python image sets too (its Python is configured for UTF-8 the same way).
BASE_CHANGES = ("ENV LANG=C.UTF-8", 'CMD ["python3"]')
# Left out of the base: apt's downloaded packages and lists, documentation and translations (~140 of 267 MB).
BASE_TRIM = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info",
             "usr/share/locale")
IMAGE_REPOSITORY = "s3sync-worker"
CONTEXT_LABEL = "s3sync.context-sha256"  # the package's image sha256, on the built image


@dataclass(frozen=True)
class ImageResult:
    image_id: str
    tag: str
    size: int  # bytes, as `docker image inspect` reports (the uncompressed layers, base included)
    seconds: float  # the build's wall time (0 when an existing image was reused)
    base_image: str = ""

    def describe(self) -> str:
        took = f", built in {self.seconds:.1f} s" if self.seconds else " (reused)"
        return f"image {self.image_id[:19]} {self.tag} {self.size / 1e6:.1f} MB{took}"


def docker(*args: str, timeout: float = 600, check: bool = True,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI; a failure is a one-line UserError carrying the last lines of its output."""
    try:
        done = subprocess.run(["docker", *args], capture_output=True, timeout=timeout, env=env)
    except FileNotFoundError:
        raise UserError("docker is not installed (Debian: apt-get install docker.io)") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"docker {args[0]} took more than {timeout:.0f} s") from None
    out = subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(errors="replace"),
                                      done.stderr.decode(errors="replace"))
    if check and done.returncode != 0:
        tail = "\n".join((out.stderr.strip() or out.stdout.strip()).splitlines()[-8:])
        raise UserError(f"docker {args[0]} failed:\n{tail}")
    return out


def engine_error() -> str | None:
    """Why no Docker engine can be used here, or None when `docker info` answers."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    try:
        done = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                              timeout=30)
    except subprocess.TimeoutExpired:
        return "docker info did not answer within 30 s"
    if done.returncode != 0 or not done.stdout.strip():
        return "no Docker engine answers: " + (done.stderr.strip().splitlines() or ["docker info failed"])[-1]
    return None


def inspect_image(ref: str) -> dict | None:
    done = docker("image", "inspect", ref, check=False)
    if done.returncode != 0:
        return None
    return json.loads(done.stdout)[0]


def build_image(context: Path | str, *, tag: str | None = None, base_image: str | None = None,
                timeout: float = 900) -> ImageResult:
    """`docker build` of a packaged context; the tag defaults to s3sync-worker:<context sha256[:12]>."""
    context = Path(context)
    manifest_path = context.parent / "package.json"
    dockerfile = context / DOCKERFILE
    if not dockerfile.is_file():
        raise UserError(f"{context} is not an image build context (no {DOCKERFILE}): run `s3sync package` first")
    context_sha = ""
    if manifest_path.is_file():
        context_sha = json.loads(manifest_path.read_text(encoding="utf-8"))["image"]["sha256"]
    tag = tag or f"{IMAGE_REPOSITORY}:{(context_sha or 'local')[:12]}"
    args = ["build", "--tag", tag, "--file", str(dockerfile)]
    if base_image:
        args += ["--build-arg", f"BASE_IMAGE={base_image}"]
    if context_sha:
        args += ["--label", f"{CONTEXT_LABEL}={context_sha}"]
    started = time.monotonic()
    docker(*args, str(context), timeout=timeout)
    seconds = time.monotonic() - started
    info = inspect_image(tag)
    if info is None:  # pragma: no cover - docker build succeeded
        raise UserError(f"docker build succeeded but {tag} is not there")
    return ImageResult(info["Id"], tag, int(info["Size"]), seconds, base_image or "")


# --- the local base ---------------------------------------------------------------------------------------------------
def build_local_base(tag: str = LOCAL_BASE, *, force: bool = False, mirror: str | None = None,
                     workdir: Path | None = None) -> ImageResult:
    """Debian's minimal bookworm with python3 as a Docker image (debootstrap + docker import); reused by tag."""
    existing = None if force else inspect_image(tag)
    if existing is not None:
        return ImageResult(existing["Id"], tag, int(existing["Size"]), 0.0)
    if os.geteuid() != 0:
        raise UserError("building the local base needs root (debootstrap creates device nodes and owners)")
    if shutil.which("debootstrap") is None:
        raise UserError("debootstrap is not installed (Debian: apt-get install debootstrap)")
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="s3sync-base-", dir=workdir))
    try:
        cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", BASE_SUITE, str(root)]
        if mirror:
            cmd.append(mirror)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-8:])
            raise UserError(f"debootstrap failed:\n{tail}")
        for rel in BASE_TRIM:
            target = root / rel
            if target.is_dir():
                shutil.rmtree(target)
                target.mkdir()  # apt and dpkg expect the directories
        changes = [arg for change in BASE_CHANGES for arg in ("--change", change)]
        with subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) as tar:
            assert tar.stdout is not None and tar.stderr is not None  # both are pipes (for mypy)
            imported = subprocess.run(["docker", "import", *changes, "-", tag], stdin=tar.stdout,
                                      capture_output=True, text=True, timeout=600)
            tar.stdout.close()
            tar_err = tar.stderr.read().decode(errors="replace")
        if tar.returncode != 0 or imported.returncode != 0:
            raise UserError(f"importing the base failed: {(tar_err + imported.stderr).strip()[-500:]}")
    finally:
        _remove_root(root)
    info = inspect_image(tag)
    if info is None:  # pragma: no cover - docker import succeeded
        raise UserError(f"docker import succeeded but {tag} is not there")
    return ImageResult(info["Id"], tag, int(info["Size"]), time.monotonic() - started)


def _remove_root(root: Path) -> None:
    """Remove a debootstrap root, unmounting first whatever a failed run left mounted inside it (/proc, /sys)."""
    prefix = str(root.resolve()) + "/"
    try:
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        mounts = []
    for mount in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True, timeout=60)
    shutil.rmtree(root, ignore_errors=True)


__all__ = [
    "CONTEXT_LABEL",
    "LOCAL_BASE",
    "ImageResult",
    "build_image",
    "build_local_base",
    "docker",
    "engine_error",
    "inspect_image",
]
