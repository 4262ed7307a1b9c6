"""The completion topic's messages (SNS, e-mail to whoever subscribed): a transfer done, a transfer failed.

Sent by completion (multipart and worker-copied objects) and by the splitter (small objects it copies itself). SNS
subjects are ASCII, one line, at most 100 characters ("Subject ... must be ASCII text that begins with a letter,
number, or punctuation mark; must not include line breaks or control characters; and must be less than 100
characters long", SNS Publish API reference).

The splitter handles S3 events in batches (the event queue): inside `batch()`, the "transfer complete" notices are
gathered and sent as one message when the batch ends: the notice itself when there is one, else a summary
(subject "s3sync: N transfers complete", body {"status": "DONE", "count": N, "transfers": [each notice's body]}).
A batch of up to 20 small objects fits SNS's 256 KiB message many times over. Failure notices go out at once.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from s3sync.contract import Status
from s3sync.transfer.ledger import Job

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient

SUMMARY_KEY = "transfers"  # a summary's list of the transfers it reports (each as a single notice's body)


class Notifier:
    """Publishes to the completion topic; without a client or topic (a local run without notifications, tests) it
    sends nothing."""

    def __init__(self, sns: SNSClient | None = None, topic_arn: str = "") -> None:
        self.sns, self.topic_arn = sns, topic_arn
        self._lock = threading.Lock()
        self._gathered: list[tuple[str, dict[str, Any]]] | None = None  # inside batch(): the DONE notices

    def done(self, job: Job, etag: str) -> None:
        subject = f"s3sync: transfer complete: {job.source_key}"
        body = {
            "status": Status.DONE, "job": job.job_id, "source": f"s3://{job.source_bucket}/{job.source_key}",
            "destination": f"s3://{job.dest_bucket}/{job.dest_key}", "size": job.size, "parts": job.total,
            "etag": etag,
        }
        with self._lock:
            if self._gathered is not None:
                self._gathered.append((subject, body))
                return
        self.publish(subject, body)

    def failed(self, job: Job) -> None:
        self.publish(f"s3sync: transfer FAILED: {job.source_key}", {
            "status": Status.FAILED, "job": job.job_id, "source": f"s3://{job.source_bucket}/{job.source_key}",
            "destination": f"s3://{job.dest_bucket}/{job.dest_key}", "reason": job.error or "unknown",
        })

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Gather the DONE notices sent inside; send them as one message at the end (even when the batch raised:
        those transfers are DONE)."""
        with self._lock:
            self._gathered = []
        try:
            yield
        finally:
            with self._lock:
                gathered, self._gathered = self._gathered or [], None
            if len(gathered) == 1:
                self.publish(*gathered[0])
            elif gathered:
                self.publish(f"s3sync: {len(gathered)} transfers complete",
                             {"status": Status.DONE, "count": len(gathered), SUMMARY_KEY: [b for _, b in gathered]})

    def publish(self, subject: str, body: dict[str, Any]) -> None:
        if not (self.sns and self.topic_arn):
            return
        subject = subject[:99].encode("ascii", "replace").decode("ascii").replace("\n", " ").replace("\r", " ")
        self.sns.publish(TopicArn=self.topic_arn, Subject=subject,
                         Message=json.dumps(body, indent=2, ensure_ascii=False, sort_keys=True))


def each_notice(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The transfers a message reports: a summary's, or the message itself."""
    return list(message.get(SUMMARY_KEY) or []) or [message]
