"""lambda.yaml with `StackConfig(operations=True)`: the dashboard graphs what the code emits, the three switches
(PropagateDeletes, FinderSchedule, SourceKmsKeyArn) add their resources under conditions with scoped rights, cfn-lint
reports nothing, and moto's CloudFormation creates it with every switch on. The default rendering has none of it."""

from __future__ import annotations

import dataclasses
import io
import json
import re
from typing import Any

import pytest

from s3sync import contract
from s3sync.render import lint_text
from s3sync.stacks import StackConfig, build_lambda, render_all
from s3sync.transfer.metrics import MetricsLogger
from s3sync.transfer.scaling import ScaleResult, ServiceState, report_tasks
from tests.cfn_support import moto_cloudformation, params, pin_secret

OPS = StackConfig(operations=True)


@pytest.fixture(scope="module")
def lam() -> dict[str, Any]:
    return json.loads(build_lambda(OPS).to_json())


def test_operations_are_rendered_by_default_and_can_be_left_out() -> None:
    names = {"Dashboard", "DeleteRule", "FinderRule", "SourceKeyPolicy"}
    default = json.loads(build_lambda().to_json())
    assert names <= set(default["Resources"]) and "PropagateDeletes" in default["Parameters"]
    without = json.loads(build_lambda(dataclasses.replace(StackConfig(), operations=False)).to_json())
    assert not names & set(without["Resources"])
    assert "PropagateDeletes" not in without["Parameters"]
    assert set(without.get("Conditions", {})) == {"HasCodeVersion"}  # only the code's version pin (CodeVersion)


