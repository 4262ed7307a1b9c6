"""Delete propagation (off by default): a source object deleted -> its copy at the destination deleted.

Deletions reach the splitter function only when propagation is switched on: in AWS the `PropagateDeletes` parameter
turns on the bucket's EventBridge delivery and a rule sending "Object Deleted" events to the splitter; `s3sync local
--propagate-deletes` subscribes `s3:ObjectRemoved:*` notifications. Both shapes are read here.

Before deleting, the source is looked at once more: S3 does not order events, so a delete that arrives after the key
was written again must not remove the new copy. Only a 404 from that HEAD lets the delete through: "If you have the
s3:ListBucket permission on the bucket, Amazon S3 returns an HTTP status code 404 Not Found error. If you don't have
the s3:ListBucket permission, Amazon S3 returns an HTTP status code 403 Forbidden error" (S3 API reference,
HeadObject). The splitter's role has s3:ListBucket on the source bucket, so 404 means missing, and 403 means refused
(a bucket policy, a KMS key, a role changed): then nothing is known about the key, and the copy is kept (outcome
"refused", logged with the reason). Deleting a destination key that is absent is a no-op (S3 answers 204), so a
repeated event is harmless.

Which events get here at all is decided first (s3sync.transfer.admission): only the stack's source bucket, and only
with propagation switched on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from s3sync.transfer.credentials import DestClient
from s3sync.transfer.errors import PermanentError, classify
from s3sync.transfer.settings import Settings

log = logging.getLogger("s3sync.deletes")

#: The HEAD answers that mean the key is missing (botocore's code for a bodiless 404 is "404").
MISSING_CODES = ("NoSuchKey", "NoSuchVersion", "404", "NotFound")

EVENTBRIDGE_DELETED = "Object Deleted"


@dataclass(frozen=True)
class Deletion:
    """A source object deleted (or hidden behind a delete marker), as an S3 notification or EventBridge names it."""

    bucket: str
    key: str
    version_id: str | None = None
    kind: str = "Delete"  # "Delete" or "DeleteMarkerCreated"
    sequencer: str | None = None


def is_eventbridge_deletion(event: dict[str, Any]) -> bool:
    return event.get("source") == "aws.s3" and event.get("detail-type") == EVENTBRIDGE_DELETED


def deletion_refs(event: dict[str, Any]) -> Iterator[Deletion]:
    """`ObjectRemoved:*` records of an S3 notification, or one EventBridge "Object Deleted" event (keys decoded:
    both deliver them URL-encoded, `+` for a space)."""
    if is_eventbridge_deletion(event):
        detail = event.get("detail") or {}
        obj = detail.get("object") or {}
        bucket = (detail.get("bucket") or {}).get("name")
        if bucket and obj.get("key"):
            kind = "DeleteMarkerCreated" if "marker" in str(detail.get("deletion-type", "")).lower() else "Delete"
            yield Deletion(bucket, unquote_plus(obj["key"]), obj.get("version-id") or None, kind,
                           obj.get("sequencer"))
        return
    for record in event.get("Records") or []:
        name = str(record.get("eventName", ""))
        if not name.startswith("ObjectRemoved:"):
            continue
        s3 = record.get("s3") or {}
        obj = s3.get("object") or {}
        bucket = (s3.get("bucket") or {}).get("name")
        if bucket and obj.get("key"):
            yield Deletion(bucket, unquote_plus(obj["key"]), obj.get("versionId") or None,
                           name.split(":", 1)[1] or "Delete", obj.get("sequencer"))


@dataclass(frozen=True)
class DeleteResult:
    key: str
    dest_key: str
    outcome: str  # "deleted", "kept" (the source holds the key again) or "refused" (the source did not say 404)
    detail: str = ""


class DeletePropagator:
    def __init__(self, *, source: Any, dest: DestClient | Any, settings: Settings) -> None:
        self.source = source
        self.dest = dest if isinstance(dest, DestClient) else DestClient.fixed(dest)
        self.settings = settings.require("dest_bucket")

    def source_state(self, bucket: str, key: str) -> tuple[str, str]:
        """("present", ""), ("missing", "") on a 404, or ("refused", reason) on any other permanent answer (403:
        the source would not say; never taken for missing). Retryable errors are raised (the function is retried)."""
        try:
            self.source.head_object(Bucket=bucket, Key=key)
            return "present", ""
        except Exception as exc:  # noqa: BLE001 - classify decides
            err = classify(exc, "source")
            if not isinstance(err, PermanentError):
                raise err from exc
            if err.code in MISSING_CODES:
                return "missing", ""
            return "refused", err.reason

    def propagate(self, deletion: Deletion) -> DeleteResult:
        dest_key = self.settings.dest_prefix + deletion.key
        ids = {"key": deletion.key, "dest_key": dest_key, "kind": deletion.kind}
        state, reason = self.source_state(deletion.bucket, deletion.key)
        if state == "present":
            log.info("source key written again since the delete; destination kept", extra=ids)
            return DeleteResult(deletion.key, dest_key, "kept", "the source holds the key again")
        if state == "refused":
            log.error("source refused the look before deleting; destination kept", extra={**ids, "reason": reason})
            return DeleteResult(deletion.key, dest_key, "refused", f"the source did not answer 404: {reason}")
        where = f"s3://{self.settings.dest_bucket}/{dest_key} at {self.dest.endpoint.describe()}"
        self.dest.call(lambda c: c.delete_object(Bucket=self.settings.dest_bucket, Key=dest_key), where)
        log.info("destination object deleted", extra=ids)
        return DeleteResult(deletion.key, dest_key, "deleted")
