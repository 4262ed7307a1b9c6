"""Alarm B (nothing queued or in flight) through SNS -> sweep stuck jobs, then set the worker service's desired
count to MinTasks (at least 1 when the sweep re-sent parts, so that someone copies them).

A scheduled EventBridge event (every few minutes) only sweeps: alarm actions fire on state changes alone, so a
job that got stuck while the queue stayed empty would otherwise wait for the next burst of work.
Either way the service's desired and running task counts are reported (EMF lines, s3sync.transfer.scaling), so the
dashboard has them at least every few minutes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from functions._common import entry, runtime
from s3sync.transfer.events import alarm_changes, is_scheduled
from s3sync.transfer.scaling import ScaleResult, ensure_at_least, on_alarms, report_tasks

if TYPE_CHECKING:
    from s3sync.transfer.sweeper import SweepResult


@entry
def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    rt = runtime()
    s = rt.settings.require("cluster", "service")
    ecs = rt.client("ecs")
    swept: SweepResult | None
    if is_scheduled(event):
        swept = rt.sweeper().sweep()
        raised: ScaleResult | None = None
        if swept.enqueued or swept.resumed:
            raised = ensure_at_least(ecs, s.cluster, s.service, 1)
        report_tasks(ecs, s.cluster, s.service, s.queue_url, raised, trigger="sweep")
        return {"sweep": swept.as_dict()}
    changes = list(alarm_changes(event))
    count, swept = s.min_tasks, None
    if any(c.new_state == "ALARM" for c in changes) and s.transfers_table and s.queue_url:
        swept = rt.sweeper().sweep()
        if swept.enqueued or swept.resumed:
            count = max(count, 1)
    result = on_alarms(ecs, s.cluster, s.service, count, changes)
    report_tasks(ecs, s.cluster, s.service, s.queue_url, result, trigger="scale_in")
    out: dict[str, Any] = {"desired": result.desired, "changed": result.changed, "reason": result.reason}
    if swept is not None:
        out["sweep"] = swept.as_dict()
    return out
