"""Completion: finish an object whose parts are all counted, exactly once, verified; or clean up a failed one.

The stream filter delivers (a) jobs whose `remaining` reached 0 while COPYING and (b) jobs that just turned FAILED.
For (a) a conditional COPYING -> COMPLETING update elects one caller, so duplicate stream records do nothing.
The parts recorded in the ledger are cross-checked with ListParts, CompleteMultipartUpload is called once, and the
ETag it returns must equal md5(concat(part MD5s))-N, unless S3 wrote the object under a KMS key (its ETags are no
MD5s: s3sync.transfer.encryption; every part's bytes were then checked by S3 against its Content-MD5). A passing
failure hands the job back (COMPLETING -> COPYING), which writes a new stream record and so tries again; a permanent
one marks the job FAILED, whose stream record brings (b): abort the upload and notify.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from s3sync.contract import Status
from s3sync.transfer.checksums import is_md5_etag, multipart_etag, strip_etag
from s3sync.transfer.credentials import DestClient
from s3sync.transfer.encryption import kms_encrypted
from s3sync.transfer.errors import PermanentError, TransferError, classify
from s3sync.transfer.events import StreamChange
from s3sync.transfer.ledger import Job, Ledger, PartRecord

log = logging.getLogger("s3sync.completion")

MAX_COMPLETION_ATTEMPTS = 5


@dataclass(frozen=True)
class CompletionResult:
    job_id: str
    outcome: str  # "done", "failed", "retry", "skipped", "cleaned"
    detail: str = ""


class Completer:
    def __init__(self, *, dest: DestClient | Any, ledger: Ledger, sns: Any | None = None,
                 topic_arn: str = "") -> None:
        self.ledger, self.sns, self.topic_arn = ledger, sns, topic_arn
        self.dest = dest if isinstance(dest, DestClient) else DestClient.fixed(dest)

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
            return CompletionResult(job_id, "skipped", "another completion holds it, or it is not ready")
        try:
            parts = self._checked_parts(job)
            etag = self._complete_multipart(job, parts) if job.multipart else self._verify_whole(job, parts)
        except TransferError as exc:
            return self._handle_failure(job, exc)
        except Exception as exc:  # noqa: BLE001
            return self._handle_failure(job, classify(exc, "destination"))
        if self.ledger.mark_done(job_id, etag) is None:
            return CompletionResult(job_id, "skipped", "job left COMPLETING while finishing")
        log.info("done", extra={"job": job_id, "key": job.dest_key, "etag": etag, "parts": job.total})
        self._publish(f"s3sync: transfer complete: {job.source_key}"[:100], {
            "status": Status.DONE, "job": job_id, "source": f"s3://{job.source_bucket}/{job.source_key}",
            "destination": f"s3://{job.dest_bucket}/{job.dest_key}", "size": job.size, "parts": job.total,
            "etag": etag,
        })
        return CompletionResult(job_id, "done", etag)

    def _checked_parts(self, job: Job) -> list[PartRecord]:
        parts = self.ledger.parts(job.job_id)
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

    def _listed_parts(self, job: Job) -> dict[int, str]:
        listed: dict[int, str] = {}
        kwargs: dict[str, Any] = {"Bucket": job.dest_bucket, "Key": job.dest_key, "UploadId": job.upload_id}
        while True:
            resp = self.dest.call(lambda c: c.list_parts(**kwargs), self._where(job))
            for p in resp.get("Parts", []):
                listed[int(p["PartNumber"])] = strip_etag(p["ETag"])
            if not resp.get("IsTruncated"):
                return listed
            kwargs["PartNumberMarker"] = resp["NextPartNumberMarker"]

    def _complete_multipart(self, job: Job, parts: list[PartRecord]) -> str:
        expected = multipart_etag(p.md5 for p in parts)
        try:
            listed = self._listed_parts(job)
            wrong = [p.part for p in parts if listed.get(p.part) != strip_etag(p.etag)]
            if wrong:
                raise PermanentError(f"destination holds other bytes than the ledger for parts {wrong[:10]}")
            resp = self.dest.call(lambda c: c.complete_multipart_upload(
                Bucket=job.dest_bucket, Key=job.dest_key, UploadId=job.upload_id,
                MultipartUpload={"Parts": [{"PartNumber": p.part, "ETag": f'"{p.etag}"'} for p in parts]},
            ), self._where(job))
        except TransferError as exc:
            if exc.code == "NoSuchUpload":  # completed by an earlier attempt that died before DONE
                return self._already_completed(job, expected)
            raise
        got = strip_etag(resp.get("ETag", ""))
        md5_based = "-" in got and not kms_encrypted(resp)
        if md5_based and got != expected:
            raise PermanentError(f"checksum mismatch: destination ETag {got}, parts give {expected}")
        if not md5_based:  # SSE-KMS (or a server without "-N" ETags): the per-part Content-MD5 checks are what we have
            log.info("destination ETag is not multipart-MD5; verified per part only",
                     extra={"job": job.job_id, "etag": got, "sse": resp.get("ServerSideEncryption", "")})
        return expected

    def _already_completed(self, job: Job, expected: str) -> str:
        """The upload is gone: an earlier CompleteMultipartUpload went through but its answer was lost.

        S3 keeps the multipart ETag, which must then equal the parts'; servers that show a whole-object MD5, or
        SSE-KMS objects, give a plain or another ETag: then size is what can be checked (each part was already
        checked by its Content-MD5 and against ListParts)."""
        head = self.dest.call(lambda c: c.head_object(Bucket=job.dest_bucket, Key=job.dest_key), self._where(job))
        got = strip_etag(head["ETag"])
        if int(head["ContentLength"]) == job.size and (got == expected or "-" not in got or kms_encrypted(head)):
            return expected
        raise PermanentError(f"multipart upload vanished and the destination object does not match "
                             f"(size {head['ContentLength']}, ETag {got}, expected {job.size} bytes, {expected})")

    def _verify_whole(self, job: Job, parts: list[PartRecord]) -> str:
        head = self.dest.call(lambda c: c.head_object(Bucket=job.dest_bucket, Key=job.dest_key), self._where(job))
        if int(head["ContentLength"]) != job.size:
            raise PermanentError(f"destination object has {head['ContentLength']} bytes, expected {job.size}")
        got = strip_etag(head["ETag"])
        if is_md5_etag(got) and got != parts[0].md5 and not kms_encrypted(head):  # SSE-KMS: Content-MD5 checked it
            raise PermanentError(f"checksum mismatch: destination ETag {got}, source bytes MD5 {parts[0].md5}")
        return parts[0].md5

    def _handle_failure(self, job: Job, exc: TransferError) -> CompletionResult:
        if exc.retryable and job.completion_attempts + 1 < MAX_COMPLETION_ATTEMPTS:
            log.warning("completion will retry", extra={"job": job.job_id, "reason": exc.reason})
            self.ledger.release_completion(job.job_id)
            return CompletionResult(job.job_id, "retry", exc.reason)
        log.error("completion failed", extra={"job": job.job_id, "reason": exc.reason})
        self.ledger.mark_failed(job.job_id, exc.reason)
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
        self._publish(f"s3sync: transfer FAILED: {job.source_key}"[:100], {
            "status": Status.FAILED, "job": job.job_id, "source": f"s3://{job.source_bucket}/{job.source_key}",
            "destination": f"s3://{job.dest_bucket}/{job.dest_key}", "reason": job.error or "unknown",
        })
        return CompletionResult(job.job_id, "cleaned", job.error or "")

    def _publish(self, subject: str, body: dict[str, Any]) -> None:
        if not (self.sns and self.topic_arn):
            return
        subject = subject.encode("ascii", "replace").decode("ascii").replace("\n", " ")
        self.sns.publish(TopicArn=self.topic_arn, Subject=subject,
                         Message=json.dumps(body, indent=2, ensure_ascii=False, sort_keys=True))
