"""Builders for the Lambda events AWS delivers, in exactly the shapes of the samples in tests/events/.

The local runner calls the very handlers Lambda would call, with these events:

- `s3_object_created`: S3 -> Lambda `ObjectCreated:*` notification (`s3-object-created.json`);
- `sns_alarm`: CloudWatch alarm -> SNS -> Lambda (`sns-cloudwatch-alarm.json`, whose `Sns.Message` is a JSON string
  of `sns-cloudwatch-alarm-message.json`); `metric_trigger` / `metric_math_trigger` build its `Trigger`;
- `dynamodb_stream`: boto3 `dynamodbstreams.get_records()["Records"]` -> the Lambda DynamoDB stream event
  (`dynamodb-stream-modify.json`).

Sources and caveats for every field are in tests/events/SOURCES.md (a copy of /work/shared/events/SOURCES.md).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import itertools
import json
import math
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "ACCOUNT",
    "alarm_timestamp",
    "dynamodb_stream",
    "metric_math_trigger",
    "metric_trigger",
    "partition_of",
    "region_display_name",
    "s3_object_created",
    "s3_test_event",
    "sns_alarm",
]

ACCOUNT = "123456789012"  # moto's default account id


# --- small helpers ----------------------------------------------------------------------------------------------------
def _utc(when: dt.datetime | None) -> dt.datetime:
    if when is None:
        return dt.datetime.now(dt.timezone.utc)
    if when.tzinfo is None:
        return when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(dt.timezone.utc)


def _iso_z(when: dt.datetime | str | None) -> str:
    """`2024-05-01T12:00:00.123Z` (S3 eventTime, SNS envelope Timestamp)."""
    if isinstance(when, str):
        return when
    t = _utc(when)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def alarm_timestamp(when: dt.datetime | str | None = None) -> str:
    """`2024-05-01T12:05:35.538+0000`: the timestamp format inside a CloudWatch alarm message.

    Parse it back with `datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%f%z")`.
    """
    if isinstance(when, str):
        return when
    t = _utc(when)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}+0000"


@functools.lru_cache(maxsize=1)
def _regions() -> dict[str, tuple[str, str]]:
    """region code -> (display name, partition), from botocore's bundled endpoint data (no network)."""
    out: dict[str, tuple[str, str]] = {}
    try:
        from botocore.loaders import Loader

        for part in Loader().load_data("endpoints")["partitions"]:
            for code, info in part.get("regions", {}).items():
                out[code] = (info.get("description", code), part["partition"])
    except Exception:  # pragma: no cover - botocore missing or its data layout changed
        pass
    out.setdefault("us-east-1", ("US East (N. Virginia)", "aws"))
    out.setdefault("cn-north-1", ("China (Beijing)", "aws-cn"))
    out.setdefault("cn-northwest-1", ("China (Ningxia)", "aws-cn"))
    return out


def region_display_name(region: str) -> str:
    """`us-east-1` -> `US East (N. Virginia)`, as the `Region` field of an alarm message spells it."""
    return _regions().get(region, (region, ""))[0]


def partition_of(region: str) -> str:
    """`aws`, `aws-cn`, ... for ARNs built from a region code."""
    known = _regions().get(region)
    if known:
        return known[1]
    return "aws-cn" if region.startswith("cn-") else "aws"


_seq_lock = threading.Lock()
_seq_counter = itertools.count()


def _next_sequencer() -> str:
    """An S3-like sequencer: 18 upper-case hex digits that grow within this process."""
    with _seq_lock:
        n = next(_seq_counter)
    return f"{(time.time_ns() // 1000) & 0xFFFFFFFFFFFFF:013X}{n & 0xFFFFF:05X}"


def _request_id(seed: str) -> str:
    return hashlib.md5(seed.encode()).hexdigest()[:16].upper()  # noqa: S324 - an id, not security


