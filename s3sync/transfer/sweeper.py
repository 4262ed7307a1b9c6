"""The sweeper: no job stays unfinished without progress.

It runs when the part queue has drained (alarm B: nothing visible, nothing in flight, so nobody is working on
what is left) and on a schedule. A job with no progress for `stale_after` seconds is driven on by its state:
- PLANNED (the splitter died and its retries ran out): enqueue every part not counted yet, then COPYING (which
  completes it at once when every part is counted already);
- COPYING with parts missing (their messages ended in the dead-letter queue, or were lost): enqueue the missing
  parts again, at most `max_redrives` times, then FAILED with the part numbers that never arrived. Only while the
  part queue is empty (nothing visible, delayed or in flight: `queue_busy`): a job whose parts wait behind a
  backlog, or are being copied by a live worker, is not stuck, however long it waits;
- COPYING with every part counted (its stream record was lost or completion gave up): touch it, so that a new
  stream record re-triggers completion;
- COMPLETING (completion died mid-way): hand it back to COPYING, which re-triggers completion.
Every step is a conditional write on the job as the sweeper read it (its `rev`), so two sweepers, or a sweeper and
a completion elected meanwhile, cannot both act; a part enqueued twice is counted once anyway.

The candidates come from the transfers table's sparse `Attention` index (Ledger.unfinished_jobs), never from a Scan:
only unfinished jobs are in its unfinished part, and only those created `stale_after` seconds ago or earlier are
asked for (a job's `updated_at` is never older than its `created_at`, so a younger job cannot be stale). A sweep
therefore reads what is unfinished and old enough, whatever number of DONE jobs the table holds. The index lags the
table (GSI reads are eventually consistent): a job it still lists after it finished, or whose listing is stale, is
read again strongly consistently (BatchGetItem, ConsistentRead) before the sweeper decides anything, and every write
is conditioned on that read; a job it does not list yet is younger than any stale job can be.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from s3sync.contract import Status
from s3sync.transfer.errors import PermanentError
from s3sync.transfer.ledger import Job, Ledger
from s3sync.transfer.splitter import Splitter

log = logging.getLogger("s3sync.sweeper")

DEFAULT_STALE_AFTER = 300
DEFAULT_MAX_REDRIVES = 3


@dataclass
class SweepResult:
    resumed: list[str] = field(default_factory=list)
    redriven: dict[str, int] = field(default_factory=dict)  # job -> parts re-sent
    retriggered: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def enqueued(self) -> int:
        return sum(self.redriven.values())

    def as_dict(self) -> dict[str, object]:
        return {"resumed": self.resumed, "redriven": self.redriven, "retriggered": self.retriggered,
                "failed": self.failed}


class Sweeper:
    def __init__(self, *, ledger: Ledger, splitter: Splitter, stale_after: float = DEFAULT_STALE_AFTER,
                 max_redrives: int = DEFAULT_MAX_REDRIVES, clock: Callable[[], float] = time.time,
                 queue_busy: Callable[[], bool] | None = None) -> None:
        self.ledger, self.splitter = ledger, splitter
        self.stale_after, self.max_redrives, self.clock = stale_after, max_redrives, clock
        self.queue_busy = queue_busy  # None: the caller knows the queue has drained (alarm B)

    def sweep(self) -> SweepResult:
        result = SweepResult()
        now = self.clock()
        candidates = self.ledger.unfinished_jobs(created_before=int(now - self.stale_after))
        stale = [j for j in candidates if now - j.updated_at >= self.stale_after]
        busy = bool(stale) and self.queue_busy is not None and self.queue_busy()
        for job in stale:
            try:
                self._drive(job, result, busy)
            except PermanentError as exc:
                if self.ledger.mark_failed(job, f"sweeper: {exc.reason}", by="attempt"):
                    result.failed.append(job.job_id)
        if result.resumed or result.redriven or result.retriggered or result.failed:
            log.warning("sweep", extra={"resumed": len(result.resumed), "redriven_jobs": len(result.redriven),
                                        "redriven_parts": result.enqueued, "retriggered": len(result.retriggered),
                                        "failed": len(result.failed)})
        return result

    def _drive(self, job: Job, result: SweepResult, busy: bool) -> None:
        ids = {"job": job.job_id, "key": job.source_key, "idle_s": int(self.clock() - job.updated_at)}
        if job.status == Status.COMPLETING:
            if self.ledger.release_completion(job, by_lease=False):
                log.warning("completion stalled; handed back", extra=ids)
                result.retriggered.append(job.job_id)
        elif job.status == Status.COPYING and job.remaining == 0:
            if self.ledger.touch(job):
                log.warning("completion never ran; re-triggered", extra=ids)
                result.retriggered.append(job.job_id)
        elif job.status == Status.PLANNED:
            if self.ledger.note_redrive(job):  # we own this resumption
                missing = self._missing(job)
                if missing:
                    self.splitter.enqueue(job, only=set(missing))
                self.ledger.mark_copying(job)
                result.resumed.append(job.job_id)
                log.warning("planned job resumed", extra={**ids, "parts": missing[:20], "count": len(missing)})
        elif busy:
            log.info("parts may be waiting in the queue or being copied; not stuck", extra=ids)
        elif job.redrives >= self.max_redrives:
            missing = self._missing(job)
            reason = (f"no progress for {ids['idle_s']} s after {job.redrives} re-drives; "
                      f"parts never copied: {missing[:20]}{' …' if len(missing) > 20 else ''}")
            if self.ledger.mark_failed(job, reason, by="rev"):
                log.error("stuck job failed", extra={**ids, "reason": reason})
                result.failed.append(job.job_id)
        elif self.ledger.note_redrive(job):  # we own this re-drive
            missing = self._missing(job)
            result.redriven[job.job_id] = self.splitter.enqueue(job, only=set(missing))
            log.warning("missing parts re-driven", extra={**ids, "parts": missing[:20], "count": len(missing)})

    def _missing(self, job: Job) -> list[int]:
        have = {p.part for p in self.ledger.parts(job.job_id, job.attempt)}
        return [n for n in range(1, job.total + 1) if n not in have]
