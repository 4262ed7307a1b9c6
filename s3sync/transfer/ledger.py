"""The ledger over the two DynamoDB tables: transfers (T, one item per object) and parts (C, one item per part).

Every state change is one conditional write, so concurrent and repeated callers (SQS delivers at least once,
Lambda retries, workers die, answers get lost after the server acted) cannot count a part twice or complete an
object twice:
- every attempt at a job (the first, and each retry or re-copy) has its own random `attempt` token; part messages
  carry it and part items record it, so a late message of an earlier attempt is never counted in a later one, and
  an earlier attempt's part items count for nothing (they are overwritten, never in the way);
- `record_part` puts the part item unless this attempt already has it AND decrements `remaining` on the job only
  while the job is PLANNED/COPYING for this attempt, in one transaction;
- `elect_completion` moves COPYING -> COMPLETING only while `remaining` is 0 and hands the winner a random `lease`;
  everything the elected completion writes afterwards (DONE, FAILED, hand-back, un-counting) is conditioned on it,
  so a completion whose election was taken back (by the sweeper) cannot act on the job any more;
- every write adds 1 to the job's `rev`; writes decided on a read (the sweeper's, a retry's claim) are conditioned
  on the `rev` they read, never on a timestamp (two writes can share a second);
- a write whose answer was lost and which botocore then retried fails its own condition: callers re-read and
  recognise their own write by the token they wrote (`attempt`, `lease`).

Finding the jobs that need attention without reading the DONE ones: the writes that make a job unfinished (the
create, a re-attempt's claim) or FAILED set `attention` ("unfinished#<shard>", "failed#<shard>"), the write that makes
it DONE removes it, so the table's sparse index `Attention` (contract.ATTENTION_INDEX) lists exactly the unfinished
and the failed jobs; `unfinished_jobs` and `failed_jobs` query it. Reads of a global secondary index are eventually
consistent ("All reads from GSIs and streams are eventually consistent", DynamoDB developer guide, "DynamoDB read
consistency"): the index may still list a job that has just finished, or not yet list one just created. So it only
names candidates: each is read again, strongly consistently, before anyone acts on it.
"""

from __future__ import annotations

import secrets
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from s3sync.contract import (
    ATTENTION_ATTR,
    ATTENTION_INDEX,
    ATTENTION_RANGE,
    ATTENTION_SHARDS,
    PARTS_HASH_KEY,
    PARTS_RANGE_KEY,
    TRANSFERS_HASH_KEY,
    Status,
)
from s3sync.transfer.errors import RetryableError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_ser = TypeSerializer()
_de = TypeDeserializer()

NO_UPLOAD = "-"  # upload_id of a job copied whole (no multipart upload)
UNFINISHED = (Status.PLANNED, Status.COPYING, Status.COMPLETING)
BATCH_GET = 100  # BatchGetItem's limit of keys per request
BATCH_GET_ATTEMPTS = 8  # rounds of unprocessed keys asked again before giving up (a passing error)


class Attention:
    """The two parts of the `Attention` index: values of `ATTENTION_ATTR` before the shard."""

    UNFINISHED = "unfinished"
    FAILED = "failed"

    @staticmethod
    def key(kind: str, job_id: str) -> str:
        """The attribute's value for a job of this kind: the kind and the job's shard."""
        return f"{kind}#{zlib.crc32(job_id.encode('utf-8')) % ATTENTION_SHARDS}"

    @classmethod
    def of(cls, job_id: str, status: str) -> str | None:
        """The value a job in `status` carries (None: a DONE job, not in the index)."""
        if status == Status.DONE:
            return None
        return cls.key(cls.FAILED if status == Status.FAILED else cls.UNFINISHED, job_id)


def transfers_table_keys() -> dict[str, Any]:
    """The transfers table's key schema and its `Attention` index, as CreateTable takes them (ecs.yaml declares the
    same): for the local runner, the tests and the benchmarks, which create the table themselves."""
    return {
        "AttributeDefinitions": [{"AttributeName": TRANSFERS_HASH_KEY, "AttributeType": "S"},
                                 {"AttributeName": ATTENTION_ATTR, "AttributeType": "S"},
                                 {"AttributeName": ATTENTION_RANGE, "AttributeType": "N"}],
        "KeySchema": [{"AttributeName": TRANSFERS_HASH_KEY, "KeyType": "HASH"}],
        "GlobalSecondaryIndexes": [{
            "IndexName": ATTENTION_INDEX,
            "KeySchema": [{"AttributeName": ATTENTION_ATTR, "KeyType": "HASH"},
                          {"AttributeName": ATTENTION_RANGE, "KeyType": "RANGE"}],
            "Projection": {"ProjectionType": "KEYS_ONLY"},
        }],
    }


