"""A small CloudWatch-like metric alarm evaluator for the local runner.

moto stores alarms (`put_metric_alarm`, `describe_alarms`) but never evaluates them, and reports a new alarm as
OK at once. The runner samples the metric itself (e.g. the queue's visible + in-flight messages), feeds each
sample to `Alarm.observe`, and on a `Transition` builds the SNS event with `to_sns_event` and calls the scale
handler in-process, just as CloudWatch -> SNS -> Lambda would.

Semantics (CloudWatch "Evaluating an alarm"):

- An alarm starts in INSUFFICIENT_DATA.
- Each observation is one period's datapoint. Over the last N observations (N = `evaluation_periods`) the alarm
  goes to ALARM when at least M of them breach (M = `datapoints_to_alarm`, default N), and to OK when at least
  N - M + 1 of them do not breach (so it cannot be ALARM any more). With fewer observations than that it keeps
  its state (missing data treated as "missing").
- **Alarm actions fire on state transitions only**: `observe` returns a `Transition` when the state changes and
  `None` otherwise, so staying in ALARM sends nothing more. The runner must not re-send the notification.
- The reason reads like CloudWatch's: "Threshold Crossed: 1 out of the last 1 datapoints [150.0 (01/05/24
  12:00:00)] was greater than or equal to the threshold (100.0) (minimum 1 datapoint for OK -> ALARM transition)."
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from s3sync.local import events

__all__ = [
    "ALARM",
    "COMPARISONS",
    "INSUFFICIENT_DATA",
    "OK",
    "Alarm",
    "Datapoint",
    "Transition",
    "to_sns_event",
    "trigger_from_metric_alarm",
]

OK = "OK"
ALARM = "ALARM"
INSUFFICIENT_DATA = "INSUFFICIENT_DATA"

# operator -> (breach test, words in the reason)
COMPARISONS: dict[str, tuple[Callable[[float, float], bool], str]] = {
    "GreaterThanOrEqualToThreshold": (lambda v, t: v >= t, "greater than or equal to"),
    "GreaterThanThreshold": (lambda v, t: v > t, "greater than"),
    "LessThanThreshold": (lambda v, t: v < t, "less than"),
    "LessThanOrEqualToThreshold": (lambda v, t: v <= t, "less than or equal to"),
}


@dataclass(frozen=True)
class Datapoint:
    value: float
    timestamp: dt.datetime

    def describe(self) -> str:
        """`150.0 (01/05/24 12:00:00)`: value and dd/mm/yy time, as in CloudWatch reasons."""
        return f"{float(self.value)!r} ({self.timestamp.strftime('%d/%m/%y %H:%M:%S')})"


@dataclass(frozen=True)
class Transition:
    """A change of alarm state; the one moment CloudWatch runs the alarm's actions."""

    alarm_name: str
    old_state: str
    new_state: str
    reason: str
    timestamp: dt.datetime
    datapoints: tuple[Datapoint, ...]  # the evaluation window, newest first
    threshold: float
    comparison: str
    evaluation_periods: int
    datapoints_to_alarm: int
    period: int
    description: str | None = None


@dataclass
class Alarm:
    """One metric alarm: `observe(value)` per period; returns a `Transition` when the state changes."""

    name: str
    threshold: float
    comparison: str
    evaluation_periods: int = 1
    datapoints_to_alarm: int | None = None
    period: int = 60
    description: str | None = None
    state: str = field(default=INSUFFICIENT_DATA)
    clock: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.timezone.utc), repr=False)

    def __post_init__(self) -> None:
        if self.comparison not in COMPARISONS:
            raise ValueError(f"unsupported comparison {self.comparison!r}; one of {sorted(COMPARISONS)}")
        if self.evaluation_periods < 1:
            raise ValueError("evaluation_periods must be >= 1")
        if self.datapoints_to_alarm is None:
            self.datapoints_to_alarm = self.evaluation_periods
        if not 1 <= self.datapoints_to_alarm <= self.evaluation_periods:
            raise ValueError("datapoints_to_alarm must be between 1 and evaluation_periods")
        self.threshold = float(self.threshold)
        self._window: deque[Datapoint] = deque(maxlen=self.evaluation_periods)

    @classmethod
    def from_metric_alarm(cls, alarm: Mapping[str, Any], **kwargs: Any) -> Alarm:
        """From `cloudwatch.describe_alarms()["MetricAlarms"][i]` or `put_metric_alarm` keyword arguments."""
        return cls(
            name=alarm["AlarmName"],
            threshold=float(alarm["Threshold"]),
            comparison=alarm["ComparisonOperator"],
            evaluation_periods=int(alarm["EvaluationPeriods"]),
            datapoints_to_alarm=alarm.get("DatapointsToAlarm"),
            period=int(alarm.get("Period") or _metric_math_period(alarm.get("Metrics")) or 60),
            description=alarm.get("AlarmDescription"),
            **kwargs,
        )

    @property
    def window(self) -> tuple[Datapoint, ...]:
        """The last N datapoints, newest first."""
        return tuple(reversed(self._window))

    def breaches(self, value: float) -> bool:
        return COMPARISONS[self.comparison][0](float(value), self.threshold)

    def observe(self, value: float, timestamp: dt.datetime | None = None) -> Transition | None:
        """Add one period's datapoint; a `Transition` if the state changed, else None."""
        point = Datapoint(float(value), timestamp or self.clock())
        self._window.append(point)
        m = int(self.datapoints_to_alarm or self.evaluation_periods)
        n = self.evaluation_periods
        window = self.window
        breaching = [p for p in window if self.breaches(p.value)]
        fine = [p for p in window if not self.breaches(p.value)]
        words = COMPARISONS[self.comparison][1]
        if len(breaching) >= m:
            new, shown, count, need, arrow, verb = ALARM, breaching, len(breaching), m, "OK -> ALARM", words
        elif len(fine) >= n - m + 1:
            new, shown, count, need, arrow, verb = OK, fine, len(fine), n - m + 1, "ALARM -> OK", f"not {words}"
        else:
            return None
        if new == self.state:
            return None
        reason = (
            f"Threshold Crossed: {count} out of the last {len(window)} datapoints "
            f"[{', '.join(p.describe() for p in shown)}] {'was' if count == 1 else 'were'} {verb} the threshold "
            f"({self.threshold!r}) (minimum {need} datapoint{'s' if need != 1 else ''} for {arrow} transition)."
        )
        old, self.state = self.state, new
        return Transition(
            alarm_name=self.name,
            old_state=old,
            new_state=new,
            reason=reason,
            timestamp=point.timestamp,
            datapoints=window,
            threshold=self.threshold,
            comparison=self.comparison,
            evaluation_periods=n,
            datapoints_to_alarm=m,
            period=self.period,
            description=self.description,
        )


