"""StreamReader against a real moto server, and against a scripted multi-shard stream."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from s3sync import contract
from s3sync.local.events import dynamodb_stream
from s3sync.local.patterns import matches_any
from s3sync.local.streams import StreamReader


def make_transfers_table(ddb: Any) -> tuple[str, str]:
    name = f"transfers-{uuid.uuid4().hex[:8]}"
    desc = ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "job_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": contract.TRANSFERS_STREAM_VIEW},
    )["TableDescription"]
    return name, desc["LatestStreamArn"]


def test_modify_records_with_both_images_in_order(boto_client, sample_event):
    ddb, streams = boto_client("dynamodb"), boto_client("dynamodbstreams")
    table, arn = make_transfers_table(ddb)
    reader = StreamReader(streams, arn)
    assert reader.poll() == []

    key = {"job_id": {"S": "job-1"}}
    ddb.put_item(TableName=table, Item={**key, "status": {"S": "COPYING"}, "remaining": {"N": "2"},
                                        "total": {"N": "2"}})
    for _ in range(2):
        ddb.update_item(TableName=table, Key=key, UpdateExpression="SET remaining = remaining - :one",
                        ExpressionAttributeValues={":one": {"N": "1"}})
    records = reader.poll()
    assert [r["eventName"] for r in records] == ["INSERT", "MODIFY", "MODIFY"]
    seqs = [int(r["dynamodb"]["SequenceNumber"]) for r in records]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    first, last = records[1]["dynamodb"], records[2]["dynamodb"]
    assert (first["OldImage"]["remaining"], first["NewImage"]["remaining"]) == ({"N": "2"}, {"N": "1"})
    assert (last["OldImage"]["remaining"], last["NewImage"]["remaining"]) == ({"N": "1"}, {"N": "0"})
    assert "OldImage" not in records[0]["dynamodb"]
    assert reader.poll() == []  # never twice

    # the Lambda view of the batch, through the completion filters: only the transition to 0 gets through
    event = dynamodb_stream(records, arn)
    sample = sample_event("dynamodb-stream-modify")["Records"][0]
    converted = event["Records"][2]
    assert set(converted) == set(sample) and set(converted["dynamodb"]) == set(sample["dynamodb"])
    assert isinstance(converted["dynamodb"]["ApproximateCreationDateTime"], float)
    assert converted["eventSourceARN"] == arn
    delivered = [r for r in event["Records"] if matches_any(contract.COMPLETION_FILTERS, r)]
    assert [r["dynamodb"]["NewImage"]["remaining"] for r in delivered] == [{"N": "0"}]

    ddb.update_item(TableName=table, Key=key, UpdateExpression="SET #s = :f",
                    ExpressionAttributeNames={"#s": "status"}, ExpressionAttributeValues={":f": {"S": "FAILED"}})
    more = reader.poll()
    assert len(more) == 1 and more[0]["dynamodb"]["NewImage"]["status"] == {"S": "FAILED"}
    assert matches_any(contract.COMPLETION_FILTERS, dynamodb_stream(more, arn)["Records"][0])


def test_transaction_writes_reach_the_stream(boto_client):
    """The worker records a part and decrements `remaining` in one TransactWriteItems: the stream sees it."""
    ddb, streams = boto_client("dynamodb"), boto_client("dynamodbstreams")
    table, arn = make_transfers_table(ddb)
    key = {"job_id": {"S": "job-tx"}}
    ddb.put_item(TableName=table, Item={**key, "status": {"S": "COPYING"}, "remaining": {"N": "1"}})
    reader = StreamReader(streams, arn, start="LATEST")
    assert reader.poll() == []  # LATEST: the INSERT is before our start
    update = {"Update": {"TableName": table, "Key": key, "UpdateExpression": "SET remaining = remaining - :one",
                         "ConditionExpression": "remaining > :zero",
                         "ExpressionAttributeValues": {":one": {"N": "1"}, ":zero": {"N": "0"}}}}
    ddb.transact_write_items(TransactItems=[update])
    with pytest.raises(ClientError) as failed:  # the same decrement again: the condition refuses it
        ddb.transact_write_items(TransactItems=[update])
    assert failed.value.response["Error"]["Code"] == "TransactionCanceledException"
    records = reader.poll()
    assert [r["eventName"] for r in records] == ["MODIFY"]
    assert records[0]["dynamodb"]["NewImage"]["remaining"] == {"N": "0"}


# --- scripted stream: shard splits, pagination, expired iterators ----------------------------------------------------
class FakeStreams:
    """A dynamodbstreams client double with a parent shard that closes and two children."""

    def __init__(self) -> None:
        self.shards: dict[str, dict[str, Any]] = {}
        self.data: dict[str, list[dict[str, Any]]] = {}
        self.iterators: dict[str, tuple[str, int]] = {}
        self.expire_next = False
        self.calls: list[str] = []

    def add_shard(self, sid: str, parent: str | None = None) -> None:
        self.shards[sid] = {"ShardId": sid, "SequenceNumberRange": {"StartingSequenceNumber": "0"},
                            **({"ParentShardId": parent} if parent else {})}
        self.data[sid] = []

    def close(self, sid: str) -> None:
        self.shards[sid]["SequenceNumberRange"]["EndingSequenceNumber"] = "999"

    def write(self, sid: str, seq: int) -> None:
        self.data[sid].append({"eventID": f"{sid}-{seq}", "eventName": "MODIFY",
                               "dynamodb": {"SequenceNumber": str(seq), "Keys": {}}})

    def describe_stream(self, StreamArn: str, ExclusiveStartShardId: str | None = None) -> dict[str, Any]:
        ids = sorted(self.shards)
        if ExclusiveStartShardId:
            ids = [i for i in ids if i > ExclusiveStartShardId]
        page = ids[:1]  # one shard per page: exercises LastEvaluatedShardId
        desc: dict[str, Any] = {"Shards": [self.shards[i] for i in page]}
        if len(ids) > 1:
            desc["LastEvaluatedShardId"] = page[0]
        return {"StreamDescription": desc}

    def _new_iterator(self, sid: str, pos: int) -> str:
        it = uuid.uuid4().hex
        self.iterators[it] = (sid, pos)
        return it

    def get_shard_iterator(self, StreamArn: str, ShardId: str, ShardIteratorType: str,
                           SequenceNumber: str | None = None) -> dict[str, Any]:
        self.calls.append(f"{ShardIteratorType}:{ShardId}")
        recs = self.data[ShardId]
        if ShardIteratorType == "TRIM_HORIZON":
            pos = 0
        elif ShardIteratorType == "LATEST":
            pos = len(recs)
        else:  # AFTER_SEQUENCE_NUMBER
            pos = next((i + 1 for i, r in enumerate(recs) if r["dynamodb"]["SequenceNumber"] == SequenceNumber), 0)
        return {"ShardIterator": self._new_iterator(ShardId, pos)}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        if self.expire_next:
            self.expire_next = False
            raise ClientError({"Error": {"Code": "ExpiredIteratorException", "Message": "expired"}}, "GetRecords")
        sid, pos = self.iterators[ShardIterator]
        recs = self.data[sid][pos:pos + min(Limit, 2)]  # small pages: exercises NextShardIterator
        new_pos = pos + len(recs)
        closed = "EndingSequenceNumber" in self.shards[sid]["SequenceNumberRange"]
        nxt = None if (closed and new_pos >= len(self.data[sid])) else self._new_iterator(sid, new_pos)
        return {"Records": recs, **({"NextShardIterator": nxt} if nxt else {})}


def ids(records: list[dict[str, Any]]) -> list[str]:
    return [r["eventID"] for r in records]


def test_follows_iterators_splits_and_expiry():
    fake = FakeStreams()
    fake.add_shard("shard-a")
    for seq in (1, 2, 3, 4, 5):
        fake.write("shard-a", seq)
    reader = StreamReader(fake, "arn:stream", refresh_every=0)
    assert ids(reader.poll()) == [f"shard-a-{s}" for s in (1, 2, 3, 4, 5)]  # across 3 pages

    # the parent splits: two children appear; the parent gets its last records and closes
    fake.write("shard-a", 6)
    fake.close("shard-a")
    fake.add_shard("shard-b", parent="shard-a")
    fake.add_shard("shard-c", parent="shard-a")
    fake.write("shard-b", 10)
    fake.write("shard-c", 20)
    assert ids(reader.poll()) == ["shard-a-6", "shard-b-10", "shard-c-20"]  # parent first
    assert reader.poll() == []

    # an expired iterator is replaced AFTER_SEQUENCE_NUMBER the last record: nothing lost, nothing repeated
    fake.write("shard-b", 11)
    fake.expire_next = True
    assert ids(reader.poll()) == ["shard-b-11"]
    assert "AFTER_SEQUENCE_NUMBER:shard-b" in fake.calls
    assert reader.shard_ids == ["shard-a", "shard-b", "shard-c"]


def test_latest_skips_existing_records_and_closed_shards_but_reads_new_children():
    fake = FakeStreams()
    fake.add_shard("shard-a")
    fake.write("shard-a", 1)
    fake.close("shard-a")
    fake.add_shard("shard-b", parent="shard-a")
    fake.write("shard-b", 5)
    reader = StreamReader(fake, "arn:stream", start="LATEST", refresh_every=0)
    assert reader.poll() == []
    fake.write("shard-b", 6)
    fake.add_shard("shard-c", parent="shard-b")  # discovered later: read from its start ...
    fake.write("shard-c", 7)
    assert ids(reader.poll()) == ["shard-b-6"]  # ... once its parent is read to the end
    fake.write("shard-b", 8)
    fake.close("shard-b")
    assert ids(reader.poll()) == ["shard-b-8", "shard-c-7"]
    with pytest.raises(ValueError):
        StreamReader(fake, "arn:stream", start="AT_TIMESTAMP")


def test_shards_are_listed_and_reopened_at_most_once_per_refresh():
    # The reader's clock starts near 0, as time.monotonic() does on a machine booted seconds ago: the first re-open
    # must not wait for an uptime of refresh_every (issue 11), and later ones come once per refresh_every.
    now = [5.0]
    fake = FakeStreams()
    fake.add_shard("shard-a")
    fake.write("shard-a", 1)
    described: list[int] = []
    describe = fake.describe_stream
    fake.describe_stream = lambda **kw: (described.append(1), describe(**kw))[1]  # type: ignore[method-assign]
    reader = StreamReader(fake, "arn:stream", refresh_every=3600, clock=lambda: now[0])
    reopens = lambda: [c for c in fake.calls if c.startswith("AFTER_SEQUENCE_NUMBER")]  # noqa: E731
    assert ids(reader.poll()) == ["shard-a-1"]
    for _ in range(5):
        assert reader.poll() == []
    fake.write("shard-a", 2)
    assert ids(reader.poll()) == ["shard-a-2"]  # the live iterator sees new records without a re-open
    assert len(described) == 1
    assert reopens() == ["AFTER_SEQUENCE_NUMBER:shard-a"]  # the first empty read re-opened at once

    now[0] += 3599
    assert reader.poll() == []
    assert reopens() == ["AFTER_SEQUENCE_NUMBER:shard-a"] and len(described) == 1
    now[0] += 1
    assert reader.poll() == []
    assert reopens() == ["AFTER_SEQUENCE_NUMBER:shard-a"] * 2 and len(described) == 2


def test_first_reopen_does_not_depend_on_the_monotonic_clock_origin():
    # The real clock, whatever the machine's uptime: an empty read re-opens once even with a refresh of 10^9 s.
    fake = FakeStreams()
    fake.add_shard("shard-a")
    fake.write("shard-a", 1)
    reader = StreamReader(fake, "arn:stream", refresh_every=1e9)
    assert ids(reader.poll()) == ["shard-a-1"]
    assert reader.poll() == []
    assert [c for c in fake.calls if c.startswith("AFTER_SEQUENCE_NUMBER")] == ["AFTER_SEQUENCE_NUMBER:shard-a"]
