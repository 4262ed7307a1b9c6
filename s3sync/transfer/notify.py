"""The completion topic's messages (SNS, e-mail to whoever subscribed): a transfer done, a transfer failed.

Sent by completion (multipart and worker-copied objects) and by the splitter (small objects it copies itself). SNS
subjects are ASCII, one line, at most 100 characters ("Subject ... must be ASCII text that begins with a letter,
number, or punctuation mark; must not include line breaks or control characters; and must be less than 100
characters long", SNS Publish API reference).
"""

from __future__ import annotations

import json
from typing import Any

from s3sync.contract import Status
from s3sync.transfer.ledger import Job


class Notifier:
    """Publishes to the completion topic; without a client or topic (a local run without notifications, tests) it
    sends nothing."""

    def __init__(self, sns: Any | None = None, topic_arn: str = "") -> None:
        self.sns, self.topic_arn = sns, topic_arn

    def done(self, job: Job, etag: str) -> None:
        self.publish(f"s3sync: transfer complete: {job.source_key}", {
            "status": Status.DONE, "job": job.job_id, "source": f"s3://{job.source_bucket}/{job.source_key}",
            "destination": f"s3://{job.dest_bucket}/{job.dest_key}", "size": job.size, "parts": job.total,
            "etag": etag,
        })

    def failed(self, job: Job) -> None:
        self.publish(f"s3sync: transfer FAILED: {job.source_key}", {
            "status": Status.FAILED, "job": job.job_id, "source": f"s3://{job.source_bucket}/{job.source_key}",
            "destination": f"s3://{job.dest_bucket}/{job.dest_key}", "reason": job.error or "unknown",
        })

    def publish(self, subject: str, body: dict[str, Any]) -> None:
        if not (self.sns and self.topic_arn):
            return
        subject = subject[:99].encode("ascii", "replace").decode("ascii").replace("\n", " ").replace("\r", " ")
        self.sns.publish(TopicArn=self.topic_arn, Subject=subject,
                         Message=json.dumps(body, indent=2, ensure_ascii=False, sort_keys=True))