def _metric_math_period(metrics: Sequence[Mapping[str, Any]] | None) -> int | None:
    for m in metrics or ():
        if "MetricStat" in m and m["MetricStat"].get("Period"):
            return int(m["MetricStat"]["Period"])
    return None


def trigger_from_metric_alarm(alarm: Mapping[str, Any]) -> dict[str, Any]:
    """The alarm message's `Trigger` for an alarm as the API describes it (`describe_alarms` / put kwargs).

    Single-metric alarms give MetricName/Namespace/Statistic (upper case)/Dimensions (lower-case `name`/`value`);
    metric-math alarms give `Metrics[]`.
    """
    common = {
        "evaluation_periods": int(alarm["EvaluationPeriods"]),
        "datapoints_to_alarm": alarm.get("DatapointsToAlarm"),
        "comparison": alarm["ComparisonOperator"],
        "threshold": float(alarm["Threshold"]),
        "treat_missing_data": alarm.get("TreatMissingData", "missing"),
    }
    if alarm.get("Metrics"):
        return events.metric_math_trigger(
            alarm["Metrics"], period=int(alarm.get("Period") or _metric_math_period(alarm["Metrics"]) or 60),
            **common,
        )
    return events.metric_trigger(
        alarm["MetricName"],
        alarm["Namespace"],
        statistic=alarm.get("Statistic") or alarm.get("ExtendedStatistic") or "Average",
        dimensions=alarm.get("Dimensions"),
        period=int(alarm.get("Period") or 60),
        unit=alarm.get("Unit"),
        **common,
    )


class _Window(TypedDict):
    """What a `Transition` gives `events.metric_trigger` and `events.metric_math_trigger` (keyword arguments)."""

    period: int
    evaluation_periods: int
    datapoints_to_alarm: int
    comparison: str
    threshold: float


def to_sns_event(
    transition: Transition,
    *,
    topic_arn: str,
    region: str,
    account: str = events.ACCOUNT,
    trigger: Mapping[str, Any] | None = None,
    metric_alarm: Mapping[str, Any] | None = None,
    metric_name: str | None = None,
    namespace: str | None = None,
    statistic: str = "Average",
    dimensions: Mapping[str, str] | None = None,
    metrics: Sequence[Mapping[str, Any]] | None = None,
    description: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """The Lambda SNS event CloudWatch would send for `transition` (see `events.sns_alarm`).

    The `Trigger` comes from, in order: `trigger` as given; `metric_alarm` (the API description of the alarm);
    `metrics` (put_metric_alarm `Metrics` for metric math); `metric_name` + `namespace` (+ `statistic`,
    `dimensions`). Threshold, operator and periods come from the transition.
    """
    common: _Window = {
        "period": transition.period,
        "evaluation_periods": transition.evaluation_periods,
        "datapoints_to_alarm": transition.datapoints_to_alarm,
        "comparison": transition.comparison,
        "threshold": transition.threshold,
    }
    if trigger is None:
        if metric_alarm is not None:
            trigger = trigger_from_metric_alarm(metric_alarm)
        elif metrics:
            trigger = events.metric_math_trigger(metrics, **common)
        elif metric_name and namespace:
            trigger = events.metric_trigger(
                metric_name, namespace, statistic=statistic, dimensions=dimensions, **common
            )
        else:
            raise ValueError("to_sns_event needs trigger, metric_alarm, metrics, or metric_name and namespace")
    if description is None:
        description = transition.description
        if description is None and metric_alarm is not None:
            description = metric_alarm.get("AlarmDescription")
    return events.sns_alarm(
        transition.alarm_name,
        new_state=transition.new_state,
        old_state=transition.old_state,
        reason=transition.reason,
        topic_arn=topic_arn,
        region=region,
        account=account,
        trigger=trigger,
        description=description,
        state_change_time=transition.timestamp,
        **kwargs,
    )
