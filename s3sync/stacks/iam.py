"""IAM statements for both stacks, as pure awacs helpers, and the one allowlist of actions that cannot be scoped.

Every ARN is built with `${AWS::Partition}` so the same template deploys in `aws` and `aws-cn`. `allow()` refuses a
wildcard action, and a `*` resource for any action not in `UNSCOPABLE`, so a mistake fails at render time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import awacs.dynamodb as ddb
import awacs.ecr as ecr
import awacs.ecs as ecs
import awacs.kms as kms
import awacs.logs as logs
import awacs.s3 as s3
import awacs.secretsmanager as secretsmanager
import awacs.sns as sns
import awacs.sqs as sqs
import awacs.ssm as ssm
import awacs.sts as sts
from awacs.aws import (
    Action,
    Allow,
    ArnEquals,
    ArnLike,
    ArnNotEquals,
    ArnNotLike,
    Bool,
    Condition,
    Deny,
    Policy,
    PolicyDocument,
    Principal,
    Statement,
    StringEquals,
)
from troposphere import Ref, Sub
from troposphere.iam import Policy as RolePolicy

#: Actions IAM cannot scope to a resource (the Service Authorization Reference lists no resource type for them), so
#: they need `Resource: "*"`. The template test reads this mapping: any other action on `*` fails it.
UNSCOPABLE: Mapping[str, str] = MappingProxyType(
    {
        "dynamodb:ListStreams": "lists the table streams of the account; the Lambda stream poller calls it and "
        "IAM defines no resource type for it",
        "ecr:GetAuthorizationToken": "returns a registry login token for the whole account; no resource type",
        "ecs:DiscoverPollEndpoint": "the ECS agent on EC2 instances asks where to poll; no resource type",
    }
)

POLICY_VERSION = "2012-10-17"


#: The service principals the stacks name (role trust policies, Lambda permissions), per partition, with the
#: source of each. The templates claim to deploy in `aws` and `aws-cn`; the name a principal takes in the China
#: partition is what decides whether a role can be assumed there at all (IAM refuses an unknown principal with
#: "Invalid principal in policy").
#:
#: In 2016 the EC2 principal in China was `ec2.amazonaws.com.cn` (kubernetes/kops#27: CreateRole in cn-north-1 refused
#: `ec2.amazonaws.com`). AWS has since made the global names valid in every partition: AWS's own tables say so (the
#: CDK's region-info `Default.servicePrincipal`, "Service principals are now globally `<SERVICE>.amazonaws.com`",
#: https://github.com/aws/aws-cdk/blob/main/packages/aws-cdk-lib/region-info/lib/default.ts; the Terraform AWS
#: provider's `aws_service_principal`, taken from it), whose only aws-cn exceptions are codedeploy, elasticmapreduce
#: and logs (`<service>.amazonaws.com.cn`), none of which these stacks name; and the China documentation shows the
#: global names in its trust policies (ec2: https://docs.amazonaws.cn/AmazonECS/latest/developerguide/
#: managed-instances-instance-profile.html; ecs-tasks: https://docs.amazonaws.cn/AmazonECS/latest/userguide/
#: task_IAM_role.html). `service_principal()` renders `<service>.${AWS::URLSuffix}` for an entry whose aws-cn name is
#: `<service>.amazonaws.com.cn` (AWS::URLSuffix is amazonaws.com.cn there), and the literal name otherwise.
SERVICE_PRINCIPALS: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "ec2": {
            "aws": "ec2.amazonaws.com",
            "aws-cn": "ec2.amazonaws.com",
            "source": "https://docs.amazonaws.cn/AmazonECS/latest/developerguide/managed-instances-instance-profile"
            ".html (China docs, instance role trust policy); aws-cdk region-info default.ts (universal)",
        },
        "ecs-tasks": {
            "aws": "ecs-tasks.amazonaws.com",
            "aws-cn": "ecs-tasks.amazonaws.com",
            "source": "https://docs.amazonaws.cn/AmazonECS/latest/userguide/task_IAM_role.html (China docs, task "
            "role trust relationship); https://docs.aws.amazon.com/AmazonECS/latest/developerguide/"
            "task-iam-roles.html",
        },
        "lambda": {
            "aws": "lambda.amazonaws.com",
            "aws-cn": "lambda.amazonaws.com",
            "source": "https://docs.aws.amazon.com/lambda/latest/dg/lambda-intro-execution-role.html; aws-cdk "
            "region-info default.ts (universal; aws-cn exceptions: codedeploy, elasticmapreduce, logs)",
        },
        "s3": {
            "aws": "s3.amazonaws.com",
            "aws-cn": "s3.amazonaws.com",
            "source": "https://docs.aws.amazon.com/AmazonS3/latest/userguide/grant-destinations-permissions-to-s3"
            ".html; aws-cdk region-info default.ts (universal)",
        },
        "sns": {
            "aws": "sns.amazonaws.com",
            "aws-cn": "sns.amazonaws.com",
            "source": "https://docs.aws.amazon.com/lambda/latest/dg/with-sns.html; aws-cdk region-info default.ts "
            "(universal)",
        },
        "cloudwatch": {
            "aws": "cloudwatch.amazonaws.com",
            "aws-cn": "cloudwatch.amazonaws.com",
            "source": "https://repost.aws/knowledge-center/cloudwatch-receive-sns-for-alarm-trigger (the alarm's "
            "SNS action publishes as this principal); aws-cdk region-info default.ts (universal)",
        },
        "events": {
            "aws": "events.amazonaws.com",
            "aws-cn": "events.amazonaws.com",
            "source": "https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-resource-based.html; aws-cdk "
            "region-info default.ts (universal)",
        },
    }
)


def service_principal(service: str) -> Any:
    """The principal of `service` (a key of SERVICE_PRINCIPALS) that is right in both partitions."""
    names = SERVICE_PRINCIPALS[service]
    if names["aws-cn"] == names["aws"]:
        return names["aws"]
    if (names["aws"], names["aws-cn"]) == (f"{service}.amazonaws.com", f"{service}.amazonaws.com.cn"):
        return Sub(f"{service}.${{AWS::URLSuffix}}")
    raise ValueError(f"no one expression gives {service}'s principal in both partitions: {dict(names)}")


def _name(action: Action) -> str:
    return str(action.JSONrepr())


def allow(actions: Iterable[Action], resources: Iterable[Any]) -> Statement:
    """An Allow statement; refuses `*` actions and unlisted actions on a `*` resource."""
    actions = sorted(actions, key=_name)
    resources = list(resources)
    for action in actions:
        if "*" in _name(action):
            raise ValueError(f"wildcard action {_name(action)!r}: list the actions needed")
    if "*" in resources:
        unlisted = [_name(a) for a in actions if _name(a) not in UNSCOPABLE]
        if unlisted:
            raise ValueError(f"{unlisted} on Resource '*': scope them, or add them with a reason to UNSCOPABLE")
    return Statement(Effect=Allow, Action=actions, Resource=resources)


def unscoped(actions: Iterable[Action]) -> Statement:
    """The actions of `UNSCOPABLE` that a role needs, on `*`."""
    return allow(actions, ["*"])


def document(statements: Iterable[Statement]) -> PolicyDocument:
    return PolicyDocument(Version=POLICY_VERSION, Statement=list(statements))


def role_policy(name: str, statements: Iterable[Statement]) -> RolePolicy:
    """An inline policy for `AWS::IAM::Role.Policies`."""
    return RolePolicy(PolicyName=name, PolicyDocument=document(statements))


def trust(service: str, *, source_conditions: bool = False) -> Policy:
    """Trust policy letting one AWS service (a key of SERVICE_PRINCIPALS, e.g. `lambda`) assume the role.

    With `source_conditions` (the worker's task role), ECS tasks assume it only for tasks of this account and
    region, as the ECS developer guide recommends for the task role ("Amazon ECS task IAM role"): "It is recommended
    that you use the
    aws:SourceAccount or aws:SourceArn condition keys to scope the permissions further to prevent the confused
    deputy security issue. These condition keys can be specified in the trust relationship", with the example
    `"ArnLike": {"aws:SourceArn": "arn:aws:ecs:us-west-2:111122223333:*"}, "StringEquals": {"aws:SourceAccount":
    "111122223333"}`; and "Using the aws:SourceArn condition key to specify a specific cluster is not currently
    supported, you should use the wildcard to specify all clusters". Not on the execution role: its page ("Amazon
    ECS task execution IAM role") shows the trust policy without them and does not say that the agent sends these
    keys when it assumes that role; a condition that never holds would keep every task from starting."""
    condition: dict[str, Any] = {}
    if source_conditions:
        condition = {"Condition": Condition([
            ArnLike("aws:SourceArn", arn("ecs", "*")),
            StringEquals("aws:SourceAccount", Ref("AWS::AccountId")),
        ])}
    return PolicyDocument(
        Version=POLICY_VERSION,
        Statement=[Statement(Effect=Allow, Principal=Principal("Service", [service_principal(service)]),
                             Action=[sts.AssumeRole], **condition)],
    )


def deny_insecure_transport(service: str, resources: Iterable[Any]) -> Statement:
    """For a resource policy: refuse every request that does not come over TLS. A Deny only takes rights away, so it
    may name every action of the service (`<service>:*`)."""
    return Statement(
        Sid="DenyInsecureTransport",
        Effect=Deny,
        Principal=Principal("*"),
        Action=[Action(service, "*")],
        Resource=list(resources),
        Condition=Condition(Bool("aws:SecureTransport", "false")),
    )


def deny_all_but(sid: str, actions: Iterable[Action], resources: Iterable[Any], principals: Iterable[Any]) -> Statement:
    """For a resource policy: refuse `actions` on `resources` to every principal whose ARN matches none of
    `principals` (role ARNs, wildcards allowed). In one account an identity policy alone grants access ("If either
    the identity-based policy or the resource-based policy within the same account allows the request ... the
    request is still allowed", IAM policy evaluation logic), so only an explicit Deny narrows who may.
    aws:PrincipalArn: "For IAM roles, the request context returns the ARN of the role, not the ARN of the user that
    assumed the role" (IAM global condition keys), and a role's ARN carries its path ("arn:aws:iam::account:role/
    role-name-with-path", IAM identifiers): the roles of lambda.yaml are matched by the path they are created
    under (`role_path`). ArnNotLike holds when the key is absent ("If the policy condition requires that the key is
    not matched, such as StringNotLike or ArnNotLike, and the right key is not present, the condition is true",
    condition operators), so an anonymous request is refused too."""
    return Statement(
        Sid=sid,
        Effect=Deny,
        Principal=Principal("*"),
        Action=list(actions),
        Resource=list(resources),
        Condition=Condition(ArnNotLike("aws:PrincipalArn", list(principals))),
    )


def send_from_bucket(queue_arn: Any, bucket_arn: Any) -> list[Statement]:
    """A queue policy: only S3, for `bucket_arn`'s notifications, may send to the queue.

    - S3 sends as the service principal s3.amazonaws.com, which the queue policy must allow, conditioned on the
      bucket (aws:SourceArn) and the account (aws:SourceAccount), as the S3 user guide's "Granting permissions to
      publish event notification messages to a destination" shows;
    - a Deny for any other sender (an IAM principal's request carries no aws:SourceArn, and ArnNotEquals holds for
      an absent key): nobody in the account can forge an S3 event into the splitter's queue.
    """
    return [
        Statement(
            Sid="AllowS3Notifications",
            Effect=Allow,
            Principal=Principal("Service", [service_principal("s3")]),
            Action=[sqs.SendMessage],
            Resource=[queue_arn],
            Condition=Condition([ArnEquals("aws:SourceArn", bucket_arn),
                                 StringEquals("aws:SourceAccount", Ref("AWS::AccountId"))]),
        ),
        Statement(
            Sid="DenySendFromAnyoneElse",
            Effect=Deny,
            Principal=Principal("*"),
            Action=[sqs.SendMessage],
            Resource=[queue_arn],
            Condition=Condition(ArnNotEquals("aws:SourceArn", bucket_arn)),
        ),
    ]


def publish_from_alarm(topic_arn: Any, alarm_arn: Any) -> list[Statement]:
    """A topic policy: only `alarm_arn` (through the CloudWatch service) may publish to the topic.

    - "Allow_Publish_Alarms": CloudWatch alarms publish as the service principal cloudwatch.amazonaws.com (AWS
      re:Post, "Why didn't I receive an SNS notification for my CloudWatch alarm trigger?": a topic policy must
      grant it sns:Publish, and "To restrict the ability to publish messages to the topic for specific alarms, add
      global condition keys ... ArnLike ... aws:SourceArn"); the SNS developer guide lists Amazon CloudWatch among
      the services that support aws:SourceAccount when publishing (Example cases for Amazon SNS access control);
    - a Deny for any other publisher (an IAM principal's request carries no aws:SourceArn, and ArnNotEquals holds
      for an absent key), since in one account an identity policy alone would let it publish.
    """
    return [
        Statement(
            Sid="AllowPublishFromTheAlarm",
            Effect=Allow,
            Principal=Principal("Service", [service_principal("cloudwatch")]),
            Action=[sns.Publish],
            Resource=[topic_arn],
            Condition=Condition([ArnEquals("aws:SourceArn", alarm_arn),
                                 StringEquals("aws:SourceAccount", Ref("AWS::AccountId"))]),
        ),
        Statement(
            Sid="DenyPublishFromAnyoneElse",
            Effect=Deny,
            Principal=Principal("*"),
            Action=[sns.Publish],
            Resource=[topic_arn],
            Condition=Condition(ArnNotEquals("aws:SourceArn", alarm_arn)),
        ),
    ]


# --- ARNs ---------------------------------------------------------------------------------------------------------
def arn(service: str, resource: str, **variables: Any) -> Sub:
    """`arn:${AWS::Partition}:<service>:${AWS::Region}:${AWS::AccountId}:<resource>` (resource may use ${var})."""
    text = f"arn:${{AWS::Partition}}:{service}:${{AWS::Region}}:${{AWS::AccountId}}:{resource}"
    return Sub(text, **variables) if variables else Sub(text)


def bucket_arn(bucket_name: Any) -> Sub:
    return Sub("arn:${AWS::Partition}:s3:::${Bucket}", Bucket=bucket_name)


def objects_arn(bucket_name: Any) -> Sub:
    return Sub("arn:${AWS::Partition}:s3:::${Bucket}/*", Bucket=bucket_name)


# --- statements, one per need ---------------------------------------------------------------------------------------
def write_logs(log_group_arn: Any) -> Statement:
    """Write to one log group (its `Arn` attribute ends in `:*`, which covers its streams)."""
    return allow([logs.CreateLogStream, logs.PutLogEvents], [log_group_arn])


def read_objects(bucket_name: Any) -> Statement:
    """Read any object (and version) of one bucket: ranged GETs and HEAD."""
    return allow([s3.GetObject, s3.GetObjectVersion], [objects_arn(bucket_name)])


def list_objects(bucket_name: Any) -> Statement:
    """List one bucket (ListObjectsV2); with it, HEAD on a missing key answers 404 instead of 403."""
    return allow([s3.ListBucket], [bucket_arn(bucket_name)])


def decrypt_via_s3(key_arn: Any) -> Statement:
    """Decrypt with one KMS key, and only in requests S3 makes for the role (reading SSE-KMS objects): the KMS
    developer guide, kms:ViaService: "limits use of an KMS key to requests from specified AWS services", e.g.
    `"StringEquals": {"kms:ViaService": ["ec2.us-west-2.amazonaws.com", ...]}`; "Use the .amazonaws.com suffix of
    the AWS KMS ViaService name in all AWS partitions"."""
    st = allow([kms.Decrypt], [key_arn])
    st.Condition = Condition(StringEquals("kms:ViaService", Sub("s3.${AWS::Region}.amazonaws.com")))
    return st


def read_secret(secret_arn: Any) -> Statement:
    return allow([secretsmanager.GetSecretValue], [secret_arn])


def send_messages(queue_arn: Any) -> Statement:
    return allow([sqs.SendMessage], [queue_arn])


def queue_depth(queue_arn: Any) -> Statement:
    """Read a queue's approximate message counts (GetQueueAttributes): the sweeper re-drives only when it is empty."""
    return allow([sqs.GetQueueAttributes], [queue_arn])


def consume_messages(queue_arn: Any) -> Statement:
    return allow(
        [sqs.ReceiveMessage, sqs.DeleteMessage, sqs.ChangeMessageVisibility, sqs.GetQueueAttributes], [queue_arn]
    )


def table_items(actions: Iterable[Action], *table_arns: Any) -> Statement:
    """Item-level DynamoDB actions on the given tables (TransactWriteItems is authorized through these)."""
    return allow(actions, list(table_arns))


def keep_parameter(name: str) -> Statement:
    """Read and overwrite one SSM parameter (`name`: its path, leading slash included, as Fn::Sub text)."""
    return allow([ssm.GetParameter, ssm.PutParameter], [arn("ssm", "parameter" + name)])


def query_index(table_name: Any, index: str) -> Statement:
    """Query one index of a table: IAM authorizes a Query with IndexName on `<table ARN>/index/<index>`, not on the
    table (Service Authorization Reference, DynamoDB resource type `index`)."""
    return allow([ddb.Query], [arn("dynamodb", f"table/${{Table}}/index/{index}", Table=table_name)])


def read_stream(stream_arn: Any) -> list[Statement]:
    """What a Lambda event source mapping needs to poll one table stream."""
    return [
        allow([ddb.DescribeStream, ddb.GetRecords, ddb.GetShardIterator], [stream_arn]),
        unscoped([ddb.ListStreams]),
    ]


def publish(topic_arn: Any) -> Statement:
    return allow([sns.Publish], [topic_arn])


def manage_service(service_arn: Any) -> Statement:
    """Set the desired count of one ECS service, and read it back."""
    return allow([ecs.UpdateService, ecs.DescribeServices], [service_arn])


def pull_images(repository: Any) -> list[Statement]:
    """Pull the worker image from one ECR repository (its name) of this account and region."""
    return [
        unscoped([ecr.GetAuthorizationToken]),
        allow(
            [ecr.BatchCheckLayerAvailability, ecr.BatchGetImage, ecr.GetDownloadUrlForLayer],
            [arn("ecr", "repository/${Repository}", Repository=repository)],
        ),
    ]


def container_instance(cluster_name: Any) -> list[Statement]:
    """What the ECS agent on an EC2 instance needs, scoped to one cluster and its container instances."""
    cluster = arn("ecs", "cluster/${Cluster}", Cluster=cluster_name)
    instances = arn("ecs", "container-instance/${Cluster}/*", Cluster=cluster_name)
    return [
        unscoped([ecs.DiscoverPollEndpoint]),
        allow(
            [
                ecs.DeregisterContainerInstance,
                ecs.RegisterContainerInstance,
                ecs.SubmitAttachmentStateChanges,
                ecs.SubmitContainerStateChange,
                ecs.SubmitTaskStateChange,
            ],
            [cluster],
        ),
        allow([ecs.Poll, ecs.StartTelemetrySession], [instances]),
    ]