def token() -> str:
    """A fresh random token: an attempt's, or a completion's lease."""
    return secrets.token_hex(8)


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


def _counting_rev(update: str) -> str:
    """Add `ADD #rev :rev_one` to an update expression (into its ADD clause when it has one)."""
    head, sep, tail = update.partition(" ADD ")
    if sep:
        return f"{head} ADD #rev :rev_one, {tail}"
    return f"{update} ADD #rev :rev_one"


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
    attempt: str = ""  # this attempt's token (messages and part items carry it)
    inline: bool | None = None  # copied by the splitter itself (a small object): DONE with no part item
    lease: str | None = None  # the elected completion's token while COMPLETING
    rev: int = 0  # +1 on every write

    @property
    def finished(self) -> bool:
        return self.status in Status.FINAL

    @property
    def multipart(self) -> bool:
        return self.upload_id != NO_UPLOAD

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Job:
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
    kms: bool = False  # the destination answered under SSE-KMS: its ETag is no MD5 and differs per upload


class Outcome:
    """What `record_part` did."""

    RECORDED = "recorded"  # counted now
    DUPLICATE = "duplicate"  # the part was already counted: nothing changed
    INACTIVE = "inactive"  # the job is gone, failed, completing/done, or belongs to another upload


class Ledger:
    def __init__(self, dynamodb: DynamoDBClient, transfers_table: str, parts_table: str) -> None:
        self.ddb = dynamodb
        self.transfers = transfers_table
        self.parts_table = parts_table

    # --- jobs -----------------------------------------------------------------------------------------------------
    def get_job(self, job_id: str) -> Job | None:
        resp = self.ddb.get_item(TableName=self.transfers, Key=_item({TRANSFERS_HASH_KEY: job_id}),
                                 ConsistentRead=True)
        return Job.from_item(from_image(resp["Item"])) if "Item" in resp else None

    def create_job(self, job: Job) -> bool:
        """Write a new job; False (and nothing written) when the job already exists. An unfinished or failed job
        is written into the `Attention` index."""
        try:
            self.ddb.put_item(
                TableName=self.transfers,
                Item=_item({**job.to_item(), ATTENTION_ATTR: Attention.of(job.job_id, job.status)}),
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
        the status; other names in `names`). Every update also adds 1 to `rev`."""
        try:
            resp = self.ddb.update_item(
                TableName=self.transfers,
                Key=_item({TRANSFERS_HASH_KEY: job_id}),
                UpdateExpression=_counting_rev(update),
                ConditionExpression=condition,
                ExpressionAttributeNames={"#s": "status", "#rev": "rev", **(names or {})},
                ExpressionAttributeValues=_item({":rev_one": 1, **values}),
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return None
            raise
        return Job.from_item(from_image(resp["Attributes"]))

    def mark_copying(self, job: Job) -> Job | None:
        """PLANNED -> COPYING once every part message of this attempt is enqueued."""
        return self.update_job(job.job_id, "SET #s = :copying, updated_at = :now",
                                "#s = :planned AND attempt = :attempt",
                                {":copying": Status.COPYING, ":planned": Status.PLANNED, ":attempt": job.attempt,
                                 ":now": now()})

    def elect_completion(self, job_id: str) -> Job | None:
        """COPYING -> COMPLETING when every part is counted; only one caller ever wins, and gets the lease."""
        return self.update_job(
            job_id, "SET #s = :completing, lease = :lease, updated_at = :now",
            "#s = :copying AND remaining = :zero",
            {":completing": Status.COMPLETING, ":copying": Status.COPYING, ":zero": 0, ":lease": token(),
             ":now": now()},
        )

    def release_completion(self, job: Job, *, by_lease: bool = True) -> Job | None:
        """COMPLETING -> COPYING, which re-triggers completion when every part is counted: by the completion that
        holds the lease (`by_lease`), or by the sweeper, only if the job is still what it read (`rev`)."""
        condition, values = self._as_read(job, by_lease)
        return self.update_job(
            job.job_id, "SET #s = :copying, updated_at = :now REMOVE lease ADD completion_attempts :one",
            "#s = :completing AND " + condition,
            {":completing": Status.COMPLETING, ":copying": Status.COPYING, ":one": 1, ":now": now(), **values},
        )

    def mark_done(self, job: Job, dest_etag: str) -> Job | None:
        """COMPLETING -> DONE, by the completion that holds the lease; the job leaves the `Attention` index."""
        return self.update_job(
            job.job_id, "SET #s = :done, dest_etag = :etag, updated_at = :now REMOVE lease, #att",
            "#s = :completing AND lease = :lease",
            {":done": Status.DONE, ":completing": Status.COMPLETING, ":etag": dest_etag, ":lease": job.lease,
             ":now": now()},
            names={"#att": ATTENTION_ATTR},
        )

    def mark_failed(self, job: Job, reason: str, *, by: str) -> Job | None:
        """An unfinished job -> FAILED with a reason, only if the failing party still speaks for it:
        - by="attempt": a worker or the splitter, while the job is PLANNED/COPYING for the same attempt (a worker
          never fails a job being completed: a part refused then may be a late duplicate of a finished upload);
        - by="lease": the completion holding the lease;
        - by="rev": the sweeper (or anyone who decided on a read), if nothing changed the job since it read it.
        None when the condition does not hold. The job moves to the failed part of the `Attention` index."""
        values: dict[str, Any] = {":failed": Status.FAILED, ":reason": reason[:1000], ":now": now(),
                                  ":att": Attention.key(Attention.FAILED, job.job_id)}
        if by == "attempt":
            condition = "#s IN (:planned, :copying) AND attempt = :attempt"
            values.update({":planned": Status.PLANNED, ":copying": Status.COPYING, ":attempt": job.attempt})
        elif by in ("lease", "rev"):
            condition, extra = self._as_read(job, by == "lease")
            condition = "#s IN (:planned, :copying, :completing) AND " + condition
            values.update({":planned": Status.PLANNED, ":copying": Status.COPYING,
                           ":completing": Status.COMPLETING, **extra})
        else:
            raise ValueError(f"mark_failed by {by!r}")
        return self.update_job(job.job_id,
                                "SET #s = :failed, #e = :reason, updated_at = :now, #att = :att REMOVE lease",
                                condition, values, names={"#e": "error", "#att": ATTENTION_ATTR})

    def touch(self, job: Job) -> Job | None:
        """Rewrite a finished-copying job unchanged but for updated_at (if nothing changed it since it was read): a
        new stream record re-triggers completion."""
        return self.update_job(job.job_id, "SET updated_at = :now",
                                "#s = :copying AND remaining = :zero AND #rev = :seen",
                                {":copying": Status.COPYING, ":zero": 0, ":seen": job.rev, ":now": now()})

    def note_redrive(self, job: Job) -> Job | None:
        """Count a re-drive, only if nobody touched the job since it was read (so one sweeper acts)."""
        return self.update_job(job.job_id, "SET updated_at = :now ADD redrives :one",
                                "#s = :status AND #rev = :seen",
                                {":status": job.status, ":seen": job.rev, ":one": 1, ":now": now()})

    @staticmethod
    def _as_read(job: Job, by_lease: bool) -> tuple[str, dict[str, Any]]:
        if by_lease:
            return "lease = :lease", {":lease": job.lease}
        return "#rev = :seen", {":seen": job.rev}

    # --- the jobs that need attention (the sparse `Attention` index) ----------------------------------------------
    def attention_ids(self, kind: str, *, created_before: int | None = None) -> Iterator[str]:
        """The ids the `Attention` index lists under `kind` (Attention.UNFINISHED or FAILED), every shard, page by
        page; with `created_before`, only jobs created at or before that time. Eventually consistent: a candidate
        list, to be read again before use (see the module's docstring)."""
        names = {"#a": ATTENTION_ATTR}
        condition = "#a = :a"
        if created_before is not None:
            names["#c"] = ATTENTION_RANGE
            condition += " AND #c <= :before"
        for shard in range(ATTENTION_SHARDS):
            values: dict[str, str | int] = {":a": f"{kind}#{shard}"}
            if created_before is not None:
                values[":before"] = int(created_before)
            kwargs: dict[str, Any] = {"TableName": self.transfers, "IndexName": ATTENTION_INDEX,
                                      "KeyConditionExpression": condition, "ExpressionAttributeNames": names,
                                      "ExpressionAttributeValues": _item(values)}
            while True:
                resp = self.ddb.query(**kwargs)
                for raw in resp.get("Items", []):
                    yield raw[TRANSFERS_HASH_KEY]["S"]
                if "LastEvaluatedKey" not in resp:
                    break
                kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def get_jobs(self, job_ids: Iterable[str], *, consistent: bool = True) -> list[Job]:
        """The jobs with these ids (those that exist), BATCH_GET per BatchGetItem, strongly consistent unless told
        otherwise; keys DynamoDB leaves unprocessed are asked again, after a short pause."""
        ids = list(dict.fromkeys(job_ids))
        out: list[Job] = []
        for i in range(0, len(ids), BATCH_GET):
            request: dict[str, Any] = {self.transfers: {
                "Keys": [_item({TRANSFERS_HASH_KEY: j}) for j in ids[i:i + BATCH_GET]], "ConsistentRead": consistent}}
            for attempt in range(BATCH_GET_ATTEMPTS):
                resp = self.ddb.batch_get_item(RequestItems=request)
                out.extend(Job.from_item(from_image(raw)) for raw in resp.get("Responses", {}).get(self.transfers, []))
                request = resp.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(min(1.0, 0.05 * 2**attempt))
            else:
                raise RetryableError(f"DynamoDB left {len(request[self.transfers]['Keys'])} job(s) unread after "
                                     f"{BATCH_GET_ATTEMPTS} BatchGetItem rounds")
        return out

    def unfinished_jobs(self, *, created_before: int | None = None, consistent: bool = True) -> list[Job]:
        """Jobs not DONE or FAILED (created at or before `created_before`, when given): the index's candidates,
        each read again, strongly consistently unless told otherwise (a report may read eventually consistently,
        the sweeper never does), so a job that finished meanwhile is left out and every field is current. What
        this reads grows with the unfinished jobs, never with the DONE ones."""
        ids = self.attention_ids(Attention.UNFINISHED, created_before=created_before)
        return [j for j in self.get_jobs(ids, consistent=consistent) if j.status not in Status.FINAL]

    def failed_jobs(self, *, consistent: bool = True) -> list[Job]:
        """The FAILED jobs, from the index, each read again."""
        return [j for j in self.get_jobs(self.attention_ids(Attention.FAILED), consistent=consistent)
                if j.status == Status.FAILED]

    def reindex(self) -> dict[str, int]:
        """Put the unfinished and failed jobs that lack `attention` (written by a version without the index) into
        the index: one Scan of the whole table, then one conditional write per such job (only if its status is
        still the one read; a job that changed meanwhile is counted as skipped: run it again). Once, after the
        upgrade that added the index."""
        counts = {"scanned": 0, "indexed": 0, "skipped": 0}
        kwargs: dict[str, Any] = {"TableName": self.transfers,
                                  "FilterExpression": "attribute_not_exists(#a) AND #s <> :done",
                                  "ExpressionAttributeNames": {"#a": ATTENTION_ATTR, "#s": "status"},
                                  "ExpressionAttributeValues": _item({":done": Status.DONE})}
        while True:
            resp = self.ddb.scan(**kwargs)
            counts["scanned"] += int(resp.get("ScannedCount", 0))
            for raw in resp.get("Items", []):
                job = Job.from_item(from_image(raw))
                done = self.update_job(job.job_id, "SET #att = :att",
                                       "#s = :seen_status AND attribute_not_exists(#att)",
                                       {":att": Attention.of(job.job_id, job.status), ":seen_status": job.status},
                                       names={"#att": ATTENTION_ATTR})
                counts["indexed" if done else "skipped"] += 1
            if "LastEvaluatedKey" not in resp:
                return counts
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    # --- parts ----------------------------------------------------------------------------------------------------
    def part_recorded(self, job_id: str, attempt: str, part: int) -> bool:
        """Whether this attempt has counted this part."""
        resp = self.ddb.get_item(TableName=self.parts_table,
                                 Key=_item({PARTS_HASH_KEY: job_id, PARTS_RANGE_KEY: part}),
                                 ConsistentRead=True, ProjectionExpression="attempt")
        return resp.get("Item", {}).get("attempt", {}).get("S") == attempt

    def record_part(self, job_id: str, attempt: str, upload_id: str, record: PartRecord) -> str:
        """Record a copied part and count it, atomically. Returns an Outcome value."""
        ts = now()
        try:
            self.ddb.transact_write_items(TransactItems=[
                {"Put": {
                    "TableName": self.parts_table,
                    "Item": _item({PARTS_HASH_KEY: job_id, PARTS_RANGE_KEY: record.part, "etag": record.etag,
                                   "md5": record.md5, "size": record.size, "kms": record.kms or None,
                                   "attempt": attempt, "upload_id": upload_id, "recorded_at": ts}),
                    # an earlier attempt's item is overwritten: it counts for nothing in this one
                    "ConditionExpression": "attribute_not_exists(#p) OR attempt <> :attempt",
                    "ExpressionAttributeNames": {"#p": PARTS_RANGE_KEY},
                    "ExpressionAttributeValues": _item({":attempt": attempt}),
                }},
                {"Update": {
                    "TableName": self.transfers,
                    "Key": _item({TRANSFERS_HASH_KEY: job_id}),
                    "UpdateExpression": "SET remaining = remaining - :one, updated_at = :now "
                                        "ADD done :one, done_bytes :size, #rev :one",
                    "ConditionExpression": "#s IN (:planned, :copying) AND attempt = :attempt "
                                           "AND remaining > :zero",
                    "ExpressionAttributeNames": {"#s": "status", "#rev": "rev"},
                    "ExpressionAttributeValues": _item({":one": 1, ":zero": 0, ":size": record.size,
                                                        ":now": ts, ":attempt": attempt,
                                                        ":planned": Status.PLANNED, ":copying": Status.COPYING}),
                }},
            ])
            return Outcome.RECORDED
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "TransactionCanceledException":
                raise
            reasons = [r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])]
            if not reasons:  # a server that does not say which condition failed: look
                if self.part_recorded(job_id, attempt, record.part):
                    return Outcome.DUPLICATE
                job = self.get_job(job_id)
                if job is None or job.status not in (Status.PLANNED, Status.COPYING) or job.attempt != attempt:
                    return Outcome.INACTIVE
                raise RetryableError(f"transaction cancelled without reasons: {exc}") from None
            if reasons[0] == "ConditionalCheckFailed":
                return Outcome.DUPLICATE
            if len(reasons) > 1 and reasons[1] == "ConditionalCheckFailed":
                return Outcome.INACTIVE
            raise RetryableError(f"ledger transaction cancelled: {reasons}") from None

    def uncount_part(self, job: Job, record: PartRecord) -> bool:
        """Take back a counted part of the job being completed (its bytes at the destination are not the ones
        counted): the part item goes, `remaining` goes up again; only by the completion holding the lease."""
        try:
            self.ddb.transact_write_items(TransactItems=[
                {"Delete": {
                    "TableName": self.parts_table,
                    "Key": _item({PARTS_HASH_KEY: job.job_id, PARTS_RANGE_KEY: record.part}),
                    "ConditionExpression": "attempt = :attempt",
                    "ExpressionAttributeValues": _item({":attempt": job.attempt}),
                }},
                {"Update": {
                    "TableName": self.transfers,
                    "Key": _item({TRANSFERS_HASH_KEY: job.job_id}),
                    "UpdateExpression": "SET remaining = remaining + :one, updated_at = :now "
                                        "ADD done :minus, done_bytes :bytes, #rev :one",
                    "ConditionExpression": "#s = :completing AND lease = :lease",
                    "ExpressionAttributeNames": {"#s": "status", "#rev": "rev"},
                    "ExpressionAttributeValues": _item({":one": 1, ":minus": -1, ":bytes": -record.size,
                                                        ":now": now(), ":completing": Status.COMPLETING,
                                                        ":lease": job.lease}),
                }},
            ])
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "TransactionCanceledException":
                return False
            raise

    def parts(self, job_id: str, attempt: str) -> list[PartRecord]:
        """The parts an attempt has counted, sorted by part number (strongly consistent, paginated)."""
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
                if item.get("attempt") == attempt:
                    out.append(PartRecord(part=item[PARTS_RANGE_KEY], etag=item["etag"], md5=item["md5"],
                                          size=item["size"], kms=bool(item.get("kms"))))
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        out.sort(key=lambda p: p.part)
        return out

    def scan_jobs(self, only_unfinished: bool = False) -> list[Job]:
        """Every job, by a Scan of the whole table (the local runner, `status --all`, a job named by an id prefix;
        fine for thousands, not millions: the sweeper and `status` query the `Attention` index instead)."""
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
