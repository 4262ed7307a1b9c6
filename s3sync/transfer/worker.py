"""The worker loop: long-poll SQS, copy one part per message on a pool of threads, count it in the ledger, and
only then delete the message.

- At least once in, exactly once counted: a part already in the ledger is acknowledged without copying again, and
  `Ledger.record_part` counts a part at most once whatever the races.
- A part that takes long keeps its message invisible: a heartbeat extends the visibility of every message in flight.
- A worker that dies (SIGKILL) just stops extending; its messages reappear after the visibility timeout.
- On SIGTERM (`stop()`), the worker stops receiving, gives in-flight parts a grace period to finish, then releases
  the rest at once (visibility 0) so that another worker takes them without waiting.
- Memory is bounded by threads x part size: only the copy threads hold part buffers. The receiver keeps up to
  `prefetch` more messages waiting (their visibility extended like the rest), so that a copy thread that finishes
  takes its next part at once instead of after a receive; it refills when half the room is free, so one receive
  brings several messages.
- A copy thread only copies: once a part is uploaded, counting it in the ledger (and acknowledging its message)
  happens on a recorder thread, so the copy thread takes its next part at once. The message stays in flight (and
  the part stays "being copied here") until it is counted.
- The ledger is asked whether a part is already counted only when that can be: on a redelivery (receive count > 1)
  and for whole objects (a second PutObject would rewrite a finished destination object). A first delivery of a multipart part is copied straight away; should it be a duplicate
  after all (the splitter or sweeper sent it again), the second UploadPart carries the same bytes (the GET is pinned
  to the source ETag), the ledger counts it once, and an upload already completed answers NoSuchUpload, which is
  then recognised as a duplicate, not a failure.
- Acknowledgements are batched: a counted part's message joins the next DeleteMessageBatch (at most
  `delete_every` seconds later, or as soon as 10 are waiting). One that is never deleted (the worker dies first)
  comes back and is acknowledged without a copy: the ledger has the part.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from s3sync.transfer.copier import CopiedPart, copy_message
from s3sync.transfer.credentials import DestClient
from s3sync.transfer.errors import CredentialsError, MalformedMessage, PermanentError, classify
from s3sync.transfer.ledger import NO_UPLOAD, Ledger, Outcome, PartRecord
from s3sync.transfer.message import PartMessage, decode
from s3sync.transfer.metrics import MetricsLogger

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


class Worker:
    def __init__(self, *, sqs: Any, queue_url: str, ledger: Ledger, source: Any, dest: Any, threads: int = 4,
                 visibility_timeout: int = 300, wait_seconds: int = 20, stop_grace: float = 20.0,
                 prefetch: int | None = None, delete_every: float = 0.2) -> None:
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
        self.delete_every = delete_every
        self.stats = Stats()
        self.metrics = MetricsLogger.for_queue(queue_url)  # CloudWatch embedded metric format, in the JSON logs
        self._stop = threading.Event()
        self._work: queue.Queue[dict[str, Any]] = queue.Queue()
        self._inflight: dict[str, _InFlight] = {}
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
                    m = self._work.get_nowait()
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
            room = self.threads + self.prefetch
            with self._cond:
                # refill when half the room is free (at least one slot): one receive brings several messages
                while room - self._holding() < max(1, room // 2) and not self._stop.is_set():
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
            for m in messages:
                self._work.put(m)

    def _holding(self) -> int:
        """Messages that hold (or wait for) a copy thread: in flight, less those only being counted."""
        return len(self._inflight) - self._recording

    # --- copying --------------------------------------------------------------------------------------------------
    def _copy_loop(self) -> None:
        while True:
            m = self._work.get()
            then: Callable[[], None] | None = None
            try:
                then = self._process(m)
            except Exception:  # noqa: BLE001 - never lose a thread; the message comes back by itself
                log.exception("unexpected error", extra={"message_id": m.get("MessageId")})
            if then is None:
                self._done_with(m)
                continue
            with self._cond:
                self._recording += 1
                self._cond.notify_all()
            self._recorder.submit(self._record_then_done, m, then)

    def _record_then_done(self, m: dict[str, Any], then: Callable[[], None]) -> None:
        try:
            then()
        except Exception:  # noqa: BLE001 - the message comes back by itself
            log.exception("unexpected error", extra={"message_id": m.get("MessageId")})
        finally:
            self._done_with(m, recorded=True)

    def _done_with(self, m: dict[str, Any], recorded: bool = False) -> None:
        with self._cond:
            self._inflight.pop(m["MessageId"], None)
            if recorded:
                self._recording -= 1
            self._cond.notify_all()

    def _process(self, m: dict[str, Any]) -> Callable[[], None] | None:
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

    def _copy(self, m: dict[str, Any], msg: PartMessage, ids: dict[str, Any],
              receives: int) -> Callable[[], None] | None:
        attempt = (msg.job_id, msg.upload_id or NO_UPLOAD)
        ask_ledger = msg.whole or receives > 1  # see the module's docstring: when a part can be counted already
        if (msg.upload_id and attempt in self._inactive) or (
                ask_ledger and self.ledger.part_recorded(msg.job_id, msg.part_number)):
            self.stats.add(skipped=1)
            log.info("part already counted or job inactive; acknowledged", extra=ids)
            self._delete(m)
            return None
        log.info("copying part", extra={**ids, "bytes": msg.size, "receives": receives})
        try:
            copied = self._copy_rotating(msg)
        except PermanentError as exc:
            if not ask_ledger and self._counted_already(msg):
                self.stats.add(duplicates=1)
                log.info("part was already counted; its upload is over", extra={**ids, "reason": exc.reason})
            else:
                self._fail_job(msg, exc.reason)
            self._delete(m)
            return None
        except Exception as exc:  # noqa: BLE001
            self._part_retried(m, ids, receives, exc)
            return None
        return lambda: self._record(m, msg, ids, receives, copied)

    def _counted_already(self, msg: PartMessage) -> bool:
        try:
            return self.ledger.part_recorded(msg.job_id, msg.part_number)
        except Exception:  # noqa: BLE001 - cannot tell: the failure stands
            return False

    def _part_retried(self, m: dict[str, Any], ids: dict[str, Any], receives: int, exc: Exception) -> None:
        err = classify(exc, "ledger")
        self.stats.add(retries=1)
        delay = min(self.visibility_timeout, 2 ** min(receives, 8))
        log.warning("part will be retried", extra={**ids, "reason": err.reason, "receives": receives,
                                                   "delay": delay})
        self._retry_later(m, delay)

    def _record(self, m: dict[str, Any], msg: PartMessage, ids: dict[str, Any], receives: int,
                copied: CopiedPart) -> None:
        """Count an uploaded part (on a recorder thread), then acknowledge its message."""
        try:
            outcome = self.ledger.record_part(msg.job_id, msg.upload_id or NO_UPLOAD,
                                              PartRecord(copied.part, copied.etag, copied.md5, copied.size))
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
            self._inactive.add((msg.job_id, msg.upload_id or NO_UPLOAD))
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

    def _fail_job(self, msg: PartMessage, reason: str) -> None:
        reason = (f"{reason} [s3://{msg.source_bucket}/{msg.source_key} -> "
                  f"s3://{msg.dest_bucket}/{msg.dest_key} at {self.dest.endpoint.describe()}]")
        self._inactive.add((msg.job_id, msg.upload_id or NO_UPLOAD))
        # only the attempt this message belongs to: a leftover of an aborted upload cannot fail a retry
        if self.ledger.mark_failed(msg.job_id, reason, upload_id=msg.upload_id or NO_UPLOAD) is None:
            log.info("part failed for an attempt that is over", extra={"job": msg.job_id, "reason": reason})
            return
        self.stats.add(failed_jobs=1)
        log.error("job failed", extra={"job": msg.job_id, "part": msg.part_number, "key": msg.source_key,
                                       "reason": reason})
        self.metrics.job_failed(job=msg.job_id)

    # --- SQS housekeeping -----------------------------------------------------------------------------------------
    def _delete(self, m: dict[str, Any]) -> None:
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
            entries = [{"Id": str(n), "ReceiptHandle": r} for n, r in enumerate(receipts[i:i + 10])]
            try:
                resp = self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
                failed = resp.get("Failed") or []
            except Exception as exc:  # noqa: BLE001 - they come back and are acknowledged then (ledger has them)
                failed = [{"Id": e["Id"], "Message": str(exc)} for e in entries]
            if failed:
                log.warning("could not delete messages; they will be acknowledged again",
                            extra={"count": len(failed), "reason": failed[0].get("Message", "")})

    def _retry_later(self, m: dict[str, Any], delay: int) -> None:
        try:
            self.sqs.change_message_visibility(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"],
                                               VisibilityTimeout=delay)
        except Exception as exc:  # noqa: BLE001 - it comes back after the visibility timeout anyway
            log.warning("could not reset visibility", extra={"reason": str(exc)})

    def _change_visibility(self, items: dict[str, _InFlight], timeout: int) -> None:
        entries = [{"Id": str(i), "ReceiptHandle": f.receipt, "VisibilityTimeout": timeout}
                   for i, f in enumerate(items.values())]
        for i in range(0, len(entries), 10):
            try:
                self.sqs.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries[i:i + 10])
            except Exception as exc:  # noqa: BLE001
                log.warning("could not change visibility", extra={"reason": str(exc)})

    def _heartbeat_loop(self) -> None:
        """Extend every in-flight message's visibility well before it runs out."""
        interval = max(1.0, self.visibility_timeout / 3)
        while not self._stop.wait(interval):
            with self._cond:
                due = {k: v for k, v in self._inflight.items() if time.monotonic() - v.received >= interval}
            if due:
                self._change_visibility(due, self.visibility_timeout)
