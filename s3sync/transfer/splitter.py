"""The splitter: HEAD the new object, plan it, write the job, create the multipart upload, enqueue its parts.

Idempotent: the job id is derived from the object's identity (bucket, key, version, ETag), so a repeated S3 event
finds the job and stops; a splitter that died while enqueueing left the job PLANNED, and the next attempt enqueues
every part again (the ledger ignores parts counted twice) before it moves the job to COPYING.

The job's conditional create can be applied and its answer lost; botocore's retry then fails the condition. The
splitter then reads the job back: if it names the attempt token this splitter drew, the job is its own and it goes
on; only an upload that the job does not name is aborted.

A source object that cannot be read is never skipped silently: 404 (missing: deleted before we looked, its delete
event follows) is skipped; anything else permanent (403: a bucket policy, a KMS key the role may not use, a missing
permission; an archived object) becomes a FAILED job with the reason, so the user is told and `s3sync retry` can
copy it once fixed. (S3 answers 403 rather than 404 for a missing key when the caller lacks s3:ListBucket: the
splitter's role has it, so 403 means refused.)

Every copy carries the user metadata `s3sync-job` = its job id (set at CreateMultipartUpload / PutObject): after
a lost answer, the completion recognises its own copy by it (an object of the same size is no proof).

Small objects (copied whole, up to Settings.inline_max_bytes) are copied here, at once: GET pinned to the ETag,
PutObject with Content-MD5, the kept headers, metadata, marker and encryption, then the job is written DONE in one
conditional put (no part message, worker, stream record or completion: a fraction of the requests). The copy is
verified as a worker's is (the ETag is the MD5 sent unless SSE-KMS; the destination checked Content-MD5). Written
again by a repeated event, a small object is copied again (the same bytes) before the put finds its job: cheaper
than asking the ledger first for every object; when that job is DONE the newest-version check runs again, since a
late event for an old version has just written that version over whatever the key held. A refusal makes a FAILED job
(the completion function then sends the notice); a passing error raises, and the event is delivered again.
"""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from s3sync.contract import Status
from s3sync.transfer import logs
from s3sync.transfer.copier import copy_message
from s3sync.transfer.credentials import DestClient
from s3sync.transfer.errors import PermanentError, RetryableError, classify
from s3sync.transfer.events import ObjectRef
from s3sync.transfer.ledger import NO_UPLOAD, Job, Ledger, now, token
from s3sync.transfer.message import KEPT_HEADERS, PartMessage
from s3sync.transfer.notify import Notifier
from s3sync.transfer.plan import plan
from s3sync.transfer.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

    from s3sync.transfer.newest import Newest

log = logging.getLogger("s3sync.splitter")

SEND_BATCH = 10  # SQS SendMessageBatch limit
SEND_ATTEMPTS = 5
MARKER = "s3sync-job"  # destination user metadata: the job whose copy the object is
MISSING_CODES = ("NoSuchKey", "NoSuchVersion", "404")


def marker_of(metadata: dict[str, Any] | None) -> str:
    """The job id a destination object's metadata names (keys are case-blind: some servers capitalise them)."""
    return next((str(v) for k, v in (metadata or {}).items() if k.lower() == MARKER), "")


def source_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    """A copy's user metadata as the source had it: keys lower-cased (as S3 gives them), the marker left out."""
    return {k.lower(): v for k, v in (metadata or {}).items() if k.lower() != MARKER}


def job_id_for(bucket: str, key: str, version_id: str | None, etag: str) -> str:
    ident = "\0".join((bucket, key, version_id or "", etag.strip('"')))
    return hashlib.sha256(ident.encode("utf-8")).hexdigest()[:32]


def kept_headers(head: dict[str, Any]) -> dict[str, Any]:
    headers = {k: head[k] for k in KEPT_HEADERS if head.get(k)}
    if head.get("Metadata"):
        headers["Metadata"] = dict(head["Metadata"])
    return headers


@dataclass(frozen=True)
class SplitResult:
    job_id: str
    # "planned", "copied" (a small object, by the splitter), "copied-again" (its job existed: the same bytes written
    # again), "resumed", "duplicate", "missing", "failed", "refused"
    outcome: str
    parts: int = 0


