"""What both stacks share: logical IDs, export names, the step-runner base class, parameter/output helpers, rendering.

Logical IDs and export names are constants here because ecs.yaml exports what lambda.yaml imports: one name, one
place. Outputs are `<LogicalId><Attr>`, exported as `${AWS::StackName}-<Output>`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar

from troposphere import (
    AWSObject,
    Export,
    GetAtt,
    ImportValue,
    Output,
    Parameter,
    Select,
    Split,
    Sub,
    Template,
)
from troposphere.iam import Role
from troposphere.logs import LogGroup

from s3sync.stacks import iam
from s3sync.stacks.config import StackConfig

FORMATS: tuple[str, ...] = ("yaml", "json")


class Ids:
    """Logical IDs of the resources (short PascalCase nouns)."""

    # ecs.yaml
    CLUSTER = "Cluster"
    SERVICE = "Service"
    TASK_DEFINITION = "TaskDefinition"
    WORKER_LOG_GROUP = "WorkerLogGroup"
    TASK_ROLE = "TaskRole"
    EXECUTION_ROLE = "ExecutionRole"
    QUEUE = "TransferQueue"
    DLQ = "TransferDeadLetterQueue"
    TRANSFERS_TABLE = "TransfersTable"
    PARTS_TABLE = "PartsTable"
    SECRET = "DestCredentials"
    SECURITY_GROUP = "WorkerSecurityGroup"
    INSTANCE_ROLE = "InstanceRole"
    INSTANCE_PROFILE = "InstanceProfile"
    LAUNCH_TEMPLATE = "LaunchTemplate"
    AUTO_SCALING_GROUP = "AutoScalingGroup"
    CAPACITY_PROVIDER = "CapacityProvider"
    CAPACITY_ASSOCIATION = "CapacityProviderAssociation"
    # lambda.yaml
    BUCKET = "SourceBucket"
    BUCKET_POLICY = "SourceBucketPolicy"
    WORKER_SOURCE_POLICY = "WorkerSourcePolicy"
    SCALE_OUT_TOPIC = "ScaleOutTopic"
    SCALE_IN_TOPIC = "ScaleInTopic"
    COMPLETION_TOPIC = "CompletionTopic"
    COMPLETION_SUBSCRIPTION = "CompletionSubscription"
    SCALE_OUT_ALARM = "ScaleOutAlarm"
    SCALE_IN_ALARM = "ScaleInAlarm"
    STREAM_MAPPING = "CompletionStreamMapping"


#: The four functions: contract key -> logical ID. Role, log group, permission and subscription IDs derive from it.
FUNCTIONS: dict[str, str] = {
    "splitter": "Splitter",
    "scale_out": "ScaleOut",
    "scale_in": "ScaleIn",
    "completion": "Completion",
}


class Exports:
    """Outputs of ecs.yaml that lambda.yaml imports as `${EcsStackName}-<name>`."""

    CLUSTER_NAME = "ClusterName"
    SERVICE_NAME = "ServiceName"
    SERVICE_ARN = "ServiceArn"
    QUEUE_URL = "TransferQueueUrl"
    QUEUE_ARN = "TransferQueueArn"
    QUEUE_NAME = "TransferQueueName"
    TRANSFERS_TABLE_NAME = "TransfersTableName"
    TRANSFERS_TABLE_ARN = "TransfersTableArn"
    TRANSFERS_STREAM_ARN = "TransfersTableStreamArn"
    PARTS_TABLE_NAME = "PartsTableName"
    PARTS_TABLE_ARN = "PartsTableArn"
    SECRET_ARN = "DestCredentialsArn"
    TASK_ROLE_NAME = "TaskRoleName"
    DEST_BUCKET = "DestBucket"
    DEST_REGION = "DestRegion"
    DEST_PREFIX = "DestPrefix"  # exported with OPTIONAL_MARK in front (an export value may not be empty)
    DEST_ENDPOINT_URL = "DestEndpointUrl"  # idem


#: An export value may not be empty, yet DestPrefix and DestEndpointUrl are empty by default. ecs.yaml exports them
#: behind this mark and lambda.yaml takes what follows it (`Select(1, Split(mark, value))`): that is why neither
#: parameter may contain the mark.
OPTIONAL_MARK = "|"


class StackBuilder:
    """Runs `steps` (method names) in order on a fresh template; subclass and override one step to customize.

    Steps refer to each other only through the logical IDs in `Ids`, so an overridden step keeps the others working
    as long as it keeps the IDs it is expected to create.
    """

    description: ClassVar[str] = ""
    steps: ClassVar[Sequence[str]] = ()

    def __init__(self, config: StackConfig | None = None) -> None:
        self.cfg = config if config is not None else StackConfig()
        self.t = Template(Description=self.description)
        self.t.set_version()
        self._groups: dict[str, list[str]] = {}
        self._labels: dict[str, str] = {}

    def build(self) -> Template:
        for step in self.steps:
            getattr(self, step)()
        self._set_interface()
        return self.t

    # --- parameters: every one has a description, a group and a label --------------------------------------------
    def param(self, name: str, group: str, label: str, description: str, **kwargs: Any) -> Parameter:
        kwargs.setdefault("Type", "String")
        p = self.t.add_parameter(Parameter(name, Description=description, **kwargs))
        self._groups.setdefault(group, []).append(name)
        self._labels[name] = label
        return p

    def _set_interface(self) -> None:
        """The console page: parameters grouped and labelled in the order the steps declared them."""
        self.t.set_metadata(
            {
                "AWS::CloudFormation::Interface": {
                    "ParameterGroups": [
                        {"Label": {"default": group}, "Parameters": names} for group, names in self._groups.items()
                    ],
                    "ParameterLabels": {name: {"default": label} for name, label in self._labels.items()},
                }
            }
        )

    # --- outputs --------------------------------------------------------------------------------------------------
    def output(self, name: str, value: Any, description: str, condition: str | None = None) -> Output:
        """An output named `name`, exported as `${AWS::StackName}-<name>`."""
        kwargs: dict[str, Any] = {"Condition": condition} if condition else {}
        export = Export(Sub(f"${{AWS::StackName}}-{name}"))
        return self.t.add_output(Output(name, Description=description, Value=value, Export=export, **kwargs))

    def resource_output(self, logical_id: str, attr: str, description: str, value: Any = None) -> Output:
        """Output `<LogicalId><Attr>`: `value` when given (e.g. a Ref that yields the name), else `GetAtt`."""
        return self.output(f"{logical_id}{attr}", value if value is not None else GetAtt(logical_id, attr), description)

    # --- common resources -----------------------------------------------------------------------------------------
    def add(self, resource: AWSObject) -> AWSObject:
        return self.t.add_resource(resource)

    def role(self, logical_id: str, key: str, service: str, statements: Sequence[Any], **kwargs: Any) -> Role:
        """A role with one inline policy: the built-in statements, then the config's extra ones for `key`."""
        all_statements = [*statements, *self.cfg.statements_for(key)]
        return self.add(
            Role(
                logical_id,
                AssumeRolePolicyDocument=iam.trust(service),
                Policies=[iam.role_policy(f"{logical_id}Policy", all_statements)],
                **kwargs,
            )
        )

    def log_group(self, logical_id: str, name: str) -> LogGroup:
        """A log group with the configured retention (CloudWatch Logs encrypts it at rest)."""
        return self.add(
            LogGroup(
                logical_id,
                LogGroupName=Sub(name),
                RetentionInDays=self.cfg.log_retention_days,
                DeletionPolicy="Delete",
                UpdateReplacePolicy="Delete",
            )
        )


def import_value(name: str) -> ImportValue:
    """Import an ecs.yaml output into lambda.yaml."""
    return ImportValue(Sub(f"${{EcsStackName}}-{name}"))


def marked(parameter: str) -> Sub:
    """Export value of an optional (possibly empty) parameter: OPTIONAL_MARK then the value."""
    return Sub(f"{OPTIONAL_MARK}${{{parameter}}}")


def import_marked(name: str) -> Select:
    """The original value of an export made by `marked`, "" when the parameter was empty."""
    return Select(1, Split(OPTIONAL_MARK, import_value(name)))


def render(template: Template, fmt: str = "yaml") -> str:
    """Deterministic text of a template: keys sorted, no timestamps, trailing newline."""
    if fmt == "yaml":
        text = template.to_yaml(long_form=True)
    elif fmt == "json":
        text = json.dumps(template.to_dict(), indent=2, sort_keys=True)
    else:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    return text if text.endswith("\n") else text + "\n"
