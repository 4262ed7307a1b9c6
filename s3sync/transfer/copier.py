"""The part copier: one ranged GET pinned to the planned source ETag, one UploadPart (or PutObject) with
Content-MD5. The MD5 is computed while reading; the part is held once in memory, so a worker's memory is bounded
by its copy threads x the part size.

Performance (bench/, docs/benchmarks.md): the bytes go from the socket straight into the part buffer
(`readinto`, no intermediate chunk objects), the MD5 is updated from that buffer as it fills, and the same buffer
is handed to UploadPart as a file (`PartBody`), so that a part is sent block by block: see there why.
`copy_part`/`copy_whole` reuse one buffer per copy thread across parts of the same size (every part of a plan but
the last), which saves allocating and page-faulting a fresh part-sized buffer per part; the bound stays copy threads
x part size.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, cast

from s3sync.transfer.checksums import content_md5, is_md5_etag, strip_etag
from s3sync.transfer.encryption import SSE_PARAMS, kms_encrypted
from s3sync.transfer.errors import RetryableError, classify
from s3sync.transfer.message import KEPT_HEADERS, PartMessage

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

READ_CHUNK = 1024 * 1024
REUSE_LIMIT = 256 * 1024 * 1024  # a copy thread keeps its buffer between parts up to this size

_local = threading.local()


@dataclass(frozen=True)
class CopiedPart:
    part: int
    etag: str  # the destination's ETag for the part (quotes stripped)
    md5: str  # hex MD5 of the bytes sent
    size: int
    kms: bool = False  # written under SSE-KMS: the ETag is no MD5, and another upload of these bytes gets another


class PartBody:
    """A part buffer as a read-only, seekable file: the body of UploadPart and PutObject.

    Not the buffer itself: urllib3 sends a bytes-like body with one `socket.sendall()`, and while a request is being
    sent the socket's timeout is botocore's *connect* timeout, which since Python 3.5 bounds sendall's whole
    duration. A part that takes longer than that to cross a thin link (16 MiB at 1 MB/s: 17 s, against 10 s) was cut
    off on every attempt, and again after every retry (found by bench B4 on an emulated cross-border link). A file
    is sent in blocks (urllib3's 16 KiB), each sendall bounded by the connect timeout: a slow link is only slow, and
    a send that stalls for the connect timeout is abandoned and retried by botocore. botocore sends a file with
    `Expect: 100-continue` (as every AWS CLI upload is): one more round trip per request, and a request the
    destination refuses does not carry its part across the border first.
    """

    def __init__(self, data: bytearray | memoryview) -> None:
        self._view = memoryview(data).cast("B")
        self._pos = 0

    def __len__(self) -> int:
        return len(self._view)

    def read(self, size: int | None = -1) -> bytes:
        """Bytes, as file objects give (callers such as moto's in-process S3 want bytes; a 16 KiB block copied costs
        nothing measurable next to sending it)."""
        end = len(self._view) if size is None or size < 0 else min(len(self._view), self._pos + size)
        chunk = self._view[self._pos:end].tobytes()
        self._pos = max(self._pos, end)
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True


def read_range(source: S3Client, msg: PartMessage) -> tuple[bytearray, str]:
    """GET the message's byte range, pinned to the planned ETag; returns (bytes, md5 hex)."""
    buf = bytearray(msg.size)
    return buf, _read_into(source, msg, buf)


def _part_buffer(size: int) -> bytearray:
    """This thread's part buffer, exactly `size` bytes (reused when the size repeats, as plan parts do)."""
    buf = getattr(_local, "buf", None)
    if buf is not None and len(buf) == size:
        return buf
    buf = bytearray(size)
    _local.buf = buf if size <= REUSE_LIMIT else None
    return buf


def _read_into(source: S3Client, msg: PartMessage, buf: bytearray) -> str:
    """GET the message's byte range (pinned to the planned ETag) into `buf` (exactly msg.size bytes); returns the
    MD5 hex of what was read. A short or long answer is a RetryableError; S3 errors are classified."""
    kwargs: dict[str, Any] = {"Bucket": msg.source_bucket, "Key": msg.source_key, "IfMatch": msg.source_etag}
    if msg.source_version:
        kwargs["VersionId"] = msg.source_version
    if msg.size > 0:
        kwargs["Range"] = f"bytes={msg.start}-{msg.end}"
    digest = hashlib.md5()
    try:
        resp = source.get_object(**kwargs)
        body = resp["Body"]
        try:
            got, extra = _fill(body, memoryview(buf), msg.size, digest)
        finally:
            body.close()
    except Exception as exc:  # noqa: BLE001 - classify decides
        raise classify(exc, "source") from exc
    if got != msg.size or extra:
        raise RetryableError(f"source returned {got}{'+' if extra else ''} bytes for a {msg.size}-byte range")
    return digest.hexdigest()


def _raw_response(body: Any) -> tuple[Any, Any] | None:
    """(urllib3 response, http.client response) under botocore's StreamingBody, when they are the usual types;
    None otherwise (then the portable path reads through StreamingBody)."""
    raw = getattr(body, "_raw_stream", None)
    fp = getattr(raw, "_fp", None)
    if raw is None or fp is None or not hasattr(raw, "release_conn"):
        return None
    if not (callable(getattr(fp, "readinto", None)) and callable(getattr(fp, "isclosed", None))):
        return None
    return raw, fp


def _fill(body: Any, view: memoryview, size: int, digest: Any) -> tuple[int, bool]:
    """Read up to `size` bytes of the response body into `view`, updating `digest`; returns (bytes read, whether
    the body had more than `size` bytes)."""
    got = 0
    fast = _raw_response(body)
    if fast is not None:
        raw, fp = fast
        # http.client reads from the socket straight into our buffer and frames the body (Content-Length or
        # chunked) itself: botocore decodes nothing for streaming bodies, so these are the same raw bytes.
        while got < size:
            n = fp.readinto(view[got:min(size, got + READ_CHUNK)])
            if not n:
                break
            digest.update(view[got:got + n])
            got += n
        extra = got == size and bool(fp.readinto(bytearray(1)))
        if got == size and not extra and fp.isclosed():
            raw.release_conn()  # the whole answer was read: the connection goes back to the pool
        return got, extra
    while got < size:
        chunk = body.read(min(READ_CHUNK, size - got))
        if not chunk:
            break
        n = len(chunk)
        view[got:got + n] = chunk
        digest.update(chunk)
        got += n
    extra = bool(body.read(1)) if got == size else False
    return got, extra


def _file(data: bytearray) -> IO[bytes]:
    """The part buffer as the file object botocore sends (PartBody: read, seek, tell; not an io class, typed as the
    IO botocore's stubs name)."""
    return cast("IO[bytes]", PartBody(data))


def _check_etag(resp: Mapping[str, Any], md5: str, what: str,
                requested: Mapping[str, Any] | None = None) -> str:
    """The destination's ETag, which must be the MD5 sent, unless S3 wrote the bytes under a KMS key: such ETags are
    no MD5 (s3sync.transfer.encryption); then Content-MD5, which S3 checked before answering, is the check."""
    etag = strip_etag(resp["ETag"])
    if is_md5_etag(etag) and etag != md5 and not kms_encrypted(resp, requested):
        raise RetryableError(f"destination ETag {etag} for {what} differs from the MD5 sent {md5}")
    return etag


def copy_part(source: S3Client, dest: S3Client, msg: PartMessage) -> CopiedPart:
    """Copy one part of a multipart upload."""
    if msg.upload_id is None:  # msg.whole
        raise ValueError("copy_part needs a multipart message; use copy_whole")
    data = _part_buffer(msg.size)
    md5 = _read_into(source, msg, data)
    try:
        resp = dest.upload_part(Bucket=msg.dest_bucket, Key=msg.dest_key, UploadId=msg.upload_id,
                                PartNumber=msg.part_number, Body=_file(data),
                                ContentMD5=content_md5(md5), ContentLength=msg.size)
    except Exception as exc:  # noqa: BLE001
        raise classify(exc, "destination") from exc
    etag = _check_etag(resp, md5, f"part {msg.part_number}")
    return CopiedPart(part=msg.part_number, etag=etag, md5=md5, size=msg.size, kms=kms_encrypted(resp))


def copy_whole(source: S3Client, dest: S3Client, msg: PartMessage) -> CopiedPart:
    """Copy an object under the multipart threshold with one GET and one PUT, keeping its headers and metadata."""
    if not msg.whole:
        raise ValueError("copy_whole needs a whole-object message")
    data = _part_buffer(msg.size)
    md5 = _read_into(source, msg, data)
    extra = {k: msg.headers[k] for k in KEPT_HEADERS if msg.headers.get(k)}
    if msg.headers.get("Metadata"):
        extra["Metadata"] = msg.headers["Metadata"]
    extra.update({k: msg.headers[k] for k in SSE_PARAMS if msg.headers.get(k)})  # the splitter's choice
    try:
        resp = dest.put_object(Bucket=msg.dest_bucket, Key=msg.dest_key, Body=_file(data),
                               ContentMD5=content_md5(md5), ContentLength=msg.size, **extra)
    except Exception as exc:  # noqa: BLE001
        raise classify(exc, "destination") from exc
    etag = _check_etag(resp, md5, "object", extra)
    return CopiedPart(part=1, etag=etag, md5=md5, size=msg.size, kms=kms_encrypted(resp, extra))


def copy_message(source: S3Client, dest: S3Client, msg: PartMessage) -> CopiedPart:
    return copy_whole(source, dest, msg) if msg.whole else copy_part(source, dest, msg)

