"""Scaling: alarm A (backlog) sets the worker service to MaxTasks, alarm B (nothing left) to MinTasks.

Alarm actions fire on state transitions only; the handlers act on ALARM and ignore OK and INSUFFICIENT_DATA.
Setting a desired count is idempotent: when the service already wants that many tasks nothing is written.

Every invocation of scale_out and scale_in (alarms, and the sweep schedule every few minutes) also reports the
service's desired and running task counts as embedded-metric-format lines (`report_tasks`): the dashboard's
"running vs desired" without Container Insights, from the DescribeServices call the functions make anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from s3sync.contract import Metric
from s3sync.transfer.events import AlarmChange
from s3sync.transfer.metrics import MetricsLogger

if TYPE_CHECKING:
    from mypy_boto3_ecs import ECSClient

log = logging.getLogger("s3sync.scaling")


@dataclass(frozen=True)
class ServiceState:
    """The worker service's task counts as DescribeServices gave them (desired: after our change, if any)."""

    desired: int
    running: int
    pending: int = 0


@dataclass(frozen=True)
class ScaleResult:
    desired: int | None  # the desired count now, None when nothing was asked
    changed: bool
    reason: str
    state: ServiceState | None = None  # the service as seen while scaling; None when it was not looked at


def describe_service(ecs: ECSClient, cluster: str, service: str) -> ServiceState:
    desc = ecs.describe_services(cluster=cluster, services=[service])
    services = desc.get("services") or []
    if not services:
        failure = (desc.get("failures") or [{}])[0].get("reason", "not found")
        raise RuntimeError(f"ECS service {service} in cluster {cluster}: {failure}")
    svc = services[0]
    return ServiceState(int(svc["desiredCount"]), int(svc.get("runningCount", 0)), int(svc.get("pendingCount", 0)))


def set_desired_count(ecs: ECSClient, cluster: str, service: str, count: int) -> ScaleResult:
    state = describe_service(ecs, cluster, service)
    if state.desired == count:
        return ScaleResult(count, False, "already at the desired count", state)
    ecs.update_service(cluster=cluster, service=service, desiredCount=count)
    log.info("scaled", extra={"service": service, "from": state.desired, "to": count})
    return ScaleResult(count, True, f"{state.desired} -> {count}",
                       ServiceState(count, state.running, state.pending))


def ensure_at_least(ecs: ECSClient, cluster: str, service: str, count: int) -> ScaleResult:
    """Raise the desired count to `count` if it is lower (work was re-sent while the service sat at zero)."""
    state = describe_service(ecs, cluster, service)
    if state.desired >= count:
        return ScaleResult(state.desired, False, "already enough tasks", state)
    return set_desired_count(ecs, cluster, service, count)


def on_alarms(ecs: ECSClient, cluster: str, service: str, count: int, changes: Iterable[AlarmChange]) -> ScaleResult:
    """Set the desired count once if any of the delivered alarm changes entered ALARM."""
    entered = [c for c in changes if c.new_state == "ALARM"]
    if not entered:
        return ScaleResult(None, False, "no alarm entered the ALARM state")
    return set_desired_count(ecs, cluster, service, count)


def report_tasks(ecs: ECSClient, cluster: str, service: str, queue_url: str, result: ScaleResult | None = None,
                 **properties: Any) -> dict[str, Any] | None:
    """Write one EMF line with the service's DesiredTaskCount and RunningTaskCount (namespace and `Queue` dimension
    as the worker's metrics), from `result`'s state or a fresh DescribeServices. Returns the line, or None when it
    could not be made: a metric is never worth failing a scaling step or a sweep for."""
    if not queue_url:
        log.warning("no queue URL: task counts not reported", extra={"service": service})
        return None
    state = result.state if result is not None else None
    try:
        state = state or describe_service(ecs, cluster, service)
    except Exception as exc:  # noqa: BLE001 - reported, never raised
        log.warning("task counts not reported", extra={"service": service, "reason": repr(exc)})
        return None
    return MetricsLogger.for_queue(queue_url).put(
        {Metric.DESIRED_TASKS: (state.desired, "Count"), Metric.RUNNING_TASKS: (state.running, "Count")},
        cluster=cluster, service=service, pending=state.pending, **properties)
