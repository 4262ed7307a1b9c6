"""CloudWatch embedded metric format: the objects `emf` builds, and the lines `MetricsLogger` writes next to the JSON
logs (one JSON object per line, `_aws` kept, the other loggers untouched)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from s3sync.contract import METRICS_DIMENSION, METRICS_NAMESPACE, Metric
from s3sync.transfer import logs
from s3sync.transfer.metrics import MetricsLogger, emf


def test_emf_object_follows_the_specification():
    doc = emf("s3sync", {"Queue": "parts"}, {"BytesCopied": (8388608, "Bytes"), "PartsCopied": (1, "Count")},
              timestamp_ms=1700000000123, job="j1")
    directive = doc["_aws"]
    assert directive["Timestamp"] == 1700000000123
    (metrics,) = directive["CloudWatchMetrics"]
    assert metrics == {"Namespace": "s3sync", "Dimensions": [["Queue"]],
                       "Metrics": [{"Name": "BytesCopied", "Unit": "Bytes"}, {"Name": "PartsCopied", "Unit": "Count"}]}
    # every dimension and metric named in the directive is a top-level member with its value
    assert (doc["Queue"], doc["BytesCopied"], doc["PartsCopied"], doc["job"]) == ("parts", 8388608, 1, "j1")
    json.dumps(doc)  # plain JSON


@pytest.mark.parametrize("metrics, dims, props, message", [
    ({"X": (1, "Furlongs")}, {}, {}, "unknown unit"),
    ({"X": (True, "Count")}, {}, {}, "must be a number"),
    ({"X": ("1", "Count")}, {}, {}, "must be a number"),
    ({}, {}, {}, "at least one metric"),
    ({"Queue": (1, "Count")}, {"Queue": "q"}, {}, "names used twice"),
    ({"X": (1, "Count")}, {"Queue": "q"}, {"Queue": "other"}, "names used twice"),
    ({"X": (1, "Count")}, {"Queue": ""}, {}, "non-empty string"),
])
def test_emf_refuses_what_cloudwatch_would_drop(metrics, dims, props, message):
    with pytest.raises(ValueError, match=message):
        emf("s3sync", dims, metrics, **props)


def test_metrics_logger_writes_one_emf_line_per_call_beside_the_json_logs():
    log_stream, metric_stream = io.StringIO(), io.StringIO()
    logs.setup("WARNING", stream=log_stream)  # even a quiet log level keeps the metrics
    try:
        metrics = MetricsLogger.for_queue("https://sqs.us-east-1.amazonaws.com/123456789012/ecsStack-Queue-AB12",
                                          stream=metric_stream)
        metrics.part_copied(5 * 2**20, job="j1", part=3)
        metrics.job_failed(job="j2")
        metrics.count(Metric.OBJECTS_FOUND, 7)
        logging.getLogger("s3sync.worker").warning("part will be retried", extra={"job": "j1", "_aws": "dropped"})
    finally:
        logs.setup("INFO")
    lines = [json.loads(line) for line in metric_stream.getvalue().splitlines()]
    assert len(lines) == 3
    copied, failed, found = lines
    for line in lines:
        (directive,) = line["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == METRICS_NAMESPACE == "s3sync"
        assert directive["Dimensions"] == [[METRICS_DIMENSION]]
        assert line[METRICS_DIMENSION] == "ecsStack-Queue-AB12"  # the queue's name: the dashboard's dimension
        assert line["msg"] == "metrics" and isinstance(line["_aws"]["Timestamp"], int)
    assert (copied[Metric.BYTES_COPIED], copied[Metric.PARTS_COPIED], copied["part"]) == (5 * 2**20, 1, 3)
    assert failed[Metric.JOBS_FAILED] == 1 and found[Metric.OBJECTS_FOUND] == 7
    # the JSON logs went to their own stream, without EMF lines, and their formatter still drops `_` keys
    (logged,) = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    assert logged["msg"] == "part will be retried" and "_aws" not in logged
