"""Completion: finish an object whose parts are all counted, exactly once, verified; or clean up a failed one.

The stream filter delivers (a) jobs whose `remaining` reached 0 while COPYING and (b) jobs that just turned FAILED.
For (a) a conditional COPYING -> COMPLETING update elects one caller and gives it a lease, so duplicate stream
records do nothing and every later write of this completion is conditioned on the lease.

Multipart: the parts counted in the ledger (this attempt's) are reconciled with ListParts. A part whose listed ETag
is the MD5 counted (or, under SSE-KMS, whose size is right: a second upload of the same bytes gets a new ETag there)
is what the destination completes with, by its *listed* ETag; a part missing or different at the destination is
taken back from the ledger and sent again, and the job waits for it (never failed for a slow or raced duplicate).
CompleteMultipartUpload's ETag must equal md5(concat(part MD5s))-N, unless S3 wrote the object under a KMS key (its
ETags are no MD5s: s3sync.transfer.encryption; every part's bytes were then checked by S3 against its Content-MD5).
NoSuchUpload means an earlier completion went through but its answer was lost, or the upload was aborted from
outside (a lifecycle rule, an operator): only proof that the destination object is this job's copy (the expected
multipart ETag, or the `s3sync-job` marker the copy was created with) makes the job DONE; otherwise it FAILS with
that reason. Whole objects: the worker's PutObject is verified the same way (size, MD5 ETag where comparable, the
marker).

After DONE, the newest source version wins (s3sync.transfer.newest): jobs for two versions of one key may finish in
any order, so each looks at the source's current version and the destination's marker once its own copy is DONE,
and re-copies whichever job's copy an older one overwrote.

A passing failure hands the job back (COMPLETING -> COPYING), which writes a new stream record and so tries again;
a permanent one marks the job FAILED, whose stream record brings (b): abort the upload and notify.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from s3sync.contract import Status
from s3sync.transfer.checksums import is_md5_etag, multipart_etag, strip_etag
from s3sync.transfer.credentials import DestClient
from s3sync.transfer.encryption import kms_encrypted
from s3sync.transfer.errors import PermanentError, RetryableError, TransferError, classify, side_of
from s3sync.transfer.events import StreamChange
from s3sync.transfer.ledger import Job, Ledger, PartRecord
from s3sync.transfer.newest import Newest
from s3sync.transfer.notify import Notifier
from s3sync.transfer.splitter import marker_of

log = logging.getLogger("s3sync.completion")

MAX_COMPLETION_ATTEMPTS = 5


@dataclass(frozen=True)
class CompletionResult:
    job_id: str
    outcome: str  # "done", "failed", "retry", "skipped", "cleaned"
    detail: str = ""


class Requeued(Exception):
    """Parts were taken back from the ledger and sent again: the job went back to COPYING."""


class Completer:
    """`requeue(job, parts)` sends parts of a job again (Splitter.enqueue); `newest` keeps the newest source version
    at the destination (s3sync.transfer.newest). Without them, a wrong part fails the job and versions are not
    compared."""

    def __init__(self, *, dest: DestClient | Any, ledger: Ledger, notifier: Notifier | None = None,
                 requeue: Callable[[Job, set[int]], int] | None = None, newest: Newest | None = None) -> None:
        self.ledger, self.notifier = ledger, notifier or Notifier()
        self.dest = dest if isinstance(dest, DestClient) else DestClient.fixed(dest)
        self.requeue, self.newest = requeue, newest

    def on_change(self, change: StreamChange) -> CompletionResult:
        new = change.new or {}
        job_id = str(change.keys.get("job_id") or new.get("job_id") or "")
        status = new.get("status")
        if change.event_name == "REMOVE" or not job_id:
            return CompletionResult(job_id, "skipped", "not an update")
        if status == Status.COPYING and new.get("remaining") == 0:
            return self.complete(job_id)
        old_status = (change.old or {}).get("status")
        if status == Status.FAILED and old_status != Status.FAILED:
            return self.clean_up_failed(Job.from_item(new))
        return CompletionResult(job_id, "skipped", f"status {status}")

    # --- the happy path -------------------------------------------------------------------------------------------
    def complete(self, job_id: str) -> CompletionResult:
        job = self.ledger.elect_completion(job_id)
        if job is None:
            done = self.ledger.get_job(job_id) if self.newest is not None else None
            if done is not None and done.status == Status.DONE and self.newest is not None:
                # a record delivered again: the version check again (it may have failed after DONE: a raise here
                # has the record retried)
                self.newest.keep(done)
            return CompletionResult(job_id, "skipped", "another completion holds it, or it is not ready")
        try:
            parts = self._checked_parts(job)
            etag = self._complete_multipart(job, parts) if job.multipart else self._verify_whole(job, parts)
        except Requeued as exc:
            return CompletionResult(job_id, "requeued", str(exc))
        except TransferError as exc:
            return self._handle_failure(job, exc)
        except Exception as exc:  # noqa: BLE001
            return self._handle_failure(job, classify(exc, side_of(exc, "destination")))
        if self.ledger.mark_done(job, etag) is None:
            return CompletionResult(job_id, "skipped", "the lease was taken back while finishing")
        log.info("done", extra={"job": job_id, "key": job.dest_key, "etag": etag, "parts": job.total})
        self.notifier.done(job, etag)
        if self.newest is not None:
            self.newest.keep(job)
        return CompletionResult(job_id, "done", etag)

    def _checked_parts(self, job: Job) -> list[PartRecord]:
        parts = self.ledger.parts(job.job_id, job.attempt)
        numbers = [p.part for p in parts]
        if numbers != list(range(1, job.total + 1)):
            missing = sorted(set(range(1, job.total + 1)) - set(numbers))[:10]
            raise PermanentError(f"ledger holds {len(parts)} of {job.total} parts (missing {missing})")
        recorded = sum(p.size for p in parts)
        if recorded != job.size:
            raise PermanentError(f"recorded parts add up to {recorded} bytes, the object has {job.size}")
        return parts

    def _where(self, job: Job) -> str:
        return f"s3://{job.dest_bucket}/{job.dest_key} at {self.dest.endpoint.describe()}"

    def _listed_parts(self, job: Job) -> dict[int, tuple[str, int]]:
        listed: dict[int, tuple[str, int]] = {}
        kwargs: dict[str, Any] = {"Bucket": job.dest_bucket, "Key": job.dest_key, "UploadId": job.upload_id}
        while True:
            resp = self.dest.call(lambda c: c.list_parts(**kwargs), self._where(job))
            for p in resp.get("Parts", []):
                listed[int(p["PartNumber"])] = (strip_etag(p["ETag"]), int(p.get("Size", -1)))
            if not resp.get("IsTruncated"):
                return listed
            kwargs["PartNumberMarker"] = resp["NextPartNumberMarker"]

    @staticmethod
    def _holds(record: PartRecord, listed: tuple[str, int] | None) -> bool:
        """Whether the destination's part is the one counted: its ETag is the one recorded or the MD5 of the
        bytes read, or (SSE-KMS: ETags differ per upload of the same bytes, each upload checked by Content-MD5)
        it has the counted size."""
        if listed is None:
            return False
        etag, size = listed
        if size not in (-1, record.size):
            return False
        return etag in (strip_etag(record.etag), record.md5) or record.kms

    def _complete_multipart(self, job: Job, parts: list[PartRecord]) -> str:
        expected = multipart_etag(p.md5 for p in parts)
        try:
            listed = self._listed_parts(job)
            wrong = [p for p in parts if not self._holds(p, listed.get(p.part))]
            if wrong:
                self._send_again(job, wrong, listed)
            resp = self.dest.call(lambda c: c.complete_multipart_upload(
                Bucket=job.dest_bucket, Key=job.dest_key, UploadId=job.upload_id,
                MultipartUpload={"Parts": [{"PartNumber": p.part, "ETag": f'"{listed[p.part][0]}"'}
                                           for p in parts]},
            ), self._where(job))
        except TransferError as exc:
            if exc.code == "NoSuchUpload":  # completed by an earlier attempt that died before DONE, or aborted
                return self._already_completed(job, expected)
            if exc.code in ("InvalidPart", "InvalidPartOrder"):  # a duplicate upload raced ListParts: list again
                raise RetryableError(f"{exc.reason}; parts are listed again", exc.code) from exc
            raise
        got = strip_etag(resp.get("ETag", ""))
        md5_based = "-" in got and not kms_encrypted(resp)
        if md5_based and got != expected:
            raise PermanentError(f"checksum mismatch: destination ETag {got}, parts give {expected}")
        if not md5_based:  # SSE-KMS (or a server without "-N" ETags): the per-part Content-MD5 checks are what we have
            log.info("destination ETag is not multipart-MD5; verified per part only",
                     extra={"job": job.job_id, "etag": got, "sse": resp.get("ServerSideEncryption", "")})
        return expected

    def _send_again(self, job: Job, wrong: list[PartRecord], listed: dict[int, tuple[str, int]]) -> None:
        """Parts counted whose bytes the destination does not hold (missing, or another size or MD5): take them
        back and send them again; the job returns to COPYING and completes once they are counted."""
        numbers = [p.part for p in wrong]
        seen = [listed.get(n) for n in numbers[:3]]
        detail = f"destination holds other parts than the ledger for {numbers[:10]} (listed {seen})"
        if self.requeue is None:
            raise PermanentError(detail)
        for record in wrong:
            if not self.ledger.uncount_part(job, record):
                raise Requeued("lease taken back while parts were re-queued")
        self.ledger.release_completion(job)
        sent = self.requeue(job, set(numbers))
        log.warning("parts sent again", extra={"job": job.job_id, "parts": numbers[:20], "sent": sent,
                                               "reason": detail})
        raise Requeued(detail)

    def _is_ours(self, head: dict[str, Any], job: Job) -> bool:
        return marker_of(head.get("Metadata")) == job.job_id

    def _already_completed(self, job: Job, expected: str) -> str:
        """The upload is gone. DONE only on proof that the destination object is this job's copy: S3's multipart
        ETag equals the parts', or the object carries this job's marker (servers that show a whole-object MD5,
        SSE-KMS objects). An object of the right size is no proof: it may be an older copy."""
        try:
            head = self.dest.call(lambda c: c.head_object(Bucket=job.dest_bucket, Key=job.dest_key),
                                  self._where(job))
        except TransferError as exc:
            if exc.code not in ("NoSuchKey", "404"):
                raise
            head = {"ContentLength": -1, "ETag": ""}
        got = strip_etag(head["ETag"])
        if int(head["ContentLength"]) == job.size and (got == expected or self._is_ours(head, job)):
            return expected
        raise PermanentError(f"destination multipart upload no longer exists (aborted before completion: a "
                             f"lifecycle rule or an operator?) and the object there is not this copy (size "
                             f"{head['ContentLength']}, ETag {got or '-'}; expected {job.size} bytes, {expected})")

    def _verify_whole(self, job: Job, parts: list[PartRecord]) -> str:
        head = self.dest.call(lambda c: c.head_object(Bucket=job.dest_bucket, Key=job.dest_key), self._where(job))
        got = strip_etag(head["ETag"])
        if not self._is_ours(head, job):  # another copy landed on the key after ours
            if self.newest is not None and self.newest.source_moved_on(job):
                raise PermanentError("superseded: the source holds a newer version, whose copy replaced this one")
            self._send_again(job, parts, {1: (got, int(head["ContentLength"]))})
        if int(head["ContentLength"]) != job.size:
            raise PermanentError(f"destination object has {head['ContentLength']} bytes, expected {job.size}")
        if is_md5_etag(got) and got != parts[0].md5 and not kms_encrypted(head):  # SSE-KMS: Content-MD5 checked it
            raise PermanentError(f"checksum mismatch: destination ETag {got}, source bytes MD5 {parts[0].md5}")
        return parts[0].md5

    def _handle_failure(self, job: Job, exc: TransferError) -> CompletionResult:
        if exc.retryable and job.completion_attempts + 1 < MAX_COMPLETION_ATTEMPTS:
            log.warning("completion will retry", extra={"job": job.job_id, "reason": exc.reason})
            self.ledger.release_completion(job)
            return CompletionResult(job.job_id, "retry", exc.reason)
        log.error("completion failed", extra={"job": job.job_id, "reason": exc.reason})
        self.ledger.mark_failed(job, exc.reason, by="lease")
        return CompletionResult(job.job_id, "failed", exc.reason)

    # --- the failure path -----------------------------------------------------------------------------------------
    def clean_up_failed(self, job: Job) -> CompletionResult:
        """A job just turned FAILED: abort its upload (parts stop costing storage) and tell the user why."""
        if job.multipart:
            try:
                self.dest.call(lambda c: c.abort_multipart_upload(Bucket=job.dest_bucket, Key=job.dest_key,
                                                                  UploadId=job.upload_id), self._where(job))
            except TransferError as exc:
                if exc.code not in ("NoSuchUpload", "404"):
                    raise
        self.notifier.failed(job)
        return CompletionResult(job.job_id, "cleaned", job.error or "")
