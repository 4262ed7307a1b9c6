"""The sweeper: no job stays unfinished without progress.

It runs when the part queue has drained (alarm B: nothing visible, nothing in flight, so nobody is working on
what is left) and whenever asked. A job with no progress for `stale_after` seconds is driven on by its state:
- PLANNED (the splitter died and its retries ran out): enqueue every part again, then COPYING;
- COPYING with parts missing (their messages ended in the dead-letter queue, or were lost): enqueue the missing
  parts again, at most `max_redrives` times, then FAILED with the part numbers that never arrived;
- COPYING with every part counted (its stream record was lost or completion gave up): touch it, so that a new
  stream record re-triggers completion;
- COMPLETING (completion died mid-way): hand it back to COPYING, which re-triggers completion.
Every step is a conditional write, so two sweepers (or a sweeper and a late worker) cannot double anything; a
part enqueued twice is counted once anyway.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

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
                 max_redrives: int = DEFAULT_MAX_REDRIVES, clock: Callable[[], float] = time.time) -> None:
        self.ledger, self.splitter = ledger, splitter
        self.stale_after, self.max_redrives, self.clock = stale_after, max_redrives, clock

    def sweep(self) -> SweepResult:
        result = SweepResult()
        now = self.clock()
        for job in self.ledger.unfinished_jobs():
            if now - job.updated_at < self.stale_after:
                continue
            try:
                self._drive(job, result)
            except PermanentError as exc:
                if self.ledger.mark_failed(job.job_id, f"sweeper: {exc.reason}"):
                    result.failed.append(job.job_id)
        if result.resumed or result.redriven or result.retriggered or result.failed:
            log.warning("sweep", extra={"resumed": len(result.resumed), "redriven_jobs": len(result.redriven),
                                        "redriven_parts": result.enqueued, "retriggered": len(result.retriggered),
                                        "failed": len(result.failed)})
        return result

    def _drive(self, job: Job, result: SweepResult) -> None:
        ids = {"job": job.job_id, "key": job.source_key, "idle_s": int(self.clock() - job.updated_at)}
        if job.status == Status.COMPLETING:
            if self.ledger.release_completion(job.job_id):
                log.warning("completion stalled; handed back", extra=ids)
                result.retriggered.append(job.job_id)
        elif job.status == Status.COPYING and job.remaining == 0:
            if self.ledger.touch(job.job_id):
                log.warning("completion never ran; re-triggered", extra=ids)
                result.retriggered.append(job.job_id)
        elif job.redrives >= self.max_redrives:
            missing = self._missing(job)
            reason = (f"no progress for {ids['idle_s']} s after {job.redrives} re-drives; "
                      f"parts never copied: {missing[:20]}{' …' if len(missing) > 20 else ''}")
            if self.ledger.mark_failed(job.job_id, reason):
                log.error("stuck job failed", extra={**ids, "reason": reason})
                result.failed.append(job.job_id)
        elif self.ledger.note_redrive(job):  # we own this re-drive
            if job.status == Status.PLANNED:
                self.splitter.enqueue(job)
                self.ledger.mark_copying(job.job_id)
                result.resumed.append(job.job_id)
                log.warning("planned job resumed", extra=ids)
            else:
                missing = self._missing(job)
                result.redriven[job.job_id] = self.splitter.enqueue(job, only=set(missing))
                log.warning("missing parts re-driven", extra={**ids, "parts": missing[:20], "count": len(missing)})

    def _missing(self, job: Job) -> list[int]:
        have = {p.part for p in self.ledger.parts(job.job_id)}
        return [n for n in range(1, job.total + 1) if n not in have]
