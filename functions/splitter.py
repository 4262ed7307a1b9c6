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

import datetime as dt
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote_plus

from functions import finder
from functions._common import entry, runtime
from s3sync.contract import Metric, Status
from s3sync.transfer import logs
from s3sync.transfer.admission import Admission
from s3sync.transfer.deletes import DeletePropagator, deletion_refs
from s3sync.transfer.events import s3_object_refs
from s3sync.transfer.metrics import MetricsLogger
from s3sync.transfer.reattempt import Reattempter

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
    out: dict[str, Any] = {"jobs": []}
    refs, deletions = list(s3_object_refs(event)), list(deletion_refs(event))
    if not refs and not deletions:
        return out
    rt = rt or runtime()
    admission = Admission(rt.settings)
    refs, refused = admission.created(refs)
    deletions, refused_deletions = admission.deleted(deletions)
    refused += refused_deletions
    if refused:
        out["refused"] = [r.as_dict() for r in refused]
    if refs:
        splitter = splitter or rt.splitter()
        created = _created_at(event)
        for ref in refs:
            r = splitter.split(ref)
            outcome = r.outcome
            if outcome == "duplicate" and _recreated(rt, r.job_id, created.get((ref.bucket, ref.key))):
                outcome = _recopy(rt, splitter, r.job_id)
            elif outcome == "copied-again" and _recreated(rt, r.job_id, created.get((ref.bucket, ref.key))):
                outcome = "re-copied"  # a small object written again: the splitter has just copied it again
            out["jobs"].append({"job": r.job_id, "outcome": outcome, "parts": r.parts})
    if deletions:
        propagator = DeletePropagator(source=rt.source, dest=rt.dest, settings=rt.settings)
        results = [propagator.propagate(d) for d in deletions]
        out["deletes"] = [{"key": d.key, "dest_key": d.dest_key, "outcome": d.outcome,
                           **({"detail": d.detail} if d.outcome == "refused" else {})} for d in results]
        deleted = sum(d.outcome == "deleted" for d in results)
        if deleted and rt.settings.queue_url:
            MetricsLogger.for_queue(rt.settings.queue_url).count(Metric.OBJECTS_DELETED, deleted)
    return out


def _created_at(event: dict[str, Any]) -> dict[tuple[str, str], float]:
    """(bucket, decoded key) -> the latest eventTime of its ObjectCreated records, in epoch seconds."""
    out: dict[tuple[str, str], float] = {}
    for record in event.get("Records") or []:
        if not str(record.get("eventName", "")).startswith("ObjectCreated:"):
            continue
        s3 = record.get("s3") or {}
        bucket, key = (s3.get("bucket") or {}).get("name"), (s3.get("object") or {}).get("key")
        try:
            when = dt.datetime.fromisoformat(str(record.get("eventTime", "")).replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
        if bucket and key:
            ident = (bucket, unquote_plus(key))
            out[ident] = max(when, out.get(ident, 0.0))
    return out


def _recreated(rt: Any, job_id: str, event_time: float | None) -> bool:
    """An identical object written again after its job finished (e.g. after a propagated delete): same job id, yet
    not a repeated delivery of the first event, which is older than the job."""
    if event_time is None:
        return False
    job = rt.ledger.get_job(job_id)
    return job is not None and job.status == Status.DONE and event_time > job.updated_at + 1


def _recopy(rt: Any, splitter: Any, job_id: str) -> str:
    """Copy again: a new attempt token on the job (the old attempt's part items count for nothing, so the parts
    table is not touched: the splitter's role has no right on it)."""
    job = rt.ledger.get_job(job_id)
    reattempter = Reattempter(ledger=rt.ledger, splitter=splitter, source=rt.source, dest=rt.dest)
    result = reattempter.reattempt(job, (Status.DONE,))
    return "re-copied" if result.outcome == "requeued" else result.outcome
