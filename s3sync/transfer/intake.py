"""What the splitter function does with one S3 (or EventBridge) event, once its handler has parsed it: admit what the
deployed configuration allows (s3sync.transfer.admission), split each created object (or copy it at once when
small), copy again an identical object written again after its job finished, and propagate deletions when that is
switched on. The handler (functions/splitter.py) only parses, calls `handle` and answers."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import unquote_plus

from s3sync.contract import Metric, Status
from s3sync.transfer.admission import Admission
from s3sync.transfer.deletes import DeletePropagator, Deletion
from s3sync.transfer.events import ObjectRef
from s3sync.transfer.metrics import MetricsLogger
from s3sync.transfer.reattempt import Reattempter


def handle(event: dict[str, Any], refs: list[ObjectRef], deletions: list[Deletion], rt: Any,
           splitter: Any = None) -> dict[str, Any]:
    """The event's created objects (`refs`) and deletions, as its handler parsed them; `rt` is the function's
    Runtime, `splitter` the batch's (one per invocation) or None for a new one."""
    out: dict[str, Any] = {"jobs": []}
    admission = Admission(rt.settings)
    refs, refused = admission.created(refs)
    deletions, refused_deletions = admission.deleted(deletions)
    refused += refused_deletions
    if refused:
        out["refused"] = [r.as_dict() for r in refused]
    if refs:
        splitter = splitter or rt.splitter()
        created = created_times(event)
        for ref in refs:
            r = splitter.split(ref)
            outcome = r.outcome
            if outcome == "duplicate" and recreated(rt.ledger, r.job_id, created.get((ref.bucket, ref.key))):
                outcome = recopy(rt, splitter, r.job_id)
            elif outcome == "copied-again" and recreated(rt.ledger, r.job_id, created.get((ref.bucket, ref.key))):
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


def created_times(event: dict[str, Any]) -> dict[tuple[str, str], float]:
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


def recreated(ledger: Any, job_id: str, event_time: float | None) -> bool:
    """An identical object written again after its job finished (e.g. after a propagated delete): same job id, yet
    not a repeated delivery of the first event, which is older than the job."""
    if event_time is None:
        return False
    job = ledger.get_job(job_id)
    return job is not None and job.status == Status.DONE and event_time > job.updated_at + 1


def recopy(rt: Any, splitter: Any, job_id: str) -> str:
    """Copy again: a new attempt token on the job (the old attempt's part items count for nothing, so the parts
    table is not touched: the splitter's role has no right on it)."""
    job = rt.ledger.get_job(job_id)
    reattempter = Reattempter(ledger=rt.ledger, splitter=splitter, source=rt.source, dest=rt.dest)
    result = reattempter.reattempt(job, (Status.DONE,))
    return "re-copied" if result.outcome == "requeued" else result.outcome
