"""A new attempt for a finished job: a FAILED one (`s3sync retry`), or a DONE one whose copy is gone or differs
(`s3sync backfill`, the scheduled finder, an identical object written again after a propagated delete).

A job's id is derived from the object (bucket, key, version, ETag), so a new attempt reuses the job item:
1. HEAD the source: gone -> nothing to do; another ETag -> the object changed: split it as the new job it is;
2. plan again (with the job's part size, unless another is asked for) and create the destination upload;
3. claim the job with one conditional write: status still what we read AND `updated_at` unchanged -> PLANNED, with
   the new upload, a fresh `remaining` and counters, the old error kept as `previous_error`. Two retries of the same
   job cannot both win; the loser aborts its upload;
4. delete the old attempt's part items (the parts table is keyed (job, part): left there, they would make every part
   of the new attempt look counted already). Only the claim's winner deletes, and before any part is enqueued;
5. enqueue every part (Splitter.enqueue), then PLANNED -> COPYING.
A crash between 3 and 4 leaves old part items that make the new attempt stall: the sweeper fails it after its
re-drives ("parts never copied: []"), and a second retry then succeeds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any


from s3sync.contract import PARTS_HASH_KEY, PARTS_RANGE_KEY, TRANSFERS_HASH_KEY, Status
from s3sync.transfer.credentials import DestClient
from s3sync.transfer.errors import PermanentError, classify
from s3sync.transfer.events import ObjectRef
from s3sync.transfer.ledger import NO_UPLOAD, Job, Ledger, now
from s3sync.transfer.plan import MIN_PART_SIZE, plan
from s3sync.transfer.splitter import Splitter, kept_headers

log = logging.getLogger("s3sync.reattempt")

_BATCH = 25  # BatchWriteItem limit


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
        the_plan = plan(size, self.part_size or max(job.part_size, MIN_PART_SIZE))
        upload_id = NO_UPLOAD
        if the_plan.multipart:
            params = self.splitter.upload_params(kept_headers(head))  # headers, metadata, encryption
            upload_id = self.dest.call(lambda c: c.create_multipart_upload(
                Bucket=job.dest_bucket, Key=job.dest_key, **params)["UploadId"], self._where(job))
        claimed = self._claim(job, size, the_plan.part_size, the_plan.parts, upload_id)
        if claimed is None:
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
            if isinstance(err, PermanentError):
                return None
            raise err from exc

    def _claim(self, job: Job, size: int, part_size: int, total: int, upload_id: str) -> Job | None:
        return self.ledger.update_job(
            job.job_id,
            "SET #s = :planned, #upload = :upload, #size = :size, #ps = :ps, #total = :total, "
            "#remaining = :total, #done = :zero, #done_bytes = :zero, #ca = :zero, #redrives = :zero, "
            "#updated = :now, #prev = :prev REMOVE #e, #dest_etag ADD #attempts :one",
            "#s = :seen_status AND #updated = :seen",
            {":planned": Status.PLANNED, ":upload": upload_id, ":size": size, ":ps": part_size, ":total": total,
             ":zero": 0, ":one": 1, ":now": now(), ":seen_status": job.status, ":seen": job.updated_at,
             ":prev": (job.error or f"re-copied after {job.status}")[:1000]},
            {  # every name aliased: several are DynamoDB reserved words (size, total)
                "#e": "error", "#upload": "upload_id", "#size": "size", "#ps": "part_size", "#total": "total",
                "#remaining": "remaining", "#done": "done", "#done_bytes": "done_bytes", "#ca": "completion_attempts",
                "#redrives": "redrives", "#updated": "updated_at", "#prev": "previous_error",
                "#dest_etag": "dest_etag", "#attempts": "attempts",
            },
        )

    def _finish(self, job: Job, detail: str) -> ReattemptResult:
        dropped = self.delete_parts(job.job_id)
        sent = self.splitter.enqueue(job)
        self.ledger.mark_copying(job.job_id)
        log.warning("job re-attempted", extra={"job": job.job_id, "key": job.source_key, "parts": sent,
                                               "old_parts_dropped": dropped, "detail": detail})
        return ReattemptResult(job.job_id, "requeued", detail, sent)

    def delete_parts(self, job_id: str) -> int:
        """Delete every part item of a job (paginated query, batched deletes); returns how many."""
        numbers = [p.part for p in self.ledger.parts(job_id)]
        ser = _Ser()
        for i in range(0, len(numbers), _BATCH):
            requests = [{"DeleteRequest": {"Key": ser.item({PARTS_HASH_KEY: job_id, PARTS_RANGE_KEY: n})}}
                        for n in numbers[i:i + _BATCH]]
            pending: dict[str, Any] = {self.ledger.parts_table: requests}
            for attempt in range(8):
                resp = self.ledger.ddb.batch_write_item(RequestItems=pending)
                pending = resp.get("UnprocessedItems") or {}
                if not pending:
                    break
                time.sleep(min(2.0, 0.05 * 2 ** attempt))
            else:
                raise PermanentError(f"could not delete the old parts of job {job_id} (throttled)")
        return len(numbers)

    def _where(self, job: Job) -> str:
        return f"s3://{job.dest_bucket}/{job.dest_key} at {self.dest.endpoint.describe()}"

    def _abort(self, job: Job, upload_id: str) -> None:
        try:
            self.dest.call(lambda c: c.abort_multipart_upload(Bucket=job.dest_bucket, Key=job.dest_key,
                                                              UploadId=upload_id), self._where(job))
        except Exception:  # noqa: BLE001 - the bucket's lifecycle rule removes what we could not
            log.warning("could not abort an unused upload", extra={"job": job.job_id})


class _Ser:
    def __init__(self) -> None:
        from boto3.dynamodb.types import TypeSerializer

        self._s = TypeSerializer()

    def item(self, values: dict[str, Any]) -> dict[str, Any]:
        return {k: self._s.serialize(v) for k, v in values.items()}
