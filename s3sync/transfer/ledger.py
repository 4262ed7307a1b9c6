"""The ledger over the two DynamoDB tables: transfers (T, one item per object) and parts (C, one item per part).

Every state change is one conditional write, so concurrent and repeated callers (SQS delivers at least once,
Lambda retries, workers die) cannot count a part twice or complete an object twice:
- `record_part` puts the part item only if absent AND decrements `remaining` on the job, in one transaction;
- `elect_completion` moves COPYING -> COMPLETING only while `remaining` is 0, so one completion wins.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from s3sync.contract import PARTS_HASH_KEY, PARTS_RANGE_KEY, TRANSFERS_HASH_KEY, Status
from s3sync.transfer.errors import RetryableError

_ser = TypeSerializer()
_de = TypeDeserializer()

NO_UPLOAD = "-"  # upload_id of a job copied whole (no multipart upload)


def _item(values: dict[str, Any]) -> dict[str, Any]:
    return {k: _ser.serialize(v) for k, v in values.items() if v is not None}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, set)):
        return [_plain(v) for v in value]
    return value


def from_image(image: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB item (or stream image) in attribute-value form -> plain Python values."""
    return {k: _plain(_de.deserialize(v)) for k, v in image.items()}


def now() -> int:
    return int(time.time())


@dataclass(frozen=True)
class Job:
    """One object's transfer, as stored in the transfers table."""

    job_id: str
    status: str
    source_bucket: str
    source_key: str
    source_etag: str
    dest_bucket: str
    dest_key: str
    size: int
    part_size: int
    total: int
    remaining: int
    upload_id: str = NO_UPLOAD
    source_version: str | None = None
    done: int = 0
    done_bytes: int = 0
    created_at: int = 0
    updated_at: int = 0
    error: str | None = None
    dest_etag: str | None = None
    completion_attempts: int = 0
    redrives: int = 0

    @property
    def multipart(self) -> bool:
        return self.upload_id != NO_UPLOAD

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> "Job":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in item.items() if k in known})

    def to_item(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if getattr(self, k) is not None}


@dataclass(frozen=True)
class PartRecord:
    part: int
    etag: str
    md5: str
    size: int


class Outcome:
    """What `record_part` did."""

    RECORDED = "recorded"  # counted now
    DUPLICATE = "duplicate"  # the part was already counted: nothing changed
    INACTIVE = "inactive"  # the job is gone, failed, completing/done, or belongs to another upload


