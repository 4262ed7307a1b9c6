"""S3 notification -> plan the object, write its job, enqueue its parts, or copy it at once when small
(ObjectCreated); delete its copy (ObjectRemoved / EventBridge "Object Deleted", acted on only when delete propagation
is switched on); the scheduled finder's event -> functions.finder. Every event is first checked against the
function's configuration (s3sync.transfer.admission): another bucket, or a deletion with propagation off, is refused
with its reason.

S3's notifications arrive through the event queue (lambda.yaml's event source mapping): a batch of SQS messages,
each one S3 event. They are handled on a few threads at once; a message whose event failed is named in
`batchItemFailures` and comes back alone after the queue's visibility timeout (partial batch response; after
maxReceiveCount receives it waits in the event dead-letter queue). The batch's "transfer complete" notices go out
as one message (s3sync.transfer.notify). An S3 event given directly (EventBridge, a test, an older stack whose
bucket still invokes the function) is handled as before.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from functions import finder
from functions._common import entry, runtime
from s3sync.transfer import intake, logs
from s3sync.transfer.deletes import deletion_refs
from s3sync.transfer.events import s3_object_refs

log = logging.getLogger("s3sync.splitter")

BATCH_THREADS = 8  # events of one batch handled at once (each a HEAD, and for a small object a GET and a PUT)


@entry
def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    if finder.is_find_event(event):
        return finder.handler(event, context)
    if _from_queue(event):
        rt = runtime()
        return _queue_batch(event, rt, rt.splitter())
    return _handle(event)


def _from_queue(event: dict[str, Any]) -> bool:
    records = event.get("Records") or []
    return bool(records) and all(r.get("eventSource") == "aws:sqs" for r in records)


def _queue_batch(event: dict[str, Any], rt: Any, splitter: Any) -> dict[str, Any]:
    """The event source mapping's batch: each message one S3 event (or S3's s3:TestEvent, acknowledged)."""
    records = event["Records"]

    def one(record: dict[str, Any]) -> dict[str, Any] | None:
        try:
            inner = json.loads(record.get("body") or "")
            if not isinstance(inner, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:  # nothing will ever make it readable: logged, acknowledged, never retried
            log.error("unreadable event message; dropped", extra={"message_id": record.get("messageId"),
                                                                  "reason": str(exc)})
            return {"jobs": [], "refused": [{"reason": f"unreadable event message: {exc}"}]}
        try:
            return _handle(inner, rt, splitter)
        except Exception as exc:  # noqa: BLE001 - this message comes back alone; the others are done
            log.warning("event failed; it comes back", extra={"message_id": record.get("messageId"),
                                                              "reason": repr(exc)})
            return None

    out: dict[str, Any] = {"jobs": [], "batchItemFailures": []}
    with splitter.notifier.batch(), ThreadPoolExecutor(min(BATCH_THREADS, len(records))) as pool:
        results = list(pool.map(logs.in_this_context(one), records))
    for record, result in zip(records, results, strict=True):
        if result is None:
            out["batchItemFailures"].append({"itemIdentifier": record["messageId"]})
            continue
        for k, v in result.items():
            out.setdefault(k, [])
            out[k] += v
    return out


def _handle(event: dict[str, Any], rt: Any = None, splitter: Any = None) -> dict[str, Any]:
    """One S3 (or EventBridge) event; `rt` and `splitter` are the batch's when it came through the queue."""
    refs, deletions = list(s3_object_refs(event)), list(deletion_refs(event))
    if not refs and not deletions:
        return {"jobs": []}
    return intake.handle(event, refs, deletions, rt or runtime(), splitter)
