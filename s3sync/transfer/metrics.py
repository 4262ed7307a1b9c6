"""CloudWatch metrics without a PutMetricData call: embedded metric format (EMF) lines in the JSON logs.

A log line that is a JSON object with an `_aws.CloudWatchMetrics` directive is turned into metrics by CloudWatch Logs
when it reaches a log group (ECS awslogs driver, Lambda). No client, no IAM action, no extra latency on the copy path.
Spec: CloudWatch user guide, "Specification: Embedded metric format" (CloudWatch_Embedded_Metric_Format_Specification).

- `emf(namespace, dimensions, metrics, **properties)` builds one such object;
- `MetricsLogger` writes them, one line each, to stderr (where the JSON logs go); `for_queue(url)` gives the logger
  the worker uses, with the part queue's name as dimension, so that the dashboard finds its metrics.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import IO, Any

from s3sync.contract import METRICS_DIMENSION, METRICS_NAMESPACE, Metric

#: Units CloudWatch accepts (MetricDatum.Unit).
UNITS = frozenset({
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes", "Terabytes", "Bits",
    "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count", "Bytes/Second", "Kilobytes/Second",
    "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second",
    "Gigabits/Second", "Terabits/Second", "Count/Second", "None",
})  # fmt: skip
MAX_METRICS = 100  # per directive
MAX_DIMENSIONS = 30  # per dimension set

LOGGER_NAME = "s3sync.metrics"


def emf(namespace: str, dimensions: Mapping[str, str], metrics: Mapping[str, tuple[float, str]],
        *, timestamp_ms: int | None = None, **properties: Any) -> dict[str, Any]:
    """One EMF object: `metrics` maps a name to (value, unit); `properties` are extra top-level fields (searchable
    in Logs Insights, not metrics). Raises ValueError for what CloudWatch would silently drop."""
    if not namespace:
        raise ValueError("namespace must not be empty")
    if not metrics:
        raise ValueError("at least one metric is needed")
    if len(metrics) > MAX_METRICS or len(dimensions) > MAX_DIMENSIONS:
        raise ValueError(f"at most {MAX_METRICS} metrics and {MAX_DIMENSIONS} dimensions per line")
    clash = (set(metrics) & set(dimensions)) | ((set(metrics) | set(dimensions)) & (set(properties) | {"_aws"}))
    if clash:
        raise ValueError(f"names used twice in one metric line: {sorted(clash)}")
    for name, (value, unit) in metrics.items():
        if unit not in UNITS:
            raise ValueError(f"metric {name}: unknown unit {unit!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"metric {name}: value must be a number, got {value!r}")
    for name, dimension in dimensions.items():
        if not isinstance(dimension, str) or not dimension:
            raise ValueError(f"dimension {name} must be a non-empty string")
    doc: dict[str, Any] = {
        "_aws": {
            "Timestamp": int(time.time() * 1000) if timestamp_ms is None else int(timestamp_ms),
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [list(dimensions)],
                "Metrics": [{"Name": name, "Unit": unit} for name, (_v, unit) in metrics.items()],
            }],
        },
    }
    doc.update(properties)
    doc.update(dimensions)
    doc.update({name: value for name, (value, _u) in metrics.items()})
    return doc


class _Raw(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return str(record.msg)


def metrics_logger(stream: IO[str] | None = None) -> logging.Logger:
    """The `s3sync.metrics` logger: each record's message is written as it is (one JSON line), whatever the level
    and formatter of the other s3sync loggers (JSON logs drop `_`-prefixed keys such as `_aws`)."""
    logger = logging.getLogger(LOGGER_NAME)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_Raw())
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


class MetricsLogger:
    """Writes EMF lines. Each line also carries `msg` and `logger`, like every other JSON log line, so that log
    readers (and Logs Insights queries) treat it like the rest."""

    def __init__(self, namespace: str = METRICS_NAMESPACE, dimensions: Mapping[str, str] | None = None,
                 stream: IO[str] | None = None) -> None:
        self.namespace = namespace
        self.dimensions = dict(dimensions or {})
        self.logger = metrics_logger(stream)

    @classmethod
    def for_queue(cls, queue_url: str, stream: IO[str] | None = None) -> MetricsLogger:
        """The logger of one deployment: dimension `Queue` = the part queue's name (the last part of its URL)."""
        name = queue_url.rstrip("/").rsplit("/", 1)[-1] or "unknown"
        return cls(METRICS_NAMESPACE, {METRICS_DIMENSION: name}, stream)

    def put(self, metrics: Mapping[str, tuple[float, str]], **properties: Any) -> dict[str, Any]:
        doc = emf(self.namespace, self.dimensions, metrics, **{"msg": "metrics", "logger": LOGGER_NAME, **properties})
        self.logger.info(json.dumps(doc, separators=(",", ":"), ensure_ascii=False, default=str))
        return doc

    # --- what the worker and the functions count ------------------------------------------------------------------
    def part_copied(self, size: int, **properties: Any) -> dict[str, Any]:
        return self.put({Metric.PARTS_COPIED: (1, "Count"), Metric.BYTES_COPIED: (size, "Bytes")}, **properties)

    def job_failed(self, **properties: Any) -> dict[str, Any]:
        return self.put({Metric.JOBS_FAILED: (1, "Count")}, **properties)

    def count(self, metric: str, value: int = 1, **properties: Any) -> dict[str, Any]:
        return self.put({metric: (value, "Count")}, **properties)
