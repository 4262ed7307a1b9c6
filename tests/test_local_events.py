"""The event builders emit exactly the shapes of the AWS samples in tests/events/."""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
from typing import Any

import pytest

from s3sync.local import events


def shape(value: Any) -> Any:
    """Keys and nesting of a JSON value; scalars reduced to their JSON kind (null counts as any scalar)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return "scalar"


def assert_same_shape(built: Any, sample: Any, path: str = "$") -> None:
    assert type(built) is type(sample) or (built is None or sample is None) or (
        isinstance(built, (int, float)) and isinstance(sample, (int, float)) and not isinstance(built, bool)
    ), f"{path}: {type(built).__name__} vs sample {type(sample).__name__}"
    if isinstance(sample, dict):
        assert set(built) == set(sample), f"{path}: keys {sorted(set(built) ^ set(sample))} differ"
        for k in sample:
            assert_same_shape(built[k], sample[k], f"{path}.{k}")
    elif isinstance(sample, list) and sample and built:
        for item in built:
            assert_same_shape(item, sample[0], f"{path}[]")


# --- S3 -----------------------------------------------------------------------------------------------------------
def test_s3_object_created_matches_sample_shape(sample_event):
    sample = sample_event("s3-object-created")
    built = events.s3_object_created(
        "my-global-bucket", "photos/my file(1).jpg", 1024, '"d41d8cd98f00b204e9800998ecf8427e"',
        version_id="096fKKXTRTtl3on89fVO.nfljtsv6qko", sequencer="0055AED6DCD90281E5", region="us-east-1",
        event_time=dt.datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=dt.timezone.utc),
    )
    assert_same_shape(built, sample)
    rec, want = built["Records"][0], sample["Records"][0]
    assert rec["s3"]["object"] == want["s3"]["object"]  # key encoding, unquoted eTag, int size
    assert rec["eventTime"] == want["eventTime"]
    for k in ("eventVersion", "eventSource", "awsRegion", "eventName"):
        assert rec[k] == want[k]
    assert rec["s3"]["bucket"]["arn"] == want["s3"]["bucket"]["arn"]


@pytest.mark.parametrize("key", ["photos/my file(1).jpg", "a+b/c&d=e", "日本/ü x.bin", "dir/sub/"])
def test_s3_key_is_form_encoded_with_literal_slash(key):
    rec = events.s3_object_created("b", key, 1, "e", region="us-east-1")["Records"][0]
    encoded = rec["s3"]["object"]["key"]
    assert encoded.count("/") == key.count("/")
    assert urllib.parse.unquote_plus(encoded) == key
    if "+" in key:
        assert "%2B" in encoded


def test_s3_unversioned_object_has_no_version_id_and_sequencers_grow():
    a = events.s3_object_created("b", "k", 5, "e", region="cn-north-1")["Records"][0]
    b = events.s3_object_created("b", "k", 5, "e", region="cn-north-1",
                                 event_name="ObjectCreated:CompleteMultipartUpload")["Records"][0]
    assert "versionId" not in a["s3"]["object"]
    assert len(a["s3"]["object"]["sequencer"]) == len(b["s3"]["object"]["sequencer"])
    assert a["s3"]["object"]["sequencer"] < b["s3"]["object"]["sequencer"]
    assert a["s3"]["bucket"]["arn"] == "arn:aws-cn:s3:::b"
    assert b["eventName"] == "ObjectCreated:CompleteMultipartUpload"
    assert a["eventTime"].endswith("Z") and len(a["eventTime"]) == len("2024-05-01T12:00:00.123Z")
    json.dumps(a)  # JSON-serialisable


def test_s3_test_event_matches_sample_shape(sample_event):
    assert_same_shape(events.s3_test_event("my-global-bucket"), sample_event("s3-test-event"))


# --- SNS / CloudWatch alarm ---------------------------------------------------------------------------------------
def sample_trigger() -> dict[str, Any]:
    return events.metric_trigger(
        "ApproximateNumberOfMessagesVisible", "AWS/SQS", statistic="Average", dimensions={"QueueName": "my-queue"},
        period=300, evaluation_periods=1, comparison="GreaterThanOrEqualToThreshold", threshold=100,
    )


def test_sns_alarm_matches_sample_shape_and_values(sample_event):
    sample = sample_event("sns-cloudwatch-alarm")
    sample_msg = sample_event("sns-cloudwatch-alarm-message")
    built = events.sns_alarm(
        "my-queue-backlog-alarm", new_state="ALARM", old_state="OK", reason=sample_msg["NewStateReason"],
        topic_arn="arn:aws:sns:us-east-1:123456789012:my-alarm-topic", region="us-east-1", account="123456789012",
        trigger=sample_trigger(), description="Backlog of visible messages in my-queue",
        state_change_time=dt.datetime(2024, 5, 1, 12, 5, 35, 538000, tzinfo=dt.timezone.utc),
        configuration_updated=dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.timezone.utc),
    )
    assert_same_shape(built, sample)
    sns = built["Records"][0]["Sns"]
    assert isinstance(sns["Message"], str)
    message = json.loads(sns["Message"])
    assert_same_shape(message, sample_msg)
    assert message == sample_msg  # every value, including the display-name Region and the timestamps
    assert list(message) == list(sample_msg)  # and the key order AWS uses
    assert sns["Subject"] == sample["Records"][0]["Sns"]["Subject"]
    assert built["Records"][0]["EventSubscriptionArn"].startswith(sns["TopicArn"] + ":")
    assert sns["Timestamp"] == "2024-05-01T12:05:35.538Z"
    parsed = dt.datetime.strptime(message["StateChangeTime"], "%Y-%m-%dT%H:%M:%S.%f%z")
    assert parsed.tzinfo is not None


def test_sns_alarm_metric_math_trigger_and_china_region():
    metrics = [
        {"Id": "e1", "Expression": "m1 + m2", "Label": "backlog", "ReturnData": True},
        {"Id": "m1", "ReturnData": False, "MetricStat": {"Metric": {"Namespace": "AWS/SQS",
         "MetricName": "ApproximateNumberOfMessagesVisible", "Dimensions": [{"Name": "QueueName", "Value": "q"}]},
         "Period": 60, "Stat": "Maximum"}},
        {"Id": "m2", "ReturnData": False, "MetricStat": {"Metric": {"Namespace": "AWS/SQS",
         "MetricName": "ApproximateNumberOfMessagesNotVisible", "Dimensions": [{"Name": "QueueName", "Value": "q"}]},
         "Period": 60, "Stat": "Maximum"}},
    ]
    trigger = events.metric_math_trigger(metrics, comparison="LessThanOrEqualToThreshold", threshold=0,
                                         evaluation_periods=3)
    built = events.sns_alarm("scale-in", new_state="ALARM", old_state="OK", reason="r",
                             topic_arn="arn:aws-cn:sns:cn-north-1:123456789012:t", region="cn-north-1",
                             account="123456789012", trigger=trigger)
    msg = json.loads(built["Records"][0]["Sns"]["Message"])
    assert msg["Region"] == "China (Beijing)"
    assert msg["AlarmArn"] == "arn:aws-cn:cloudwatch:cn-north-1:123456789012:alarm:scale-in"
    assert "MetricName" not in msg["Trigger"] and len(msg["Trigger"]["Metrics"]) == 3
    dims = msg["Trigger"]["Metrics"][1]["MetricStat"]["Metric"]["Dimensions"]
    assert dims == [{"value": "q", "name": "QueueName"}]
    assert msg["Trigger"]["Threshold"] == 0.0 and isinstance(msg["Trigger"]["Threshold"], float)
    assert msg["AlarmDescription"] is None


def test_alarm_subject_is_truncated_like_sns():
    built = events.sns_alarm("x" * 200, new_state="OK", old_state="ALARM", reason="r", topic_arn="arn:t",
                             region="us-east-1", trigger=sample_trigger())
    subject = built["Records"][0]["Sns"]["Subject"]
    assert len(subject) == 100 and subject.endswith("...")


# --- DynamoDB stream ----------------------------------------------------------------------------------------------
def boto3_record_from_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """What boto3's get_records returns for the sample record: datetime, no eventSourceARN."""
    rec = json.loads(json.dumps(sample["Records"][0]))
    arn = rec.pop("eventSourceARN")
    rec["dynamodb"]["ApproximateCreationDateTime"] = dt.datetime.fromtimestamp(
        rec["dynamodb"]["ApproximateCreationDateTime"], tz=dt.timezone.utc)
    return {"record": rec, "arn": arn}


