"""MD5 arithmetic S3 uses for ETags."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable

_MD5_HEX = re.compile(r"^[0-9a-f]{32}$")


def strip_etag(etag: str) -> str:
    return etag.strip().strip('"').lower()


def is_md5_etag(etag: str) -> bool:
    """True when an ETag is a plain MD5 (not multipart, not SSE-KMS/SSE-C)."""
    return bool(_MD5_HEX.match(strip_etag(etag)))


def content_md5(md5_hex: str) -> str:
    """The Content-MD5 header value (base64 of the raw digest) for a hex MD5."""
    return base64.b64encode(bytes.fromhex(md5_hex)).decode("ascii")


def multipart_etag(part_md5s: Iterable[str]) -> str:
    """hex(md5(concat(md5(part_i)))) + "-" + N, the ETag S3 gives a completed multipart upload."""
    digests = [bytes.fromhex(h) for h in part_md5s]
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"
