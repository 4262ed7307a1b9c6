"""S3 notification -> plan the object, write its job, enqueue its parts (ObjectCreated); delete its copy
(ObjectRemoved / EventBridge "Object Deleted", acted on only when delete propagation is switched on); the
scheduled finder's event -> functions.finder. Every event is first checked against the function's configuration
(s3sync.transfer.admission): another bucket, or a deletion with propagation off, is refused with its reason."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any
from urllib.parse import unquote_plus

from functions import finder
from functions._common import runtime
from s3sync.contract import Metric, Status
from s3sync.transfer.admission import Admission
from s3sync.transfer.deletes import DeletePropagator, deletion_refs
from s3sync.transfer.events import s3_object_refs
from s3sync.transfer.metrics import MetricsLogger
from s3sync.transfer.reattempt import Reattempter

log = logging.getLogger("s3sync.splitter")


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    if finder.is_find_event(event):
        return finder.handler(event, context)
    out: dict[str, Any] = {"jobs": []}
    refs, deletions = list(s3_object_refs(event)), list(deletion_refs(event))
    if not refs and not deletions:
        return out
    rt = runtime()
    admission = Admission(rt.settings)
    refs, refused = admission.created(refs)
    deletions, refused_deletions = admission.deleted(deletions)
    refused += refused_deletions
    if refused:
        out["refused"] = [r.as_dict() for r in refused]
    if refs:
        splitter = rt.splitter()
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
