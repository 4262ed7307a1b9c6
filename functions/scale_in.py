"""Alarm B (nothing queued or in flight) through SNS -> sweep stuck jobs, then set the worker service's desired
count to MinTasks (at least 1 when the sweep re-sent parts, so that someone copies them)."""

from __future__ import annotations

from typing import Any

from functions._common import runtime
from s3sync.transfer.events import alarm_changes
from s3sync.transfer.scaling import on_alarms


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    rt = runtime()
    s = rt.settings.require("cluster", "service")
    changes = list(alarm_changes(event))
    count, swept = s.min_tasks, None
    if any(c.new_state == "ALARM" for c in changes) and s.transfers_table and s.queue_url:
        swept = rt.sweeper().sweep()
        if swept.enqueued or swept.resumed:
            count = max(count, 1)
    result = on_alarms(rt.client("ecs"), s.cluster, s.service, count, changes)
    out: dict[str, Any] = {"desired": result.desired, "changed": result.changed, "reason": result.reason}
    if swept is not None:
        out["sweep"] = {"resumed": swept.resumed, "redriven": swept.redriven, "retriggered": swept.retriggered,
                        "failed": swept.failed}
    return out
