"""Delete propagation (off by default): a source object deleted -> its copy at the destination deleted.

Deletions reach the splitter function only when propagation is switched on: in AWS the `PropagateDeletes` parameter
turns on the bucket's EventBridge delivery and a rule sending "Object Deleted" events to the splitter; `s3sync local
--propagate-deletes` subscribes `s3:ObjectRemoved:*` notifications. Both shapes are read here.

Before deleting, the source is looked at once more: S3 does not order events, so a delete that arrives after the key
was written again must not remove the new copy. Deleting a destination key that is absent is a no-op (S3 answers
204), so a repeated event is harmless.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import unquote_plus

from s3sync.transfer.credentials import DestClient
from s3sync.transfer.errors import PermanentError, classify
from s3sync.transfer.settings import Settings

log = logging.getLogger("s3sync.deletes")

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
    outcome: str  # "deleted" or "kept" (the source holds the key again)
    detail: str = ""


class DeletePropagator:
    def __init__(self, *, source: Any, dest: DestClient | Any, settings: Settings) -> None:
        self.source = source
        self.dest = dest if isinstance(dest, DestClient) else DestClient.fixed(dest)
        self.settings = settings.require("dest_bucket")

    def source_exists(self, bucket: str, key: str) -> bool:
        """True when the key holds an object again. Without s3:ListBucket, S3 answers a missing key with 403, which
        counts as gone here too: the event already says S3 deleted it; this look only catches a newer write."""
        try:
            self.source.head_object(Bucket=bucket, Key=key)
            return True
        except Exception as exc:  # noqa: BLE001 - classify decides
            err = classify(exc, "source")
            if isinstance(err, PermanentError):
                return False
            raise err from exc

    def propagate(self, deletion: Deletion) -> DeleteResult:
        dest_key = self.settings.dest_prefix + deletion.key
        ids = {"key": deletion.key, "dest_key": dest_key, "kind": deletion.kind}
        if self.source_exists(deletion.bucket, deletion.key):
            log.info("source key written again since the delete; destination kept", extra=ids)
            return DeleteResult(deletion.key, dest_key, "kept", "the source holds the key again")
        where = f"s3://{self.settings.dest_bucket}/{dest_key} at {self.dest.endpoint.describe()}"
        self.dest.call(lambda c: c.delete_object(Bucket=self.settings.dest_bucket, Key=dest_key), where)
        log.info("destination object deleted", extra=ids)
        return DeleteResult(deletion.key, dest_key, "deleted")
