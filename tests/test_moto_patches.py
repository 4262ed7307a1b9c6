"""The embedded moto server's patches (s3sync.local.moto_patches) keep DynamoDB's and SQS's semantics: checked over
real HTTP against the patched server, for the outcomes the ledger and the runner rely on."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from s3sync.local import moto_patches

pytestmark = pytest.mark.usefixtures("moto_server")


@pytest.fixture
def ddb(boto_client: Any) -> Any:
    return boto_client("dynamodb")


@pytest.fixture
def table(ddb: Any) -> str:
    name = f"patched-{uuid.uuid4().hex[:8]}"
    ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                     StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"})
    return name


def _put(table: str, pk: str, n: int, condition: str | None = None, **extra: Any) -> dict[str, Any]:
    op: dict[str, Any] = {"TableName": table, "Item": {"pk": {"S": pk}, "n": {"N": str(n)}}, **extra}
    if condition:
        op["ConditionExpression"] = condition
    return {"Put": op}


def _stream(boto_client: Any, ddb: Any, table: str) -> tuple[Any, str]:
    streams = boto_client("dynamodbstreams")
    arn = ddb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    it = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    return streams, it


def test_patches_are_applied_by_the_server() -> None:
    assert moto_patches.applied() == {"transactions": True, "key_query": True, "stream_records": True,
                                      "index_query": True, "sqs_counts": True, "sqs_clock": True,
                                      "dispatch": True, "no_such_upload": True}


def test_transaction_writes_every_item_and_their_stream_records(ddb: Any, boto_client: Any, table: str) -> None:
    ddb.transact_write_items(TransactItems=[
        _put(table, "a", 1, "attribute_not_exists(pk)"),
        {"Update": {"TableName": table, "Key": {"pk": {"S": "b"}}, "UpdateExpression": "ADD n :one",
                    "ExpressionAttributeValues": {":one": {"N": "1"}}}},
    ])
    assert ddb.get_item(TableName=table, Key={"pk": {"S": "a"}})["Item"]["n"] == {"N": "1"}
    assert ddb.get_item(TableName=table, Key={"pk": {"S": "b"}})["Item"]["n"] == {"N": "1"}
    streams, it = _stream(boto_client, ddb, table)
    records = streams.get_records(ShardIterator=it)["Records"]
    # (moto, patched or not, records an Update that creates its item twice: INSERT, INSERT)
    assert {r["eventName"] for r in records} == {"INSERT"}
    first = records[0]["dynamodb"]
    assert first["NewImage"] == {"pk": {"S": "a"}, "n": {"N": "1"}} and first["Keys"] == {"pk": {"S": "a"}}
    assert abs(first["ApproximateCreationDateTime"].timestamp() - time.time()) < 60  # a timestamp, as in AWS
    assert {r["dynamodb"]["Keys"]["pk"]["S"] for r in records} == {"a", "b"}


def test_cancelled_transaction_writes_nothing_and_gives_reasons(ddb: Any, boto_client: Any, table: str) -> None:
    ddb.put_item(TableName=table, Item={"pk": {"S": "taken"}, "n": {"N": "7"}})
    streams, it = _stream(boto_client, ddb, table)
    first = streams.get_records(ShardIterator=it)
    assert len(first["Records"]) == 1
    with pytest.raises(ClientError) as info:
        ddb.transact_write_items(TransactItems=[
            _put(table, "fresh", 1, "attribute_not_exists(pk)"),
            _put(table, "taken", 2, "attribute_not_exists(pk)", ReturnValuesOnConditionCheckFailure="ALL_OLD"),
        ])
    err = info.value.response
    assert err["Error"]["Code"] == "TransactionCanceledException"
    reasons = err["CancellationReasons"]
    assert reasons[0] == {"Code": "None"}
    assert reasons[1]["Code"] == "ConditionalCheckFailed"
    assert reasons[1]["Item"] == {"pk": {"S": "taken"}, "n": {"N": "7"}}
    assert "Item" not in ddb.get_item(TableName=table, Key={"pk": {"S": "fresh"}})
    assert ddb.get_item(TableName=table, Key={"pk": {"S": "taken"}})["Item"]["n"] == {"N": "7"}
    # the iterator opened before the cancellation still reads what comes after it (no table replaced)
    ddb.put_item(TableName=table, Item={"pk": {"S": "later"}, "n": {"N": "1"}})
    after = streams.get_records(ShardIterator=first["NextShardIterator"])["Records"]
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in after] == ["later"]


def test_same_item_twice_is_a_validation_error(ddb: Any, table: str) -> None:
    with pytest.raises(ClientError) as info:
        ddb.transact_write_items(TransactItems=[_put(table, "x", 1), _put(table, "x", 2)])
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert "Item" not in ddb.get_item(TableName=table, Key={"pk": {"S": "x"}})


def test_a_write_that_fails_after_its_checks_undoes_the_others(ddb: Any, boto_client: Any, table: str) -> None:
    ddb.put_item(TableName=table, Item={"pk": {"S": "s"}, "n": {"S": "text"}})
    streams, it = _stream(boto_client, ddb, table)
    seen = streams.get_records(ShardIterator=it)
    with pytest.raises(ClientError):
        ddb.transact_write_items(TransactItems=[
            _put(table, "p", 1),
            {"Update": {"TableName": table, "Key": {"pk": {"S": "s"}}, "UpdateExpression": "ADD n :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}}}},  # ADD to a string: invalid
        ])
    assert "Item" not in ddb.get_item(TableName=table, Key={"pk": {"S": "p"}})
    assert ddb.get_item(TableName=table, Key={"pk": {"S": "s"}})["Item"]["n"] == {"S": "text"}
    more = streams.get_records(ShardIterator=seen["NextShardIterator"])["Records"]
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in more] == []


def test_missing_table_is_moto_s_own_error(ddb: Any) -> None:
    with pytest.raises(ClientError) as info:
        ddb.transact_write_items(TransactItems=[_put("no-such-table", "a", 1)])
    assert info.value.response["Error"]["Code"] in ("ResourceNotFoundException", "TransactionCanceledException")


def test_queue_counts_still_answer_get_queue_attributes(boto_client: Any) -> None:
    sqs = boto_client("sqs")
    url = sqs.create_queue(QueueName=f"patched-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"m{i}"} for i in range(5)])
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2, VisibilityTimeout=30)["Messages"]
    assert len(got) == 2
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert (attrs["ApproximateNumberOfMessages"], attrs["ApproximateNumberOfMessagesNotVisible"]) == ("3", "2")
    sqs.delete_message(QueueUrl=url, ReceiptHandle=got[0]["ReceiptHandle"])
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert (attrs["ApproximateNumberOfMessages"], attrs["ApproximateNumberOfMessagesNotVisible"]) == ("3", "1")


def test_key_query_returns_the_partition_in_order_with_conditions_and_pages(ddb: Any) -> None:
    name = f"patched-q-{uuid.uuid4().hex[:8]}"
    ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "job", "AttributeType": "S"},
                                           {"AttributeName": "part", "AttributeType": "N"}],
                     KeySchema=[{"AttributeName": "job", "KeyType": "HASH"},
                                {"AttributeName": "part", "KeyType": "RANGE"}])
    for job in ("a", "b", "c"):
        for part in (3, 1, 10, 2):
            ddb.put_item(TableName=name, Item={"job": {"S": job}, "part": {"N": str(part)}, "v": {"S": job}})

    def parts(**kwargs: Any) -> list[int]:
        resp = ddb.query(TableName=name, KeyConditionExpression=kwargs.pop("cond", "job = :j"),
                         ExpressionAttributeValues={":j": {"S": "b"}, **kwargs.pop("values", {})}, **kwargs)
        assert all(item["v"] == {"S": "b"} for item in resp["Items"])
        return [int(item["part"]["N"]) for item in resp["Items"]]

    assert parts() == [1, 2, 3, 10]
    assert parts(ScanIndexForward=False) == [10, 3, 2, 1]
    assert parts(cond="job = :j AND part > :p", values={":p": {"N": "2"}}) == [3, 10]
    first = ddb.query(TableName=name, KeyConditionExpression="job = :j", Limit=2,
                      ExpressionAttributeValues={":j": {"S": "b"}})
    rest = ddb.query(TableName=name, KeyConditionExpression="job = :j", ExclusiveStartKey=first["LastEvaluatedKey"],
                     ExpressionAttributeValues={":j": {"S": "b"}})
    assert [int(i["part"]["N"]) for i in first["Items"] + rest["Items"]] == [1, 2, 3, 10]
    assert ddb.query(TableName=name, KeyConditionExpression="job = :j",
                     ExpressionAttributeValues={":j": {"S": "none"}})["Items"] == []


def test_index_query_follows_every_write_as_a_scan_sees_it(ddb: Any) -> None:
    """A sparse GSI (as the transfers table's `Attention`): the patched query answers what a Scan with the same
    condition finds, in the index's order, after puts, updates that set, change and remove the key, deletes, a
    transaction, a cancelled one, and one whose write failed after its checks (undone)."""
    name = f"patched-gsi-{uuid.uuid4().hex[:8]}"
    ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                           {"AttributeName": "att", "AttributeType": "S"},
                                           {"AttributeName": "at", "AttributeType": "N"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                     GlobalSecondaryIndexes=[{"IndexName": "Att", "Projection": {"ProjectionType": "KEYS_ONLY"},
                                              "KeySchema": [{"AttributeName": "att", "KeyType": "HASH"},
                                                            {"AttributeName": "at", "KeyType": "RANGE"}]}])

    def put(pk: str, att: str | None, at: int = 1) -> None:
        item = {"pk": {"S": pk}, "at": {"N": str(at)}, "n": {"S": "text"}}
        if att:
            item["att"] = {"S": att}
        ddb.put_item(TableName=name, Item=item)

    def indexed(att: str, **kwargs: Any) -> list[str]:
        out, extra = [], {}
        while True:
            resp = ddb.query(TableName=name, IndexName="Att",
                             KeyConditionExpression="att = :a" + kwargs.get("cond", ""),
                             ExpressionAttributeValues={":a": {"S": att}, **kwargs.get("values", {})},
                             Limit=2, **extra)
            assert all(set(i) == {"pk", "att", "at"} for i in resp["Items"])  # KEYS_ONLY
            out += [i["pk"]["S"] for i in resp["Items"]]
            if "LastEvaluatedKey" not in resp:
                return out
            extra = {"ExclusiveStartKey": resp["LastEvaluatedKey"]}

    def scanned(att: str) -> list[str]:
        items = ddb.scan(TableName=name, FilterExpression="att = :a",
                         ExpressionAttributeValues={":a": {"S": att}})["Items"]
        return [i["pk"]["S"] for i in sorted(items, key=lambda i: (int(i["at"]["N"]), i["pk"]["S"]))]

    for i in range(6):
        put(f"k{i}", "u#1" if i % 2 else "u#0", at=10 - i)
    put("done", None)
    assert indexed("u#1") == scanned("u#1") == ["k5", "k3", "k1"]  # by the range key
    assert indexed("u#1", cond=" AND at <= :t", values={":t": {"N": "7"}}) == ["k5", "k3"]
    ddb.update_item(TableName=name, Key={"pk": {"S": "k1"}}, UpdateExpression="REMOVE att")
    ddb.update_item(TableName=name, Key={"pk": {"S": "k3"}}, UpdateExpression="SET att = :f",
                    ExpressionAttributeValues={":f": {"S": "f#1"}})
    ddb.update_item(TableName=name, Key={"pk": {"S": "done"}}, UpdateExpression="SET att = :u",
                    ExpressionAttributeValues={":u": {"S": "u#1"}})
    ddb.update_item(TableName=name, Key={"pk": {"S": "new"}}, UpdateExpression="SET att = :u, #at = :t",
                    ExpressionAttributeNames={"#at": "at"},
                    ExpressionAttributeValues={":u": {"S": "u#1"}, ":t": {"N": "0"}})
    ddb.delete_item(TableName=name, Key={"pk": {"S": "k5"}})
    put("k0", None)  # replaced without the key
    ddb.transact_write_items(TransactItems=[
        {"Put": {"TableName": name, "Item": {"pk": {"S": "t1"}, "att": {"S": "u#0"}, "at": {"N": "3"}}}},
        {"Update": {"TableName": name, "Key": {"pk": {"S": "k2"}}, "UpdateExpression": "REMOVE att"}},
    ])
    with pytest.raises(ClientError):  # cancelled: nothing written
        ddb.transact_write_items(TransactItems=[
            {"Put": {"TableName": name, "Item": {"pk": {"S": "t2"}, "att": {"S": "u#0"}, "at": {"N": "3"}}}},
            {"Update": {"TableName": name, "Key": {"pk": {"S": "k4"}}, "UpdateExpression": "REMOVE att",
                        "ConditionExpression": "attribute_not_exists(pk)"}},
        ])
    with pytest.raises(ClientError):  # its second write fails after the checks: the first is undone
        ddb.transact_write_items(TransactItems=[
            {"Update": {"TableName": name, "Key": {"pk": {"S": "k4"}}, "UpdateExpression": "REMOVE att"}},
            {"Update": {"TableName": name, "Key": {"pk": {"S": "done"}}, "UpdateExpression": "ADD n :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}}}},  # ADD to a string: invalid
        ])
    for att in ("u#0", "u#1", "f#1", "none"):
        assert indexed(att) == scanned(att), att
    assert indexed("u#0") == ["t1", "k4"] and indexed("u#1") == ["new", "done"] and indexed("f#1") == ["k3"]


def test_an_upload_that_does_not_exist_answers_no_such_upload(boto_client: Any) -> None:
    # S3: UploadPart / CompleteMultipartUpload on an aborted or completed upload -> 404 NoSuchUpload; moto as
    # shipped raised a KeyError (500 InternalError, retried by botocore as if passing)
    assert moto_patches.applied().get("no_such_upload")
    s3 = boto_client("s3")
    bucket = f"nsu-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload, PartNumber=1, Body=b"x")["ETag"]
    s3.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=upload)
    for call in (lambda: s3.upload_part(Bucket=bucket, Key="k", UploadId=upload, PartNumber=1, Body=b"x"),
                 lambda: s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload, MultipartUpload={
                     "Parts": [{"PartNumber": 1, "ETag": etag}]})):
        with pytest.raises(ClientError) as err:
            call()
        assert err.value.response["Error"]["Code"] == "NoSuchUpload"
