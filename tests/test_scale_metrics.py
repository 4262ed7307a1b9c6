"""The scale functions report the worker service's desired and running task counts on every invocation (alarm A,
alarm B, the sweep schedule), as CloudWatch embedded-metric-format lines with the namespace and dimension the
worker's metrics use, so that the dashboard graphs running vs desired tasks without Container Insights.

The real handlers run in-process against moto's ECS, DynamoDB and SQS, as Lambda would run them; the lines are read
back from what they wrote to stderr (where Lambda's log stream comes from)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from s3sync.contract import METRICS_DIMENSION, METRICS_NAMESPACE, Env, Metric
from s3sync.local import events
from s3sync.transfer import logs
from tests.conftest import make_client
from tests.test_ledger import make_tables


@pytest.fixture
def service(moto_server, monkeypatch):
    """A worker service in moto's ECS (desired 1), the system's tables and queue, and the functions' environment."""
    from functions import _common

    name = f"scale-{uuid.uuid4().hex[:8]}"
    ecs, sqs, ddb = (make_client(s, moto_server.endpoint_url) for s in ("ecs", "sqs", "dynamodb"))
    ecs.create_cluster(clusterName=f"{name}-cluster")
    ecs.register_task_definition(family=f"{name}-worker", containerDefinitions=[
        {"name": "worker", "image": "s3sync-worker:test", "essential": True, "memory": 512}])
    ecs.create_service(cluster=f"{name}-cluster", serviceName=f"{name}-workers", taskDefinition=f"{name}-worker",
                       desiredCount=1, launchType="EC2")
    queue_url = sqs.create_queue(QueueName=f"{name}-parts")["QueueUrl"]
    transfers, parts = make_tables(ddb)
    env = {Env.CLUSTER: f"{name}-cluster", Env.SERVICE: f"{name}-workers", Env.MAX_TASKS: "4", Env.MIN_TASKS: "1",
           Env.QUEUE_URL: queue_url, Env.TRANSFERS_TABLE: transfers, Env.PARTS_TABLE: parts,
           Env.DEST_BUCKET: f"{name}-dst", "AWS_ENDPOINT_URL": moto_server.endpoint_url}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    _common.runtime.cache_clear()
    yield {"ecs": ecs, "cluster": f"{name}-cluster", "service": f"{name}-workers", "queue": f"{name}-parts"}
    _common.runtime.cache_clear()
    logs.setup("INFO")  # runtime() bound the JSON logs to this test's captured stderr


def alarm(name: str, state: str) -> dict[str, Any]:
    """Alarm A or B as SNS delivers it to the function (the documented shape, s3sync.local.events)."""
    old = "OK" if state == "ALARM" else "ALARM"
    return events.sns_alarm(name, new_state=state, old_state=old, reason="test", region="us-east-1",
                            topic_arn=f"arn:aws:sns:us-east-1:123456789012:{name}",
                            trigger=events.metric_trigger("ApproximateNumberOfMessagesVisible", "AWS/SQS"))


def emf_lines(captured: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in captured.splitlines() if line.startswith("{") and '"_aws"' in line]


def running_and_desired(ecs: Any, cluster: str, service: str) -> tuple[int, int]:
    svc = ecs.describe_services(cluster=cluster, services=[service])["services"][0]
    return int(svc["runningCount"]), int(svc["desiredCount"])


def test_every_invocation_reports_desired_and_running_tasks(service, capsys):
    from functions.scale_in import handler as scale_in
    from functions.scale_out import handler as scale_out

    ecs, cluster, name = service["ecs"], service["cluster"], service["service"]
    capsys.readouterr()
    running: list[int] = []

    def invoke(fn, event, trigger: str) -> dict[str, Any]:
        before = running_and_desired(ecs, cluster, name)
        fn(event)
        [line] = emf_lines(capsys.readouterr().err)  # exactly one per invocation
        running.append(line[Metric.RUNNING_TASKS])
        (directive,) = line["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == METRICS_NAMESPACE
        assert directive["Dimensions"] == [[METRICS_DIMENSION]] and line[METRICS_DIMENSION] == service["queue"]
        assert {m["Name"]: m["Unit"] for m in directive["Metrics"]} == {
            Metric.DESIRED_TASKS: "Count", Metric.RUNNING_TASKS: "Count"}
        assert (line["trigger"], line["cluster"], line["service"]) == (trigger, cluster, name)
        # desired: what the service wants after this invocation; running: as DescribeServices said before it
        assert line[Metric.DESIRED_TASKS] == running_and_desired(ecs, cluster, name)[1]
        assert line[Metric.RUNNING_TASKS] == before[0]
        return line

    assert invoke(scale_out, alarm("backlog-high", "ALARM"), "scale_out")[Metric.DESIRED_TASKS] == 4
    # the schedule only sweeps (nothing stuck here) and still reports the counts
    scheduled = events.scheduled_event("arn:aws:events:us-east-1:123456789012:rule/sweep", region="us-east-1")
    assert invoke(scale_in, scheduled, "sweep")[Metric.DESIRED_TASKS] == 4
    assert invoke(scale_in, alarm("backlog-empty", "ALARM"), "scale_in")[Metric.DESIRED_TASKS] == 1
    # an alarm leaving ALARM changes nothing, and is reported as well
    assert invoke(scale_out, alarm("backlog-high", "OK"), "scale_out")[Metric.DESIRED_TASKS] == 1
    assert running == [0, 4, 4, 1]  # moto starts the tasks a desired count asks for at once


def test_a_failing_describe_never_fails_the_sweep(service, monkeypatch, capsys):
    """The counts are best effort: when DescribeServices fails (here: a service that does not exist), the scheduled
    sweep still runs and returns, with a warning instead of a metric line."""
    from functions import _common
    from functions.scale_in import handler as scale_in

    monkeypatch.setenv(Env.SERVICE, "no-such-service")
    _common.runtime.cache_clear()
    capsys.readouterr()
    scheduled = events.scheduled_event("arn:aws:events:us-east-1:123456789012:rule/sweep", region="us-east-1")
    assert scale_in(scheduled) == {"sweep": {"resumed": [], "redriven": {}, "retriggered": [], "failed": []}}
    err = capsys.readouterr().err
    assert emf_lines(err) == []
    [warning] = [json.loads(line) for line in err.splitlines() if "task counts not reported" in line]
    assert warning["level"] == "WARNING" and "no-such-service" in warning["reason"]
