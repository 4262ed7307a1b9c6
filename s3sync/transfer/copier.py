"""The part copier: one ranged GET pinned to the planned source ETag, one UploadPart (or PutObject) with
Content-MD5. The MD5 is computed while reading; the part is held once in memory, so a worker's memory is bounded
by its copy threads x the part size.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from s3sync.transfer.checksums import content_md5, is_md5_etag, strip_etag
from s3sync.transfer.errors import RetryableError, classify
from s3sync.transfer.message import KEPT_HEADERS, PartMessage

READ_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class CopiedPart:
    part: int
    etag: str  # the destination's ETag for the part (quotes stripped)
    md5: str  # hex MD5 of the bytes sent
    size: int


def read_range(source: Any, msg: PartMessage) -> tuple[bytearray, str]:
    """GET the message's byte range, pinned to the planned ETag; returns (bytes, md5 hex)."""
    kwargs: dict[str, Any] = {"Bucket": msg.source_bucket, "Key": msg.source_key, "IfMatch": msg.source_etag}
    if msg.source_version:
        kwargs["VersionId"] = msg.source_version
    if msg.size > 0:
        kwargs["Range"] = f"bytes={msg.start}-{msg.end}"
    try:
        resp = source.get_object(**kwargs)
        body = resp["Body"]
        buf = bytearray(msg.size)
        view = memoryview(buf)
        digest = hashlib.md5()
        got = 0
        try:
            while got < msg.size:
                chunk = body.read(min(READ_CHUNK, msg.size - got))
                if not chunk:
                    break
                n = len(chunk)
                view[got:got + n] = chunk
                digest.update(chunk)
                got += n
            extra = body.read(1) if got == msg.size else b""
        finally:
            body.close()
    except Exception as exc:  # noqa: BLE001 - classify decides
        raise classify(exc, "source") from exc
    if got != msg.size or extra:
        raise RetryableError(f"source returned {got}{'+' if extra else ''} bytes for a {msg.size}-byte range")
    return buf, digest.hexdigest()


def _check_etag(etag: str, md5: str, what: str) -> str:
    etag = strip_etag(etag)
    if is_md5_etag(etag) and etag != md5:  # SSE-KMS destinations return non-MD5 ETags: Content-MD5 covers them
        raise RetryableError(f"destination ETag {etag} for {what} differs from the MD5 sent {md5}")
    return etag


def copy_part(source: Any, dest: Any, msg: PartMessage) -> CopiedPart:
    """Copy one part of a multipart upload."""
    if msg.whole:
        raise ValueError("copy_part needs a multipart message; use copy_whole")
    data, md5 = read_range(source, msg)
    try:
        resp = dest.upload_part(Bucket=msg.dest_bucket, Key=msg.dest_key, UploadId=msg.upload_id,
                                PartNumber=msg.part_number, Body=data,
                                ContentMD5=content_md5(md5), ContentLength=msg.size)
    except Exception as exc:  # noqa: BLE001
        raise classify(exc, "destination") from exc
    etag = _check_etag(resp["ETag"], md5, f"part {msg.part_number}")
    return CopiedPart(part=msg.part_number, etag=etag, md5=md5, size=msg.size)


def copy_whole(source: Any, dest: Any, msg: PartMessage) -> CopiedPart:
    """Copy an object under the multipart threshold with one GET and one PUT, keeping its headers and metadata."""
    if not msg.whole:
        raise ValueError("copy_whole needs a whole-object message")
    data, md5 = read_range(source, msg)
    extra = {k: msg.headers[k] for k in KEPT_HEADERS if msg.headers.get(k)}
    if msg.headers.get("Metadata"):
        extra["Metadata"] = msg.headers["Metadata"]
    try:
        resp = dest.put_object(Bucket=msg.dest_bucket, Key=msg.dest_key, Body=data, ContentMD5=content_md5(md5),
                               ContentLength=msg.size, **extra)
    except Exception as exc:  # noqa: BLE001
        raise classify(exc, "destination") from exc
    etag = _check_etag(resp["ETag"], md5, "object")
    return CopiedPart(part=1, etag=etag, md5=md5, size=msg.size)


def copy_message(source: Any, dest: Any, msg: PartMessage) -> CopiedPart:
    return copy_whole(source, dest, msg) if msg.whole else copy_part(source, dest, msg)

