"""Server-side encryption of the copies at the destination, and what it does to ETags.

The choice (contract.Env.DEST_SSE, DEST_SSE_KMS_KEY_ID) is made once per object, by the splitter: it passes it to
CreateMultipartUpload, and writes it into a small object's part message, whose PutObject the worker sends. So the
worker needs no setting of its own, and a job is written under one choice even if the setting changes meanwhile.

ETags: S3 gives the MD5 of the body as the ETag of a PutObject / UploadPart only for unencrypted and SSE-S3 objects.
Under SSE-KMS (and DSSE-KMS) an ETag is some other value, and so is the "-N" ETag of a completed multipart upload.
The engine therefore compares ETags with MD5s only when the object is not KMS-encrypted, which it learns from the
destination's own answer (x-amz-server-side-encryption on PutObject, UploadPart, CompleteMultipartUpload and
HeadObject: this also covers a bucket whose *default* is SSE-KMS) or from what it asked for. What stays under
SSE-KMS: Content-MD5 on every UploadPart and PutObject (S3 refuses a body that does not match it: BadDigest), the
ListParts cross-check of the part ETags S3 returned, the part count and the sizes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from s3sync.contract import DEST_SSE_MODES, KMS_KEY_ID_PATTERN, SSE_KMS

_KMS_KEY_ID = re.compile(f"(?:{KMS_KEY_ID_PATTERN})")

#: The S3 parameter names this module adds to CreateMultipartUpload / PutObject (and a part message's headers).
SSE_PARAMS: tuple[str, ...] = ("ServerSideEncryption", "SSEKMSKeyId")


@dataclass(frozen=True)
class DestEncryption:
    """`mode`: "" (no header: the bucket's default), "AES256" (SSE-S3) or "aws:kms" (SSE-KMS, with `kms_key_id` or,
    when empty, the account's aws/s3 key). Invalid combinations raise ValueError when built."""

    mode: str = ""
    kms_key_id: str = ""

    def __post_init__(self) -> None:
        if self.mode not in DEST_SSE_MODES:
            raise ValueError(f"server-side encryption must be empty (the bucket's default), AES256 or aws:kms, "
                             f"got {self.mode!r}")
        if self.kms_key_id and self.mode != SSE_KMS:
            raise ValueError(f"a KMS key id needs aws:kms encryption, not {self.mode or 'the bucket default'}")
        if self.kms_key_id and not _KMS_KEY_ID.fullmatch(self.kms_key_id):
            raise ValueError(f"not a KMS key id, key ARN, alias ARN or alias/name: {self.kms_key_id!r}")

    @property
    def kms(self) -> bool:
        return self.mode == SSE_KMS

    def request_params(self) -> dict[str, str]:
        """Keyword arguments for CreateMultipartUpload / PutObject: none for the bucket's default."""
        params: dict[str, str] = {}
        if self.mode:
            params["ServerSideEncryption"] = self.mode
        if self.kms_key_id:
            params["SSEKMSKeyId"] = self.kms_key_id
        return params


def kms_encrypted(answer: Mapping[str, Any], requested: Mapping[str, Any] | None = None) -> bool:
    """Whether S3 wrote this object under a KMS key: its answer says so (x-amz-server-side-encryption `aws:kms` or
    `aws:kms:dsse`), or we asked for it. Then its ETags are no MD5 of the bytes and must not be compared with one."""
    said = str(answer.get("ServerSideEncryption") or "")
    asked = str((requested or {}).get("ServerSideEncryption") or "")
    return said.startswith(SSE_KMS) or asked.startswith(SSE_KMS)
