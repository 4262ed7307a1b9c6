"""Alarm A (backlog) through SNS -> set the worker service's desired count to MaxTasks; report the task counts."""

from __future__ import annotations

from typing import Any

from functions._common import entry, runtime
from s3sync.transfer.events import alarm_changes
from s3sync.transfer.scaling import on_alarms, report_tasks


@entry
def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    rt = runtime()
    s = rt.settings.require("cluster", "service")
    ecs = rt.client("ecs")
    result = on_alarms(ecs, s.cluster, s.service, s.max_tasks, alarm_changes(event))
    report_tasks(ecs, s.cluster, s.service, s.queue_url, result, trigger="scale_out")
    return {"desired": result.desired, "changed": result.changed, "reason": result.reason}
