"""What both stacks share: logical IDs, export names, the step-runner base class, parameter/output helpers, rendering.

Logical IDs and export names are constants here because ecs.yaml exports what lambda.yaml imports: one name, one
place. Outputs are `<LogicalId><Attr>`, exported as `${AWS::StackName}-<Output>` unless their value may change.

CloudFormation refuses to change (or remove) an export another stack imports, so lambda.yaml imports only what no
parameter and no update can change (tables, queues, the secret, the cluster, the task role). What can change (the
destination, and the service, which a LaunchType change replaces) reaches lambda.yaml through one SSM parameter that
ecs.yaml writes, `/s3sync/<ECS stack>/settings`, read by an SSM-typed parameter of lambda.yaml (`EcsSettings`):
CloudFormation resolves it on every create and update of that stack, and nothing locks it.
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
    Ref,
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
    QUEUE_POLICY = "TransferQueuePolicy"
    TRANSFERS_TABLE = "TransfersTable"
    PARTS_TABLE = "PartsTable"
    SECRET = "DestCredentials"
    SECRET_POLICY = "DestCredentialsPolicy"
    SECURITY_GROUP = "WorkerSecurityGroup"
    INSTANCE_ROLE = "InstanceRole"
    INSTANCE_PROFILE = "InstanceProfile"
    LAUNCH_TEMPLATE = "LaunchTemplate"
    AUTO_SCALING_GROUP = "AutoScalingGroup"
    CAPACITY_PROVIDER = "CapacityProvider"
    CAPACITY_ASSOCIATION = "CapacityProviderAssociation"
    SETTINGS_PARAMETER = "SettingsParameter"
    # lambda.yaml
    BUCKET = "SourceBucket"
    BUCKET_POLICY = "SourceBucketPolicy"
    SPLITTER_DLQ = "SplitterDeadLetterQueue"
    SPLITTER_DLQ_POLICY = "SplitterDeadLetterQueuePolicy"
    WORKER_SOURCE_POLICY = "WorkerSourcePolicy"
    SCALE_OUT_TOPIC = "ScaleOutTopic"
    SCALE_IN_TOPIC = "ScaleInTopic"
    SCALE_OUT_TOPIC_POLICY = "ScaleOutTopicPolicy"
    SCALE_IN_TOPIC_POLICY = "ScaleInTopicPolicy"
    COMPLETION_TOPIC = "CompletionTopic"
    COMPLETION_SUBSCRIPTION = "CompletionSubscription"
    SCALE_OUT_ALARM = "ScaleOutAlarm"
    SCALE_IN_ALARM = "ScaleInAlarm"
    STREAM_MAPPING = "CompletionStreamMapping"
    EVENT_QUEUE = "EventQueue"  # S3 notifications -> the splitter, in batches
    EVENT_QUEUE_POLICY = "EventQueuePolicy"
    EVENT_DLQ = "EventDeadLetterQueue"
    EVENT_DLQ_POLICY = "EventDeadLetterQueuePolicy"
    EVENT_MAPPING = "SplitterEventMapping"


#: The four functions: contract key -> logical ID. Role, log group, permission and subscription IDs derive from it.
FUNCTIONS: dict[str, str] = {
    "splitter": "Splitter",
    "scale_out": "ScaleOut",
    "scale_in": "ScaleIn",
    "completion": "Completion",
}


class Exports:
    """Outputs of ecs.yaml; lambda.yaml imports the exported ones as `${EcsStackName}-<name>` (not those in
    `NOT_EXPORTED`)."""

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

    #: Outputs whose value a parameter change or a replacement changes: not exported, so that nothing can import
    #: (and so lock) them. lambda.yaml reads them from the settings parameter instead (`ecs_setting`).
    NOT_EXPORTED = frozenset({SERVICE_NAME, SERVICE_ARN, DEST_BUCKET, DEST_REGION, DEST_PREFIX, DEST_ENDPOINT_URL})


#: What ecs.yaml's settings parameter holds, in order, joined by OPTIONAL_MARK (an SSM value may not be empty, and
#: DestPrefix and DestEndpointUrl may be; neither may contain the mark).
SETTINGS_FIELDS: tuple[str, ...] = ("ServiceName", "DestBucket", "DestRegion", "DestPrefix", "DestEndpointUrl")
#: lambda.yaml's parameter (Type AWS::SSM::Parameter::Value<String>) naming ecs.yaml's settings parameter.
SETTINGS_PARAMETER = "EcsSettings"


def settings_parameter_name(ecs_stack_name: str) -> str:
    """The SSM parameter ecs.yaml writes its changeable settings to (`${AWS::StackName}` in the template)."""
    return f"/s3sync/{ecs_stack_name}/settings"


#: The SSM parameter where the scheduled finder keeps where its last run stopped (lambda.yaml's FinderCursor, made
#: with a FinderSchedule; s3sync.transfer.finder.FinderCursor), as Fn::Sub text: under the Lambda stack's name.
FINDER_CURSOR_NAME = "/s3sync/${AWS::StackName}/finder-cursor"


#: Who may read the China keys (the secret's resource policy) and send part messages (the part queue's policy): the
#: roles that do, by the IAM path lambda.yaml creates them under, `/s3sync/<ECS stack>/<key>/` (ecs.yaml is deployed
#: first and cannot name lambda.yaml's roles; their ARNs carry the path), plus the worker task role by its ARN.
#: "operator": a role an operator creates under `/s3sync/<ECS stack>/operator/` to run `s3sync retry` / `backfill`
#: (they read the keys and send parts). A path is not a name: CloudFormation still names the roles, CAPABILITY_IAM
#: suffices. "When you use AWS CloudFormation to create resources, you can specify a path for users, user groups,
#: and roles" (IAM identifiers, "Friendly names and paths").
SECRET_READERS: tuple[str, ...] = ("splitter", "completion", "operator")
QUEUE_SENDERS: tuple[str, ...] = ("splitter", "scale_in", "completion", "operator")


def role_path(ecs_stack_name: str, key: str) -> str:
    """The IAM path of a role of lambda.yaml (`${EcsStackName}` there), or of an operator's role ("operator")."""
    return f"/s3sync/{ecs_stack_name}/{key}/"


