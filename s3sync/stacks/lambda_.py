"""`lambda.yaml`: the source bucket and the control plane; imports `${EcsStackName}-<Output>` from ecs.yaml (only
what never changes), and reads the destination and the service from ecs.yaml's settings parameter (`EcsSettings`).

The bucket's name is a parameter, so the splitter's permission and role build the bucket ARN from it instead of
referring to the bucket: that breaks the classic bucket -> notification -> permission -> bucket cycle.
"""

from __future__ import annotations

import json
from typing import Any

import awacs.dynamodb as ddb
import awacs.sqs as awacs_sqs
from awacs.aws import Action, Bool, Condition, Deny, Principal, Statement
from troposphere import (
    Equals,
    GetAtt,
    If,
    Not,
    NoValue,
    Ref,
    Sub,
    Template,
    awslambda,
    cloudwatch,
    events,
    s3,
    sns,
    sqs,
)
from troposphere.iam import PolicyType

from s3sync import contract
from s3sync.contract import BUCKET_PATTERN, Env
from s3sync.stacks import iam
from s3sync.stacks.common import (
    FINDER_CURSOR_NAME,
    FUNCTIONS,
    SETTINGS_PARAMETER,
    Exports,
    Ids,
    StackBuilder,
    ecs_setting,
    import_value,
    role_path,
    settings_parameter_name,
    skip_checks,
)
from s3sync.stacks.config import StackConfig
from s3sync.stacks.operations import OperationsSteps

G_SOURCE = "Source"
G_CODE = "Stacks and code"
G_SCALING = "Scaling and transfer"
G_NOTIFY = "Notification"
G_DEST = "Destination encryption"


HAS_CODE_VERSION = "HasCodeVersion"


def _default(value: str) -> dict[str, str]:
    """`Default=value` for a parameter whose default is optional (empty: no default, the deployer enters it)."""
    return {"Default": value} if value else {}


