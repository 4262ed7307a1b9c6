"""The Lambda zip: the handlers, the runtime part of s3sync and the pinned SDK at its root, deterministic (entries
sorted, fixed timestamp 1980-01-01, mode 0644, fixed compression): the same sources give the same bytes."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

from s3sync import sdk
from s3sync.errors import UserError
from s3sync.package.sources import source_files, source_root

#: What the Lambda zip carries, relative to the source root: the handlers and the runtime code they import.
LAMBDA_SOURCES: tuple[str, ...] = (
    "functions",
    "s3sync/__init__.py",
    "s3sync/contract.py",
    "s3sync/errors.py",
    "s3sync/transfer",
)
ZIP_PREFIX = "s3sync-functions-"
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can carry
ZIP_FILE_MODE = 0o644
ZIP_COMPRESSLEVEL = 9
# Lambda: 250 MB unzipped for a package read from S3 (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-
# limits.html).
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024


def lambda_files(root: Path | None = None) -> list[tuple[str, Path]]:
    """The files of the Lambda zip, sorted by their name in the zip."""
    root = root or source_root()
    files = {name: path for rel in LAMBDA_SOURCES for name, path in source_files(root, rel)}
    return sorted(files.items())


def sdk_entries(wheels: list[sdk.Wheel]) -> list[tuple[str, bytes]]:
    """The installed files of the SDK's wheels (site-packages layout), for the zip's root."""
    entries: dict[str, bytes] = {}
    for wheel in wheels:
        for name, data in sdk.install_entries(wheel):
            if name in entries:
                raise UserError(f"{wheel.filename}: {name} is in two wheels")
            entries[name] = data
    return sorted(entries.items())


def build_zip(files: list[tuple[str, Path | bytes]]) -> bytes:
    """A deterministic zip of (name, file or bytes): sorted, fixed time and mode, deflated at a fixed level."""
    names = [name for name, _ in files]
    if len(set(names)) != len(names):
        raise UserError("two zip entries with the same name: " + ", ".join(sorted({n for n in names
                                                                                     if names.count(n) > 1})))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, content in sorted(files, key=lambda f: f[0]):
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
            info.create_system = 3  # unix, so that external_attr carries the mode on every platform
            info.external_attr = (stat.S_IFREG | ZIP_FILE_MODE) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            data = content if isinstance(content, bytes) else content.read_bytes()
            zf.writestr(info, data, compresslevel=ZIP_COMPRESSLEVEL)
    return buf.getvalue()