def test_switches_add_conditional_resources_with_scoped_rights(lam: dict[str, Any]) -> None:
    res, params = lam["Resources"], lam["Parameters"]
    assert params["PropagateDeletes"]["Default"] == "false" and params["FinderSchedule"]["Default"] == ""
    assert params["SourceKmsKeyArn"]["Default"] == ""
    bucket = res["SourceBucket"]["Properties"]["NotificationConfiguration"]
    assert bucket["QueueConfigurations"] == [  # the notification itself is untouched
        {"Event": "s3:ObjectCreated:*", "Queue": {"Fn::GetAtt": ["EventQueue", "Arn"]}}]
    assert bucket["EventBridgeConfiguration"] == {
        "Fn::If": ["PropagateDeletesOn", {"EventBridgeEnabled": True}, {"Ref": "AWS::NoValue"}]}
    deletes = res["DeleteRule"]
    assert deletes["Condition"] == "PropagateDeletesOn"
    assert deletes["Properties"]["EventPattern"] == {
        "source": ["aws.s3"], "detail-type": ["Object Deleted"],
        "detail": {"bucket": {"name": [{"Ref": "SourceBucketName"}]}}}
    finder = res["FinderRule"]
    assert finder["Condition"] == "FinderOn" and finder["Properties"]["ScheduleExpression"] == {"Ref": "FinderSchedule"}
    [target] = finder["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["Splitter", "Arn"]}
    assert json.loads(target["Input"]["Fn::Sub"]) == {**contract.FIND_EVENT, "bucket": "${SourceBucketName}"}
    cursor = res["FinderCursor"]  # where the last run stopped (s3sync.transfer.finder.FinderCursor)
    assert cursor["Condition"] == "FinderOn" and cursor["Type"] == "AWS::SSM::Parameter"
    assert cursor["Properties"]["Name"] == {"Fn::Sub": "/s3sync/${AWS::StackName}/finder-cursor"}
    assert res["Splitter"]["Properties"]["Environment"]["Variables"]["S3SYNC_FINDER_CURSOR"] == \
        cursor["Properties"]["Name"]
    for rule in ("DeleteRule", "FinderRule"):
        perm = res[f"{rule}Permission"]
        assert perm["Condition"] == res[rule]["Condition"]
        assert perm["Properties"]["Principal"] == "events.amazonaws.com"
        assert perm["Properties"]["SourceArn"] == {"Fn::GetAtt": [rule, "Arn"]}

    # no switch adds a right to the splitter: its code can list the source in every configuration, so its own
    # policy allows it (tests/test_role_permissions.py); a re-copy never touches the parts table (attempt tokens)
    assert "SplitterOpsPolicy" not in res
    [splitter_policy] = res["SplitterRole"]["Properties"]["Policies"]
    actions = {a: st["Resource"] for st in splitter_policy["PolicyDocument"]["Statement"] for a in st["Action"]}
    assert "s3:ListBucket" in actions and not {"dynamodb:Query", "dynamodb:BatchWriteItem"} & set(actions)
    assert actions["s3:ListBucket"][0]["Fn::Sub"][0] == "arn:${AWS::Partition}:s3:::${Bucket}"
    key = res["SourceKeyPolicy"]
    assert key["Condition"] == "HasSourceKmsKey"
    assert key["Properties"]["Roles"] == [{"Fn::ImportValue": {"Fn::Sub": "${EcsStackName}-TaskRoleName"}}]
    [st] = key["Properties"]["PolicyDocument"]["Statement"]
    assert (st["Action"], st["Resource"]) == (["kms:Decrypt"], [{"Ref": "SourceKmsKeyArn"}])
    # the splitter role's own policy and environment are as without operations
    default = json.loads(build_lambda().to_json())["Resources"]
    for rid in ("SplitterRole", "Splitter", "WorkerSourcePolicy"):
        assert res[rid]["Properties"] == default[rid]["Properties"], rid


def expand(metrics: list[list[Any]]) -> list[list[Any]]:
    """A widget's metric lines with the "." shorthand (same as the line above) written out."""
    out: list[list[Any]] = []
    for m in metrics:
        out.append([out[-1][i] if v == "." and out else v for i, v in enumerate(m)])
    return out


def dashboard(lam: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the dashboard's body with every ${Name} replaced by NAME, the Fn::Sub variables); checks both agree."""
    body_text, names = lam["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    assert set(re.findall(r"\$\{(\w+)\}", body_text)) == set(names) | {"EcsStackName"}
    values = {n: n.upper() for n in names}
    return json.loads(re.sub(r"\$\{([\w:]+)\}", lambda m: values.get(m.group(1), m.group(1)), body_text)), names


def task_widget(body: dict[str, Any]) -> dict[str, Any]:
    [tasks] = [w["properties"] for w in body["widgets"] if w["properties"].get("title", "").startswith("Worker tasks")]
    return tasks


def test_dashboard_graphs_what_the_code_emits(lam: dict[str, Any]) -> None:
    body, names = dashboard(lam)
    metrics = [m for w in body["widgets"] if w["type"] == "metric" for m in w["properties"]["metrics"]]
    named = {(m[0], m[1]) for m in metrics if m[0] != "."} | {("AWS/SQS", m[1]) for m in metrics if m[0] == "."}
    assert {("AWS/SQS", "ApproximateNumberOfMessagesVisible"), ("AWS/SQS", "ApproximateAgeOfOldestMessage"),
            ("AWS/SQS", "ApproximateNumberOfMessagesNotVisible"), ("AWS/Lambda", "Errors")} <= named
    # running vs desired tasks from the scale functions' lines: no Container Insights (off by default) needed
    assert not any(m[0] == "ECS/ContainerInsights" for m in metrics) and not {"Cluster", "Service"} & set(names)
    tasks = task_widget(body)
    assert [m[1] for m in tasks["metrics"]] == [contract.Metric.RUNNING_TASKS, contract.Metric.DESIRED_TASKS]
    assert tasks["period"] == 60 * OPS.sweep_every_min  # they report at least that often: a line per period
    assert ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", "DLQ"] in metrics
    # the worker's EMF lines carry exactly the namespace, metric and dimension the dashboard asks for
    line = MetricsLogger.for_queue("https://sqs.us-east-1.amazonaws.com/1/QUEUE", stream=io.StringIO()).part_copied(1)
    [directive] = line["_aws"]["CloudWatchMetrics"]
    ours = [m for m in metrics if m[0] == directive["Namespace"]]
    assert ours and all(m[2:4] == [directive["Dimensions"][0][0], line[contract.METRICS_DIMENSION]] for m in ours)
    assert {m[1] for m in ours} <= {contract.Metric.BYTES_COPIED, contract.Metric.PARTS_COPIED,
                                    contract.Metric.JOBS_FAILED, contract.Metric.RUNNING_TASKS,
                                    contract.Metric.DESIRED_TASKS}
    # ... and so do the scale functions' lines (tests/test_scale_metrics.py runs the handlers)
    line = report_tasks(None, "c", "s", "https://sqs.us-east-1.amazonaws.com/1/QUEUE",
                        ScaleResult(3, True, "1 -> 3", ServiceState(3, 1)))
    [directive] = line["_aws"]["CloudWatchMetrics"]
    emitted = {(directive["Namespace"], m["Name"], directive["Dimensions"][0][0], line[contract.METRICS_DIMENSION])
               for m in directive["Metrics"]}
    assert {tuple(m[:4]) for m in expand(tasks["metrics"])} == emitted
    queries = [w["properties"]["query"] for w in body["widgets"] if w["type"] == "log"]
    assert any("/s3sync/AWS::StackName/completion" in q and "msg = 'done'" in q for q in queries)
    assert any("/s3sync/EcsStackName/worker" in q and "level = 'ERROR'" in q for q in queries)


@pytest.mark.system
def test_with_container_insights_the_task_widget_adds_its_per_minute_counts() -> None:
    config = dataclasses.replace(OPS, container_insights=True)
    body, names = dashboard(json.loads(build_lambda(config).to_json()))
    assert {"Cluster", "Service"} <= set(names)
    lines = expand(task_widget(body)["metrics"])
    assert [tuple(m[:2]) for m in lines] == [
        ("s3sync", contract.Metric.RUNNING_TASKS), ("s3sync", contract.Metric.DESIRED_TASKS),
        ("ECS/ContainerInsights", "RunningTaskCount"), ("ECS/ContainerInsights", "DesiredTaskCount")]
    assert all(m[2:6] == ["ClusterName", "CLUSTER", "ServiceName", "SERVICE"] for m in lines[2:])
    findings = lint_text(render_all(config)["lambda.yaml"], regions=["us-east-1"])
    assert [f"{m.linenumber}: {m.rule.id} {m.message}" for m in findings] == []


@pytest.mark.filterwarnings("ignore:Tried to parse:UserWarning")  # resource types moto's engine skips
@pytest.mark.system
def test_cfn_lint_reports_nothing_and_moto_creates_every_switch() -> None:
    import boto3

    texts = render_all(OPS)
    findings = lint_text(texts["lambda.yaml"], regions=["us-east-1", "cn-north-1"])
    assert [f"{m.linenumber}: {m.rule.id} {m.message}" for m in findings] == []
    with moto_cloudformation() as (cf, ecs_params):
        ecs_text = pin_secret(texts["ecs.yaml"])
        cf.create_stack(StackName="ecsStack", TemplateBody=ecs_text, Capabilities=["CAPABILITY_IAM"],
                        Parameters=params(ecs_params))
        cf.create_stack(StackName="lamStackS", TemplateBody=texts["lambda.yaml"], Capabilities=["CAPABILITY_IAM"],
                        Parameters=params({
                            "SourceBucketName": "src-bucket", "CodeBucket": "code-bucket", "CodeKey": "fn.zip",
                            "Email": "ops@example.com", "PropagateDeletes": "true", "FinderSchedule": "rate(1 day)",
                            "SourceKmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd"}))
        stack = cf.describe_stacks(StackName="lamStackS")["Stacks"][0]
        assert stack["StackStatus"] == "CREATE_COMPLETE"
        created = {r["LogicalResourceId"] for r in cf.list_stack_resources(StackName="lamStackS")[
            "StackResourceSummaries"]}
        assert {"Dashboard", "DeleteRule", "FinderRule", "SourceKeyPolicy"} <= created
        rules = {r["Name"]: r for r in boto3.client("events", region_name="us-east-1").list_rules()["Rules"]}
        assert any(r.get("ScheduleExpression") == "rate(1 day)" for r in rules.values())
        dashboards = boto3.client("cloudwatch", region_name="us-east-1").list_dashboards()["DashboardEntries"]
        assert [d["DashboardName"] for d in dashboards] == ["lamStackS-s3sync"]