# --- S3 ---------------------------------------------------------------------------------------------------------------
def s3_object_created(
    bucket: str,
    key: str,
    size: int,
    etag: str,
    *,
    version_id: str | None = None,
    sequencer: str | None = None,
    region: str,
    event_name: str = "ObjectCreated:Put",
    event_time: dt.datetime | str | None = None,
    principal_id: str = "AWS:AIDAS3SYNCLOCALEXAMPLE",
    source_ip: str = "127.0.0.1",
    configuration_id: str = "s3sync-object-created",
    owner_id: str = "S3SYNCLOCALOWNER",
) -> dict[str, Any]:
    """The Lambda event S3 sends for one new object: `{"Records": [record]}`.

    `key` is the real object key; the record carries it URL-encoded as S3 does (`quote_plus`, "/" kept literal:
    "photos/my file(1).jpg" -> "photos/my+file%281%29.jpg"). `etag` loses its quotes. `versionId` is present only
    when `version_id` is given (unversioned buckets); `sequencer` is generated (growing) when not given.
    `event_name` has no `s3:` prefix (`ObjectCreated:CompleteMultipartUpload`, `ObjectCreated:Copy`, ...).
    """
    obj: dict[str, Any] = {
        "key": urllib.parse.quote_plus(key, safe="/"),
        "size": int(size),
        "eTag": etag.strip('"'),
    }
    if version_id is not None:
        obj["versionId"] = version_id
    obj["sequencer"] = sequencer if sequencer is not None else _next_sequencer()
    when = _iso_z(event_time)
    request_id = _request_id(f"{bucket}/{key}/{obj['sequencer']}")
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": region,
        "eventTime": when,
        "eventName": event_name,
        "userIdentity": {"principalId": principal_id},
        "requestParameters": {"sourceIPAddress": source_ip},
        "responseElements": {
            "x-amz-request-id": request_id,
            "x-amz-id-2": hashlib.sha256(request_id.encode()).hexdigest(),
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": configuration_id,
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": owner_id},
                "arn": f"arn:{partition_of(region)}:s3:::{bucket}",
            },
            "object": obj,
        },
    }
    return {"Records": [record]}


def sqs_batch(messages: Iterable[Mapping[str, Any]], queue_arn: str, *, region: str) -> dict[str, Any]:
    """The event an SQS event source mapping gives Lambda for received messages (`ReceiveMessage`'s `Messages`, with
    their attributes): `{"Records": [{messageId, receiptHandle, body, attributes, messageAttributes, md5OfBody,
    eventSource: "aws:sqs", eventSourceARN, awsRegion}]}` (Lambda developer guide, "Example standard queue message
    event")."""
    records = []
    for m in messages:
        attrs = dict(m.get("Attributes") or {})
        records.append({
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"],
            "attributes": {k: attrs[k] for k in ("ApproximateReceiveCount", "SentTimestamp", "SenderId",
                                                 "ApproximateFirstReceiveTimestamp") if k in attrs},
            "messageAttributes": {},
            "md5OfBody": m.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": region,
        })
    return {"Records": records}


def s3_test_event(bucket: str, *, event_time: dt.datetime | str | None = None) -> dict[str, Any]:
    """The `s3:TestEvent` S3 sends when a notification configuration is set (no `Records` key)."""
    when = _iso_z(event_time)
    request_id = _request_id(f"test/{bucket}/{when}")
    return {
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Time": when,
        "Bucket": bucket,
        "RequestId": request_id,
        "HostId": hashlib.sha256(request_id.encode()).hexdigest(),
    }


# --- CloudWatch alarm via SNS -----------------------------------------------------------------------------------------
def _dimensions(dimensions: Mapping[str, str] | Iterable[Mapping[str, str]] | None) -> list[dict[str, str]]:
    """Alarm-message dimensions: lower-case `value`/`name` (API `Name`/`Value` and plain dicts accepted)."""
    if not dimensions:
        return []
    if isinstance(dimensions, Mapping):
        return [{"value": str(v), "name": str(k)} for k, v in dimensions.items()]
    out = []
    for d in dimensions:
        name = d.get("name", d.get("Name"))
        value = d.get("value", d.get("Value"))
        out.append({"value": str(value), "name": str(name)})
    return out


def metric_trigger(
    metric_name: str,
    namespace: str,
    *,
    statistic: str = "Average",
    dimensions: Mapping[str, str] | Iterable[Mapping[str, str]] | None = None,
    period: int = 60,
    evaluation_periods: int = 1,
    datapoints_to_alarm: int | None = None,
    comparison: str = "GreaterThanOrEqualToThreshold",
    threshold: float = 0.0,
    unit: str | None = None,
    treat_missing_data: str = "missing",
) -> dict[str, Any]:
    """`Trigger` of a single-metric alarm message: `Statistic` upper case, dimensions `{"value", "name"}`."""
    return {
        "MetricName": metric_name,
        "Namespace": namespace,
        "StatisticType": "Statistic",
        "Statistic": statistic.upper(),
        "Unit": unit,
        "Dimensions": _dimensions(dimensions),
        "Period": int(period),
        "EvaluationPeriods": int(evaluation_periods),
        "DatapointsToAlarm": int(datapoints_to_alarm if datapoints_to_alarm is not None else evaluation_periods),
        "ComparisonOperator": comparison,
        "Threshold": float(threshold),
        "TreatMissingData": treat_missing_data,
        "EvaluateLowSampleCountPercentile": "",
    }


