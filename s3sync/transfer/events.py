"""Typed views of the events AWS delivers to the functions (shapes in shared/events, caveats in SOURCES.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from s3sync.transfer.ledger import from_image


@dataclass(frozen=True)
class ObjectRef:
    """An object named by an S3 notification (key decoded) or found by listing."""

    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None
    size: int | None = None


def s3_object_refs(event: dict[str, Any]) -> Iterator[ObjectRef]:
    """ObjectCreated records of an S3 notification; the s3:TestEvent and other event kinds yield nothing."""
    if event.get("Event") == "s3:TestEvent":
        return
    for record in event.get("Records") or []:
        if not str(record.get("eventName", "")).startswith("ObjectCreated:"):
            continue
        s3 = record.get("s3") or {}
        obj = s3.get("object") or {}
        bucket = (s3.get("bucket") or {}).get("name")
        if not bucket or "key" not in obj:
            continue
        yield ObjectRef(bucket=bucket, key=unquote_plus(obj["key"]), version_id=obj.get("versionId") or None,
                        etag=obj.get("eTag"), size=obj.get("size"))


@dataclass(frozen=True)
class StreamChange:
    """One DynamoDB stream record of the transfers table, images as plain values."""

    event_name: str
    keys: dict[str, Any]
    new: dict[str, Any] | None
    old: dict[str, Any] | None


def stream_changes(event: dict[str, Any]) -> Iterator[StreamChange]:
    for record in event.get("Records") or []:
        ddb = record.get("dynamodb") or {}
        yield StreamChange(
            event_name=record.get("eventName", ""),
            keys=from_image(ddb.get("Keys") or {}),
            new=from_image(ddb["NewImage"]) if "NewImage" in ddb else None,
            old=from_image(ddb["OldImage"]) if "OldImage" in ddb else None,
        )


@dataclass(frozen=True)
class AlarmChange:
    """A CloudWatch alarm state change delivered through SNS."""

    alarm_name: str
    new_state: str
    old_state: str
    reason: str
    region: str  # the region code, from the alarm ARN (the message's Region is a display name)


def alarm_changes(event: dict[str, Any]) -> Iterator[AlarmChange]:
    for record in event.get("Records") or []:
        sns = record.get("Sns") or {}
        try:
            body = json.loads(sns.get("Message") or "")
        except ValueError:
            continue
        if not isinstance(body, dict) or "NewStateValue" not in body:
            continue
        arn = str(body.get("AlarmArn", ""))
        parts = arn.split(":")
        yield AlarmChange(
            alarm_name=str(body.get("AlarmName", "")),
            new_state=str(body["NewStateValue"]),
            old_state=str(body.get("OldStateValue", "")),
            reason=str(body.get("NewStateReason", "")),
            region=parts[3] if len(parts) > 3 else "",
        )


def is_scheduled(event: dict[str, Any]) -> bool:
    """An EventBridge schedule's event ("detail-type": "Scheduled Event", "source": "aws.events")."""
    return event.get("source") == "aws.events" and event.get("detail-type") == "Scheduled Event"