class Splitter:
    def __init__(self, *, source: Any, dest: DestClient | Any, sqs: SQSClient, ledger: Ledger, settings: Settings,
                 send_threads: int = 1, notifier: Notifier | None = None, newest: Newest | None = None) -> None:
        self.source, self.sqs, self.ledger = source, sqs, ledger
        self.notifier = notifier or Notifier()  # "transfer complete" for the small objects copied here
        self.newest = newest  # the newest source version wins (s3sync.transfer.newest), for those too
        self.dest = dest if isinstance(dest, DestClient) else DestClient.fixed(dest)
        self.settings = settings.require("queue_url", "transfers_table", "parts_table")
        # One sender by default: the parts are queued in part order, so workers take them roughly in order. S3
        # does not care; S3-compatible servers that stream a multipart upload to disk do: rclone serve s3 holds
        # out-of-order parts in a bounded buffer and blocks the uploads beyond it, and with parallel senders
        # (whose batches land in random order) every copy thread ended up blocked on a late part while the parts
        # it waited for sat in the queue (bench B1: 100 s instead of 8). Measured cost (bench B3, 10,000 parts
        # to the local control plane): 8.75 s in order vs 8.40 s with 8 senders.
        self.send_threads = send_threads

    def split(self, ref: ObjectRef) -> SplitResult:
        self.settings.require("dest_bucket")
        kwargs: dict[str, Any] = {"Bucket": ref.bucket, "Key": ref.key}
        if ref.version_id:
            kwargs["VersionId"] = ref.version_id
        try:
            head = self.source.head_object(**kwargs)
        except Exception as exc:  # noqa: BLE001
            err = classify(exc, "source")
            if not isinstance(err, PermanentError):
                raise err from exc
            if err.code in MISSING_CODES:  # deleted before we looked: nothing to copy (its delete event follows)
                log.warning("source object gone before splitting",
                            extra={"bucket": ref.bucket, "key": ref.key, "reason": err.reason})
                return SplitResult(job_id="", outcome="missing")
            return self._refused(ref, err.reason)
        etag = head["ETag"]
        version = head.get("VersionId") if ref.version_id else None
        job_id = job_id_for(ref.bucket, ref.key, version, etag)
        size = int(head["ContentLength"])
        the_plan = plan(size, self.settings.part_size)
        dest_key = self.settings.dest_prefix + ref.key
        headers = kept_headers(head)
        if not the_plan.multipart and size <= self.settings.inline_max_bytes:
            ts = now()
            return self._copy_inline(Job(
                job_id=job_id, status=Status.DONE, source_bucket=ref.bucket, source_key=ref.key, source_etag=etag,
                source_version=version, dest_bucket=self.settings.dest_bucket, dest_key=dest_key, size=size,
                part_size=size, total=1, remaining=0, done=1, done_bytes=size, created_at=ts, updated_at=ts,
                attempt=token(), inline=True), headers)
        existing = self.ledger.get_job(job_id)
        if existing is not None:
            return self._resume(existing)
        upload_id = NO_UPLOAD
        failure = ""
        if the_plan.multipart:
            where = f"s3://{self.settings.dest_bucket}/{dest_key} at {self.dest.endpoint.describe()}"
            params = self.upload_params(headers, job_id)  # headers, metadata, encryption
            try:
                upload_id = self.dest.call(lambda c: c.create_multipart_upload(
                    Bucket=self.settings.dest_bucket, Key=dest_key, **params)["UploadId"], where)
            except PermanentError as exc:  # recorded as a FAILED job below, so that the user is told
                failure = exc.reason
        ts = now()
        job = Job(job_id=job_id, status=Status.PLANNED, source_bucket=ref.bucket, source_key=ref.key,
                  source_etag=etag, source_version=version, dest_bucket=self.settings.dest_bucket,
                  dest_key=dest_key, size=size, part_size=the_plan.part_size, total=the_plan.parts,
                  remaining=the_plan.parts, upload_id=upload_id, created_at=ts, updated_at=ts, attempt=token())
        if not self.ledger.create_job(job):
            existing = self.ledger.get_job(job_id)
            if existing is None or existing.attempt != job.attempt:  # another splitter won: follow theirs
                if upload_id != NO_UPLOAD:
                    self._abort(dest_key, upload_id)
                return self._resume(existing) if existing else SplitResult(job_id, "duplicate")
            job = existing  # our own write: its answer was lost and botocore's retry failed the condition
        if failure:
            log.error("destination refused the upload", extra={"job": job_id, "key": ref.key, "reason": failure})
            self.ledger.mark_failed(job, failure, by="attempt")
            return SplitResult(job_id, "failed", the_plan.parts)
        log.info("planned", extra={"job": job_id, "key": ref.key, "size": size, "parts": the_plan.parts,
                                   "part_size": the_plan.part_size})
        self._enqueue(job, headers)
        self.ledger.mark_copying(job)
        return SplitResult(job_id, "planned", the_plan.parts)

    def _copy_inline(self, job: Job, headers: dict[str, Any]) -> SplitResult:
        """A small object copied here and its job written DONE (see the module's docstring)."""
        msg = self.messages(job, headers)[0]
        try:
            copied = self.dest.call(lambda c: copy_message(self.source, c, msg))
        except PermanentError as exc:  # a FAILED job, whose stream record has completion send the notice
            # the reason names both ends, as a worker's does
            reason = (f"{exc.reason} [s3://{job.source_bucket}/{job.source_key} -> "
                      f"s3://{job.dest_bucket}/{job.dest_key} at {self.dest.endpoint.describe()}]")
            failed = replace(job, status=Status.PLANNED, remaining=1, done=0, done_bytes=0)
            if self.ledger.create_job(failed) or self._ours(failed):
                log.error("small object not copied", extra={"job": job.job_id, "key": job.source_key,
                                                            "reason": reason})
                self.ledger.mark_failed(failed, reason, by="attempt")
                return SplitResult(job.job_id, "failed", 1)
            return SplitResult(job.job_id, "duplicate", 1)
        job = replace(job, dest_etag=copied.md5)
        if not self.ledger.create_job(job):
            existing = self.ledger.get_job(job.job_id)
            if existing is None or existing.attempt != job.attempt:  # not our write whose answer was lost
                log.info("small object copied again; its job exists",
                         extra={"job": job.job_id, "key": job.source_key})
                if existing is not None and existing.status == Status.DONE and self.newest is not None:
                    # an old version's event delivered late: this copy may have replaced a newer version's
                    self.newest.keep(existing)
                return SplitResult(job.job_id, "copied-again", 1)
        log.info("copied", extra={"job": job.job_id, "key": job.source_key, "size": job.size})
        self.notifier.done(job, copied.md5)
        if self.newest is not None:
            self.newest.keep(job)
        return SplitResult(job.job_id, "copied", 1)

    def _ours(self, job: Job) -> bool:
        """After a conditional create failed: whether the job is ours (the create went through, its answer lost)."""
        existing = self.ledger.get_job(job.job_id)
        return existing is not None and existing.attempt == job.attempt

    def _refused(self, ref: ObjectRef, reason: str) -> SplitResult:
        """The source refused the HEAD (403, archived, ...): a FAILED job with the reason, never a silent skip.
        Its id uses the event's ETag (the object could not be read); `s3sync retry` re-reads it once fixed."""
        job_id = job_id_for(ref.bucket, ref.key, ref.version_id, ref.etag or "")
        ts = now()
        job = Job(job_id=job_id, status=Status.PLANNED, source_bucket=ref.bucket, source_key=ref.key,
                  source_etag=ref.etag or "", source_version=ref.version_id, dest_bucket=self.settings.dest_bucket,
                  dest_key=self.settings.dest_prefix + ref.key, size=int(ref.size or 0), part_size=0, total=1,
                  remaining=1, created_at=ts, updated_at=ts, attempt=token())
        if not self.ledger.create_job(job):
            existing = self.ledger.get_job(job_id)
            if existing is None or existing.attempt != job.attempt:
                return SplitResult(job_id, "duplicate")
        log.error("source refused the object", extra={"job": job_id, "key": ref.key, "reason": reason})
        self.ledger.mark_failed(job, reason, by="attempt")
        return SplitResult(job_id, "refused")

    def _resume(self, job: Job) -> SplitResult:
        if job.status != Status.PLANNED:
            return SplitResult(job.job_id, "duplicate", job.total)
        self.enqueue(job)
        self.ledger.mark_copying(job)
        return SplitResult(job.job_id, "resumed", job.total)

    def enqueue(self, job: Job, only: set[int] | None = None) -> int:
        """(Re-)send the messages of a job's parts (all, or the part numbers in `only`); returns how many."""
        headers: dict[str, Any] = {}
        if not job.multipart:
            kwargs: dict[str, Any] = {"Bucket": job.source_bucket, "Key": job.source_key, "IfMatch": job.source_etag}
            if job.source_version:
                kwargs["VersionId"] = job.source_version
            try:
                headers = kept_headers(self.source.head_object(**kwargs))
            except Exception as exc:  # noqa: BLE001
                raise classify(exc, "source") from exc
        msgs = [m for m in self.messages(job, headers) if only is None or m.part_number in only]
        self._send(msgs)
        return len(msgs)

    def upload_params(self, headers: dict[str, Any], job_id: str) -> dict[str, Any]:
        """What the destination object is written with: the source's kept headers and metadata, the job's marker
        (MARKER) and the configured server-side encryption (CreateMultipartUpload here and in a re-attempt;
        PutObject via the part message)."""
        metadata = {**headers.get("Metadata", {}), MARKER: job_id}
        return {**headers, "Metadata": metadata, **self.settings.dest_encryption.request_params()}

    def messages(self, job: Job, headers: dict[str, Any]) -> list[PartMessage]:
        the_plan = plan(job.size, job.part_size) if job.multipart else None
        if not job.multipart:
            headers = self.upload_params(headers, job.job_id)
        out = []
        for n in range(1, job.total + 1):
            start, end = the_plan.byte_range(n) if the_plan else (0, job.size - 1)
            out.append(PartMessage(
                job_id=job.job_id, source_bucket=job.source_bucket, source_key=job.source_key,
                source_etag=job.source_etag, source_version=job.source_version, dest_bucket=job.dest_bucket,
                dest_key=job.dest_key, part_number=n, total_parts=job.total, start=start, end=end,
                upload_id=job.upload_id if job.multipart else None, attempt=job.attempt,
                headers={} if job.multipart else headers,
            ))
        return out

    def _enqueue(self, job: Job, headers: dict[str, Any]) -> None:
        self._send(self.messages(job, headers))

    def _send(self, msgs: list[PartMessage]) -> None:
        batches = [msgs[i:i + SEND_BATCH] for i in range(0, len(msgs), SEND_BATCH)]
        if len(batches) == 1:
            self._send_batch(batches[0])
            return
        with ThreadPoolExecutor(max_workers=min(self.send_threads, len(batches))) as pool:
            list(pool.map(logs.in_this_context(self._send_batch), batches))

    def _send_batch(self, batch: list[PartMessage]) -> None:
        pending = {str(m.part_number): m.encode() for m in batch}
        for _ in range(SEND_ATTEMPTS):
            resp = self.sqs.send_message_batch(
                QueueUrl=self.settings.queue_url,
                Entries=[{"Id": i, "MessageBody": body} for i, body in pending.items()],
            )
            failed = resp.get("Failed") or []
            pending = {f["Id"]: pending[f["Id"]] for f in failed}
            if not pending:
                return
        raise RetryableError(f"SQS refused {len(pending)} part message(s): {failed[0].get('Message', '')}")

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self.dest.call(lambda c: c.abort_multipart_upload(Bucket=self.settings.dest_bucket, Key=key,
                                                              UploadId=upload_id))
        except Exception:  # noqa: BLE001 - the lifecycle rule removes what we could not
            log.warning("could not abort a duplicate upload", extra={"key": key})
