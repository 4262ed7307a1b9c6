"""Operations additions to lambda.yaml (issue #7), rendered with `StackConfig(operations=True)`.

- `PropagateDeletes` (false): the source bucket also sends its events to EventBridge, and a rule sends "Object
  Deleted" to the splitter, which deletes the copy (s3sync.transfer.deletes); the splitter's environment carries
  the switch (S3SYNC_PROPAGATE_DELETES), so that with it off a deletion event is refused whoever sends it. The S3
  notification keeps only ObjectCreated, so switching this on or off never touches it;
- `FinderSchedule` (empty: off): an EventBridge schedule invokes the splitter function with contract.FIND_EVENT; it
  lists both buckets and hands every object whose copy is missing or differs to the splitter (s3sync.transfer.
  finder), resuming where the last run stopped: the SSM parameter `FinderCursor` keeps that key. The splitter role
  may list the source bucket and read and write that parameter in every configuration (its code can whatever the
  switch says), so the switch adds no right;
- `SourceKmsKeyArn` (empty: none): the workers may decrypt SSE-KMS source objects with this key, through S3 only
  (kms:ViaService);
- a CloudWatch dashboard: part queue depth and oldest message age, dead-letter queue depth, running vs desired tasks
  (the task counts scale_out/scale_in report on every invocation, at least every `sweep_every_min` minutes; plus
  Container Insights' per-minute counts with `container_insights`), bytes and parts copied (the worker's
  embedded-metric-format lines), objects done and error lines (Logs Insights), Lambda errors and failed jobs.
Each switch adds its resources under a Condition; the one extra right (SourceKmsKeyArn) is a managed policy
attached to the worker's role, so the roles' own policies stay as they are.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from troposphere import (
    Equals,
    GetAtt,
    If,
    Not,
    NoValue,
    Ref,
    Select,
    Split,
    Sub,
    awslambda,
    cloudwatch,
    events,
    s3,
    ssm,
)
from troposphere.iam import ManagedPolicy

from s3sync import contract
from s3sync.contract import Env
from s3sync.stacks import iam
from s3sync.stacks.common import FINDER_CURSOR_NAME, FUNCTIONS, Exports, Ids, ecs_setting, import_value

if TYPE_CHECKING:
    from s3sync.stacks.config import StackConfig

G_OPS = "Operations"
DELETES_ON = "PropagateDeletesOn"
FINDER_ON = "FinderOn"
HAS_SOURCE_KEY = "HasSourceKmsKey"


class OpsIds:
    DELETE_RULE = "DeleteRule"
    DELETE_PERMISSION = "DeleteRulePermission"
    FINDER_RULE = "FinderRule"
    FINDER_PERMISSION = "FinderRulePermission"
    FINDER_CURSOR = "FinderCursor"
    SOURCE_KEY_POLICY = "SourceKeyPolicy"
    DASHBOARD = "Dashboard"


class OperationsSteps:
    """Mixed into LambdaStack; `add_operations` runs last and does nothing unless `cfg.operations`."""

    if TYPE_CHECKING:  # StackBuilder's state and methods, which these steps use (for mypy; nothing at run time)
        cfg: StackConfig
        t: Any  # troposphere.Template (troposphere has no type information)

        def param(self, name: str, group: str, label: str, description: str, **kwargs: Any) -> Any: ...
        def add(self, resource: Any) -> Any: ...
        def output(self, name: str, value: Any, description: str, condition: str | None = None) -> Any: ...

    def add_operations(self) -> None:
        if not self.cfg.operations:
            return
        self.add_operations_parameters()
        self.add_delete_propagation()
        self.add_finder_schedule()
        self.add_source_key_policy()
        self.add_dashboard()

    def add_operations_parameters(self) -> None:
        self.param("PropagateDeletes", G_OPS, "Propagate deletions",
                   "true: deleting a source object deletes its copy in China.",
                   Default="false", AllowedValues=["false", "true"])
        self.param("FinderSchedule", G_OPS, "Finder schedule",
                   "e.g. rate(1 day): list both buckets and copy what is missing or differs; empty: off.",
                   Default="", AllowedPattern=r"^((rate|cron)\(.+\))?$",
                   ConstraintDescription="empty, or an EventBridge rate(...) or cron(...) expression")
        self.param("SourceKmsKeyArn", G_OPS, "Source KMS key ARN",
                   "Key of SSE-KMS source objects (the workers may decrypt with it); empty: none.",
                   Default="", AllowedPattern=r"^(arn:[a-z-]+:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+)?$",
                   ConstraintDescription="empty, or a KMS key ARN")
        t = self.t
        t.add_condition(DELETES_ON, Equals(Ref("PropagateDeletes"), "true"))
        t.add_condition(FINDER_ON, Not(Equals(Ref("FinderSchedule"), "")))
        t.add_condition(HAS_SOURCE_KEY, Not(Equals(Ref("SourceKmsKeyArn"), "")))

    def _invoke_splitter(self, rule_id: str, permission_id: str, condition: str, **rule: Any) -> None:
        splitter = GetAtt(FUNCTIONS["splitter"], "Arn")
        self.add(events.Rule(rule_id, Condition=condition, Targets=[
            events.Target(Id="splitter", Arn=splitter, **rule.pop("target", {}))], **rule))
        self.add(awslambda.Permission(
            permission_id, Condition=condition, Action="lambda:InvokeFunction", FunctionName=splitter,
            Principal=iam.service_principal("events"), SourceArn=GetAtt(rule_id, "Arn")))

    def add_delete_propagation(self) -> None:
        # the splitter acts on deletion events only when this says true, whoever invokes it (s3sync.transfer.admission)
        splitter = self.t.resources[FUNCTIONS["splitter"]]
        splitter.Environment.Variables[Env.PROPAGATE_DELETES] = Ref("PropagateDeletes")
        bucket = self.t.resources[Ids.BUCKET]
        bucket.NotificationConfiguration.EventBridgeConfiguration = If(
            DELETES_ON, s3.EventBridgeConfiguration(EventBridgeEnabled=True), NoValue)
        self._invoke_splitter(OpsIds.DELETE_RULE, OpsIds.DELETE_PERMISSION, DELETES_ON, EventPattern={
            "source": ["aws.s3"], "detail-type": ["Object Deleted"],
            "detail": {"bucket": {"name": [Ref("SourceBucketName")]}}})

    def add_finder_schedule(self) -> None:
        find = json.dumps({**contract.FIND_EVENT, "bucket": "${SourceBucketName}"}, sort_keys=True)
        self._invoke_splitter(OpsIds.FINDER_RULE, OpsIds.FINDER_PERMISSION, FINDER_ON,
                              ScheduleExpression=Ref("FinderSchedule"), target={"Input": Sub(find)})
        # where the last run stopped: the function overwrites the value (s3sync.transfer.finder.FinderCursor); a
        # stack update leaves it alone unless this resource changes (then the next run starts a new pass)
        self.add(ssm.Parameter(
            OpsIds.FINDER_CURSOR, Condition=FINDER_ON, Name=Sub(FINDER_CURSOR_NAME), Type="String", Value="{}",
            Description="s3sync: the key after which the scheduled finder's next run lists (JSON; {}: the start)"))

    def add_source_key_policy(self) -> None:
        self.add(ManagedPolicy(OpsIds.SOURCE_KEY_POLICY, Condition=HAS_SOURCE_KEY,
                               Roles=[import_value(Exports.TASK_ROLE_NAME)],
                               PolicyDocument=iam.document([iam.decrypt_via_s3(Ref("SourceKmsKeyArn"))])))

    def add_dashboard(self) -> None:
        insights = self.cfg.container_insights
        names = {"Queue": import_value(Exports.QUEUE_NAME),
                 "Dlq": Select(5, Split(":", import_value(f"{Ids.DLQ}Arn"))),
                 **{fn: Ref(fn) for fn in FUNCTIONS.values()}}
        if insights:  # Container Insights' metrics are per cluster and service
            names.update({"Cluster": import_value(Exports.CLUSTER_NAME), "Service": ecs_setting("ServiceName")})
        body = dashboard_body(container_insights=insights,
                              tasks_period_s=60 * self.cfg.sweep_every_min)
        board = cloudwatch.Dashboard(OpsIds.DASHBOARD, DashboardName=Sub("${AWS::StackName}-s3sync"),
                                     DashboardBody=Sub(body, **names))
        self.add(board)
        self.output(f"{OpsIds.DASHBOARD}Name", Ref(OpsIds.DASHBOARD),
                    "CloudWatch dashboard")


def task_metrics(container_insights: bool) -> list[list[Any]]:
    """Running vs desired worker tasks: what scale_out/scale_in report (EMF, namespace s3sync, dimension Queue) on
    every invocation, so without Container Insights; with it, also its per-minute counts of the service."""
    ns, dim = contract.METRICS_NAMESPACE, contract.METRICS_DIMENSION
    lines: list[list[Any]] = [
        [ns, contract.Metric.RUNNING_TASKS, dim, "${Queue}", {"label": "running"}],
        [".", contract.Metric.DESIRED_TASKS, ".", ".", {"label": "desired"}],
    ]
    if container_insights:
        lines += [
            ["ECS/ContainerInsights", "RunningTaskCount", "ClusterName", "${Cluster}", "ServiceName", "${Service}",
             {"label": "running (Container Insights)", "period": 60}],
            [".", "DesiredTaskCount", ".", ".", ".", ".", {"label": "desired (Container Insights)", "period": 60}],
        ]
    return lines


def dashboard_body(*, container_insights: bool = False, tasks_period_s: int = 300) -> str:
    """The dashboard's JSON, with ${Queue}, ${Dlq}, ${<Function>}, ${AWS::StackName}, ${EcsStackName},
    ${AWS::Region} (and with Container Insights ${Cluster}, ${Service}) for Fn::Sub. `tasks_period_s`: the period
    of the task counts, as long as the sweep schedule's interval (the scale functions report at least that often),
    so that the graph has no gaps."""
    ns, dim = contract.METRICS_NAMESPACE, contract.METRICS_DIMENSION
    sqs = "AWS/SQS"

    def metric(x: int, y: int, title: str, metrics: list[list[Any]], stat: str = "Maximum",
               period: int = 60) -> dict[str, Any]:
        return {"type": "metric", "x": x, "y": y, "width": 12, "height": 6, "properties": {
            "title": title, "region": "${AWS::Region}", "stat": stat, "period": period, "metrics": metrics}}

    def logs(x: int, y: int, title: str, groups: list[str], query: str) -> dict[str, Any]:
        sources = " | ".join(f"SOURCE '/s3sync/{g}'" for g in groups)
        return {"type": "log", "x": x, "y": y, "width": 12, "height": 6, "properties": {
            "title": title, "region": "${AWS::Region}", "view": "timeSeries", "query": f"{sources} | {query}"}}

    lam = "${AWS::StackName}"
    widgets = [
        metric(0, 0, "Part queue", [
            [sqs, "ApproximateNumberOfMessagesVisible", "QueueName", "${Queue}"],
            [".", "ApproximateNumberOfMessagesNotVisible", ".", "."],
            [".", "ApproximateAgeOfOldestMessage", ".", ".", {"yAxis": "right"}]]),
        metric(12, 0, "Dead-letter queue", [[sqs, "ApproximateNumberOfMessagesVisible", "QueueName", "${Dlq}"]]),
        metric(0, 6, "Worker tasks: running vs desired", task_metrics(container_insights), period=tasks_period_s),
        metric(12, 6, "Copied", [[ns, contract.Metric.BYTES_COPIED, dim, "${Queue}"],
                                 [".", contract.Metric.PARTS_COPIED, ".", ".", {"yAxis": "right"}]], "Sum"),
        logs(0, 12, "Objects done", [f"{lam}/completion"],
             "filter msg = 'done' | stats count(*) as objects by bin(5m)"),
        logs(12, 12, "Error lines", [f"{lam}/splitter", f"{lam}/completion", f"{lam}/scale_in",
                                     "${EcsStackName}/worker"],
             "filter level = 'ERROR' | stats count(*) as errors by bin(5m)"),
        metric(0, 18, "Failures", [["AWS/Lambda", "Errors", "FunctionName", f"${{{fn}}}"] for fn in FUNCTIONS.values()]
               + [[ns, contract.Metric.JOBS_FAILED, dim, "${Queue}"]], "Sum"),
    ]
    return json.dumps({"widgets": widgets}, separators=(",", ":"), sort_keys=True)