def metric_math_trigger(
    metrics: Sequence[Mapping[str, Any]],
    *,
    period: int = 60,
    evaluation_periods: int = 1,
    datapoints_to_alarm: int | None = None,
    comparison: str = "GreaterThanOrEqualToThreshold",
    threshold: float = 0.0,
    treat_missing_data: str = "missing",
) -> dict[str, Any]:
    """`Trigger` of a metric-math alarm: `Metrics[]` instead of MetricName/Namespace/Statistic/Dimensions.

    `metrics` is the `Metrics` list of `cloudwatch.put_metric_alarm` (`Id`, `Expression` or `MetricStat`
    {`Metric` {`Namespace`, `MetricName`, `Dimensions` [{`Name`, `Value`}]}, `Period`, `Stat`}, `Label`,
    `ReturnData`); dimensions are rewritten to the message's lower-case `value`/`name`. `Stat` keeps its API case
    (`Average`), as in AWS's fixture.
    """
    out: list[dict[str, Any]] = []
    for m in metrics:
        entry: dict[str, Any] = {}
        if "Expression" in m:
            entry["Expression"] = m["Expression"]
        entry["Id"] = m["Id"]
        if "Label" in m:
            entry["Label"] = m["Label"]
        if "MetricStat" in m:
            ms = m["MetricStat"]
            metric = ms["Metric"]
            stat: dict[str, Any] = {
                "Metric": {
                    "Dimensions": _dimensions(metric.get("Dimensions")),
                    "MetricName": metric["MetricName"],
                    "Namespace": metric["Namespace"],
                },
                "Period": int(ms.get("Period", period)),
                "Stat": ms["Stat"],
            }
            if ms.get("Unit"):
                stat["Unit"] = ms["Unit"]
            entry["MetricStat"] = stat
        entry["ReturnData"] = bool(m.get("ReturnData", "Expression" in m))
        out.append(entry)
    return {
        "Period": int(period),
        "EvaluationPeriods": int(evaluation_periods),
        "DatapointsToAlarm": int(datapoints_to_alarm if datapoints_to_alarm is not None else evaluation_periods),
        "ComparisonOperator": comparison,
        "Threshold": float(threshold),
        "TreatMissingData": treat_missing_data,
        "EvaluateLowSampleCountPercentile": "",
        "Metrics": out,
    }


