"""The newest source version wins at the destination, whatever order the copies of two versions finish in.

Copies of two versions of one key (an object overwritten while its first copy is on its way) can land on the
destination key in either order, and nothing in S3 compares them. So every copy, once its job is DONE, looks at the
source's current version and at the destination object's `s3sync-job` marker (`keep`):
- the source still holds this version, but the destination holds another copy: an older version's copy landed
  after this one: copy this version again;
- the source holds a newer version whose job is DONE, and the destination holds this (older) copy: this copy
  landed after the newer one: copy the newer version again.
Whichever of the two jobs finishes last sees the other DONE (each looks after its own DONE), so one of them always
repairs. Completion runs it for the copies it completes, the splitter for the small objects it copies itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from s3sync.contract import Status
from s3sync.transfer.credentials import DestClient
from s3sync.transfer.errors import TransferError, classify
from s3sync.transfer.ledger import Job, Ledger
from s3sync.transfer.splitter import MISSING_CODES, job_id_for, marker_of

log = logging.getLogger("s3sync.newest")


class Newest:
    """`reattempt(job)` starts a new attempt of a DONE job (Reattempter.reattempt with DONE allowed)."""

    def __init__(self, *, source: Any, dest: DestClient, ledger: Ledger, reattempt: Callable[[Job], Any]) -> None:
        self.source, self.dest, self.ledger, self.reattempt = source, dest, ledger, reattempt

    def current_job_id(self, job: Job) -> str | None:
        """The job id of the version the source holds now (None: the key is gone)."""
        try:
            head = self.source.head_object(Bucket=job.source_bucket, Key=job.source_key)
        except Exception as exc:  # noqa: BLE001
            err = classify(exc, "source")
            if err.code in MISSING_CODES:
                return None
            raise err from exc
        return job_id_for(job.source_bucket, job.source_key,
                          head.get("VersionId") if job.source_version else None, head["ETag"])

    def source_moved_on(self, job: Job) -> bool:
        return self.current_job_id(job) != job.job_id

    def keep(self, job: Job) -> None:
        """After `job` is DONE: repair the order, as the module says. A failure raises (the caller's event or
        stream record is delivered again, and the check with it)."""
        current = self.current_job_id(job)
        if current is None:
            return  # the key is gone: delete propagation's business
        where = f"s3://{job.dest_bucket}/{job.dest_key} at {self.dest.endpoint.describe()}"
        try:
            dest = self.dest.call(lambda c: c.head_object(Bucket=job.dest_bucket, Key=job.dest_key), where)
        except TransferError as exc:
            if exc.code in MISSING_CODES:
                return  # the copy was deleted since (a propagated delete)
            raise
        ours = marker_of(dest.get("Metadata")) == job.job_id
        if current == job.job_id:
            if not ours:
                log.warning("an older copy overwrote this one; copying again", extra={"job": job.job_id})
                self.reattempt(job)
            return
        newer = self.ledger.get_job(current)
        if ours and newer is not None and newer.status == Status.DONE:
            log.warning("this copy overwrote a newer version's; copying that again",
                        extra={"job": job.job_id, "newer": current})
            self.reattempt(newer)