def test_dynamodb_stream_round_trips_the_sample(sample_event):
    sample = sample_event("dynamodb-stream-modify")
    b = boto3_record_from_sample(sample)
    built = events.dynamodb_stream([b["record"]], b["arn"])
    assert_same_shape(built, sample)
    assert built == sample
    assert isinstance(built["Records"][0]["dynamodb"]["ApproximateCreationDateTime"], float)


def test_dynamodb_stream_region_follows_the_stream_arn():
    rec = {"eventID": "1", "eventName": "INSERT", "eventVersion": "1.0", "eventSource": "aws:dynamodb",
           "awsRegion": "us-east-1", "dynamodb": {"Keys": {"job_id": {"S": "j"}}, "SequenceNumber": "1",
           "SizeBytes": 3, "StreamViewType": "NEW_AND_OLD_IMAGES", "NewImage": {"job_id": {"S": "j"}},
           "ApproximateCreationDateTime": dt.datetime(2024, 5, 1, 12, 0, 0, 900000, tzinfo=dt.timezone.utc)},
           "userIdentity": {"PrincipalId": "dynamodb.amazonaws.com", "Type": "Service"}}
    arn = "arn:aws-cn:dynamodb:cn-northwest-1:123456789012:table/t/stream/2024-05-01T00:00:00.000"
    out = events.dynamodb_stream([rec], arn)["Records"][0]
    assert out["awsRegion"] == "cn-northwest-1"
    assert out["eventSourceARN"] == arn
    assert out["dynamodb"]["ApproximateCreationDateTime"] == 1714564800.0  # rounded down to the second
    assert "OldImage" not in out["dynamodb"]
    assert out["userIdentity"] == {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