def sns_alarm(
    alarm_name: str,
    *,
    new_state: str,
    old_state: str,
    reason: str,
    topic_arn: str,
    region: str,
    account: str = ACCOUNT,
    trigger: Mapping[str, Any],
    description: str | None = None,
    state_change_time: dt.datetime | str | None = None,
    configuration_updated: dt.datetime | str | None = None,
    alarm_actions: Sequence[str] | None = None,
    ok_actions: Sequence[str] = (),
    insufficient_data_actions: Sequence[str] = (),
    subscription_id: str | None = None,
    message_id: str | None = None,
) -> dict[str, Any]:
    """The Lambda event for a CloudWatch alarm notification delivered by SNS.

    `Sns.Message` is a JSON *string* (parse it with `json.loads`) whose `Region` is the display name
    ("US East (N. Virginia)") and whose timestamps look like `2024-05-01T12:05:35.538+0000`. `alarm_actions`
    defaults to `[topic_arn]`. The envelope spells `SigningCertUrl`/`UnsubscribeUrl` as Lambda does.
    """
    change = _utc(state_change_time) if not isinstance(state_change_time, str) else state_change_time
    display = region_display_name(region)
    partition = partition_of(region)
    message = {
        "AlarmName": alarm_name,
        "AlarmDescription": description,
        "AWSAccountId": account,
        "AlarmConfigurationUpdatedTimestamp": alarm_timestamp(
            configuration_updated if configuration_updated is not None else change
        ),
        "NewStateValue": new_state,
        "NewStateReason": reason,
        "StateChangeTime": alarm_timestamp(change),
        "Region": display,
        "AlarmArn": f"arn:{partition}:cloudwatch:{region}:{account}:alarm:{alarm_name}",
        "OldStateValue": old_state,
        "OKActions": list(ok_actions),
        "AlarmActions": list(alarm_actions) if alarm_actions is not None else [topic_arn],
        "InsufficientDataActions": list(insufficient_data_actions),
        "Trigger": dict(trigger),
    }
    subject = f'{new_state}: "{alarm_name}" in {display}'
    if len(subject) > 100:  # SNS subjects are at most 100 characters; CloudWatch truncates with "..."
        subject = subject[:97] + "..."
    sub_id = subscription_id or str(uuid.uuid5(uuid.NAMESPACE_URL, topic_arn))
    subscription_arn = f"{topic_arn}:{sub_id}"
    sns_host = f"sns.{region}.amazonaws.com" + (".cn" if partition == "aws-cn" else "")
    envelope_time = _iso_z(change if not isinstance(change, str) else None)
    return {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": subscription_arn,
                "Sns": {
                    "Type": "Notification",
                    "MessageId": message_id or str(uuid.uuid4()),
                    "TopicArn": topic_arn,
                    "Subject": subject,
                    "Message": json.dumps(message, separators=(",", ":")),
                    "Timestamp": envelope_time,
                    "SignatureVersion": "1",
                    "Signature": "bG9jYWw=",  # "local": no real signature
                    "SigningCertUrl": f"https://{sns_host}/SimpleNotificationService-local.pem",
                    "UnsubscribeUrl": (
                        f"https://{sns_host}/?Action=Unsubscribe&SubscriptionArn={subscription_arn}"
                    ),
                    "MessageAttributes": {},
                },
            }
        ]
    }


# --- DynamoDB stream --------------------------------------------------------------------------------------------------
_STREAM_RECORD_KEYS = ("Keys", "NewImage", "OldImage", "SequenceNumber", "SizeBytes", "StreamViewType")


def _epoch(value: Any) -> float:
    if isinstance(value, dt.datetime):
        return float(math.floor(_utc(value).timestamp()))  # the API rounds down to the second
    return float(value)


def dynamodb_stream(
    records: Iterable[Mapping[str, Any]], stream_arn: str, *, aws_region: str | None = None
) -> dict[str, Any]:
    """Convert boto3 `dynamodbstreams.get_records()["Records"]` into the Lambda DynamoDB stream event.

    `ApproximateCreationDateTime` (a datetime in boto3) becomes epoch seconds as a float; `eventSourceARN` is
    added. `awsRegion` is taken from `stream_arn` (moto writes "us-east-1" whatever the table's region), unless
    `aws_region` is given. `userIdentity` is kept when present (TTL deletions).
    """
    region = aws_region
    if region is None:
        parts = stream_arn.split(":")
        region = parts[3] if len(parts) > 3 and parts[3] else None
    out = []
    for rec in records:
        src = rec["dynamodb"]
        ddb: dict[str, Any] = {}
        if "ApproximateCreationDateTime" in src:
            ddb["ApproximateCreationDateTime"] = _epoch(src["ApproximateCreationDateTime"])
        for key in _STREAM_RECORD_KEYS:
            if key in src:
                ddb[key] = src[key]
        item: dict[str, Any] = {
            "eventID": rec["eventID"],
            "eventName": rec["eventName"],
            "eventVersion": rec.get("eventVersion", "1.1"),
            "eventSource": rec.get("eventSource", "aws:dynamodb"),
            "awsRegion": region or rec.get("awsRegion"),
            "dynamodb": ddb,
        }
        if "userIdentity" in rec:
            item["userIdentity"] = {
                "type": rec["userIdentity"].get("Type", rec["userIdentity"].get("type")),
                "principalId": rec["userIdentity"].get("PrincipalId", rec["userIdentity"].get("principalId")),
            }
        item["eventSourceARN"] = stream_arn
        out.append(item)
    return {"Records": out}


def scheduled_event(rule_arn: str, *, region: str, account: str = ACCOUNT,
                    when: dt.datetime | None = None) -> dict[str, Any]:
    """The event an EventBridge schedule rule delivers to a Lambda target."""
    when = when or dt.datetime.now(dt.timezone.utc)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    }
