"""The part message: one SQS message per part (or per small object), versioned JSON validated on read.

A worker acts only on a message that `decode` accepts; anything else raises MalformedMessage with the reason, is
logged, and reaches the dead-letter queue after maxReceiveCount receives.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from s3sync.transfer.errors import MalformedMessage

VERSION = 2  # 2: every message names its job's attempt
MAX_BODY_BYTES = 256 * 1024  # SQS message size limit

# Headers the destination object keeps (CreateMultipartUpload / PutObject parameter names), plus user Metadata.
KEPT_HEADERS = ("ContentType", "ContentEncoding", "CacheControl", "ContentDisposition", "ContentLanguage")


@dataclass(frozen=True)
class PartMessage:
    job_id: str
    source_bucket: str
    source_key: str
    source_etag: str  # as S3 returns it, quotes included; every read is pinned to it (If-Match)
    dest_bucket: str
    dest_key: str
    part_number: int  # 1-based
    total_parts: int
    start: int  # first byte, inclusive
    end: int  # last byte, inclusive; end = start - 1 for an empty object
    upload_id: str | None = None  # None: the object is copied whole (GET + PUT)
    source_version: str | None = None
    attempt: str = ""  # the job's attempt this part belongs to (Ledger: a later attempt never counts it)
    # whole copies only: KEPT_HEADERS + Metadata, and the destination encryption (encryption.SSE_PARAMS) that the
    # splitter chose; a multipart upload got both at CreateMultipartUpload
    headers: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.end - self.start + 1

    @property
    def whole(self) -> bool:
        return self.upload_id is None

    def encode(self) -> str:
        body = {
            "v": VERSION,
            "job": self.job_id,
            "src": {"bucket": self.source_bucket, "key": self.source_key, "etag": self.source_etag,
                    "version": self.source_version},
            "dst": {"bucket": self.dest_bucket, "key": self.dest_key, "upload": self.upload_id,
                    "attempt": self.attempt},
            "part": {"n": self.part_number, "of": self.total_parts, "start": self.start, "end": self.end},
        }
        if self.headers:
            body["headers"] = self.headers
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
        if len(text.encode("utf-8")) > MAX_BODY_BYTES:
            raise ValueError("part message exceeds SQS's 256 KiB limit")
        return text


def _need(obj: dict[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    if name not in obj:
        raise MalformedMessage(f"missing {where}.{name}")
    value = obj[name]
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise MalformedMessage(f"{where}.{name} has the wrong type ({type(value).__name__})")
    return value


def _text(obj: dict[str, Any], name: str, where: str) -> str:
    value = _need(obj, name, str, where)
    if not value:
        raise MalformedMessage(f"{where}.{name} is empty")
    return value


def _optional_text(obj: dict[str, Any], name: str, where: str) -> str | None:
    return None if obj.get(name) is None else _text(obj, name, where)


def decode(body: str | bytes) -> PartMessage:
    """Parse and validate a message body; raises MalformedMessage with the reason."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedMessage(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedMessage("not a JSON object")
    version = data.get("v")
    if version != VERSION:
        raise MalformedMessage(f"unknown message version {version!r} (this worker reads {VERSION})")
    src = _need(data, "src", dict, "message")
    dst = _need(data, "dst", dict, "message")
    part = _need(data, "part", dict, "message")
    headers = data.get("headers") or {}
    if not isinstance(headers, dict):
        raise MalformedMessage("headers is not an object")
    number = _need(part, "n", int, "part")
    total = _need(part, "of", int, "part")
    start = _need(part, "start", int, "part")
    end = _need(part, "end", int, "part")
    if not 1 <= number <= total <= 10_000:
        raise MalformedMessage(f"part number {number} of {total} is outside 1..10000")
    if start < 0 or end < start - 1:
        raise MalformedMessage(f"byte range {start}-{end} is invalid")
    upload_id = _optional_text(dst, "upload", "dst")
    if upload_id is None and total != 1:
        raise MalformedMessage("a whole-object copy must have exactly one part")
    return PartMessage(
        job_id=_text(data, "job", "message"),
        source_bucket=_text(src, "bucket", "src"),
        source_key=_text(src, "key", "src"),
        source_etag=_text(src, "etag", "src"),
        source_version=_optional_text(src, "version", "src"),
        dest_bucket=_text(dst, "bucket", "dst"),
        dest_key=_text(dst, "key", "dst"),
        upload_id=upload_id,
        attempt=_text(dst, "attempt", "dst"),
        part_number=number,
        total_parts=total,
        start=start,
        end=end,
        headers=headers,
    )
