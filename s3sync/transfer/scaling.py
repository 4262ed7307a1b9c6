"""Scaling: alarm A (backlog) sets the worker service to MaxTasks, alarm B (nothing left) to MinTasks.

Alarm actions fire on state transitions only; the handlers act on ALARM and ignore OK and INSUFFICIENT_DATA.
Setting a desired count is idempotent: when the service already wants that many tasks nothing is written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable

from s3sync.transfer.events import AlarmChange

log = logging.getLogger("s3sync.scaling")


@dataclass(frozen=True)
class ScaleResult:
    desired: int | None  # the desired count now, None when nothing was asked
    changed: bool
    reason: str


def set_desired_count(ecs: Any, cluster: str, service: str, count: int) -> ScaleResult:
    desc = ecs.describe_services(cluster=cluster, services=[service])
    services = desc.get("services") or []
    if not services:
        failure = (desc.get("failures") or [{}])[0].get("reason", "not found")
        raise RuntimeError(f"ECS service {service} in cluster {cluster}: {failure}")
    current = int(services[0]["desiredCount"])
    if current == count:
        return ScaleResult(count, False, "already at the desired count")
    ecs.update_service(cluster=cluster, service=service, desiredCount=count)
    log.info("scaled", extra={"service": service, "from": current, "to": count})
    return ScaleResult(count, True, f"{current} -> {count}")


def ensure_at_least(ecs: Any, cluster: str, service: str, count: int) -> ScaleResult:
    """Raise the desired count to `count` if it is lower (work was re-sent while the service sat at zero)."""
    desc = ecs.describe_services(cluster=cluster, services=[service])
    current = int((desc.get("services") or [{"desiredCount": 0}])[0]["desiredCount"])
    if current >= count:
        return ScaleResult(current, False, "already enough tasks")
    return set_desired_count(ecs, cluster, service, count)


def on_alarms(ecs: Any, cluster: str, service: str, count: int, changes: Iterable[AlarmChange]) -> ScaleResult:
    """Set the desired count once if any of the delivered alarm changes entered ALARM."""
    entered = [c for c in changes if c.new_state == "ALARM"]
    if not entered:
        return ScaleResult(None, False, "no alarm entered the ALARM state")
    return set_desired_count(ecs, cluster, service, count)
