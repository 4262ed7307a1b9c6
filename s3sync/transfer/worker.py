"""The worker loop: long-poll SQS, copy one part per message on a pool of threads, count it in the ledger, and
only then delete the message.

- At least once in, exactly once counted: a part already in the ledger for its attempt is acknowledged without
  copying again, and `Ledger.record_part` counts a part at most once whatever the races. A message of an attempt
  that is over (the job was retried or re-copied since: another attempt token) is never counted.
- A part that takes long keeps its message invisible: a heartbeat extends the visibility of every message in flight.
- A worker that dies (SIGKILL) just stops extending; its messages reappear after the visibility timeout.
- On SIGTERM (`stop()`), the worker stops receiving, gives in-flight parts a grace period to finish, then releases
  the rest at once (visibility 0) so that another worker takes them without waiting.
- Copy threads take the lowest part number a worker holds first (its waiting messages are a priority queue):
  S3-compatible servers that assemble an upload in part order (rclone serve s3 buffers a bounded amount) block the
  later parts until the earlier ones arrive, and a worker must not hold those earlier ones behind its own blocked
  copies. Should its copies still make no progress for `park_after` seconds while messages wait, the waiting ones
  are released at once (visibility 0) for another worker instead of being parked there.
- Memory is bounded by threads x part size: only the copy threads hold part buffers. While copies are quick (the
  recent ones took at most `prefetch_below` seconds), the receiver keeps up to `prefetch` more messages waiting
  (their visibility extended like the rest), so that a copy thread that finishes takes its next part at once
  instead of after a receive; it refills when half the room is free, so one receive brings several messages.
  Once copies are slow (a thin cross-border link: a 16 MiB part takes 4-17 s; before any copy has finished, one
  running longer than `prefetch_below` tells), a receive saves nothing worth having and a waiting message would
  wait for a whole copy while other workers idle (bench B4): the worker then hands the waiting ones back at once
  (visibility 0), holds only what its threads copy, and receives as soon as one thread is free.
- A copy thread only copies: once a part is uploaded, counting it in the ledger (and acknowledging its message)
  happens on a recorder thread, so the copy thread takes its next part at once. The message stays in flight (and
  the part stays "being copied here") until it is counted.
- The ledger is asked whether a part is already counted before every copy (one strongly consistent GetItem): a
  part sent again (a splitter's retry, a sweeper's re-drive, a dead-letter re-drive) is not carried across the
  border twice, and under SSE-KMS a second UploadPart of the same bytes would change the part's ETag under the
  ledger's feet. A duplicate that races past the check anyway is counted once; completion reconciles the ETags.
- Nothing a message says is trusted: it must name a job in the ledger and agree with it on every field (source
  object and version, destination bucket and key, upload, attempt, part count and the planned byte range), and the
  job's destination must be this deployment's bucket. A message that does not is refused with its reason (never
  acted on) and reaches the dead-letter queue, so that whoever may send to the queue cannot make the workers write
  anything the ledger did not plan, or allocate an outsized buffer. (Jobs are written only by the functions'
  roles.) A job's fixed fields are read once per attempt and kept (a bounded cache); for a whole object the job's
  state itself says whether the copy is counted.
- A permanent refusal fails the job only after the ledger is read again: a job being completed or finished, a part
  counted meanwhile, or another attempt means this copy was a late duplicate (e.g. NoSuchUpload after completion),
  never a failure. A worker never fails a job that is COMPLETING or finished.
- Acknowledgements are batched: a counted part's message joins the next DeleteMessageBatch (at most
  `delete_every` seconds later, or as soon as 10 are waiting). One that is never deleted (the worker dies first)
  comes back and is acknowledged without a copy: the ledger has the part.
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from s3sync.contract import Status
from s3sync.transfer.copier import CopiedPart, copy_message
from s3sync.transfer.credentials import DestClient
from s3sync.transfer.errors import CredentialsError, MalformedMessage, PermanentError, classify, side_of
from s3sync.transfer.ledger import NO_UPLOAD, Job, Ledger, Outcome, PartRecord
from s3sync.transfer.message import PartMessage, decode
from s3sync.transfer.metrics import MetricsLogger
from s3sync.transfer.plan import plan

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import (
        ChangeMessageVisibilityBatchRequestEntryTypeDef,
        DeleteMessageBatchRequestEntryTypeDef,
    )

#: An SQS message as ReceiveMessage answers it (MessageId, ReceiptHandle, Body, Attributes).
Message = Mapping[str, Any]

log = logging.getLogger("s3sync.worker")


@dataclass
class Stats:
    copied: int = 0
    bytes: int = 0
    duplicates: int = 0
    skipped: int = 0
    failed_jobs: int = 0
    retries: int = 0
    malformed: int = 0
    refused: int = 0  # messages that do not agree with their job or this deployment (never acted on)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + v)

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in vars(self).items() if k != "lock"}


@dataclass
class _InFlight:
    receipt: str
    received: float
    started: bool = False  # a copy thread took it (until then it waits in the priority queue)
    started_at: float = 0.0


def _part_number(m: Message) -> int:
    """The part number a message names, for ordering only (0 when unreadable: decode() says why later)."""
    try:
        return int(json.loads(m["Body"])["part"]["n"])
    except (ValueError, KeyError, TypeError):
        return 0


class Worker:
    def __init__(self, *, sqs: SQSClient, queue_url: str, ledger: Ledger, source: S3Client,
                 dest: DestClient | S3Client, threads: int = 4,
                 visibility_timeout: int = 300, wait_seconds: int = 20, stop_grace: float = 20.0,
                 prefetch: int | None = None, delete_every: float = 0.2, park_after: float | None = None,
                 dest_bucket: str = "", prefetch_below: float = 1.0) -> None:
        self.sqs, self.queue_url, self.ledger = sqs, queue_url, ledger
        self.source = source
        self.dest = dest if isinstance(dest, DestClient) else DestClient.fixed(dest)
        self.threads = threads
        self.visibility_timeout = visibility_timeout
        self.wait_seconds = wait_seconds
        self.stop_grace = stop_grace
        # a few waiting messages are enough to hide a receive; more would widen the window of parts a worker holds
        # out of order (see Splitter.send_threads)
        self.prefetch = max(1, threads // 2) if prefetch is None else max(0, prefetch)
        # ... and only while copies take at most this long: a receive (tens of ms in AWS) is worth hiding behind a
        # sub-second copy, not behind one of several seconds
        self.prefetch_below = prefetch_below
        self._copy_seconds: float | None = None  # moving average of recent copies (None: none finished yet)
        self.delete_every = delete_every
        # waiting messages go back to the queue when no copy has finished for this long (blocked copies; a slow but
        # moving link finishes a part well within a visibility timeout, and a hung request is cut off by the
        # client's read timeout first, which counts as a finish: the thread then takes the lowest part held)
        self.park_after = float(visibility_timeout) if park_after is None else park_after
        # this deployment's destination bucket (Settings): a job naming another is never copied; "": not checked
        self.dest_bucket = dest_bucket
        self._jobs: dict[tuple[str, str], Job] = {}  # (job, attempt) -> the job as first read (its fixed fields)
        self.stats = Stats()
        self.metrics = MetricsLogger.for_queue(queue_url)  # CloudWatch embedded metric format, in the JSON logs
        self._stop = threading.Event()
        self._work: queue.PriorityQueue[tuple[int, int, Message]] = queue.PriorityQueue()
        self._order = itertools.count()  # ties between equal part numbers: first received, first copied
        self._inflight: dict[str, _InFlight] = {}
        self._progress_at = time.monotonic()  # when a copy last finished (or the worker started)
        self._cond = threading.Condition()
        self._copying: set[tuple[str, int]] = set()  # (job, part) being copied by this worker
        # attempts (job, upload) found FAILED or finished: their leftover messages are dropped without a copy;
        # a retried job has a new upload, so its messages are served again
        self._inactive: set[tuple[str, str]] = set()
        self._deletes: list[str] = []  # receipt handles of messages done with, for the next DeleteMessageBatch
        self._deletes_lock = threading.Lock()
        self._deletes_due = threading.Event()
        self._flush_lock = threading.Lock()
        self._recording = 0  # messages whose part is uploaded and being counted: they hold no part buffer
        self._recorder = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="record")

    # --- lifecycle ------------------------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def run(self) -> Stats:
        """Serve until stop(); returns the counters."""
        for i in range(self.threads):
            threading.Thread(target=self._copy_loop, name=f"copy-{i}", daemon=True).start()
        threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True).start()
        threading.Thread(target=self._delete_loop, name="deleter", daemon=True).start()
        receiver = threading.Thread(target=self._receive_loop, name="receiver", daemon=True)
        receiver.start()
        log.info("worker started", extra={"threads": self.threads, "visibility_timeout": self.visibility_timeout})
        while not self._stop.wait(1.0):
            pass
        self._drain()
        self._recorder.shutdown(wait=False)
        log.info("worker stopped", extra=self.stats.as_dict())
        return self.stats

    def _drain(self) -> None:
        waiting: dict[str, _InFlight] = {}  # received, not started: released at once
        with self._cond:
            while True:
                try:
                    _, _, m = self._work.get_nowait()
                except queue.Empty:
                    break
                flight = self._inflight.pop(m["MessageId"], None)
                if flight is not None:
                    waiting[m["MessageId"]] = flight
            self._cond.notify_all()
        if waiting:
            self._change_visibility(waiting, 0)
        deadline = time.monotonic() + self.stop_grace
        with self._cond:
            while self._inflight and time.monotonic() < deadline:
                self._cond.wait(timeout=0.2)
            left = dict(self._inflight)
        if left:
            self._change_visibility(left, 0)
        if left or waiting:
            log.info("released in-flight parts", extra={"count": len(left) + len(waiting)})
        self._flush_deletes()

    # --- receiving ------------------------------------------------------------------------------------------------
    def _receive_loop(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                # prefetching: refill when half the room is free, so that one receive brings several messages;
                # else as soon as a copy thread is free
                while True:
                    room, refill = self._room()
                    if room - self._holding() >= refill or self._stop.is_set():
                        break
                    self._cond.wait(timeout=1.0)
                free = room - self._holding()
            if self._stop.is_set():
                return
            try:
                resp = self.sqs.receive_message(
                    QueueUrl=self.queue_url, MaxNumberOfMessages=min(10, free),
                    WaitTimeSeconds=self.wait_seconds, VisibilityTimeout=self.visibility_timeout,
                    MessageSystemAttributeNames=["ApproximateReceiveCount"],
                )
            except Exception as exc:  # noqa: BLE001 - keep serving; botocore already retried
                log.warning("receive failed", extra={"reason": str(exc)})
                self._stop.wait(2.0)
                continue
            messages = resp.get("Messages", [])
            if self._stop.is_set():
                self._change_visibility({m["MessageId"]: _InFlight(m["ReceiptHandle"], 0) for m in messages}, 0)
                return
            with self._cond:
                for m in messages:
                    self._inflight[m["MessageId"]] = _InFlight(m["ReceiptHandle"], time.monotonic())
            for m in sorted(messages, key=_part_number):  # lowest first, even to a thread waking at the first put
                self._work.put((_part_number(m), next(self._order), m))

    def _room(self) -> tuple[int, int]:
        """(messages to hold at most, free room that triggers a receive). Called holding `_cond`."""
        if self.prefetch and not self._copies_slow():
            room = self.threads + self.prefetch
            return room, max(1, room // 2)
        return self.threads, 1

    def _copies_slow(self) -> bool:
        """Whether copies take longer than `prefetch_below`: the recent ones, or before any has finished, one that
        is running. Called holding `_cond`."""
        if self._copy_seconds is not None:
            return self._copy_seconds > self.prefetch_below
        now = time.monotonic()
        return any(f.started and now - f.started_at > self.prefetch_below for f in self._inflight.values())

    def _holding(self) -> int:
        """Messages that hold (or wait for) a copy thread: in flight, less those only being counted."""
        return len(self._inflight) - self._recording

    # --- copying --------------------------------------------------------------------------------------------------
    def _copy_loop(self) -> None:
        while True:
            _, _, m = self._work.get()
            with self._cond:
                flight = self._inflight.get(m["MessageId"])
                # released while it waited (stop, parked behind blocked copies, copies slow), or this is the entry
                # of an earlier receive of a message received again since (another receipt handle)
                if flight is None or flight.receipt != m["ReceiptHandle"]:
                    continue
                flight.started = True
                flight.started_at = time.monotonic()
            then: Callable[[], None] | None = None
            began = time.monotonic()
            try:
                then = self._process(m)
            except Exception:  # noqa: BLE001 - never lose a thread; the message comes back by itself
                log.exception("unexpected error", extra={"message_id": m.get("MessageId")})
            self._progress_at = time.monotonic()
            if then is not None:  # a part was copied: how long copies take decides whether to prefetch
                took = self._progress_at - began
                last = self._copy_seconds
                self._copy_seconds = took if last is None else 0.7 * last + 0.3 * took
            if then is None:
                self._done_with(m)
                continue
            with self._cond:
                self._recording += 1
                self._cond.notify_all()
            self._recorder.submit(self._record_then_done, m, then)

    def _record_then_done(self, m: Message, then: Callable[[], None]) -> None:
        try:
            then()
        except Exception:  # noqa: BLE001 - the message comes back by itself
            log.exception("unexpected error", extra={"message_id": m.get("MessageId")})
        finally:
            self._done_with(m, recorded=True)

    def _done_with(self, m: Message, recorded: bool = False) -> None:
        with self._cond:
            self._inflight.pop(m["MessageId"], None)
            if recorded:
                self._recording -= 1
            self._cond.notify_all()

    def _process(self, m: Message) -> Callable[[], None] | None:
        """Copy the part of message `m`; returns what is left to do off the copy thread (count the part), if any."""
        receives = int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        try:
            msg = decode(m["Body"])
        except MalformedMessage as exc:
            self.stats.add(malformed=1)
            log.error("malformed message", extra={"message_id": m["MessageId"], "reason": exc.reason,
                                                  "receives": receives})
            self._retry_later(m, 0)  # back at once: after maxReceiveCount it lands in the dead-letter queue
            return None
        ids = {"job": msg.job_id, "part": msg.part_number, "of": msg.total_parts}
        slot = (msg.job_id, msg.part_number)
        with self._cond:
            busy = slot in self._copying
            if not busy:
                self._copying.add(slot)
        if busy:  # a duplicate of a part this worker is copying now: look again once that copy is counted
            log.info("duplicate of a part in flight here; deferred", extra=ids)
            self._retry_later(m, 5)
            return None

        def release() -> None:
            with self._cond:
                self._copying.discard(slot)

        try:
            record = self._copy(m, msg, ids, receives)
        except BaseException:
            release()
            raise
        if record is None:
            release()
            return None

        def record_then_release() -> None:
            try:
                record()
            finally:
                release()
        return record_then_release

    def _copy(self, m: Message, msg: PartMessage, ids: dict[str, Any],
              receives: int) -> Callable[[], None] | None:
        job = None if (msg.job_id, msg.attempt) in self._inactive else self._job(msg)
        refusal = "no such job" if job is None and (msg.job_id, msg.attempt) not in self._inactive else None
        if job is not None and job.attempt == msg.attempt:
            refusal = self._refusal(msg, job)
        if refusal:
            self.stats.add(refused=1)
            log.error("message refused: it does not agree with its job or this deployment",
                      extra={**ids, "reason": refusal, "receives": receives})
            self._retry_later(m, 0)  # never acted on; after maxReceiveCount it lands in the dead-letter queue
            return None
        if job is None or job.attempt != msg.attempt or self._counted(msg, job):  # inactive, another attempt's
            self.stats.add(skipped=1)
            log.info("part already counted or job inactive; acknowledged", extra=ids)
            self._delete(m)
            return None
        log.info("copying part", extra={**ids, "bytes": msg.size, "receives": receives})
        try:
            copied = self._copy_rotating(msg)
        except PermanentError as exc:
            self._refused(msg, ids, exc.reason)
            self._delete(m)
            return None
        except Exception as exc:  # noqa: BLE001
            self._part_retried(m, ids, receives, exc)
            return None
        return lambda: self._record(m, msg, ids, receives, copied)

    def _job(self, msg: PartMessage) -> Job | None:
        """The job a message names, as first read for its attempt (whole objects: read each time, their state
        tells whether the copy is counted)."""
        key = (msg.job_id, msg.attempt)
        job = None if msg.whole else self._jobs.get(key)
        if job is None:
            job = self.ledger.get_job(msg.job_id)
            if job is not None and job.attempt == msg.attempt and not msg.whole:
                if len(self._jobs) >= 10_000:
                    self._jobs.clear()
                self._jobs[key] = job
        return job

    def _counted(self, msg: PartMessage, job: Job) -> bool:
        if msg.whole:  # one part: the job's own state says it
            return job.status not in (Status.PLANNED, Status.COPYING) or job.remaining == 0
        return self.ledger.part_recorded(msg.job_id, msg.attempt, msg.part_number)

    def _refusal(self, msg: PartMessage, job: Job) -> str | None:
        """Why the message may not be acted on: where it disagrees with its job or with this deployment."""
        wrong = [name for name, said, planned in (
            ("source bucket", msg.source_bucket, job.source_bucket), ("source key", msg.source_key, job.source_key),
            ("source ETag", msg.source_etag, job.source_etag), ("source version", msg.source_version,
                                                                 job.source_version),
            ("destination bucket", msg.dest_bucket, job.dest_bucket), ("destination key", msg.dest_key, job.dest_key),
            ("upload", msg.upload_id, job.upload_id if job.multipart else None),
            ("part count", msg.total_parts, job.total),
        ) if said != planned]
        if wrong:
            return f"{', '.join(wrong)} not the job's"
        if job.multipart:
            planned_range = plan(job.size, job.part_size).byte_range(msg.part_number)
        else:
            planned_range = (0, job.size - 1)
        if (msg.start, msg.end) != planned_range:
            return f"byte range {msg.start}-{msg.end} is not part {msg.part_number}'s {planned_range}"
        if self.dest_bucket and job.dest_bucket != self.dest_bucket:
            return f"destination bucket {job.dest_bucket!r} is not this deployment's"
        return None

    def _refused(self, msg: PartMessage, ids: dict[str, Any], reason: str) -> None:
        """A permanent refusal: fail the job, unless reading the ledger again shows the copy was a late duplicate
        (the part counted meanwhile, the job being completed or finished, or another attempt under way)."""
        job = self.ledger.get_job(msg.job_id)
        if (job is None or job.attempt != msg.attempt or job.status not in (Status.PLANNED, Status.COPYING)
                or self.ledger.part_recorded(msg.job_id, msg.attempt, msg.part_number)):
            self._inactive.add((msg.job_id, msg.attempt))
            self.stats.add(duplicates=1)
            log.info("refused copy of a part whose attempt is counted, completing or over; acknowledged",
                     extra={**ids, "reason": reason, "status": job.status if job else None})
            return
        self._fail_job(job, msg, reason)

    def _part_retried(self, m: Message, ids: dict[str, Any], receives: int, exc: Exception) -> None:
        err = classify(exc, side_of(exc, "ledger"))
        self.stats.add(retries=1)
        delay = min(self.visibility_timeout, 2 ** min(receives, 8))
        log.warning("part will be retried", extra={**ids, "reason": err.reason, "receives": receives,
                                                   "delay": delay})
        self._retry_later(m, delay)

    def _record(self, m: Message, msg: PartMessage, ids: dict[str, Any], receives: int,
                copied: CopiedPart) -> None:
        """Count an uploaded part (on a recorder thread), then acknowledge its message."""
        try:
            outcome = self.ledger.record_part(msg.job_id, msg.attempt, msg.upload_id or NO_UPLOAD,
                                              PartRecord(copied.part, copied.etag, copied.md5, copied.size,
                                                         copied.kms))
        except Exception as exc:  # noqa: BLE001 - the message comes back; the part is copied again
            self._part_retried(m, ids, receives, exc)
            return
        if outcome == Outcome.RECORDED:
            self.stats.add(copied=1, bytes=copied.size)
            log.info("part copied", extra={**ids, "bytes": copied.size, "etag": copied.etag})
            self.metrics.part_copied(copied.size, job=msg.job_id, part=copied.part)
        elif outcome == Outcome.DUPLICATE:
            self.stats.add(duplicates=1)
            log.info("part was already counted", extra=ids)
        else:
            self._inactive.add((msg.job_id, msg.attempt))
            self.stats.add(skipped=1)
            log.info("job no longer takes parts", extra=ids)
        self._delete(m)

    def _copy_rotating(self, msg: PartMessage) -> CopiedPart:
        """Copy; if the destination refuses the credentials, re-read the secret and copy once more."""
        dest = self.dest.client
        try:
            return copy_message(self.source, dest, msg)
        except CredentialsError:
            if not self.dest.refresh(dest):
                raise
        return copy_message(self.source, self.dest.client, msg)

    def _fail_job(self, job: Job, msg: PartMessage, reason: str) -> None:
        reason = (f"{reason} [s3://{msg.source_bucket}/{msg.source_key} -> "
                  f"s3://{msg.dest_bucket}/{msg.dest_key} at {self.dest.endpoint.describe()}]")
        self._inactive.add((msg.job_id, msg.attempt))
        # only while PLANNED/COPYING for the attempt this message belongs to: a leftover of an earlier attempt
        # cannot fail a retry, and nothing a worker sees can fail a job being completed
        if self.ledger.mark_failed(job, reason, by="attempt") is None:
            log.info("part failed for an attempt that is over", extra={"job": msg.job_id, "reason": reason})
            return
        self.stats.add(failed_jobs=1)
        log.error("job failed", extra={"job": msg.job_id, "part": msg.part_number, "key": msg.source_key,
                                       "reason": reason})
        self.metrics.job_failed(job=msg.job_id)

    # --- SQS housekeeping -----------------------------------------------------------------------------------------
    def _delete(self, m: Message) -> None:
        with self._deletes_lock:
            self._deletes.append(m["ReceiptHandle"])
            if len(self._deletes) >= 10:
                self._deletes_due.set()

    def _delete_loop(self) -> None:
        while not self._stop.is_set():
            self._deletes_due.wait(self.delete_every)
            self._deletes_due.clear()
            self._flush_deletes()

    def _flush_deletes(self) -> None:
        with self._flush_lock:  # one flush at a time: the last one (on stop) returns after every earlier one
            self._send_deletes()

    def _send_deletes(self) -> None:
        with self._deletes_lock:
            receipts, self._deletes = self._deletes, []
        for i in range(0, len(receipts), 10):
            entries: list[DeleteMessageBatchRequestEntryTypeDef] = [
                {"Id": str(n), "ReceiptHandle": r} for n, r in enumerate(receipts[i:i + 10])]
            failed: Sequence[Mapping[str, Any]]
            try:
                resp = self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
                failed = resp.get("Failed") or []
            except Exception as exc:  # noqa: BLE001 - they come back and are acknowledged then (ledger has them)
                failed = [{"Id": e["Id"], "Message": str(exc)} for e in entries]
            if failed:
                log.warning("could not delete messages; they will be acknowledged again",
                            extra={"count": len(failed), "reason": failed[0].get("Message", "")})

    def _retry_later(self, m: Message, delay: int) -> None:
        try:
            self.sqs.change_message_visibility(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"],
                                               VisibilityTimeout=delay)
        except Exception as exc:  # noqa: BLE001 - it comes back after the visibility timeout anyway
            log.warning("could not reset visibility", extra={"reason": str(exc)})

    def _change_visibility(self, items: dict[str, _InFlight], timeout: int) -> None:
        entries: list[ChangeMessageVisibilityBatchRequestEntryTypeDef] = [
            {"Id": str(i), "ReceiptHandle": f.receipt, "VisibilityTimeout": timeout}
            for i, f in enumerate(items.values())]
        for i in range(0, len(entries), 10):
            try:
                self.sqs.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries[i:i + 10])
            except Exception as exc:  # noqa: BLE001
                log.warning("could not change visibility", extra={"reason": str(exc)})

    def _heartbeat_loop(self) -> None:
        """Extend every in-flight message's visibility well before it runs out; release waiting messages that are
        parked behind blocked copies."""
        interval = max(1.0, self.visibility_timeout / 3)
        tick = max(0.5, min(interval, self.park_after / 2, self.prefetch_below))
        extended_at = time.monotonic()
        while not self._stop.wait(tick):
            self._release_parked()
            self._release_waiting_if_slow()
            now = time.monotonic()
            if now - extended_at < interval:
                continue
            extended_at = now
            with self._cond:
                due = {k: v for k, v in self._inflight.items() if now - v.received >= interval}
            if due:
                self._change_visibility(due, self.visibility_timeout)

    def _release_waiting_if_slow(self) -> None:
        """Copies are slow: a message waiting for a copy thread here would wait for a whole copy. Hand the waiting
        ones back (visibility 0): a worker with a free thread takes them now."""
        if not self.prefetch:
            return
        with self._cond:
            if not self._copies_slow():
                return
            waiting = {k: v for k, v in self._inflight.items() if not v.started}
            for k in waiting:
                self._inflight.pop(k)
            self._cond.notify_all()
        if waiting:
            log.info("copies are slow; waiting parts handed back for workers with free threads",
                     extra={"count": len(waiting), "copy_s": round(self._copy_seconds or 0.0, 1)})
            self._change_visibility(waiting, 0)

    def _release_parked(self) -> None:
        """No copy finished for `park_after` seconds and messages wait for a copy thread: hand them back (visibility
        0) so that another worker copies them, instead of holding them behind this worker's blocked copies."""
        now = time.monotonic()
        if now - self._progress_at < self.park_after:
            return
        with self._cond:
            parked = {k: v for k, v in self._inflight.items() if not v.started and now - v.received >= self.park_after}
            for k in parked:
                self._inflight.pop(k)
            self._cond.notify_all()
        if parked:
            log.warning("copies blocked; waiting parts released to other workers",
                        extra={"count": len(parked), "idle_s": int(now - self._progress_at)})
            self._change_visibility(parked, 0)