def role_arn_pattern(key: str) -> Sub:
    """ecs.yaml's side: the ARNs of the roles lambda.yaml creates for `key` under `role_path`."""
    return Sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:role" + role_path("${AWS::StackName}", key) + "*")


#: checkov checks that these stacks skip, with the reason, on the resources named in `skip_checks` calls. The reason
#: lands in the resource's Metadata (`checkov: skip: [{id, comment}]`), where checkov reads it and a reviewer sees it.
CHECKOV_SKIPS: dict[str, str] = {
    "CKV_AWS_18": "no server access log: the stack keeps no record of reads of the transit bucket; an operator who "
    "needs one turns on CloudTrail data events for it (docs/design.md, Security), which a log bucket of this stack "
    "would only duplicate at the cost of one more bucket to secure",
    "CKV_AWS_21": "transit bucket: objects are copied, then may go; versioning would bill for every overwritten or "
    "deleted object. Each read is pinned to the planned ETag (If-Match), so an overwrite fails or restarts the "
    "copy instead of mixing versions",
    "CKV_AWS_26": "encrypting needs a customer managed KMS key whose key policy lets CloudWatch use it (SNS developer "
    "guide: AWS services that publish to an encrypted topic need a customer managed key; the AWS managed aws/sns key "
    "cannot be granted to them), one more key to pay for and secure; these two topics carry alarm state changes "
    "(alarm name, state, reason with the queue's depth), no object names or data, and their topic policies let only "
    "the stack's own alarm publish",
    "CKV_AWS_27": "encrypted at rest with SSE-SQS (SqsManagedSseEnabled: true); checkov only recognises "
    "KmsMasterKeyId",
    "CKV_AWS_65": "Container Insights is optional (StackConfig.container_insights) because it bills per task; the "
    "queue-depth alarms, the worker logs and the task counts the scale functions report cover operations",
    "CKV_AWS_88": "workers run in a public subnet to reach S3 in both partitions without a NAT gateway; the security "
    "group admits nothing inbound but SSH from SshCidr when set, and SshCidr 0.0.0.0/0 is refused unless "
    "SshFromAnywhere is true (a stack rule); IMDSv2 is required",
    "CKV_AWS_115": "no reserved concurrency: it would take from the account's unreserved pool (new accounts may not "
    "go below 10) and cap the splitter exactly when many objects arrive",
    "CKV_AWS_116": "not invoked asynchronously by S3 (stream mapping: retried and bisected by the mapping itself), "
    "or an idempotent scale step that Lambda retries twice; a dead-letter queue would only park the alarm message",
    "CKV_AWS_117": "the functions call public AWS endpoints only (S3 in both partitions, SQS, DynamoDB, ECS); a VPC "
    "would need a NAT gateway and gains no isolation",
    "CKV_AWS_119": "encrypted at rest with the AWS managed key (SSESpecification.SSEEnabled); the items hold object "
    "names, sizes and ETags, no object data",
    "CKV_AWS_149": "encrypted at rest with the AWS managed key (aws/secretsmanager); who may read it is set by the "
    "secret's own resource policy (DestCredentialsPolicy), which denies GetSecretValue to every principal but the "
    "worker task role, the splitter and completion roles and an operator role (by ARN and IAM path); a customer "
    "managed key would say the same again in a key policy",
    "CKV_AWS_158": "CloudWatch Logs encrypts every log group at rest with service keys; the logs carry no secrets "
    "(tested: tests/test_security.py)",
    "CKV_AWS_173": "Lambda encrypts environment variables at rest with its service key; they hold names and ARNs "
    "only, never a credential (the secret is read at run time)",
}


