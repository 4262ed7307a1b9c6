"""The source tree `s3sync package` reads: where it is and its files, without caches or hidden files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from s3sync.errors import UserError


def source_root() -> Path:
    """The directory holding the `s3sync`, `functions` and `container` packages (the repository in a checkout)."""
    import s3sync

    return Path(s3sync.__file__).resolve().parent.parent


def _skip(path: Path) -> bool:
    return (
        "__pycache__" in path.parts
        or path.suffix in (".pyc", ".pyo")
        or any(p.startswith(".") for p in path.parts)
        or path.name.endswith("~")
    )


def source_files(root: Path, relative: str) -> Iterator[tuple[str, Path]]:
    """(posix path relative to root, file) for `relative` (a file or a directory, walked), skipping caches."""
    path = root / relative
    if path.is_file():
        yield Path(relative).as_posix(), path
    elif path.is_dir():
        for p in sorted(path.rglob("*")):
            rel = p.relative_to(root)
            if p.is_file() and not _skip(rel):
                yield rel.as_posix(), p
    else:
        raise UserError(f"{path} is missing: package from a source checkout of s3sync (pip install -e .)")
