"""Shared by tests/test_ops_*.py: the resources of one s3sync system on the session's moto server (tables, part
queue with its dead-letter queue, source and destination buckets) and the ops Target naming them."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from s3sync.contract import DEFAULT_INLINE_MAX_BYTES, Status
from s3sync.ops.context import Target
from s3sync.transfer.ledger import Job, Ledger, PartRecord
from tests.conftest import make_client
from tests.test_ledger import make_tables


@dataclass
class System:
    target: Target
    s3: Any
    sqs: Any
    ddb: Any
    ledger: Ledger

    @property
    def src(self) -> str:
        return self.target.source_bucket

    @property
    def dst(self) -> str:
        return self.target.dest_bucket

    def messages(self, url: str | None = None, delete: bool = True) -> list[dict[str, Any]]:
        """Every message body of a queue (the part queue by default), parsed."""
        url = url or self.target.queue_url
        out = []
        while True:
            msgs = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                            VisibilityTimeout=30).get("Messages", [])
            if not msgs:
                return out
            for m in msgs:
                out.append(json.loads(m["Body"]))
                if delete:
                    self.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def make_system(endpoint_url: str, *, dest_prefix: str = "", part_size_mib: int = 5,
                inline_max_bytes: int = DEFAULT_INLINE_MAX_BYTES) -> System:
    """inline_max_bytes 0: small objects go to the workers too (by default the splitter copies them itself)."""
    name = f"ops-{uuid.uuid4().hex[:8]}"
    s3, sqs, ddb = (make_client(s, endpoint_url) for s in ("s3", "sqs", "dynamodb"))
    transfers, parts = make_tables(ddb)
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue = sqs.create_queue(QueueName=f"{name}-parts", Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"})})["QueueUrl"]
    for bucket in (f"{name}-src", f"{name}-dst"):
        s3.create_bucket(Bucket=bucket)
    target = Target(endpoint_url, "us-east-1", transfers, parts, queue, dlq, source_bucket=f"{name}-src",
                    source_endpoint_url=endpoint_url, source_access_key_id="testing",
                    source_secret_access_key="testing", dest_bucket=f"{name}-dst", dest_prefix=dest_prefix,
                    dest_region="us-east-1", dest_endpoint_url=endpoint_url, part_size_mib=part_size_mib,
                    stuck_after=60, inline_max_bytes=inline_max_bytes, local=True, where=f"test system {name}")
    return System(target, s3, sqs, ddb, Ledger(ddb, transfers, parts))


def put_job(ledger: Ledger, status: str, *, key: str = "k.bin", total: int = 4, part_size: int = 5 * 2**20,
            recorded: tuple[int, ...] = (), age: int = 0, size: int | None = None, upload: str = "up-1",
            error: str | None = None) -> Job:
    """A job in the transfers table as the engine leaves it in `status` (parts recorded through the ledger)."""
    ts = int(time.time()) - age
    size = total * part_size if size is None else size
    job = Job(job_id=uuid.uuid4().hex, status=Status.PLANNED, source_bucket="src", source_key=key,
              source_etag='"e"', dest_bucket="dst", dest_key=key, size=size, part_size=part_size, total=total,
              remaining=total, upload_id=upload, created_at=ts, updated_at=ts, attempt=f"a-{upload}")
    assert ledger.create_job(job)
    for n in recorded:
        ledger.record_part(job.job_id, job.attempt, upload,
                           PartRecord(n, "e", "e", min(part_size, size - (n - 1) * part_size)))
    if status != Status.PLANNED:
        ledger.mark_copying(job)
    elected = ledger.elect_completion(job.job_id) if status in (Status.COMPLETING, Status.DONE) else None
    if status in (Status.COMPLETING, Status.DONE):
        assert elected
    if status == Status.DONE:
        ledger.mark_done(elected, "etag-2")
    if status == Status.FAILED:
        ledger.mark_failed(job, error or "destination refused access (403)", by="attempt")
    if age:  # as if the last change was `age` seconds ago
        ledger.ddb.update_item(TableName=ledger.transfers, Key={"job_id": {"S": job.job_id}},
                               UpdateExpression="SET updated_at = :t, created_at = :c",
                               ExpressionAttributeValues={":t": {"N": str(ts)}, ":c": {"N": str(ts - 10)}})
    return ledger.get_job(job.job_id)  # type: ignore[return-value]


def completion_inbox(endpoint_url: str, name: str) -> tuple[str, Callable[[], list[dict[str, Any]]]]:
    """A completion topic delivering (raw) to a queue: its ARN, and a reader that drains the notices so far."""
    sns, sqs = make_client("sns", endpoint_url), make_client("sqs", endpoint_url)
    topic = sns.create_topic(Name=f"{name}-done")["TopicArn"]
    inbox = sqs.create_queue(QueueName=f"{name}-inbox")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})

    def read() -> list[dict[str, Any]]:
        out = []
        while batch := sqs.receive_message(QueueUrl=inbox, MaxNumberOfMessages=10).get("Messages", []):
            for m in batch:
                out.append(json.loads(m["Body"]))
                sqs.delete_message(QueueUrl=inbox, ReceiptHandle=m["ReceiptHandle"])
        return out

    return topic, read