def skip_checks(resource: AWSObject, *check_ids: str) -> AWSObject:
    """Record in the resource's Metadata that checkov skips `check_ids`, each with its reason from CHECKOV_SKIPS."""
    metadata = dict(getattr(resource, "Metadata", None) or {})
    skips = list(metadata.get("checkov", {}).get("skip", []))
    known = {s["id"] for s in skips}
    skips += [{"id": c, "comment": CHECKOV_SKIPS[c]} for c in check_ids if c not in known]
    metadata["checkov"] = {"skip": skips}
    resource.Metadata = metadata
    return resource


#: An export value may not be empty, yet DestPrefix and DestEndpointUrl are empty by default. ecs.yaml exports them
#: behind this mark and lambda.yaml takes what follows it (`Select(1, Split(mark, value))`): that is why neither
#: parameter may contain the mark.
OPTIONAL_MARK = "|"


class StackBuilder:
    """Runs `steps` (method names) in order on a fresh template; subclass and override one step to customize.

    Steps refer to each other only through the logical IDs in `Ids`, so an overridden step keeps the others working
    as long as it keeps the IDs it is expected to create. Steps are names, not functions, so that a subclass's
    override of a step is the one called; every name is checked when the class is defined (a misspelled step fails
    at import, not half-way through a render).
    """

    description: ClassVar[str] = ""
    steps: ClassVar[Sequence[str]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        wrong = [s for s in cls.steps if not callable(getattr(cls, s, None))]
        if wrong:
            raise TypeError(f"{cls.__name__}.steps names no method: {', '.join(wrong)}")

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
        """An output named `name`, exported as `${AWS::StackName}-<name>` unless it is in Exports.NOT_EXPORTED."""
        kwargs: dict[str, Any] = {"Condition": condition} if condition else {}
        if name not in Exports.NOT_EXPORTED:
            kwargs["Export"] = Export(Sub(f"${{AWS::StackName}}-{name}"))
        return self.t.add_output(Output(name, Description=description, Value=value, **kwargs))

    def resource_output(self, logical_id: str, attr: str, description: str, value: Any = None) -> Output:
        """Output `<LogicalId><Attr>`: `value` when given (e.g. a Ref that yields the name), else `GetAtt`."""
        return self.output(f"{logical_id}{attr}", value if value is not None else GetAtt(logical_id, attr), description)

    # --- common resources -----------------------------------------------------------------------------------------
    def add(self, resource: AWSObject) -> AWSObject:
        return self.t.add_resource(resource)

    def role(self, logical_id: str, key: str, service: str, statements: Sequence[Any], *,
             source_conditions: bool = False, **kwargs: Any) -> Role:
        """A role with one inline policy: the built-in statements, then the config's extra ones for `key`
        (`source_conditions`: iam.trust's confused-deputy conditions)."""
        all_statements = [*statements, *self.cfg.statements_for(key)]
        return self.add(
            Role(
                logical_id,
                AssumeRolePolicyDocument=iam.trust(service, source_conditions=source_conditions),
                Policies=[iam.role_policy(f"{logical_id}Policy", all_statements)],
                **kwargs,
            )
        )

    def log_group(self, logical_id: str, name: str) -> LogGroup:
        """A log group with the configured retention (CloudWatch Logs encrypts it at rest)."""
        return skip_checks(self.add(
            LogGroup(
                logical_id,
                LogGroupName=Sub(name),
                RetentionInDays=self.cfg.log_retention_days,
                DeletionPolicy="Delete",
                UpdateReplacePolicy="Delete",
            )
        ), "CKV_AWS_158")


def import_value(name: str) -> ImportValue:
    """Import an ecs.yaml output into lambda.yaml."""
    return ImportValue(Sub(f"${{EcsStackName}}-{name}"))


def marked(parameter: str) -> Sub:
    """Export value of an optional (possibly empty) parameter: OPTIONAL_MARK then the value."""
    return Sub(f"{OPTIONAL_MARK}${{{parameter}}}")


def ecs_setting(field: str) -> Select:
    """One of SETTINGS_FIELDS, as ecs.yaml's settings parameter holds it now (lambda.yaml only)."""
    return Select(SETTINGS_FIELDS.index(field), Split(OPTIONAL_MARK, Ref(SETTINGS_PARAMETER)))


def render(template: Template, fmt: str = "yaml") -> str:
    """Deterministic text of a template: keys sorted, no timestamps, trailing newline."""
    if fmt == "yaml":
        text = template.to_yaml(long_form=True)
    elif fmt == "json":
        # compact: CloudFormation counts bytes (51,200 for an inline body), and JSON is for machines
        text = json.dumps(template.to_dict(), separators=(",", ":"), sort_keys=True)
    else:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    return text if text.endswith("\n") else text + "\n"
