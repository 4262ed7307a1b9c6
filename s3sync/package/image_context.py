"""The worker image's build context: container/Dockerfile, exactly what its COPY lines copy, and the pinned SDK's
wheels with the pip that installs them, so that the build needs no package index. Fixed times and modes: the same
sources give the same context and the same digest."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
from pathlib import Path

from s3sync import sdk
from s3sync.errors import UserError
from s3sync.package.sources import source_files, source_root

DOCKERFILE = "container/Dockerfile"
WHEELS_DIR = "wheels"  # in the image build context: written by `package`, not copied from the sources
IMAGE_DIR = "worker-image"
# The image context's .dockerignore starts with this line: it marks a directory this module wrote (and may replace).
MARKER = "# Written by `s3sync package`"
FILE_MODE = 0o644
FIXED_MTIME = 315532800  # 1980-01-01T00:00:00Z, for the files of the image build context


def dockerfile_sources(text: str) -> list[str]:
    """Source paths of the COPY/ADD instructions of a Dockerfile (not `--from=` stages), in order."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    if current:
        logical.append(current)
    sources: list[str] = []
    for line in logical:
        instruction, _, rest = line.partition(" ")
        if instruction.upper() not in ("COPY", "ADD"):
            continue
        rest = rest.strip()
        if rest.startswith("["):
            args = json.loads(rest)
        else:
            args = shlex.split(rest)
        flags = [a for a in args if a.startswith("--")]
        if any(f.startswith("--from") for f in flags):
            continue
        paths = [a for a in args if not a.startswith("--")]
        if len(paths) < 2:
            raise UserError(f"cannot read the Dockerfile instruction {line!r}")
        for src in paths[:-1]:
            if any(ch in src for ch in "*?[") or src.startswith(("http://", "https://", "/")) or ".." in src:
                raise UserError(f"Dockerfile source {src!r}: only plain paths inside the context are packaged")
            sources.append(src.rstrip("/") or ".")
    return sources


def image_files(root: Path | None = None, wheels: list[sdk.Wheel] | None = None) -> list[tuple[str, Path]]:
    """container/Dockerfile, every file its COPY lines copy and the wheels, sorted by path in the build context."""
    root = root or source_root()
    dockerfile = root / DOCKERFILE
    if not dockerfile.is_file():
        raise UserError(f"{dockerfile} is missing: package from a source checkout of s3sync (pip install -e .)")
    files = {DOCKERFILE: dockerfile}
    for src in dockerfile_sources(dockerfile.read_text(encoding="utf-8")):
        if src != WHEELS_DIR:
            files.update(source_files(root, src))
    for wheel in wheels or ():
        files[f"{WHEELS_DIR}/{wheel.filename}"] = wheel.path
    return sorted(files.items())


def dockerfile_env(text: str) -> dict[str, str]:
    """The variables of a Dockerfile's `ENV k=v ...` lines (the form used here; not `ENV k v`)."""
    env: dict[str, str] = {}
    joined = re.sub(r"\\\n", " ", text)
    for line in joined.splitlines():
        instruction, _, rest = line.strip().partition(" ")
        if instruction.upper() == "ENV":
            for word in shlex.split(rest):
                key, eq, value = word.partition("=")
                if not eq:
                    raise UserError(f"Dockerfile: write ENV as key=value: {line.strip()!r}")
                env[key] = value
    return env


def dockerfile_base_image(text: str) -> str:
    """The default of the Dockerfile's `ARG BASE_IMAGE=...`."""
    m = re.search(r"^ARG\s+BASE_IMAGE=(\S+)", text, re.MULTILINE)
    if not m:
        raise UserError("container/Dockerfile has no `ARG BASE_IMAGE=<default>`")
    return m.group(1)


def digest(files: list[tuple[str, Path]]) -> str:
    """SHA-256 over the context's sorted paths, sizes and contents: the image's inputs in one value."""
    h = hashlib.sha256()
    for name, path in sorted(files):
        data = path.read_bytes()
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def is_ours(image: Path) -> bool:
    """Whether `image` is a build context this module wrote (and may replace): its .dockerignore says so."""
    try:
        return (image / ".dockerignore").read_text(encoding="utf-8").startswith(MARKER)
    except OSError:
        return False


def write_image_context(image: Path, files: list[tuple[str, Path]]) -> None:
    """`image` replaced by exactly `files` (context path, source file), with fixed modes and times."""
    if image.exists():
        shutil.rmtree(image)
    image.mkdir(parents=True)
    for name, path in files:
        target = image / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        target.chmod(FILE_MODE)
    (image / ".dockerignore").write_text(
        f"{MARKER} (replaced on every run): the context holds only what container/Dockerfile copies.\n"
        ".dockerignore\n",
        encoding="utf-8",
    )
    # Fixed times and modes: the same sources give the same context.
    for p in sorted(image.rglob("*"), reverse=True):
        os.utime(p, (FIXED_MTIME, FIXED_MTIME), follow_symlinks=False)