class Ledger:
    def __init__(self, dynamodb: Any, transfers_table: str, parts_table: str) -> None:
        self.ddb = dynamodb
        self.transfers = transfers_table
        self.parts_table = parts_table

    # --- jobs -----------------------------------------------------------------------------------------------------
    def get_job(self, job_id: str) -> Job | None:
        resp = self.ddb.get_item(TableName=self.transfers, Key=_item({TRANSFERS_HASH_KEY: job_id}),
                                 ConsistentRead=True)
        return Job.from_item(from_image(resp["Item"])) if "Item" in resp else None

    def create_job(self, job: Job) -> bool:
        """Write a new job; False (and nothing written) when the job already exists."""
        try:
            self.ddb.put_item(
                TableName=self.transfers,
                Item=_item(job.to_item()),
                ConditionExpression="attribute_not_exists(#id)",
                ExpressionAttributeNames={"#id": TRANSFERS_HASH_KEY},
            )
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise

    def update_job(self, job_id: str, update: str, condition: str, values: dict[str, Any],
                    names: dict[str, str] | None = None) -> Job | None:
        """One conditional update of a job; the new job on success, None when the condition does not hold (`#s` is
        the status; other names in `names`)."""
        try:
            resp = self.ddb.update_item(
                TableName=self.transfers,
                Key=_item({TRANSFERS_HASH_KEY: job_id}),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames={"#s": "status", **(names or {})},
                ExpressionAttributeValues=_item(values),
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return None
            raise
        return Job.from_item(from_image(resp["Attributes"]))

    def mark_copying(self, job_id: str) -> Job | None:
        """PLANNED -> COPYING once every part message is enqueued."""
        return self.update_job(job_id, "SET #s = :copying, updated_at = :now", "#s = :planned",
                                {":copying": Status.COPYING, ":planned": Status.PLANNED, ":now": now()})

    def elect_completion(self, job_id: str) -> Job | None:
        """COPYING -> COMPLETING when every part is counted; only one caller ever wins."""
        return self.update_job(
            job_id, "SET #s = :completing, updated_at = :now",
            "#s = :copying AND remaining = :zero",
            {":completing": Status.COMPLETING, ":copying": Status.COPYING, ":zero": 0, ":now": now()},
        )

    def release_completion(self, job_id: str) -> Job | None:
        """COMPLETING -> COPYING after a passing failure: the stream record that follows elects again."""
        return self.update_job(
            job_id, "SET #s = :copying, updated_at = :now ADD completion_attempts :one",
            "#s = :completing",
            {":completing": Status.COMPLETING, ":copying": Status.COPYING, ":one": 1, ":now": now()},
        )

    def mark_done(self, job_id: str, dest_etag: str) -> Job | None:
        return self.update_job(
            job_id, "SET #s = :done, dest_etag = :etag, updated_at = :now", "#s = :completing",
            {":done": Status.DONE, ":completing": Status.COMPLETING, ":etag": dest_etag, ":now": now()},
        )

    def mark_failed(self, job_id: str, reason: str, upload_id: str | None = None) -> Job | None:
        """Any unfinished state -> FAILED with a reason; None if the job is already DONE/FAILED or unknown, or
        (with `upload_id`) if the job has moved on to another attempt."""
        values = {":failed": Status.FAILED, ":reason": reason[:1000], ":planned": Status.PLANNED,
                  ":copying": Status.COPYING, ":completing": Status.COMPLETING, ":now": now()}
        condition = "#s IN (:planned, :copying, :completing)"
        if upload_id is not None:
            condition += " AND upload_id = :upload"
            values[":upload"] = upload_id
        return self.update_job(job_id, "SET #s = :failed, #e = :reason, updated_at = :now", condition, values,
                                names={"#e": "error"})

    def touch(self, job_id: str) -> Job | None:
        """Rewrite a finished-copying job unchanged but for updated_at: a new stream record re-triggers completion."""
        return self.update_job(job_id, "SET updated_at = :now", "#s = :copying AND remaining = :zero",
                                {":copying": Status.COPYING, ":zero": 0, ":now": now()})

    def note_redrive(self, job: Job) -> Job | None:
        """Count a re-drive, only if nobody touched the job since it was read (so one sweeper acts)."""
        return self.update_job(job.job_id, "SET updated_at = :now ADD redrives :one",
                                "#s = :status AND updated_at = :seen",
                                {":status": job.status, ":seen": job.updated_at, ":one": 1, ":now": now()})

    def unfinished_jobs(self) -> list[Job]:
        """Jobs not DONE or FAILED (a scan with a filter: fine for the thousands a sweep sees at once)."""
        return [j for j in self.scan_jobs(only_unfinished=True) if j.status not in Status.FINAL]

    # --- parts ----------------------------------------------------------------------------------------------------
    def part_recorded(self, job_id: str, part: int) -> bool:
        resp = self.ddb.get_item(TableName=self.parts_table,
                                 Key=_item({PARTS_HASH_KEY: job_id, PARTS_RANGE_KEY: part}),
                                 ConsistentRead=True, ProjectionExpression="#p",
                                 ExpressionAttributeNames={"#p": PARTS_RANGE_KEY})
        return "Item" in resp

    def record_part(self, job_id: str, upload_id: str, record: PartRecord) -> str:
        """Record a copied part and count it, atomically. Returns an Outcome value."""
        ts = now()
        try:
            self.ddb.transact_write_items(TransactItems=[
                {"Put": {
                    "TableName": self.parts_table,
                    "Item": _item({PARTS_HASH_KEY: job_id, PARTS_RANGE_KEY: record.part, "etag": record.etag,
                                   "md5": record.md5, "size": record.size, "upload_id": upload_id,
                                   "recorded_at": ts}),
                    "ConditionExpression": "attribute_not_exists(#p)",
                    "ExpressionAttributeNames": {"#p": PARTS_RANGE_KEY},
                }},
                {"Update": {
                    "TableName": self.transfers,
                    "Key": _item({TRANSFERS_HASH_KEY: job_id}),
                    "UpdateExpression": "SET remaining = remaining - :one, updated_at = :now "
                                        "ADD done :one, done_bytes :size",
                    "ConditionExpression": "#s IN (:planned, :copying) AND upload_id = :upload "
                                           "AND remaining > :zero",
                    "ExpressionAttributeNames": {"#s": "status"},
                    "ExpressionAttributeValues": _item({":one": 1, ":zero": 0, ":size": record.size,
                                                        ":now": ts, ":upload": upload_id,
                                                        ":planned": Status.PLANNED, ":copying": Status.COPYING}),
                }},
            ])
            return Outcome.RECORDED
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "TransactionCanceledException":
                raise
            reasons = [r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])]
            if not reasons:  # a server that does not say which condition failed: look
                if self.part_recorded(job_id, record.part):
                    return Outcome.DUPLICATE
                job = self.get_job(job_id)
                if job is None or job.status not in (Status.PLANNED, Status.COPYING) or job.upload_id != upload_id:
                    return Outcome.INACTIVE
                raise RetryableError(f"transaction cancelled without reasons: {exc}") from None
            if reasons[0] == "ConditionalCheckFailed":
                return Outcome.DUPLICATE
            if len(reasons) > 1 and reasons[1] == "ConditionalCheckFailed":
                return Outcome.INACTIVE
            raise RetryableError(f"ledger transaction cancelled: {reasons}") from None

    def parts(self, job_id: str) -> list[PartRecord]:
        """Every recorded part of a job, sorted by part number (strongly consistent, paginated)."""
        out: list[PartRecord] = []
        kwargs: dict[str, Any] = {
            "TableName": self.parts_table,
            "KeyConditionExpression": "#h = :job",
            "ExpressionAttributeNames": {"#h": PARTS_HASH_KEY},
            "ExpressionAttributeValues": _item({":job": job_id}),
            "ConsistentRead": True,
        }
        while True:
            resp = self.ddb.query(**kwargs)
            for raw in resp.get("Items", []):
                item = from_image(raw)
                out.append(PartRecord(part=item[PARTS_RANGE_KEY], etag=item["etag"], md5=item["md5"],
                                      size=item["size"]))
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        out.sort(key=lambda p: p.part)
        return out

    def scan_jobs(self, only_unfinished: bool = False) -> list[Job]:
        """Every job (the local runner and `status` use it; fine for thousands, not millions)."""
        out: list[Job] = []
        kwargs: dict[str, Any] = {"TableName": self.transfers, "ConsistentRead": True}
        if only_unfinished:
            kwargs.update(FilterExpression="NOT #s IN (:done, :failed)", ExpressionAttributeNames={"#s": "status"},
                          ExpressionAttributeValues=_item({":done": Status.DONE, ":failed": Status.FAILED}))
        while True:
            resp = self.ddb.scan(**kwargs)
            out.extend(Job.from_item(from_image(i)) for i in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                return out
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
