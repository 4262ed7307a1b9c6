"""`ecs.yaml`: the data plane the workers need, deployed first; it exports what `lambda.yaml` imports (what never
changes), and writes what may change (destination, service) to an SSM parameter that lambda.yaml reads.

Cluster, worker task definition and service (EC2 through an Auto Scaling group capacity provider, as in the
original design, or Fargate), the part queue and its dead-letter queue, the transfers and parts tables, and the
secret holding the China credentials.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import awacs.dynamodb as ddb
from awacs.aws import Action
from troposphere import (
    And,
    Base64,
    Equals,
    GetAtt,
    If,
    Join,
    Not,
    NoValue,
    Ref,
    Select,
    Split,
    Sub,
    Tags,
    Template,
    autoscaling,
    dynamodb,
    ec2,
    ecs,
    sqs,
    ssm,
)
from troposphere.iam import InstanceProfile
from troposphere.secretsmanager import ResourcePolicy, Secret

from s3sync import contract
from s3sync.contract import BUCKET_PATTERN, Env
from s3sync.stacks import iam, sizes
from s3sync.stacks.common import (
    OPTIONAL_MARK,
    QUEUE_SENDERS,
    SECRET_READERS,
    SETTINGS_FIELDS,
    Exports,
    Ids,
    StackBuilder,
    marked,
    role_arn_pattern,
    settings_parameter_name,
    skip_checks,
)
from s3sync.stacks.config import DEST_REGIONS, LAUNCH_TYPES, StackConfig

IS_EC2 = "IsEc2"
IS_FARGATE = "IsFargate"
HAS_KEY_NAME = "HasKeyName"
HAS_SSH = "HasSsh"
IN_CHINA = "InChina"

CONTAINER_NAME = "worker"
#: The capacity provider's name (AWS::ECS::CapacityProvider Name, CreateCapacityProvider `name`): "Up to 255
#: characters ... letters (both upper and lowercase letters), numbers, underscores (_), and hyphens (-). The name
#: can't be prefixed with "aws", "ecs", or "fargate"." A stack name is at most 128 letters, digits and hyphens, so
#: this is at most 143 characters of those, and never starts with a reserved prefix.
CAPACITY_PROVIDER_NAME = "s3sync-${AWS::StackName}-workers"

#: DestEndpointUrl: empty (the region's public endpoint) or an https:// URL; s3sync.transfer.endpoints refuses
#: anything else at run time too, unless `s3sync local` says otherwise.
DEST_ENDPOINT_PATTERN = r"^(https://[^\s|]+)?$"
#: SshCidr: empty, an IPv4 CIDR with a prefix of /8 to /32, or exactly 0.0.0.0/0 (which SSH_RULE refuses unless
#: SshFromAnywhere is true): no other spelling of the whole internet ("1.2.3.4/0") gets past the pattern.
ANYWHERE = "0.0.0.0/0"
SSH_CIDR_PATTERN = r"^((\d{1,3}\.){3}\d{1,3}/([89]|[12]\d|3[0-2])|0\.0\.0\.0/0)?$"
SSH_RULE = "SshFromAnywhereOnlyWhenAsked"


def ssh_problems(values: Mapping[str, str]) -> list[str]:
    """SSH_RULE on the parameter values `s3sync deploy` is about to use (the same check, before any stack changes)."""
    if values.get("SshCidr", "") == ANYWHERE and values.get("SshFromAnywhere", "false") != "true":
        return ["SshCidr 0.0.0.0/0 opens SSH to the whole internet: pass SshFromAnywhere=true to mean it, or a "
                "narrower CIDR"]
    return []


G_WORKER = "Worker tasks"
G_DEST = "Destination in China"
G_NETWORK = "Network and EC2 instances"
G_QUEUE = "Part queue"


class EcsStack(StackBuilder):
    """Builds ecs.yaml; each `add_*` step adds one resource (or a tight group) and its outputs."""

    description = (
        "s3sync data plane (deploy first): ECS cluster, worker service, part queue with dead-letter queue, "
        "transfers and parts tables, China credentials secret."
    )
    steps = (
        "add_parameters",
        "add_size_rules",
        "add_access_rules",
        "add_conditions",
        "add_secret",
        "add_secret_policy",
        "add_dead_letter_queue",
        "add_queue",
        "add_queue_policy",
        "add_transfers_table",
        "add_parts_table",
        "add_log_group",
        "add_cluster",
        "add_task_role",
        "add_execution_role",
        "add_task_definition",
        "add_security_group",
        "add_instance_role",
        "add_launch_template",
        "add_auto_scaling_group",
        "add_capacity_provider",
        "add_service",
        "add_destination_outputs",
        "add_settings_parameter",
    )

    # --- parameters (deploy-time choices only) ---------------------------------------------------------------------
    def add_parameters(self) -> None:
        c = self.cfg
        self.param("ImageUri", G_WORKER, "Worker image URI",
                   "Container image of the worker (e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/s3sync:1.0); "
                   "ECR images must be in a repository of this account and region.", MinLength=1,
                   **({"Default": c.image_uri} if c.image_uri else {}))
        self.param("LaunchType", G_WORKER, "Launch type",
                   "EC2: instances from an Auto Scaling group (as in the original design); FARGATE: serverless tasks "
                   "with a public IP.", Default=c.launch_type, AllowedValues=list(LAUNCH_TYPES))
        self.param("TaskCpu", G_WORKER, "Task CPU units",
                   "CPU units of one worker task (1024 = 1 vCPU); on Fargate a valid pair with TaskMemory, on EC2 "
                   "at most the instance type's vCPUs x 1024.",
                   Default=str(c.task_cpu), AllowedValues=[str(v) for v in sizes.TASK_CPU_VALUES])
        self.param("TaskMemory", G_WORKER, "Task memory (MiB)",
                   "Memory of one worker task in MiB: on Fargate a valid pair with TaskCpu, on EC2 at most 95% of "
                   "the instance type's memory. It must hold WorkerThreads parts of the lambda stack's "
                   "PartSizeMiB (s3sync deploy checks that).",
                   Default=str(c.task_memory_mib), AllowedValues=[str(v) for v in sizes.TASK_MEMORY_VALUES])
        self.param("WorkerThreads", G_WORKER, "Copy threads per task",
                   "Parts copied in parallel by one worker task.",
                   Type="Number", Default=c.worker_threads, MinValue=1, MaxValue=64)
        self.param("MinTasks", G_WORKER, "Tasks at start",
                   "Worker tasks the service starts with (the lambda stack's MinTasks is where it scales back in to); "
                   "0 allowed.", Type="Number", Default=c.min_tasks, MinValue=0, MaxValue=1000)

        self.param("DestBucket", G_DEST, "Destination bucket",
                   "Name of the existing S3 bucket in the China region that receives the objects.",
                   AllowedPattern=BUCKET_PATTERN,
                   ConstraintDescription="an S3 bucket name: 3-63 lower-case letters, digits, dots and hyphens")
        self.param("DestRegion", G_DEST, "Destination region",
                   "China region of the destination bucket.", Default=c.dest_region, AllowedValues=list(DEST_REGIONS))
        self.param("DestPrefix", G_DEST, "Destination key prefix (optional)",
                   "Prefix put in front of every key at the destination (e.g. backup/); empty for none.",
                   Default="", MaxLength=512, AllowedPattern=rf"^[^{OPTIONAL_MARK}]*$",
                   ConstraintDescription=f"any text without {OPTIONAL_MARK!r}")
        self.param("DestEndpointUrl", G_DEST, "Destination endpoint URL (optional)",
                   "S3 endpoint of the destination (e.g. https://s3.cn-north-1.amazonaws.com.cn); empty for the "
                   "region's public endpoint. https:// only: the copies travel with their payload unsigned "
                   "(Content-MD5 carries integrity), so only TLS keeps them secret.", Default="", MaxLength=2048,
                   AllowedPattern=DEST_ENDPOINT_PATTERN, ConstraintDescription="empty, or an https:// URL")
        self.param("DestAccessKeyId", G_DEST, "China access key ID",
                   "Access key ID of an IAM user in the China account allowed to write the destination bucket; kept "
                   "in Secrets Manager.", NoEcho=True, AllowedPattern=r"^[A-Z0-9]{16,128}$",
                   ConstraintDescription="upper-case letters and digits, as AWS access key IDs are")
        self.param("DestSecretAccessKey", G_DEST, "China secret access key",
                   "Secret access key of that user; kept in Secrets Manager, never shown.", NoEcho=True,
                   AllowedPattern=r"^[A-Za-z0-9/+=]{16,128}$",
                   ConstraintDescription="letters, digits and / + =, as AWS secret access keys are")

        self.param("VpcId", G_NETWORK, "VPC", "VPC of the worker tasks and instances.", Type="AWS::EC2::VPC::Id")
        self.param("SubnetId", G_NETWORK, "Public subnet",
                   "Public subnet (with a route to an internet gateway) of that VPC: workers reach S3 in both "
                   "partitions through it.", Type="AWS::EC2::Subnet::Id")
        self.param("InstanceType", G_NETWORK, "Instance type (EC2)",
                   "EC2 launch type only: instance type of the container instances; one task must fit it (TaskCpu, "
                   "TaskMemory).", Default=c.instance_type, AllowedValues=list(sizes.INSTANCE_TYPES))
        self.param("MaxInstances", G_NETWORK, "Maximum instances (EC2)",
                   "EC2 launch type only: upper bound of the Auto Scaling group; the ECS capacity provider adds "
                   "instances as tasks need them. Keep it at the lambda stack's MaxTasks if one task fills an "
                   "instance.",
                   Type="Number", Default=c.max_instances, MinValue=1, MaxValue=1000)
        self.param("KeyName", G_NETWORK, "EC2 key pair (optional)",
                   "EC2 launch type only: key pair for SSH to the instances; empty for none.", Default="")
        self.param("SshCidr", G_NETWORK, "SSH source CIDR (optional)",
                   "EC2 launch type only: address range allowed to SSH to the instances; empty closes port 22. "
                   "0.0.0.0/0 (the whole internet) only with SshFromAnywhere true.",
                   Default="", AllowedPattern=SSH_CIDR_PATTERN,
                   ConstraintDescription="empty, a CIDR with a prefix of /8 to /32 such as 203.0.113.0/24, or "
                                         "0.0.0.0/0 with SshFromAnywhere true")
        self.param("SshFromAnywhere", G_NETWORK, "Allow SSH from anywhere",
                   "true: SshCidr may be 0.0.0.0/0 (every address on the internet may try port 22); false refuses it.",
                   Default="false", AllowedValues=["false", "true"])
        self.param("AmiId", G_NETWORK, "ECS-optimized AMI (EC2)",
                   "EC2 launch type only: the public SSM parameter naming the ECS-optimized AMI.",
                   Type="AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>", Default=c.ecs_ami_parameter)

        self.param("VisibilityTimeout", G_QUEUE, "Visibility timeout (s)",
                   "Seconds a received part stays hidden from other workers; workers extend it while a long part "
                   "copies.", Type="Number", Default=c.visibility_timeout_s, MinValue=0, MaxValue=43200)
        self.param("MaxReceiveCount", G_QUEUE, "Receives before the dead-letter queue",
                   "A part message received this many times without success moves to the dead-letter queue.",
                   Type="Number", Default=c.max_receive_count, MinValue=1, MaxValue=1000)

    def add_size_rules(self) -> None:
        """Refuse, at stack creation and update (console included), a Fargate CPU/memory pair Fargate does not offer
        and an EC2 task larger than its instance type (s3sync.stacks.sizes has the tables and their sources)."""
        for name, rule in sizes.rules().items():
            self.t.add_rule(name, rule)

    def add_access_rules(self) -> None:
        """Refuse, at stack creation and update, SSH open to the whole internet unless SshFromAnywhere says so (the
        SshCidr pattern admits no other /0, nor a prefix shorter than /8). `ssh_problems` is the same check for
        `s3sync deploy`. Rules: "Fn::Equals ... Ref" are among the "Rule-specific intrinsic functions" (CloudFormation
        user guide, Rules syntax)."""
        self.t.add_rule(SSH_RULE, {
            "RuleCondition": Equals(Ref("SshCidr"), ANYWHERE),
            "Assertions": [{"Assert": Equals(Ref("SshFromAnywhere"), "true"),
                            "AssertDescription": "SshCidr 0.0.0.0/0 opens SSH to the whole internet: set "
                                                 "SshFromAnywhere to true to mean it, or give a narrower CIDR"}],
        })

    def add_conditions(self) -> None:
        self.t.add_condition(IS_EC2, Equals(Ref("LaunchType"), "EC2"))
        self.t.add_condition(IS_FARGATE, Equals(Ref("LaunchType"), "FARGATE"))
        self.t.add_condition(HAS_KEY_NAME, Not(Equals(Ref("KeyName"), "")))
        self.t.add_condition(HAS_SSH, And(Equals(Ref("LaunchType"), "EC2"), Not(Equals(Ref("SshCidr"), ""))))
        self.t.add_condition(IN_CHINA, Equals(Ref("AWS::Partition"), "aws-cn"))

    # --- state: secret, queues, tables ----------------------------------------------------------------------------
    def add_secret(self) -> None:
        """The China credentials as JSON; only references to the NoEcho parameters appear in the template."""
        body = json.dumps(
            {
                contract.SECRET_ACCESS_KEY_ID_FIELD: "${DestAccessKeyId}",
                contract.SECRET_SECRET_ACCESS_KEY_FIELD: "${DestSecretAccessKey}",
            },
            separators=(",", ":"),
            sort_keys=True,
        )
        skip_checks(self.add(
            Secret(
                Ids.SECRET,
                Description="s3sync: access key of the China account that writes the destination bucket",
                SecretString=Sub(body),
                DeletionPolicy="Delete",
                UpdateReplacePolicy="Delete",
            )
        ), "CKV_AWS_149")
        self.resource_output(Ids.SECRET, "Arn", "ARN of the secret holding the China credentials", Ref(Ids.SECRET))

    def add_secret_policy(self) -> None:
        """Only the roles that use the China keys may read them: the secret's resource policy denies GetSecretValue
        to every other principal, whatever its identity policy allows (`iam.deny_all_but`). The readers: the worker
        task role (it reads the secret with its own role, at start and after a refusal: s3sync.transfer.runtime
        Runtime.dest), the splitter and completion roles of lambda.yaml and an operator's role (SECRET_READERS, by
        IAM path). ECS no longer injects the keys, so the execution role is not among them. Only GetSecretValue is
        denied: the deployer can still update, rotate (PutSecretValue) and replace this policy.

        AWS::SecretsManager::ResourcePolicy: "ResourcePolicy: A JSON-formatted string for an AWS resource-based
        policy"; "SecretId: The ARN or name of the secret to attach the resource-based policy"; "BlockPublicPolicy:
        Specifies whether to block resource-based policies that allow broad access to the secret" (CloudFormation
        user guide). Resource "*": "In a policy attached to a secret, * means the policy applies to this secret"
        (Secrets Manager user guide, Permissions policy examples)."""
        readers = [GetAtt(Ids.TASK_ROLE, "Arn"), *(role_arn_pattern(key) for key in SECRET_READERS)]
        self.add(
            ResourcePolicy(
                Ids.SECRET_POLICY,
                SecretId=Ref(Ids.SECRET),
                BlockPublicPolicy=True,
                ResourcePolicy=iam.document([
                    iam.deny_all_but("OnlyTheCopiersReadTheChinaKeys", [Action("secretsmanager", "GetSecretValue")],
                                     ["*"], readers),
                ]),
            )
        )

    def add_dead_letter_queue(self) -> None:
        skip_checks(self.add(
            sqs.Queue(
                Ids.DLQ,
                MessageRetentionPeriod=self.cfg.message_retention_s,
                SqsManagedSseEnabled=True,
                DeletionPolicy="Delete",
                UpdateReplacePolicy="Delete",
            )
        ), "CKV_AWS_27")
        self.resource_output(Ids.DLQ, "Url", "Dead-letter queue: part messages that failed MaxReceiveCount times",
                             Ref(Ids.DLQ))
        self.resource_output(Ids.DLQ, "Arn", "ARN of the dead-letter queue")

    def add_queue(self) -> None:
        skip_checks(self.add(
            sqs.Queue(
                Ids.QUEUE,
                VisibilityTimeout=Ref("VisibilityTimeout"),
                MessageRetentionPeriod=self.cfg.message_retention_s,
                ReceiveMessageWaitTimeSeconds=20,
                SqsManagedSseEnabled=True,
                RedrivePolicy=sqs.RedrivePolicy(
                    deadLetterTargetArn=GetAtt(Ids.DLQ, "Arn"), maxReceiveCount=Ref("MaxReceiveCount")
                ),
                DeletionPolicy="Delete",
                UpdateReplacePolicy="Delete",
            )
        ), "CKV_AWS_27")
        self.resource_output(Ids.QUEUE, "Url", "URL of the part queue the workers consume", Ref(Ids.QUEUE))
        self.resource_output(Ids.QUEUE, "Arn", "ARN of the part queue")
        self.resource_output(Ids.QUEUE, "Name", "Name of the part queue (the alarms' dimension)",
                             GetAtt(Ids.QUEUE, "QueueName"))

    def add_queue_policy(self) -> None:
        """Both queues refuse requests that do not come over TLS; only the roles that send parts may send to the
        part queue (QUEUE_SENDERS: the splitter, the sweeper in scale_in, completion, which sends a part again, and
        an operator's role for `s3sync retry` / `backfill`, by IAM path): a message names what the workers copy.
        (The workers also check every message against its job: s3sync.transfer.worker.) SQS: "You cannot set
        permissions explicitly for SendMessageBatch ... setting permissions for SendMessage ... sets permissions for
        the corresponding batch versions" (SQS developer guide), so the Deny covers SendMessageBatch too."""
        senders = [role_arn_pattern(key) for key in QUEUE_SENDERS]
        self.add(
            sqs.QueuePolicy(
                Ids.QUEUE_POLICY,
                Queues=[Ref(Ids.QUEUE), Ref(Ids.DLQ)],
                PolicyDocument=iam.document([
                    iam.deny_insecure_transport("sqs", [GetAtt(Ids.QUEUE, "Arn"), GetAtt(Ids.DLQ, "Arn")]),
                    iam.deny_all_but("OnlyTheSplittersSendParts", [Action("sqs", "SendMessage")],
                                     [GetAtt(Ids.QUEUE, "Arn")], senders),
                ]),
            )
        )

    def _table(self, logical_id: str, keys: list[tuple[str, str, str]], **kwargs: Any) -> None:
        skip_checks(self.add(
            dynamodb.Table(
                logical_id,
                BillingMode="PAY_PER_REQUEST",
                AttributeDefinitions=[
                    dynamodb.AttributeDefinition(AttributeName=n, AttributeType=t) for n, t, _ in keys
                ],
                KeySchema=[dynamodb.KeySchema(AttributeName=n, KeyType=k) for n, _, k in keys],
                PointInTimeRecoverySpecification=dynamodb.PointInTimeRecoverySpecification(
                    PointInTimeRecoveryEnabled=True
                ),
                SSESpecification=dynamodb.SSESpecification(SSEEnabled=True),
                DeletionPolicy="Delete",
                UpdateReplacePolicy="Delete",
                **kwargs,
            )
        ), "CKV_AWS_119")
        self.resource_output(logical_id, "Name", f"Name of the {logical_id}", Ref(logical_id))
        self.resource_output(logical_id, "Arn", f"ARN of the {logical_id}")

    def add_transfers_table(self) -> None:
        """Table T: one item per object; its stream feeds the completion function. Its sparse index `Attention`
        holds only the unfinished and the failed jobs (contract.ATTENTION_INDEX), which the sweeper and `s3sync
        status` query instead of scanning every job; keys only, so counting a part never writes to it."""
        self._table(
            Ids.TRANSFERS_TABLE,
            [(contract.TRANSFERS_HASH_KEY, "S", "HASH")],
            StreamSpecification=dynamodb.StreamSpecification(StreamViewType=contract.TRANSFERS_STREAM_VIEW),
        )
        table = self.t.resources[Ids.TRANSFERS_TABLE]
        table.AttributeDefinitions += [
            dynamodb.AttributeDefinition(AttributeName=contract.ATTENTION_ATTR, AttributeType="S"),
            dynamodb.AttributeDefinition(AttributeName=contract.ATTENTION_RANGE, AttributeType="N"),
        ]
        table.GlobalSecondaryIndexes = [dynamodb.GlobalSecondaryIndex(
            IndexName=contract.ATTENTION_INDEX,
            KeySchema=[dynamodb.KeySchema(AttributeName=contract.ATTENTION_ATTR, KeyType="HASH"),
                       dynamodb.KeySchema(AttributeName=contract.ATTENTION_RANGE, KeyType="RANGE")],
            Projection=dynamodb.Projection(ProjectionType="KEYS_ONLY"),
        )]
        self.resource_output(Ids.TRANSFERS_TABLE, "StreamArn", "Stream of the transfers table (completion trigger)")

    def add_parts_table(self) -> None:
        """Table C: one item per copied part (ETag, MD5, size)."""
        self._table(
            Ids.PARTS_TABLE,
            [(contract.PARTS_HASH_KEY, "S", "HASH"), (contract.PARTS_RANGE_KEY, "N", "RANGE")],
        )

    # --- compute --------------------------------------------------------------------------------------------------
    def add_log_group(self) -> None:
        self.log_group(Ids.WORKER_LOG_GROUP, "/s3sync/${AWS::StackName}/worker")
        self.resource_output(Ids.WORKER_LOG_GROUP, "Name", "Log group of the worker tasks", Ref(Ids.WORKER_LOG_GROUP))

    def add_cluster(self) -> None:
        insights = "enabled" if self.cfg.container_insights else "disabled"
        settings = [ecs.ClusterSetting(Name="containerInsights", Value=insights)]
        skip_checks(self.add(ecs.Cluster(Ids.CLUSTER, ClusterSettings=settings)), "CKV_AWS_65")
        self.resource_output(Ids.CLUSTER, "Name", "Name of the ECS cluster", Ref(Ids.CLUSTER))
        self.resource_output(Ids.CLUSTER, "Arn", "ARN of the ECS cluster")

    def add_task_role(self) -> None:
        """What the worker code does (source read comes from lambda.yaml), and nothing more: on the transfers table
        GetItem (Ledger.get_job) and UpdateItem (the Update of Ledger.record_part's transaction, mark_failed); on
        the parts table GetItem (part_recorded) and PutItem (the Put of record_part's transaction: "Permissions for
        Put, Update, Delete, and Get actions are governed by the permissions used for the underlying PutItem,
        UpdateItem, DeleteItem, and GetItem operations", DynamoDB developer guide, IAM with transactions). No PutItem
        on the transfers table: a worker cannot make a job that completion would then act on with the China keys."""
        self.role(
            Ids.TASK_ROLE,
            "task",
            "ecs-tasks",
            [
                iam.consume_messages(GetAtt(Ids.QUEUE, "Arn")),
                iam.table_items([ddb.GetItem, ddb.UpdateItem], GetAtt(Ids.TRANSFERS_TABLE, "Arn")),
                iam.table_items([ddb.GetItem, ddb.PutItem], GetAtt(Ids.PARTS_TABLE, "Arn")),
                # the China keys, read with this role at start and again after a refusal (rotation without a redeploy)
                iam.read_secret(Ref(Ids.SECRET)),
            ],
            source_conditions=True,
        )
        self.resource_output(Ids.TASK_ROLE, "Name", "Worker task role (lambda.yaml adds source bucket read)",
                             Ref(Ids.TASK_ROLE))
        self.resource_output(Ids.TASK_ROLE, "Arn", "ARN of the worker task role")

    def add_execution_role(self) -> None:
        """What ECS does for the task: pull the image from ImageUri's repository, write its logs. No secret: the
        worker reads the China keys itself (ECS injected them into the container's environment before, where
        `docker inspect` and /proc/1/environ show them)."""
        self.role(
            Ids.EXECUTION_ROLE,
            "execution",
            "ecs-tasks",
            [
                *iam.pull_images(image_repository()),
                iam.write_logs(GetAtt(Ids.WORKER_LOG_GROUP, "Arn")),
            ],
        )

    def worker_environment(self) -> dict[str, Any]:
        """Environment of the worker container (names from contract.Env)."""
        return {
            Env.QUEUE_URL: Ref(Ids.QUEUE),
            Env.TRANSFERS_TABLE: Ref(Ids.TRANSFERS_TABLE),
            Env.PARTS_TABLE: Ref(Ids.PARTS_TABLE),
            Env.DEST_BUCKET: Ref("DestBucket"),
            Env.DEST_PREFIX: Ref("DestPrefix"),
            Env.DEST_REGION: Ref("DestRegion"),
            Env.DEST_ENDPOINT_URL: Ref("DestEndpointUrl"),
            Env.WORKER_THREADS: Ref("WorkerThreads"),
            Env.DEST_SECRET_ARN: Ref(Ids.SECRET),  # the ARN, never the value: the worker reads it with its task role
            # boto3 needs a region for the queue, the tables and the secret (NoRegionError otherwise). Fargate sets
            # both variables in the task; the EC2 launch type does not (the ECS agent sets neither), so the task
            # definition does, for either launch type.
            "AWS_REGION": Ref("AWS::Region"),
            "AWS_DEFAULT_REGION": Ref("AWS::Region"),
        }

    def add_task_definition(self) -> None:
        # No Secrets: the China keys are not injected into the environment; the worker reads the secret named by
        # S3SYNC_DEST_SECRET_ARN with its task role (s3sync.transfer.endpoints.dest_endpoint).
        container = ecs.ContainerDefinition(
            Name=CONTAINER_NAME,
            Image=Ref("ImageUri"),
            # No Command (nor EntryPoint): the image's ENTRYPOINT (container/Dockerfile) is the worker's command
            # line, contract.WORKER_COMMAND. A Command here would be appended to it as arguments (Docker runs
            # ENTRYPOINT + CMD, and a task definition's Command replaces CMD only).
            Essential=True,
            StopTimeout=self.cfg.worker_stop_timeout_s,
            Environment=[ecs.Environment(Name=k, Value=v) for k, v in sorted(self.worker_environment().items())],
            LogConfiguration=ecs.LogConfiguration(
                LogDriver="awslogs",
                Options={
                    "awslogs-group": Ref(Ids.WORKER_LOG_GROUP),
                    "awslogs-region": Ref("AWS::Region"),
                    "awslogs-stream-prefix": CONTAINER_NAME,
                },
            ),
        )
        self.add(
            ecs.TaskDefinition(
                Ids.TASK_DEFINITION,
                Family=Sub("${AWS::StackName}-worker"),
                Cpu=Ref("TaskCpu"),
                Memory=Ref("TaskMemory"),
                # awsvpc gives Fargate tasks their own public IP; on EC2, bridge mode uses the instance's.
                NetworkMode=If(IS_FARGATE, "awsvpc", "bridge"),
                RequiresCompatibilities=If(IS_FARGATE, ["FARGATE"], ["EC2"]),
                TaskRoleArn=GetAtt(Ids.TASK_ROLE, "Arn"),
                ExecutionRoleArn=GetAtt(Ids.EXECUTION_ROLE, "Arn"),
                ContainerDefinitions=[container],
            )
        )

    def add_security_group(self) -> None:
        """Workers only call out (S3, SQS, DynamoDB); nothing comes in, except SSH when asked for."""
        ssh = ec2.SecurityGroupRule(IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp=Ref("SshCidr"),
                                    Description="SSH to the container instances")
        self.add(
            ec2.SecurityGroup(
                Ids.SECURITY_GROUP,
                GroupDescription="s3sync workers: outbound only",
                VpcId=Ref("VpcId"),
                SecurityGroupEgress=[
                    ec2.SecurityGroupRule(IpProtocol="-1", CidrIp="0.0.0.0/0", Description="S3, SQS, DynamoDB")
                ],
                SecurityGroupIngress=If(HAS_SSH, [ssh], NoValue),
            )
        )

    def add_instance_role(self) -> None:
        """EC2 only: what the ECS agent needs, scoped to this cluster (no managed policy, which would allow `*`)."""
        self.role(Ids.INSTANCE_ROLE, "instance", "ec2", iam.container_instance(Ref(Ids.CLUSTER)),
                  Condition=IS_EC2)
        self.add(InstanceProfile(Ids.INSTANCE_PROFILE, Condition=IS_EC2, Roles=[Ref(Ids.INSTANCE_ROLE)]))

    def add_launch_template(self) -> None:
        user_data = Base64(Sub(f"#!/bin/bash\necho ECS_CLUSTER=${{{Ids.CLUSTER}}} >> /etc/ecs/ecs.config\n"))
        data = ec2.LaunchTemplateData(
            ImageId=Ref("AmiId"),
            InstanceType=Ref("InstanceType"),
            IamInstanceProfile=ec2.IamInstanceProfile(Arn=GetAtt(Ids.INSTANCE_PROFILE, "Arn")),
            KeyName=If(HAS_KEY_NAME, Ref("KeyName"), NoValue),
            NetworkInterfaces=[
                ec2.NetworkInterfaces(
                    DeviceIndex=0, AssociatePublicIpAddress=True, DeleteOnTermination=True,
                    Groups=[Ref(Ids.SECURITY_GROUP)],
                )
            ],
            # IMDSv2 only, one hop: containers in bridge mode cannot borrow the instance role.
            MetadataOptions=ec2.MetadataOptions(
                HttpEndpoint="enabled", HttpTokens="required", HttpPutResponseHopLimit=1
            ),
            BlockDeviceMappings=[
                ec2.LaunchTemplateBlockDeviceMapping(
                    DeviceName="/dev/xvda",
                    Ebs=ec2.EBSBlockDevice(Encrypted=True, VolumeSize=self.cfg.root_volume_gib, VolumeType="gp3",
                                           DeleteOnTermination=True),
                )
            ],
            UserData=user_data,
        )
        skip_checks(self.add(ec2.LaunchTemplate(Ids.LAUNCH_TEMPLATE, Condition=IS_EC2, LaunchTemplateData=data)),
                    "CKV_AWS_88")

    def add_auto_scaling_group(self) -> None:
        """Starts empty; the capacity provider sizes it to the tasks the service asks for."""
        self.add(
            autoscaling.AutoScalingGroup(
                Ids.AUTO_SCALING_GROUP,
                Condition=IS_EC2,
                MinSize="0",
                MaxSize=Ref("MaxInstances"),
                VPCZoneIdentifier=[Ref("SubnetId")],
                LaunchTemplate=autoscaling.LaunchTemplateSpecification(
                    LaunchTemplateId=Ref(Ids.LAUNCH_TEMPLATE),
                    Version=GetAtt(Ids.LAUNCH_TEMPLATE, "LatestVersionNumber"),
                ),
                Tags=autoscaling.Tags(Name=Sub("${AWS::StackName}-worker")),
            )
        )

    def add_capacity_provider(self) -> None:
        self.add(
            ecs.CapacityProvider(
                Ids.CAPACITY_PROVIDER,
                Condition=IS_EC2,
                # Named: without a Name, CloudFormation makes <stack>-CapacityProvider-<random>, and ECS refuses a
                # name that starts with "aws", "ecs" or "fargate" ("The name can't be prefixed with ..."), as the
                # default stack name ecsStack does. CAPACITY_PROVIDER_NAME starts with a fixed prefix instead.
                Name=Sub(CAPACITY_PROVIDER_NAME),
                AutoScalingGroupProvider=ecs.AutoScalingGroupProvider(
                    AutoScalingGroupArn=Ref(Ids.AUTO_SCALING_GROUP),
                    ManagedScaling=ecs.ManagedScaling(Status="ENABLED", TargetCapacity=100),
                    ManagedTerminationProtection="DISABLED",
                ),
            )
        )
        self.add(
            ecs.ClusterCapacityProviderAssociations(
                Ids.CAPACITY_ASSOCIATION,
                Condition=IS_EC2,
                Cluster=Ref(Ids.CLUSTER),
                CapacityProviders=[Ref(Ids.CAPACITY_PROVIDER)],
                DefaultCapacityProviderStrategy=[
                    ecs.CapacityProviderStrategy(CapacityProvider=Ref(Ids.CAPACITY_PROVIDER), Weight=1)
                ],
            )
        )

    def add_service(self) -> None:
        """The worker service, starting at MinTasks; the scale functions move its desired count afterwards."""
        network = ecs.NetworkConfiguration(
            AwsvpcConfiguration=ecs.AwsvpcConfiguration(
                AssignPublicIp="ENABLED", Subnets=[Ref("SubnetId")], SecurityGroups=[Ref(Ids.SECURITY_GROUP)]
            )
        )
        self.add(
            ecs.Service(
                Ids.SERVICE,
                Cluster=Ref(Ids.CLUSTER),
                TaskDefinition=Ref(Ids.TASK_DEFINITION),
                DesiredCount=Ref("MinTasks"),
                LaunchType=If(IS_FARGATE, "FARGATE", NoValue),
                CapacityProviderStrategy=If(
                    IS_EC2,
                    [ecs.CapacityProviderStrategyItem(CapacityProvider=Ref(Ids.CAPACITY_PROVIDER), Weight=1)],
                    NoValue,
                ),
                NetworkConfiguration=If(IS_FARGATE, network, NoValue),
                DeploymentConfiguration=ecs.DeploymentConfiguration(
                    DeploymentCircuitBreaker=ecs.DeploymentCircuitBreaker(Enable=True, Rollback=True),
                ),
                EnableECSManagedTags=True,
                PropagateTags="SERVICE",
                Tags=Tags(Application="s3sync"),
                # A conditional DependsOn: on EC2 the capacity provider must be associated with the cluster first.
                Metadata={"s3sync": {"WaitsFor": If(IS_EC2, Ref(Ids.CAPACITY_ASSOCIATION), "nothing")}},
            )
        )
        self.resource_output(Ids.SERVICE, "Name", "Name of the worker service", GetAtt(Ids.SERVICE, "Name"))
        self.resource_output(Ids.SERVICE, "Arn", "ARN of the worker service", Ref(Ids.SERVICE))

    def add_destination_outputs(self) -> None:
        """The destination settings, for the functions of lambda.yaml (optional ones behind OPTIONAL_MARK)."""
        self.output(Exports.DEST_BUCKET, Ref("DestBucket"), "Destination bucket in China")
        self.output(Exports.DEST_REGION, Ref("DestRegion"), "Region of the destination bucket")
        self.output(Exports.DEST_PREFIX, marked("DestPrefix"),
                    f"Destination key prefix, after a leading {OPTIONAL_MARK!r} (an export may not be empty)")
        self.output(Exports.DEST_ENDPOINT_URL, marked("DestEndpointUrl"),
                    f"Destination endpoint URL, after a leading {OPTIONAL_MARK!r} (an export may not be empty)")


    def add_settings_parameter(self) -> None:
        """What lambda.yaml needs and a user may change (the destination; the service, which a LaunchType change
        replaces), in one SSM parameter instead of exports: CloudFormation refuses to change an export another stack
        imports, and an SSM parameter locks nothing. lambda.yaml's `EcsSettings` (an SSM-typed parameter) reads it
        on every create and update: "CloudFormation always fetches the latest values from Parameter Store when it
        updates stacks" (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/
        systems-manager-parameter-types.html). A String of at most 4 KB (standard tier): the fields' limits keep it
        under 3 KB."""
        fields = [GetAtt(Ids.SERVICE, "Name") if f == "ServiceName" else Ref(f) for f in SETTINGS_FIELDS]
        self.add(
            ssm.Parameter(
                Ids.SETTINGS_PARAMETER,
                Name=Sub(settings_parameter_name("${AWS::StackName}")),
                Type="String",
                Value=Join(OPTIONAL_MARK, fields),
                Description=Sub("s3sync: settings of stack ${AWS::StackName} that its lambda stack reads ("
                                + ", ".join(SETTINGS_FIELDS) + f", joined by {OPTIONAL_MARK!r})"),
            )
        )
        self.resource_output(Ids.SETTINGS_PARAMETER, "Name", "SSM parameter the lambda stack's EcsSettings names",
                             Ref(Ids.SETTINGS_PARAMETER))


def image_repository() -> If:
    """The ECR repository name in ImageUri (`<account>.dkr.ecr.<region>.amazonaws.com[.cn]/<repository>[:tag]
    [@digest]`; a repository name may hold slashes, never ':' or '@'): what follows the registry host, without tag
    or digest. A non-ECR ImageUri gives "" (the ARN then names no repository and grants nothing; such an image
    needs no ECR right). Fn::Split's delimiter must be a plain string, hence one expression per partition."""

    def after(host_suffix: str) -> Select:
        path = Select(1, Split(host_suffix, Sub("${ImageUri}" + host_suffix)))
        return Select(0, Split(":", Select(0, Split("@", path))))

    return If(IN_CHINA, after(".amazonaws.com.cn/"), after(".amazonaws.com/"))


def build_ecs(config: StackConfig | None = None, *, builder: type[EcsStack] = EcsStack) -> Template:
    """The ecs.yaml template. Pass a subclass of EcsStack as `builder` to override single steps."""
    return builder(config).build()
