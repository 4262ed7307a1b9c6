"""Alarm B (nothing queued or in flight) through SNS -> set the worker service's desired count to MinTasks."""

from __future__ import annotations

from typing import Any

from functions._common import runtime
from s3sync.transfer.events import alarm_changes
from s3sync.transfer.scaling import on_alarms


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    rt = runtime()
    s = rt.settings.require("cluster", "service")
    result = on_alarms(rt.client("ecs"), s.cluster, s.service, s.min_tasks, alarm_changes(event))
    return {"desired": result.desired, "changed": result.changed, "reason": result.reason}