class LambdaStack(OperationsSteps, StackBuilder):
    """Builds lambda.yaml; each `add_*` step adds one resource (or a tight group) and its outputs."""

    description = (
        "s3sync control plane (deploy after the ECS stack): source bucket, splitter, scale_out, scale_in and "
        "completion functions, queue-depth alarms, SNS topics, stream trigger."
    )
    steps = (
        "add_parameters",
        "add_topics",
        "add_splitter",
        "add_event_queue",
        "add_scale_out",
        "add_scale_in",
        "add_completion",
        "add_bucket",
        "add_bucket_policy",
        "add_worker_source_policy",
        "add_scale_out_alarm",
        "add_scale_in_alarm",
        "add_stream_mapping",
        "add_operations",  # only with StackConfig(operations=True): dashboard, deletes, finder, source KMS key
    )

    # --- parameters (deploy-time choices only) ---------------------------------------------------------------------
    def add_parameters(self) -> None:
        c = self.cfg
        self.param("SourceBucketName", G_SOURCE, "Source bucket name",
                   "Name of the bucket this stack creates; every object created in it is copied to China.",
                   AllowedPattern=BUCKET_PATTERN,
                   ConstraintDescription="an S3 bucket name: 3-63 lower-case letters, digits, dots and hyphens")
        self.param("EcsStackName", G_CODE, "ECS stack name",
                   "Name of the stack made from ecs.yaml (deployed first); its exports are imported.",
                   Default=c.ecs_stack_name, AllowedPattern=r"^[A-Za-z][A-Za-z0-9-]{0,127}$",
                   ConstraintDescription="a CloudFormation stack name")
        self.param(SETTINGS_PARAMETER, G_CODE, "ECS stack settings (SSM parameter)",
                   "The SSM parameter the ECS stack writes, /s3sync/<ECS stack name>/settings: its destination and "
                   "worker service, read again on every create and update of this stack (a change of the ECS "
                   "stack's destination or launch type reaches the functions with an update of this stack).",
                   Type="AWS::SSM::Parameter::Value<String>", Default=settings_parameter_name(c.ecs_stack_name))
        self.param("CodeBucket", G_CODE, "Code bucket",
                   "Bucket (in this region) holding the functions' deployment package.",
                   AllowedPattern=BUCKET_PATTERN,
                   ConstraintDescription="an S3 bucket name", **_default(c.code_bucket))
        self.param("CodeKey", G_CODE, "Code key",
                   "Key of the deployment zip in the code bucket; use a new key per version so that an update "
                   "deploys the new code.", MinLength=1, **_default(c.code_key))
        # Pins the zip the functions run to one S3 object version (`s3sync deploy` passes the uploaded version when
        # the code bucket is versioned): a later write to CodeKey cannot change what an update deploys.
        self.param("CodeVersion", G_CODE, "Code object version",
                   "S3 version id of the deployment zip (versioned code bucket); empty: the key's current object.",
                   Default="", MaxLength=1024)
        self.t.add_condition(HAS_CODE_VERSION, Not(Equals(Ref("CodeVersion"), "")))
        self.param("MaxTasks", G_SCALING, "Tasks when busy",
                   "Worker tasks scale_out sets when the queue is deep (alarm A).",
                   Type="Number", Default=c.max_tasks, MinValue=1, MaxValue=1000)
        self.param("MinTasks", G_SCALING, "Tasks when idle",
                   "Worker tasks scale_in sets when nothing is queued or in flight (alarm B); 0 allowed (then set "
                   "ScaleOutThreshold to 1 so that any message starts a worker).",
                   Type="Number", Default=c.min_tasks, MinValue=0, MaxValue=1000)
        self.param("ScaleOutThreshold", G_SCALING, "Scale-out threshold (messages)",
                   "Alarm A fires when at least this many part messages are visible in the queue.",
                   Type="Number", Default=c.scale_out_threshold, MinValue=1)
        self.param("PartSizeMiB", G_SCALING, "Part size (MiB)",
                   "Target part size; the splitter grows it for objects that would need more than 10,000 parts.",
                   Type="Number", Default=c.part_size_mib, MinValue=5, MaxValue=5120)
        self.param("DestSse", G_DEST, "Server-side encryption of the copies",
                   "Empty: the China bucket's default encryption; AES256: SSE-S3; aws:kms: SSE-KMS (the China "
                   "credentials then need kms:GenerateDataKey and kms:Decrypt on the key). Applies to objects split "
                   "from then on.", Default="", AllowedValues=list(contract.DEST_SSE_MODES))
        self.param("DestSseKmsKeyId", G_DEST, "KMS key of the copies (aws:kms)",
                   "Key id, key ARN or alias of a KMS key in the China account, in the bucket's region; empty: the "
                   "account's aws/s3 key. Only with DestSse aws:kms.",
                   Default="", AllowedPattern=f"^({contract.KMS_KEY_ID_PATTERN})?$",
                   ConstraintDescription="empty, or a KMS key id, key ARN, alias ARN or alias/name")
        # Refused at deploy time rather than by every splitter cold start (s3sync.transfer.encryption refuses it too).
        self.t.add_rule("DestSseKmsKeyNeedsKms", {
            "RuleCondition": Not(Equals(Ref("DestSseKmsKeyId"), "")),
            "Assertions": [{"Assert": Equals(Ref("DestSse"), contract.SSE_KMS),
                            "AssertDescription": "DestSseKmsKeyId is used only with DestSse aws:kms"}],
        })
        self.param("Email", G_NOTIFY, "Notification email",
                   "Address that receives 'transfer complete' and failure messages (confirm the subscription mail).",
                   AllowedPattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", ConstraintDescription="an email address")

    # --- topics ---------------------------------------------------------------------------------------------------
    def add_topics(self) -> None:
        # Alarm topics stay unencrypted: CloudWatch cannot publish to a topic under the AWS-managed SNS key.
        skip_checks(self.add(sns.Topic(Ids.SCALE_OUT_TOPIC, DisplayName="s3sync scale out")), "CKV_AWS_26")
        skip_checks(self.add(sns.Topic(Ids.SCALE_IN_TOPIC, DisplayName="s3sync scale in")), "CKV_AWS_26")
        # Only the stack's own alarm may publish to each (a message there scales the workers, or sweeps).
        # AWS::SNS::TopicPolicy: "PolicyDocument: A policy document that contains permissions to add to the
        # specified Amazon SNS topics"; "Topics: The Amazon Resource Names (ARN) of the topics to which you want
        # to add the policy" (CloudFormation user guide).
        for policy_id, topic, alarm in ((Ids.SCALE_OUT_TOPIC_POLICY, Ids.SCALE_OUT_TOPIC, Ids.SCALE_OUT_ALARM),
                                        (Ids.SCALE_IN_TOPIC_POLICY, Ids.SCALE_IN_TOPIC, Ids.SCALE_IN_ALARM)):
            self.add(sns.TopicPolicy(policy_id, Topics=[Ref(topic)], PolicyDocument=iam.document(
                iam.publish_from_alarm(Ref(topic), GetAtt(alarm, "Arn")))))
        self.add(sns.Topic(Ids.COMPLETION_TOPIC, DisplayName="s3sync", KmsMasterKeyId="alias/aws/sns"))
        self.add(sns.SubscriptionResource(Ids.COMPLETION_SUBSCRIPTION, Protocol="email", Endpoint=Ref("Email"),
                                          TopicArn=Ref(Ids.COMPLETION_TOPIC)))
        self.resource_output(Ids.COMPLETION_TOPIC, "Arn", "Topic of the 'transfer complete' messages",
                             Ref(Ids.COMPLETION_TOPIC))

    # --- functions ------------------------------------------------------------------------------------------------
    def function(self, key: str, environment: dict[str, Any], statements: list[Statement],
                 dead_letter_arn: Any = None) -> awslambda.Function:
        """One function with its log group and role; `key` is its contract.HANDLERS key. With `dead_letter_arn`,
        asynchronous invocations that fail every retry land in that queue instead of being dropped."""
        logical_id = FUNCTIONS[key]
        log_group = f"{logical_id}LogGroup"
        role = f"{logical_id}Role"
        settings = self.cfg.functions[key]
        self.log_group(log_group, f"/s3sync/${{AWS::StackName}}/{key}")
        # under /s3sync/<ECS stack>/<key>/: the ECS stack's secret and queue policies let roles in by this path
        self.role(role, key, "lambda", [iam.write_logs(GetAtt(log_group, "Arn")), *statements],
                  Path=Sub(role_path("${EcsStackName}", key)))
        fn = self.add(
            awslambda.Function(
                logical_id,
                Description=f"s3sync {key}",
                Handler=contract.HANDLERS[key],
                Runtime=self.cfg.lambda_runtime,
                Architectures=[self.cfg.lambda_architecture],
                Code=awslambda.Code(S3Bucket=Ref("CodeBucket"), S3Key=Ref("CodeKey"),
                                    S3ObjectVersion=If(HAS_CODE_VERSION, Ref("CodeVersion"), NoValue)),
                MemorySize=settings.memory_mib,
                Timeout=settings.timeout_s,
                Role=GetAtt(role, "Arn"),
                Environment=awslambda.Environment(Variables=environment),
                LoggingConfig=awslambda.LoggingConfig(LogGroup=Ref(log_group)),
                DeadLetterConfig=awslambda.DeadLetterConfig(TargetArn=dead_letter_arn) if dead_letter_arn else NoValue,
            )
        )
        skip_checks(fn, "CKV_AWS_115", *(() if dead_letter_arn else ("CKV_AWS_116",)), "CKV_AWS_117", "CKV_AWS_173")
        self.resource_output(logical_id, "Name", f"Name of the {key} function", Ref(logical_id))
        return fn

    def destination_environment(self) -> dict[str, Any]:
        """What splitter and completion need to reach the destination (tables and secret imported from ecs.yaml,
        the destination from its settings parameter)."""
        return {
            Env.TRANSFERS_TABLE: import_value(Exports.TRANSFERS_TABLE_NAME),
            Env.PARTS_TABLE: import_value(Exports.PARTS_TABLE_NAME),
            Env.DEST_BUCKET: ecs_setting("DestBucket"),
            Env.DEST_PREFIX: ecs_setting("DestPrefix"),
            Env.DEST_REGION: ecs_setting("DestRegion"),
            Env.DEST_ENDPOINT_URL: ecs_setting("DestEndpointUrl"),
            Env.DEST_SECRET_ARN: import_value(Exports.SECRET_ARN),
        }

    def add_splitter_dead_letter_queue(self) -> Any:
        """The finder's schedule invokes the splitter asynchronously: an invocation that fails every retry is kept
        here instead of being dropped (S3 events have their own queue and dead-letter queue: add_event_queue).
        Lambda sends to it with the function's execution role (the role needs sqs:SendMessage on it: AWS SAM's
        DeadLetterQueue property "will automatically add appropriate permission to your Lambda function execution
        role"), so only the splitter's role may send (`iam.deny_all_but`): no other principal of the account can
        put a forged failure here for an operator to re-drive. The SQS dead-letter queues (parts, events) keep no
        such Deny: SQS itself moves messages there, and AWS documents no principal for that move to match."""
        skip_checks(self.add(
            sqs.Queue(
                Ids.SPLITTER_DLQ,
                MessageRetentionPeriod=self.cfg.message_retention_s,
                SqsManagedSseEnabled=True,
                DeletionPolicy="Delete",
                UpdateReplacePolicy="Delete",
            )
        ), "CKV_AWS_27")
        arn = GetAtt(Ids.SPLITTER_DLQ, "Arn")
        self.add(
            sqs.QueuePolicy(
                Ids.SPLITTER_DLQ_POLICY,
                Queues=[Ref(Ids.SPLITTER_DLQ)],
                PolicyDocument=iam.document([
                    iam.deny_insecure_transport("sqs", [arn]),
                    iam.deny_all_but("OnlyTheSplitterSendsFailures", [Action("sqs", "SendMessage")], [arn],
                                     [GetAtt(FUNCTIONS["splitter"] + "Role", "Arn")]),
                ]),
            )
        )
        self.resource_output(Ids.SPLITTER_DLQ, "Url", "S3 events the splitter failed on after every retry",
                             Ref(Ids.SPLITTER_DLQ))
        return arn

    @staticmethod
    def encryption_environment() -> dict[str, Any]:
        """The copies' server-side encryption, for the functions that plan objects (splitter, sweeper in scale_in):
        empty strings mean the bucket's default. Small objects carry it in their part message to the worker."""
        return {Env.DEST_SSE: Ref("DestSse"), Env.DEST_SSE_KMS_KEY_ID: Ref("DestSseKmsKeyId")}

    def add_splitter(self) -> None:
        dead_letter = self.add_splitter_dead_letter_queue()
        env = {
            **self.destination_environment(),
            **self.encryption_environment(),
            Env.QUEUE_URL: import_value(Exports.QUEUE_URL),
            Env.PART_SIZE_MIB: Ref("PartSizeMiB"),
            # the only bucket whose events it acts on (s3sync.transfer.admission); PropagateDeletes adds
            # S3SYNC_PROPAGATE_DELETES (operations): without it, deletion events are refused
            Env.SOURCE_BUCKET: Ref("SourceBucketName"),
            # where a find event resumes (the parameter exists with a FinderSchedule; without it, from the start)
            Env.FINDER_CURSOR: Sub(FINDER_CURSOR_NAME),
            # small objects it copies itself (s3sync.transfer.splitter), and their "transfer complete"
            Env.INLINE_MAX_BYTES: str(self.cfg.inline_max_bytes),
            Env.COMPLETION_TOPIC_ARN: Ref(Ids.COMPLETION_TOPIC),
        }
        self.function(
            "splitter",
            env,
            [
                iam.read_objects(Ref("SourceBucketName")),
                # the finder lists the source (and, with the list right, HEAD of a missing key answers 404, not 403)
                iam.list_objects(Ref("SourceBucketName")),
                iam.send_messages(import_value(Exports.QUEUE_ARN)),
                # the job's writes, and a re-copy's claim (an identical object written again after its job finished,
                # the finder): its new attempt token makes the old attempt's part items count for nothing, so the
                # splitter never touches the parts table (s3sync.transfer.reattempt)
                iam.table_items([ddb.GetItem, ddb.PutItem, ddb.UpdateItem], import_value(Exports.TRANSFERS_TABLE_ARN)),
                iam.read_secret(import_value(Exports.SECRET_ARN)),
                iam.send_messages(dead_letter),
                # the finder's cursor, in every configuration (a find event reaches the code whatever the switches)
                iam.keep_parameter(FINDER_CURSOR_NAME),
                iam.publish(Ref(Ids.COMPLETION_TOPIC)),  # the notice of a small object it copied itself
                # S3's notifications, as the event source mapping polls them with the function's role ("Lambda needs
                # ... sqs:ReceiveMessage, sqs:DeleteMessage, sqs:GetQueueAttributes", Lambda's SQS docs)
                iam.allow([awacs_sqs.ReceiveMessage, awacs_sqs.DeleteMessage, awacs_sqs.GetQueueAttributes],
                          [GetAtt(Ids.EVENT_QUEUE, "Arn")]),
            ],
            # EventBridge's invocations (the finder's schedule, deletions) are asynchronous: what fails every retry
            dead_letter_arn=dead_letter,
        )

    def add_event_queue(self) -> None:
        """S3 -> the event queue -> the splitter in batches (issue 15): one invocation, one job write per object and
        one summary notice for up to event_batch_size objects, and events that outlive a splitter outage (a
        message stays until the splitter has handled it; after event_max_receive_count failures it waits in the
        event dead-letter queue, from which SQS's own re-drive moves it back)."""
        c = self.cfg
        splitter_timeout = c.functions["splitter"].timeout_s
        skip_checks(self.add(
            sqs.Queue(
                Ids.EVENT_DLQ,
                MessageRetentionPeriod=c.message_retention_s,
                SqsManagedSseEnabled=True,
                DeletionPolicy="Delete",
                UpdateReplacePolicy="Delete",
            )
        ), "CKV_AWS_27")
        skip_checks(self.add(
            sqs.Queue(
                Ids.EVENT_QUEUE,
                # "set the source queue's visibility timeout to at least six times the configuration timeout on your
                # function ... Lambda validates [that the function timeout is not above it] when you create or
                # update an event source mapping" (Lambda developer guide, SQS event source)
                VisibilityTimeout=6 * splitter_timeout,
                MessageRetentionPeriod=c.message_retention_s,
                # SSE-SQS: S3 cannot send to a queue encrypted with the AWS managed KMS key (alias/aws/sqs)
                SqsManagedSseEnabled=True,
                RedrivePolicy=sqs.RedrivePolicy(deadLetterTargetArn=GetAtt(Ids.EVENT_DLQ, "Arn"),
                                                maxReceiveCount=c.event_max_receive_count),
                DeletionPolicy="Delete",
                UpdateReplacePolicy="Delete",
            )
        ), "CKV_AWS_27")
        arn, dlq_arn = GetAtt(Ids.EVENT_QUEUE, "Arn"), GetAtt(Ids.EVENT_DLQ, "Arn")
        bucket = iam.bucket_arn(Ref("SourceBucketName"))  # the parameter, not the bucket: it depends on this policy
        self.add(
            sqs.QueuePolicy(
                Ids.EVENT_QUEUE_POLICY,
                Queues=[Ref(Ids.EVENT_QUEUE)],
                PolicyDocument=iam.document([*iam.send_from_bucket(arn, bucket),
                                             iam.deny_insecure_transport("sqs", [arn])]),
            )
        )
        self.add(
            sqs.QueuePolicy(
                Ids.EVENT_DLQ_POLICY,
                Queues=[Ref(Ids.EVENT_DLQ)],
                PolicyDocument=iam.document([iam.deny_insecure_transport("sqs", [dlq_arn])]),
            )
        )
        self.add(
            awslambda.EventSourceMapping(
                Ids.EVENT_MAPPING,
                EventSourceArn=arn,
                FunctionName=Ref(FUNCTIONS["splitter"]),
                BatchSize=c.event_batch_size,
                MaximumBatchingWindowInSeconds=c.event_batching_window_s,
                FunctionResponseTypes=["ReportBatchItemFailures"],  # a failed event comes back alone
            )
        )
        self.resource_output(Ids.EVENT_QUEUE, "Url", "S3 notifications waiting for the splitter",
                             Ref(Ids.EVENT_QUEUE))
        self.resource_output(Ids.EVENT_DLQ, "Url", "S3 notifications the splitter failed on every time",
                             Ref(Ids.EVENT_DLQ))

    def _scale_function(self, key: str, topic: str) -> None:
        env = {
            Env.CLUSTER: import_value(Exports.CLUSTER_NAME),
            Env.SERVICE: ecs_setting("ServiceName"),
            Env.MAX_TASKS: Ref("MaxTasks"),
            Env.MIN_TASKS: Ref("MinTasks"),
            # the queue's name is the dimension of the task counts both functions report (s3sync.transfer.scaling)
            Env.QUEUE_URL: import_value(Exports.QUEUE_URL),
        }
        statements = [iam.manage_service(iam.arn("ecs", "service/${Cluster}/${Service}",
                                                 Cluster=import_value(Exports.CLUSTER_NAME),
                                                 Service=ecs_setting("ServiceName")))]
        if key == "scale_in":  # the queue has drained: sweep jobs left without progress (s3sync.transfer.sweeper)
            env.update({
                Env.TRANSFERS_TABLE: import_value(Exports.TRANSFERS_TABLE_NAME),
                Env.PARTS_TABLE: import_value(Exports.PARTS_TABLE_NAME),
                Env.PART_SIZE_MIB: Ref("PartSizeMiB"),
                Env.STUCK_AFTER_SECONDS: str(self.cfg.stuck_after_s),
                **self.encryption_environment(),  # a re-sent small object keeps the configured encryption
            })
            statements += [
                # candidates from the sparse Attention index, never a Scan; each read again (BatchGetItem,
                # strongly consistent) before the sweeper decides (s3sync.transfer.sweeper)
                iam.query_index(import_value(Exports.TRANSFERS_TABLE_NAME), contract.ATTENTION_INDEX),
                iam.table_items([ddb.BatchGetItem, ddb.UpdateItem], import_value(Exports.TRANSFERS_TABLE_ARN)),
                iam.table_items([ddb.Query], import_value(Exports.PARTS_TABLE_ARN)),
                iam.send_messages(import_value(Exports.QUEUE_ARN)),
                # missing parts are re-sent only while the queue is empty (Sweeper.queue_busy)
                iam.queue_depth(import_value(Exports.QUEUE_ARN)),
                iam.read_objects(Ref("SourceBucketName")),  # HEAD, to re-send a small object's headers
                iam.list_objects(Ref("SourceBucketName")),  # so that HEAD of a missing key answers 404, not 403
            ]
        self.function(key, env, statements)
        logical_id = FUNCTIONS[key]
        self.add(
            awslambda.Permission(
                f"{logical_id}Permission",
                Action="lambda:InvokeFunction",
                FunctionName=GetAtt(logical_id, "Arn"),
                Principal=iam.service_principal("sns"),
                SourceArn=Ref(topic),
            )
        )
        self.add(
            sns.SubscriptionResource(
                f"{logical_id}Subscription", Protocol="lambda", Endpoint=GetAtt(logical_id, "Arn"), TopicArn=Ref(topic)
            )
        )

    def add_scale_out(self) -> None:
        self._scale_function("scale_out", Ids.SCALE_OUT_TOPIC)

    def add_scale_in(self) -> None:
        self._scale_function("scale_in", Ids.SCALE_IN_TOPIC)
        # Alarm actions fire on state changes only: a schedule also runs the sweeper while the queue stays empty.
        self.add(events.Rule(
            "SweepSchedule",
            Description="s3sync: re-drive transfers left without progress (scale_in sweeps, never scales here)",
            ScheduleExpression=f"rate({self.cfg.sweep_every_min} minutes)",
            State="ENABLED",
            Targets=[events.Target(Arn=GetAtt(FUNCTIONS["scale_in"], "Arn"), Id="sweeper")],
        ))
        self.add(awslambda.Permission(
            "SweepSchedulePermission",
            Action="lambda:InvokeFunction",
            FunctionName=GetAtt(FUNCTIONS["scale_in"], "Arn"),
            Principal=iam.service_principal("events"),
            SourceArn=GetAtt("SweepSchedule", "Arn"),
        ))

    def add_completion(self) -> None:
        env = {
            **self.destination_environment(),
            **self.encryption_environment(),  # a re-copy (the newest version first) creates its upload
            Env.COMPLETION_TOPIC_ARN: Ref(Ids.COMPLETION_TOPIC),
            Env.QUEUE_URL: import_value(Exports.QUEUE_URL),  # parts the destination does not hold are sent again
        }
        self.function(
            "completion",
            env,
            [
                *iam.read_stream(import_value(Exports.TRANSFERS_STREAM_ARN)),
                iam.table_items([ddb.GetItem, ddb.UpdateItem], import_value(Exports.TRANSFERS_TABLE_ARN)),
                # Query: the parts counted; DeleteItem: a counted part taken back (Ledger.uncount_part)
                iam.table_items([ddb.Query, ddb.DeleteItem], import_value(Exports.PARTS_TABLE_ARN)),
                iam.read_secret(import_value(Exports.SECRET_ARN)),
                iam.publish(Ref(Ids.COMPLETION_TOPIC)),
                iam.send_messages(import_value(Exports.QUEUE_ARN)),
                # the source's current version after DONE (Completer._keep_newest), and a re-copy's HEAD
                iam.read_objects(Ref("SourceBucketName")),
                iam.list_objects(Ref("SourceBucketName")),
            ],
        )

    # --- source bucket --------------------------------------------------------------------------------------------
    def add_bucket(self) -> None:
        keep = "Retain" if self.cfg.retain_source_bucket else "Delete"
        skip_checks(self.add(
            s3.Bucket(
                Ids.BUCKET,
                # S3 checks that it may send to the queue when the notification is set
                DependsOn=[Ids.EVENT_QUEUE_POLICY],
                BucketName=Ref("SourceBucketName"),
                BucketEncryption=s3.BucketEncryption(
                    ServerSideEncryptionConfiguration=[
                        s3.ServerSideEncryptionRule(
                            ServerSideEncryptionByDefault=s3.ServerSideEncryptionByDefault(SSEAlgorithm="AES256")
                        )
                    ]
                ),
                PublicAccessBlockConfiguration=s3.PublicAccessBlockConfiguration(
                    BlockPublicAcls=True, BlockPublicPolicy=True, IgnorePublicAcls=True, RestrictPublicBuckets=True
                ),
                OwnershipControls=s3.OwnershipControls(
                    Rules=[s3.OwnershipControlsRule(ObjectOwnership="BucketOwnerEnforced")]
                ),
                LifecycleConfiguration=s3.LifecycleConfiguration(
                    Rules=[
                        s3.LifecycleRule(
                            Id="AbortIncompleteMultipartUploads",
                            Status="Enabled",
                            AbortIncompleteMultipartUpload=s3.AbortIncompleteMultipartUpload(
                                DaysAfterInitiation=self.cfg.abort_incomplete_upload_days
                            ),
                        )
                    ]
                ),
                NotificationConfiguration=s3.NotificationConfiguration(
                    QueueConfigurations=[
                        s3.QueueConfigurations(Event="s3:ObjectCreated:*", Queue=GetAtt(Ids.EVENT_QUEUE, "Arn"))
                    ]
                ),
                DeletionPolicy=keep,
                UpdateReplacePolicy=keep,
            )
        ), "CKV_AWS_18", "CKV_AWS_21")
        self.resource_output(Ids.BUCKET, "Name", "Source bucket: objects created here are copied to China",
                             Ref(Ids.BUCKET))
        self.resource_output(Ids.BUCKET, "Arn", "ARN of the source bucket")

    def add_bucket_policy(self) -> None:
        """Refuse plain HTTP. A Deny only takes rights away, so it covers every S3 action (`s3:*`)."""
        deny = Statement(
            Sid="DenyInsecureTransport",
            Effect=Deny,
            Principal=Principal("*"),
            Action=[Action("s3", "*")],
            Resource=[GetAtt(Ids.BUCKET, "Arn"), Sub(f"${{{Ids.BUCKET}.Arn}}/*")],
            Condition=Condition(Bool("aws:SecureTransport", "false")),
        )
        self.add(s3.BucketPolicy(Ids.BUCKET_POLICY, Bucket=Ref(Ids.BUCKET), PolicyDocument=iam.document([deny])))

    def add_worker_source_policy(self) -> None:
        """The worker task role lives in ecs.yaml; the read right on this stack's bucket is attached from here."""
        self.add(
            PolicyType(
                Ids.WORKER_SOURCE_POLICY,
                PolicyName="WorkerSourceRead",
                Roles=[import_value(Exports.TASK_ROLE_NAME)],
                # ListBucket: so that a ranged GET of a deleted object answers 404 (source missing), not 403
                PolicyDocument=iam.document([iam.read_objects(Ref("SourceBucketName")),
                                             iam.list_objects(Ref("SourceBucketName"))]),
            )
        )

    # --- alarms and the stream trigger ----------------------------------------------------------------------------
    def _queue_metric(self, metric_name: str) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            Namespace="AWS/SQS",
            MetricName=metric_name,
            Dimensions=[cloudwatch.MetricDimension(Name="QueueName", Value=import_value(Exports.QUEUE_NAME))],
        )

    def add_scale_out_alarm(self) -> None:
        """Alarm A: the queue is deep -> scale_out."""
        self.add(
            cloudwatch.Alarm(
                Ids.SCALE_OUT_ALARM,
                AlarmDescription="s3sync: many parts waiting; scale the workers out to MaxTasks",
                Namespace="AWS/SQS",
                MetricName="ApproximateNumberOfMessagesVisible",
                Dimensions=self._queue_metric("ApproximateNumberOfMessagesVisible").Dimensions,
                Statistic="Maximum",
                Period=self.cfg.alarm_period_s,
                EvaluationPeriods=1,
                Threshold=Ref("ScaleOutThreshold"),
                ComparisonOperator="GreaterThanOrEqualToThreshold",
                TreatMissingData="notBreaching",
                AlarmActions=[Ref(Ids.SCALE_OUT_TOPIC)],
            )
        )
        self.resource_output(Ids.SCALE_OUT_ALARM, "Name", "Alarm A (queue deep)", Ref(Ids.SCALE_OUT_ALARM))

    def add_scale_in_alarm(self) -> None:
        """Alarm B: nothing visible and nothing in flight for a few periods -> scale_in, never cutting parts short."""
        period = self.cfg.alarm_period_s

        def stat(query_id: str, metric_name: str) -> cloudwatch.MetricDataQuery:
            return cloudwatch.MetricDataQuery(
                Id=query_id,
                MetricStat=cloudwatch.MetricStat(Metric=self._queue_metric(metric_name), Period=period, Stat="Maximum"),
                ReturnData=False,
            )

        self.add(
            cloudwatch.Alarm(
                Ids.SCALE_IN_ALARM,
                AlarmDescription="s3sync: no part visible or in flight; scale the workers in to MinTasks",
                Metrics=[
                    stat("visible", "ApproximateNumberOfMessagesVisible"),
                    stat("inflight", "ApproximateNumberOfMessagesNotVisible"),
                    cloudwatch.MetricDataQuery(
                        Id="pending", Expression="visible + inflight", Label="Parts visible or in flight",
                        ReturnData=True,
                    ),
                ],
                EvaluationPeriods=self.cfg.scale_in_periods,
                DatapointsToAlarm=self.cfg.scale_in_periods,
                Threshold=0,
                ComparisonOperator="LessThanOrEqualToThreshold",
                # SQS stops publishing metrics for an idle queue: no data means nothing to do.
                TreatMissingData="breaching",
                AlarmActions=[Ref(Ids.SCALE_IN_TOPIC)],
            )
        )
        self.resource_output(Ids.SCALE_IN_ALARM, "Name", "Alarm B (queue drained)", Ref(Ids.SCALE_IN_ALARM))

    def add_stream_mapping(self) -> None:
        """Transfers table stream -> completion, filtered on contract.COMPLETION_FILTERS (remaining == 0, FAILED)."""
        self.add(
            awslambda.EventSourceMapping(
                Ids.STREAM_MAPPING,
                EventSourceArn=import_value(Exports.TRANSFERS_STREAM_ARN),
                FunctionName=Ref(FUNCTIONS["completion"]),
                StartingPosition="TRIM_HORIZON",  # the completion is idempotent; never miss a record
                BatchSize=self.cfg.stream_batch_size,
                ParallelizationFactor=self.cfg.stream_parallelization,
                BisectBatchOnFunctionError=True,
                MaximumRetryAttempts=self.cfg.stream_max_retries,
                MaximumRecordAgeInSeconds=self.cfg.stream_max_record_age_s,
                FunctionResponseTypes=["ReportBatchItemFailures"] if self.cfg.report_batch_item_failures else NoValue,
                FilterCriteria=awslambda.FilterCriteria(
                    Filters=[
                        awslambda.Filter(Pattern=json.dumps(p, sort_keys=True)) for p in contract.COMPLETION_FILTERS
                    ]
                ),
            )
        )


def build_lambda(config: StackConfig | None = None, *, builder: type[LambdaStack] = LambdaStack) -> Template:
    """The lambda.yaml template. Pass a subclass of LambdaStack as `builder` to override single steps."""
    return builder(config).build()
