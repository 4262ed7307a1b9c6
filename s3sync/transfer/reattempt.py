"""A new attempt for a finished job: a FAILED one (`s3sync retry`), or a DONE one whose copy is gone or differs
(`s3sync backfill`, the scheduled finder, an identical object written again after a propagated delete).

A job's id is derived from the object (bucket, key, version, ETag), so a new attempt reuses the job item:
1. HEAD the source: gone -> nothing to do; another ETag -> the object changed: split it as the new job it is;
2. plan again (with the job's part size, unless another is asked for) and create the destination upload;
3. claim the job with one conditional write: still the job we read (its `rev`) -> PLANNED, with a new attempt token,
   the new upload, a fresh `remaining` and counters, the old error kept as `previous_error`, and back in the
   unfinished part of the `Attention` index (s3sync.transfer.ledger). Two retries of the same
   job cannot both win; the loser aborts its upload. A claim applied whose answer was lost is recognised by its
   attempt token when the job is read back;
4. enqueue every part (Splitter.enqueue), then PLANNED -> COPYING.
The old attempt's part items stay where they are: they name the old attempt, so they count for nothing in the new
one and are overwritten as its parts are counted; a late message of the old attempt is refused by the ledger.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from s3sync.contract import ATTENTION_ATTR, Status
from s3sync.transfer.credentials import DestClient
from s3sync.transfer.errors import PermanentError, classify
from s3sync.transfer.events import ObjectRef
from s3sync.transfer.ledger import NO_UPLOAD, Attention, Job, Ledger, now, token
from s3sync.transfer.plan import plan
from s3sync.transfer.splitter import MISSING_CODES, Splitter, kept_headers

log = logging.getLogger("s3sync.reattempt")


@dataclass(frozen=True)
class ReattemptResult:
    job_id: str
    outcome: str  # "requeued", "superseded", "source-missing", "busy", "not-finished", "unknown"
    detail: str = ""
    parts: int = 0
    new_job_id: str = ""


class Reattempter:
    def __init__(self, *, ledger: Ledger, splitter: Splitter, source: Any, dest: DestClient | Any,
                 part_size: int | None = None) -> None:
        self.ledger, self.splitter, self.source = ledger, splitter, source
        self.dest = dest if isinstance(dest, DestClient) else DestClient.fixed(dest)
        self.part_size = part_size  # None: the part size the job was planned with

    def reattempt(self, job: Job, allowed: tuple[str, ...] = (Status.FAILED,)) -> ReattemptResult:
        if job.status not in allowed:
            return ReattemptResult(job.job_id, "not-finished" if job.status not in Status.FINAL else "busy",
                                   f"job is {job.status}")
        head = self._head(job)
        if head is None:
            return ReattemptResult(job.job_id, "source-missing",
                                   f"s3://{job.source_bucket}/{job.source_key} no longer exists")
        if head["ETag"] != job.source_etag:  # the object changed: it is another job
            split = self.splitter.split(ObjectRef(job.source_bucket, job.source_key, job.source_version))
            return ReattemptResult(job.job_id, "superseded", f"source changed; split as job {split.outcome}",
                                   split.parts, split.job_id)
        size = int(head["ContentLength"])
        the_plan = plan(size, self.part_size or job.part_size)  # plan() raises a small part size to S3's minimum
        upload_id = NO_UPLOAD
        if the_plan.multipart:
            params = self.splitter.upload_params(kept_headers(head), job.job_id)  # headers, metadata, encryption
            upload_id = self.dest.call(lambda c: c.create_multipart_upload(
                Bucket=job.dest_bucket, Key=job.dest_key, **params)["UploadId"], self._where(job))
        attempt = token()
        claimed = self._claim(job, size, the_plan.part_size, the_plan.parts, upload_id, attempt)
        if claimed is None:
            mine = self.ledger.get_job(job.job_id)
            if mine is not None and mine.attempt == attempt:  # our claim, whose answer was lost
                claimed = mine
            else:
                if upload_id != NO_UPLOAD:
                    self._abort(job, upload_id)
                return ReattemptResult(job.job_id, "busy", "another retry (or a worker) changed the job first")
        return self._finish(claimed, f"was {job.status}: {job.error or job.dest_etag or ''}"[:200])

    # --- steps ----------------------------------------------------------------------------------------------------
    def _head(self, job: Job) -> dict[str, Any] | None:
        kwargs: dict[str, Any] = {"Bucket": job.source_bucket, "Key": job.source_key}
        if job.source_version:
            kwargs["VersionId"] = job.source_version
        try:
            return self.source.head_object(**kwargs)
        except Exception as exc:  # noqa: BLE001
            err = classify(exc, "source")
            if isinstance(err, PermanentError) and err.code in MISSING_CODES:
                return None
            raise err from exc  # refused (403 ...) or passing: the caller is told why

    def _claim(self, job: Job, size: int, part_size: int, total: int, upload_id: str, attempt: str) -> Job | None:
        return self.ledger.update_job(
            job.job_id,
            "SET #s = :planned, #upload = :upload, #size = :size, #ps = :ps, #total = :total, "
            "#remaining = :total, #done = :zero, #done_bytes = :zero, #ca = :zero, #redrives = :zero, "
            "#updated = :now, #prev = :prev, #attempt = :attempt, #att = :att "
            "REMOVE #e, #dest_etag, #lease, #inline ADD #attempts :one",
            "#s = :seen_status AND #rev = :seen",
            {":planned": Status.PLANNED, ":upload": upload_id, ":size": size, ":ps": part_size, ":total": total,
             ":zero": 0, ":one": 1, ":now": now(), ":seen_status": job.status, ":seen": job.rev,
             ":attempt": attempt, ":prev": (job.error or f"re-copied after {job.status}")[:1000],
             ":att": Attention.key(Attention.UNFINISHED, job.job_id)},
            {  # every name aliased: several are DynamoDB reserved words (size, total)
                "#e": "error", "#upload": "upload_id", "#size": "size", "#ps": "part_size", "#total": "total",
                "#remaining": "remaining", "#done": "done", "#done_bytes": "done_bytes", "#ca": "completion_attempts",
                "#redrives": "redrives", "#updated": "updated_at", "#prev": "previous_error",
                "#dest_etag": "dest_etag", "#attempts": "attempts", "#attempt": "attempt", "#lease": "lease",
                "#inline": "inline",
                "#att": ATTENTION_ATTR,
            },
        )

    def _finish(self, job: Job, detail: str) -> ReattemptResult:
        sent = self.splitter.enqueue(job)
        self.ledger.mark_copying(job)
        log.warning("job re-attempted", extra={"job": job.job_id, "key": job.source_key, "parts": sent,
                                               "detail": detail})
        return ReattemptResult(job.job_id, "requeued", detail, sent)

    def _where(self, job: Job) -> str:
        return f"s3://{job.dest_bucket}/{job.dest_key} at {self.dest.endpoint.describe()}"

    def _abort(self, job: Job, upload_id: str) -> None:
        try:
            self.dest.call(lambda c: c.abort_multipart_upload(Bucket=job.dest_bucket, Key=job.dest_key,
                                                              UploadId=upload_id), self._where(job))
        except Exception:  # noqa: BLE001 - the bucket's lifecycle rule removes what we could not
            log.warning("could not abort an unused upload", extra={"job": job.job_id})
