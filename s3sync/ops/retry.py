"""`s3sync retry JOB... | --failed`: a new attempt for FAILED jobs, then the dead-letter queue back to the part queue.

Jobs: s3sync.transfer.reattempt (new plan, new upload, the old attempt's parts dropped, a conditional FAILED ->
PLANNED claim so that two retries never both act).

Dead-letter queue: SQS's StartMessageMoveTask moves every message back blindly (and moto does not implement it).
Here each message is looked at first, which a blind move cannot do:
- its job is PLANNED/COPYING with the message's upload: moved back to the part queue (send, then delete);
- its job is DONE, FAILED, gone, or now runs another upload (a retried job): dropped. Such a message can only do
  harm: copied into an aborted upload it would fail the job's new attempt;
- it does not parse: left in the dead-letter queue (it would only come back), and counted.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from s3sync.aws import aws_errors
from s3sync.contract import Status
from s3sync.errors import UserError
from s3sync.ops.context import Target
from s3sync.ops.status import iter_jobs
from s3sync.transfer.errors import MalformedMessage, TransferError
from s3sync.transfer.ledger import Job, Ledger
from s3sync.transfer.message import decode
from s3sync.transfer.reattempt import Reattempter, ReattemptResult

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef

log = logging.getLogger("s3sync.retry")

JOB_ID = re.compile(r"^[0-9a-f]{6,32}$")
RECEIVE_VISIBILITY = 120  # seconds a looked-at message stays hidden (kept ones reappear after the run)


@dataclass
class DlqResult:
    moved: int = 0
    dropped: int = 0
    malformed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"moved": self.moved, "dropped": self.dropped, "malformed": self.malformed}


@dataclass
class RetryReport:
    jobs: list[ReattemptResult] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)  # job id -> source key, for messages
    dlq: DlqResult | None = None

    @property
    def ok(self) -> bool:
        return all(r.outcome in ("requeued", "superseded") for r in self.jobs)

    def as_dict(self) -> dict[str, Any]:
        return {"jobs": [{"job_id": r.job_id, "key": self.keys.get(r.job_id, ""), "outcome": r.outcome,
                          "detail": r.detail, "parts": r.parts, "new_job_id": r.new_job_id or None}
                         for r in self.jobs],
                "dead_letter_queue": self.dlq.as_dict() if self.dlq else None}


def find_jobs(target: Target, ledger: Ledger, ids: list[str]) -> list[Job]:
    """Jobs by id, or by a unique id prefix (status shows the first 12 characters)."""
    out: list[Job] = []
    prefixes = []
    for raw in ids:
        ident = raw.strip().lower()
        if not JOB_ID.match(ident):
            raise UserError(f"{raw!r} is not a job id (32 hex characters, or a unique prefix of at least 6)")
        job = ledger.get_job(ident) if len(ident) == 32 else None
        if job is not None:
            out.append(job)
        else:
            prefixes.append(ident)
    if prefixes:
        matches: dict[str, list[Job]] = {p: [] for p in prefixes}
        for job in iter_jobs(target, everything=True):  # a prefix may name a job of any status: read them all
            for p in prefixes:
                if job.job_id.startswith(p):
                    matches[p].append(job)
        for p, found in matches.items():
            if not found:
                raise UserError(f"no job {p} in {target.transfers_table} ({target.where})")
            if len(found) > 1:
                raise UserError(f"job id prefix {p} matches {len(found)} jobs: give more characters")
            out.append(found[0])
    return out


def do_retry(target: Target, ids: list[str], *, failed: bool = False, dlq: bool = False,
             part_size_mib: int | None = None) -> RetryReport:
    """`part_size_mib`: plan the new attempts with this part size instead of each job's own."""
    if not ids and not failed and not dlq:
        raise UserError("name the job(s) to retry, or --failed for every failed job (and the dead-letter queue)")
    target.need("parts_table", "queue_url", doing="retry")
    rt = target.runtime()
    report = RetryReport()
    ledger = rt.ledger
    with aws_errors(f"retrying ({target.where})"):
        jobs = find_jobs(target, ledger, list(ids))
        if failed:
            known = {j.job_id for j in jobs}
            jobs += [j for j in iter_jobs(target, failed=True) if j.job_id not in known]
        if jobs:
            target.need("dest_bucket", doing="retry")
            splitter = rt.splitter()
            reattempter = Reattempter(ledger=ledger, splitter=splitter, source=rt.source, dest=rt.dest,
                                      part_size=part_size_mib * 2**20 if part_size_mib else None)
            for job in jobs:
                report.keys[job.job_id] = job.source_key
                try:
                    report.jobs.append(reattempter.reattempt(job))
                except TransferError as exc:
                    report.jobs.append(ReattemptResult(job.job_id, "error", exc.reason))
        if failed or dlq:
            if target.dlq_url:
                report.dlq = redrive_dlq(target.client("sqs"), target.dlq_url, target.queue_url, ledger)
            elif dlq:
                raise UserError("the dead-letter queue is unknown: give --dlq-url (or --stack)")
    return report


def redrive_dlq(sqs: SQSClient, dlq_url: str, queue_url: str, ledger: Ledger) -> DlqResult:
    """Move the dead-letter queue's useful messages back to the part queue (see the module docstring). Ends when a
    long poll comes back empty and the queue says no message is visible."""
    result = DlqResult()
    jobs: dict[str, Job | None] = {}
    while True:
        msgs = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                   VisibilityTimeout=RECEIVE_VISIBILITY).get("Messages", [])
        if not msgs:
            visible = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"])
            if int(visible["Attributes"]["ApproximateNumberOfMessages"]) == 0:
                break
            continue
        move: list[MessageTypeDef] = []
        drop: list[MessageTypeDef] = []
        for m in msgs:
            try:
                msg = decode(m["Body"])
            except MalformedMessage:
                result.malformed += 1
                continue
            if msg.job_id not in jobs:
                jobs[msg.job_id] = ledger.get_job(msg.job_id)
            job = jobs[msg.job_id]
            active = (job is not None and job.status in (Status.PLANNED, Status.COPYING)
                      and job.attempt == msg.attempt)
            (move if active else drop).append(m)
        if move:
            resp = sqs.send_message_batch(QueueUrl=queue_url, Entries=[
                {"Id": str(i), "MessageBody": m["Body"]} for i, m in enumerate(move)])
            failed = {int(f["Id"]) for f in resp.get("Failed") or []}
            move = [m for i, m in enumerate(move) if i not in failed]  # the others stay for the next run
            result.moved += len(move)
        result.dropped += len(drop)
        done = move + drop
        if done:
            sqs.delete_message_batch(QueueUrl=dlq_url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)])
    log.info("dead-letter queue re-driven", extra=result.as_dict())
    return result


def render(report: RetryReport, echo: Any) -> None:
    words = {"requeued": "new attempt enqueued", "superseded": "source changed: split as a new job",
             "source-missing": "source object is gone: nothing to copy", "busy": "changed meanwhile; left alone",
             "not-finished": "not failed; left alone", "error": "error"}
    for r in report.jobs:
        extra = f" ({r.parts} part(s))" if r.outcome == "requeued" else ""
        detail = f": {r.detail}" if r.detail and r.outcome != "requeued" else ""
        echo(f"{r.job_id[:12]}  {report.keys.get(r.job_id, '')}  {words.get(r.outcome, r.outcome)}{extra}{detail}")
    if not report.jobs:
        echo("no failed job to retry")
    if report.dlq is not None:
        d = report.dlq
        echo(f"dead-letter queue: {d.moved} message(s) moved back, {d.dropped} stale dropped, "
             f"{d.malformed} malformed left")
