"""The rendered templates in templates/: up to date, lint-clean, least-privilege, complete, wired as designed."""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cfn_flip
import pytest

from s3sync import contract
from s3sync.contract import Env
from s3sync.render import lint_text
from s3sync.stacks import render_all
from s3sync.stacks.common import SETTINGS_FIELDS, Exports
from s3sync.stacks.iam import UNSCOPABLE
from s3sync.transfer.ledger import transfers_table_keys
from tests.cfn_support import moto_cloudformation, params, pin_secret

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
NAMES = ("ecs.yaml", "lambda.yaml")


@pytest.fixture(scope="module")
def texts() -> dict[str, str]:
    return {name: (TEMPLATES / name).read_text(encoding="utf-8") for name in NAMES}


@pytest.fixture(scope="module")
def docs(texts: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The committed templates as plain dicts (long-form intrinsics: {"Ref": ...}, {"Fn::Sub": ...})."""
    return {name: json.loads(cfn_flip.to_json(text)) for name, text in texts.items()}


@pytest.fixture(scope="module")
def ecs(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return docs["ecs.yaml"]


@pytest.fixture(scope="module")
def lam(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return docs["lambda.yaml"]


def of_type(doc: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in doc["Resources"].items() if v["Type"] == type_}


def walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# --- rendered output --------------------------------------------------------------------------------------------------
def test_committed_templates_equal_a_fresh_render(texts: dict[str, str]) -> None:
    fresh = render_all()
    for name in NAMES:
        assert texts[name] == fresh[name], f"templates/{name} is stale: run `s3sync render`"


def test_rendering_is_deterministic() -> None:
    assert render_all() == render_all()
    assert render_all(fmt="json") == render_all(fmt="json")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.system
def test_cfn_lint_reports_nothing(texts: dict[str, str], name: str) -> None:
    """Errors, warnings and informational findings, in a global region and both China regions (cfn-lint checks every
    resource type and property against the CloudFormation schemas of each region: what exists in aws-cn)."""
    findings = lint_text(texts[name], regions=["us-east-1", "cn-north-1", "cn-northwest-1"])
    assert [f"{m.linenumber}: {m.rule.id} {m.message}" for m in findings] == []


# --- IAM --------------------------------------------------------------------------------------------------------------
def permission_policies(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for logical_id, res in doc["Resources"].items():
        props = res.get("Properties", {})
        if res["Type"] == "AWS::IAM::Role":
            assert "ManagedPolicyArns" not in props, f"{logical_id}: managed policies cannot be checked here"
            for policy in props.get("Policies", []):
                yield logical_id, policy["PolicyDocument"]
        elif res["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            yield logical_id, props["PolicyDocument"]


def test_every_template_has_iam_policies(docs: dict[str, dict[str, Any]]) -> None:
    assert all(list(permission_policies(doc)) for doc in docs.values())


@pytest.mark.parametrize("name", NAMES)
def test_iam_policies_are_least_privilege(docs: dict[str, dict[str, Any]], name: str) -> None:
    """No `*` / `service:*` action; `*` resource only for UNSCOPABLE actions; ARNs use ${AWS::Partition}."""
    for logical_id, document in permission_policies(docs[name]):
        for st in document["Statement"]:
            where = f"{name}:{logical_id}"
            assert st["Effect"] == "Allow", where
            assert "NotAction" not in st and "NotResource" not in st, where
            actions = as_list(st["Action"])
            for action in actions:
                assert isinstance(action, str) and re.fullmatch(r"[a-z0-9-]+:[A-Za-z0-9]+", action), (where, action)
            resources = as_list(st["Resource"])
            if "*" in resources:
                assert resources == ["*"], where
                for action in actions:
                    assert action in UNSCOPABLE, f"{where}: {action} on '*' is not in iam.UNSCOPABLE"
                continue
            for resource in resources:
                assert isinstance(resource, dict), f"{where}: literal resource {resource!r}"
                if "Fn::Sub" in resource:
                    text = as_list(resource["Fn::Sub"])[0]
                    assert text.startswith("arn:${AWS::Partition}:"), (where, text)
                    assert not text.endswith(":*") and "*" not in text.split(":")[-1].split("/")[0], (where, text)
                else:  # an ARN of this stack's resource, or one ecs.yaml exports
                    assert set(resource) <= {"Ref", "Fn::GetAtt", "Fn::ImportValue"}, (where, resource)


def test_unscopable_allowlist_gives_a_reason_for_each_action() -> None:
    assert UNSCOPABLE and all(len(reason) > 20 for reason in UNSCOPABLE.values())


def test_no_hard_coded_partition(texts: dict[str, str]) -> None:
    for name, text in texts.items():
        assert "arn:aws:" not in text and "arn:aws-cn:" not in text, name


def test_bucket_policy_only_denies(lam: dict[str, Any]) -> None:
    """The resource policy may use `s3:*`, but only to deny (plain HTTP)."""
    (policy,) = of_type(lam, "AWS::S3::BucketPolicy").values()
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    assert [s["Effect"] for s in statements] == ["Deny"]
    assert statements[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def role_actions(doc: dict[str, Any], role: str) -> set[str]:
    policies = doc["Resources"][role]["Properties"]["Policies"]
    return {a for p in policies for s in p["PolicyDocument"]["Statement"] for a in as_list(s["Action"])}


def test_roles_carry_the_runtime_actions(ecs: dict[str, Any], lam: dict[str, Any]) -> None:
    assert role_actions(lam, "SplitterRole") == {
        "logs:CreateLogStream", "logs:PutLogEvents", "s3:GetObject", "s3:GetObjectVersion", "sqs:SendMessage",
        "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "secretsmanager:GetSecretValue",
        # the finder (tests/test_role_permissions.py has every call site), in every configuration; a re-copy
        # never touches the parts table (its new attempt token makes the old part items count for nothing)
        "s3:ListBucket",
        "ssm:GetParameter", "ssm:PutParameter",  # the finder's cursor: where its last run stopped
        "sns:Publish",  # "transfer complete" for a small object it copied itself
        # S3's notifications from the event queue, as the event source mapping polls them (issue 15)
        "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
    }  # fmt: skip
    assert role_actions(lam, "CompletionRole") == {
        "logs:CreateLogStream", "logs:PutLogEvents", "dynamodb:DescribeStream", "dynamodb:GetRecords",
        "dynamodb:GetShardIterator", "dynamodb:ListStreams", "dynamodb:GetItem", "dynamodb:UpdateItem",
        "dynamodb:Query", "secretsmanager:GetSecretValue", "sns:Publish",
        # a part the destination does not hold is taken back and sent again; the newest version is kept
        "dynamodb:DeleteItem", "sqs:SendMessage", "s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket",
    }  # fmt: skip
    scale = {"logs:CreateLogStream", "logs:PutLogEvents", "ecs:UpdateService", "ecs:DescribeServices"}
    assert role_actions(lam, "ScaleOutRole") == scale
    # scale_in runs the sweeper once the queue has drained: it reads the ledger and re-sends missing parts
    # (no Scan: it queries the transfers table's sparse Attention index and reads the candidates with BatchGetItem)
    assert role_actions(lam, "ScaleInRole") == scale | {
        "dynamodb:BatchGetItem", "dynamodb:UpdateItem", "dynamodb:Query", "sqs:SendMessage",
        "sqs:GetQueueAttributes", "s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket",
    }  # fmt: skip
    # issue 18 item 4: what the worker calls (tests/test_role_permissions.py names each call site), per table
    assert role_actions(ecs, "TaskRole") == {
        "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes",
        "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem",
        "secretsmanager:GetSecretValue",  # the worker reads the China keys itself (and again after a rotation)
    }  # fmt: skip
    table_actions = {json.dumps(r): set(as_list(st["Action"]))
                     for p in ecs["Resources"]["TaskRole"]["Properties"]["Policies"]
                     for st in p["PolicyDocument"]["Statement"] for r in as_list(st["Resource"])
                     if "Table" in json.dumps(r)}  # fmt: skip
    assert table_actions == {json.dumps({"Fn::GetAtt": ["TransfersTable", "Arn"]}): {"dynamodb:GetItem",
                                                                                    "dynamodb:UpdateItem"},
                             json.dumps({"Fn::GetAtt": ["PartsTable", "Arn"]}): {"dynamodb:GetItem",
                                                                                 "dynamodb:PutItem"}}
    # pull the image and write the logs; no secret (ECS no longer injects it: issue 18 item 2)
    assert role_actions(ecs, "ExecutionRole") == {
        "ecr:GetAuthorizationToken", "ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer", "logs:CreateLogStream", "logs:PutLogEvents",
    }  # fmt: skip


def test_scale_functions_touch_only_the_one_service(lam: dict[str, Any]) -> None:
    for role in ("ScaleOutRole", "ScaleInRole"):
        for policy in lam["Resources"][role]["Properties"]["Policies"]:
            for st in policy["PolicyDocument"]["Statement"]:
                if any(a.startswith("ecs:") for a in as_list(st["Action"])):
                    # service/<cluster>/<service>: the cluster imported, the service's name from the settings
                    # parameter (a LaunchType change replaces the service: its name may not be an import)
                    [(text, names)] = [r["Fn::Sub"] for r in st["Resource"]]
                    assert text == ("arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}"
                                    ":service/${Cluster}/${Service}")
                    assert names["Cluster"] == {"Fn::ImportValue": {"Fn::Sub": "${EcsStackName}-ClusterName"}}
                    assert names["Service"] == {"Fn::Select": [0, {"Fn::Split": ["|", {"Ref": "EcsSettings"}]}]}


def test_worker_reads_the_source_bucket_through_a_policy_on_the_imported_role(lam: dict[str, Any]) -> None:
    (policy,) = of_type(lam, "AWS::IAM::Policy").values()
    props = policy["Properties"]
    assert props["Roles"] == [{"Fn::ImportValue": {"Fn::Sub": "${EcsStackName}-TaskRoleName"}}]
    read, listing = props["PolicyDocument"]["Statement"]
    assert set(read["Action"]) == {"s3:GetObject", "s3:GetObjectVersion"}
    # without ListBucket, S3 answers 403 for a deleted object's GET: "source refused access" instead of "missing"
    assert listing["Action"] == "s3:ListBucket" or listing["Action"] == ["s3:ListBucket"]
    assert "SourceBucketName" in json.dumps(read["Resource"]) and "SourceBucketName" in json.dumps(listing["Resource"])


# --- the design's resources and their wiring --------------------------------------------------------------------------
def test_every_resource_of_the_original_design_is_there(ecs: dict[str, Any], lam: dict[str, Any]) -> None:
    both = {**ecs["Resources"], **lam["Resources"]}
    expected = {
        "ScaleOutAlarm": "AWS::CloudWatch::Alarm",
        "ScaleInAlarm": "AWS::CloudWatch::Alarm",
        "Splitter": "AWS::Lambda::Function",
        "ScaleOut": "AWS::Lambda::Function",
        "ScaleIn": "AWS::Lambda::Function",
        "Completion": "AWS::Lambda::Function",
        "TransferQueue": "AWS::SQS::Queue",
        "TransferDeadLetterQueue": "AWS::SQS::Queue",
        "TransfersTable": "AWS::DynamoDB::Table",
        "PartsTable": "AWS::DynamoDB::Table",
        "Cluster": "AWS::ECS::Cluster",
        "Service": "AWS::ECS::Service",
        "TaskDefinition": "AWS::ECS::TaskDefinition",
        "SourceBucket": "AWS::S3::Bucket",
        "ScaleOutTopic": "AWS::SNS::Topic",
        "ScaleInTopic": "AWS::SNS::Topic",
        "CompletionTopic": "AWS::SNS::Topic",
        "DestCredentials": "AWS::SecretsManager::Secret",
        "TaskRole": "AWS::IAM::Role",
        "ExecutionRole": "AWS::IAM::Role",
        "InstanceRole": "AWS::IAM::Role",
        "SplitterRole": "AWS::IAM::Role",
        "ScaleOutRole": "AWS::IAM::Role",
        "ScaleInRole": "AWS::IAM::Role",
        "CompletionRole": "AWS::IAM::Role",
        "CompletionStreamMapping": "AWS::Lambda::EventSourceMapping",
        "WorkerLogGroup": "AWS::Logs::LogGroup",
        "AutoScalingGroup": "AWS::AutoScaling::AutoScalingGroup",
        "LaunchTemplate": "AWS::EC2::LaunchTemplate",
        "InstanceProfile": "AWS::IAM::InstanceProfile",
    }
    assert {k: both[k]["Type"] for k in expected if k in both} == expected
    assert len(of_type(lam, "AWS::Lambda::Function")) == 4
    assert len(of_type(lam, "AWS::CloudWatch::Alarm")) == 2
    assert len(of_type(ecs, "AWS::DynamoDB::Table")) == 2
    # The bucket notifies the event queue, which the splitter reads in batches (issue 15).
    notification = lam["Resources"]["SourceBucket"]["Properties"]["NotificationConfiguration"]
    assert notification["QueueConfigurations"] == [
        {"Event": "s3:ObjectCreated:*", "Queue": {"Fn::GetAtt": ["EventQueue", "Arn"]}}
    ]
    assert "LambdaConfigurations" not in notification


def test_alarms_reach_their_functions_through_sns(lam: dict[str, Any]) -> None:
    res = lam["Resources"]
    subs = {
        v["Properties"]["TopicArn"]["Ref"]: v["Properties"]
        for v in of_type(lam, "AWS::SNS::Subscription").values()
    }
    permissions = of_type(lam, "AWS::Lambda::Permission").values()
    perms = {v["Properties"]["SourceArn"].get("Ref"): v["Properties"] for v in permissions}
    wiring = (("ScaleOutAlarm", "ScaleOutTopic", "ScaleOut"), ("ScaleInAlarm", "ScaleInTopic", "ScaleIn"))
    for alarm, topic, function in wiring:
        assert res[alarm]["Properties"]["AlarmActions"] == [{"Ref": topic}]
        assert subs[topic]["Protocol"] == "lambda"
        assert subs[topic]["Endpoint"] == {"Fn::GetAtt": [function, "Arn"]}
        assert perms[topic]["Principal"] == "sns.amazonaws.com"
        assert perms[topic]["FunctionName"] == {"Fn::GetAtt": [function, "Arn"]}
    assert subs["CompletionTopic"] == {
        "Protocol": "email", "Endpoint": {"Ref": "Email"}, "TopicArn": {"Ref": "CompletionTopic"}
    }


def test_alarm_a_watches_visible_messages_and_alarm_b_visible_plus_in_flight(lam: dict[str, Any]) -> None:
    a = lam["Resources"]["ScaleOutAlarm"]["Properties"]
    assert a["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert a["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert a["Threshold"] == {"Ref": "ScaleOutThreshold"}
    b = lam["Resources"]["ScaleInAlarm"]["Properties"]
    metrics = {m["Id"]: m for m in b["Metrics"]}
    assert {m["MetricStat"]["Metric"]["MetricName"] for m in metrics.values() if "MetricStat" in m} == {
        "ApproximateNumberOfMessagesVisible",
        "ApproximateNumberOfMessagesNotVisible",
    }
    (returned,) = [m for m in metrics.values() if m["ReturnData"]]
    assert set(re.findall(r"\w+", returned["Expression"])) == {"visible", "inflight"}
    assert "+" in returned["Expression"]
    assert (b["Threshold"], b["ComparisonOperator"]) == (0, "LessThanOrEqualToThreshold")
    assert b["EvaluationPeriods"] > 1


def test_stream_mapping_filters_with_the_contract(ecs: dict[str, Any], lam: dict[str, Any]) -> None:
    props = lam["Resources"]["CompletionStreamMapping"]["Properties"]
    assert props["FilterCriteria"] == {
        "Filters": [{"Pattern": json.dumps(p, sort_keys=True)} for p in contract.COMPLETION_FILTERS]
    }
    assert props["FunctionName"] == {"Ref": "Completion"}
    assert props["EventSourceArn"] == {"Fn::ImportValue": {"Fn::Sub": "${EcsStackName}-TransfersTableStreamArn"}}
    assert props["BisectBatchOnFunctionError"] is True
    assert 1 <= props["BatchSize"] <= 100 and props["MaximumRetryAttempts"] >= 1
    assert props["ParallelizationFactor"] == 10  # completions of different objects do not wait for each other
    stream = ecs["Resources"]["TransfersTable"]["Properties"]["StreamSpecification"]
    assert stream == {"StreamViewType": contract.TRANSFERS_STREAM_VIEW}


def test_tables_use_the_contract_keys_and_are_protected(ecs: dict[str, Any]) -> None:
    keys = {
        k: [(s["AttributeName"], s["KeyType"]) for s in v["Properties"]["KeySchema"]]
        for k, v in of_type(ecs, "AWS::DynamoDB::Table").items()
    }
    assert keys == {
        "TransfersTable": [(contract.TRANSFERS_HASH_KEY, "HASH")],
        "PartsTable": [(contract.PARTS_HASH_KEY, "HASH"), (contract.PARTS_RANGE_KEY, "RANGE")],
    }
    for table in of_type(ecs, "AWS::DynamoDB::Table").values():
        props = table["Properties"]
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert props["SSESpecification"] == {"SSEEnabled": True}


def test_the_transfers_table_has_the_index_the_runtime_queries(ecs: dict[str, Any]) -> None:
    """The sparse `Attention` index, as the ledger (and so the local runner, the tests and the benchmarks) creates
    it: the sweeper and `s3sync status` query it; keys only, so counting a part never writes to it."""
    props = ecs["Resources"]["TransfersTable"]["Properties"]
    assert {k: props[k] for k in ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes")} == \
        transfers_table_keys()
    (index,) = props["GlobalSecondaryIndexes"]
    assert index["IndexName"] == contract.ATTENTION_INDEX and index["Projection"] == {"ProjectionType": "KEYS_ONLY"}


def test_queues_are_encrypted_and_redrive_to_the_dlq(ecs: dict[str, Any]) -> None:
    queue = ecs["Resources"]["TransferQueue"]["Properties"]
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["TransferDeadLetterQueue", "Arn"]},
        "maxReceiveCount": {"Ref": "MaxReceiveCount"},
    }
    assert queue["VisibilityTimeout"] == {"Ref": "VisibilityTimeout"}
    for q in of_type(ecs, "AWS::SQS::Queue").values():
        assert q["Properties"]["SqsManagedSseEnabled"] is True


def test_source_bucket_is_locked_down(lam: dict[str, Any]) -> None:
    props = lam["Resources"]["SourceBucket"]["Properties"]
    assert props["BucketName"] == {"Ref": "SourceBucketName"}
    assert all(props["PublicAccessBlockConfiguration"].values())
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    (rule,) = props["LifecycleConfiguration"]["Rules"]
    assert rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] >= 1
    # No cycle: the event queue's policy names the bucket through the parameter, not the resource; the bucket
    # waits for it (S3 checks, when the notification is set, that it may send to the queue).
    policy = lam["Resources"]["EventQueuePolicy"]["Properties"]
    assert "SourceBucket" not in {v.get("Ref") for v in walk(policy) if isinstance(v, dict)}
    assert lam["Resources"]["SourceBucket"]["DependsOn"] == ["EventQueuePolicy"]
    assert "SplitterPermission" not in lam["Resources"]  # S3 no longer invokes the function


def test_s3_events_reach_the_splitter_through_the_event_queue_in_batches(lam: dict[str, Any]) -> None:
    """Issue 15: S3 -> EventQueue -> the splitter's event source mapping. The rules AWS enforces, as its docs state
    them: the function's timeout may not exceed the queue's visibility timeout (checked when the mapping is created;
    six times is the recommendation); a BatchSize over 10 needs a batching window of at least 1 s; S3 cannot send to
    a queue encrypted with the AWS managed KMS key (SSE-SQS instead); only S3, for this bucket, may send."""
    res = lam["Resources"]
    queue = res["EventQueue"]["Properties"]
    splitter_timeout = res["Splitter"]["Properties"]["Timeout"]
    assert queue["VisibilityTimeout"] >= 6 * splitter_timeout
    assert queue["SqsManagedSseEnabled"] is True and "KmsMasterKeyId" not in queue
    assert queue["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": ["EventDeadLetterQueue", "Arn"]},
                                      "maxReceiveCount": 5}
    assert res["EventDeadLetterQueue"]["Properties"]["MessageRetentionPeriod"] == 1209600
    mapping = res["SplitterEventMapping"]["Properties"]
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["EventQueue", "Arn"]}
    assert mapping["FunctionName"] == {"Ref": "Splitter"}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BatchSize"] <= 10 or mapping["MaximumBatchingWindowInSeconds"] >= 1
    statements = {s["Sid"]: s for s in res["EventQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]}
    allow = statements["AllowS3Notifications"]
    assert allow["Principal"] == {"Service": ["s3.amazonaws.com"]} and allow["Action"] == ["sqs:SendMessage"]
    bucket_arn = {"Fn::Sub": ["arn:${AWS::Partition}:s3:::${Bucket}", {"Bucket": {"Ref": "SourceBucketName"}}]}
    assert allow["Condition"]["ArnEquals"] == {"aws:SourceArn": bucket_arn}
    assert allow["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    deny = statements["DenySendFromAnyoneElse"]  # a forged S3 event cannot be queued by anyone in the account
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*"
    assert deny["Condition"]["ArnNotEquals"] == {"aws:SourceArn": bucket_arn}
    assert "DenyInsecureTransport" in statements


# --- functions and the worker: handlers and environment ---------------------------------------------------------------
def test_functions_run_python_3_12_with_the_contract_handlers(lam: dict[str, Any]) -> None:
    handlers = {v["Properties"]["Handler"] for v in of_type(lam, "AWS::Lambda::Function").values()}
    assert handlers == set(contract.HANDLERS.values())
    for fn in of_type(lam, "AWS::Lambda::Function").values():
        assert fn["Properties"]["Runtime"] == "python3.12"
        assert fn["Properties"]["Code"] == {  # pinned to the uploaded object version when deploy passes one
            "S3Bucket": {"Ref": "CodeBucket"}, "S3Key": {"Ref": "CodeKey"},
            "S3ObjectVersion": {"Fn::If": ["HasCodeVersion", {"Ref": "CodeVersion"}, {"Ref": "AWS::NoValue"}]}}
        assert "LogGroup" in fn["Properties"]["LoggingConfig"]


@pytest.mark.parametrize("key", sorted(contract.HANDLERS))
def test_handler_strings_resolve_to_real_functions(lam: dict[str, Any], key: str) -> None:
    """Import the module the template's Handler names, as Lambda does (fails until functions/ lands)."""
    (handler,) = [
        v["Properties"]["Handler"]
        for v in of_type(lam, "AWS::Lambda::Function").values()
        if v["Properties"]["Handler"] == contract.HANDLERS[key]
    ]
    module_name, _, attr = handler.rpartition(".")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, attr, None)), handler


def env_of(lam: dict[str, Any], function: str) -> set[str]:
    return set(lam["Resources"][function]["Properties"]["Environment"]["Variables"])


def test_each_function_gets_exactly_its_environment(lam: dict[str, Any]) -> None:
    dest = {Env.TRANSFERS_TABLE, Env.PARTS_TABLE, Env.DEST_BUCKET, Env.DEST_PREFIX, Env.DEST_REGION,
            Env.DEST_ENDPOINT_URL, Env.DEST_SECRET_ARN}  # fmt: skip
    encryption = {Env.DEST_SSE, Env.DEST_SSE_KMS_KEY_ID}  # whoever plans objects: splitter, sweeper (scale_in)
    # the source bucket and the delete switch: the only events it acts on (issue 18 item 1)
    # ... and where the scheduled finder resumes (its cursor, issue 15); the small objects it copies itself, and
    # their notice (issue 15)
    assert env_of(lam, "Splitter") == dest | encryption | {Env.QUEUE_URL, Env.PART_SIZE_MIB, Env.SOURCE_BUCKET,
                                                           Env.PROPAGATE_DELETES, Env.FINDER_CURSOR,
                                                           Env.COMPLETION_TOPIC_ARN, Env.INLINE_MAX_BYTES}
    splitter = lam["Resources"]["Splitter"]["Properties"]["Environment"]["Variables"]
    assert splitter[Env.INLINE_MAX_BYTES] == str(5 * 1024 * 1024)
    assert splitter[Env.SOURCE_BUCKET] == {"Ref": "SourceBucketName"}
    assert splitter[Env.PROPAGATE_DELETES] == {"Ref": "PropagateDeletes"}
    # completion sends a part again (the queue) and creates a re-copy's upload (the encryption)
    assert env_of(lam, "Completion") == dest | encryption | {Env.COMPLETION_TOPIC_ARN, Env.QUEUE_URL}
    scale = {Env.CLUSTER, Env.SERVICE, Env.MAX_TASKS, Env.MIN_TASKS, Env.QUEUE_URL}  # queue: the metrics' dimension
    assert env_of(lam, "ScaleOut") == scale
    assert env_of(lam, "ScaleIn") == scale | encryption | {Env.TRANSFERS_TABLE, Env.PARTS_TABLE, Env.PART_SIZE_MIB,
                                                           Env.STUCK_AFTER_SECONDS}
    for fn in ("Splitter", "ScaleIn"):
        variables = lam["Resources"][fn]["Properties"]["Environment"]["Variables"]
        assert variables[Env.DEST_SSE] == {"Ref": "DestSse"}
        assert variables[Env.DEST_SSE_KMS_KEY_ID] == {"Ref": "DestSseKmsKeyId"}


def test_worker_gets_its_environment_and_the_secret_s_arn_only(ecs: dict[str, Any]) -> None:
    """Issue 18 item 2: the China keys are not injected (ECS would put them in the container's environment, shown
    by `docker inspect` and /proc/1/environ); the worker reads the secret named by its ARN with its task role."""
    (container,) = ecs["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    assert {e["Name"] for e in container["Environment"]} == {
        Env.QUEUE_URL, Env.TRANSFERS_TABLE, Env.PARTS_TABLE, Env.DEST_BUCKET, Env.DEST_PREFIX, Env.DEST_REGION,
        Env.DEST_ENDPOINT_URL, Env.WORKER_THREADS, Env.DEST_SECRET_ARN, "AWS_REGION", "AWS_DEFAULT_REGION",
    }  # fmt: skip
    assert "Secrets" not in container
    assert {e["Name"]: e["Value"] for e in container["Environment"]}[Env.DEST_SECRET_ARN] == {"Ref": "DestCredentials"}
    assert container["LogConfiguration"]["Options"]["awslogs-group"] == {"Ref": "WorkerLogGroup"}


def test_service_starts_at_min_tasks_on_either_launch_type(ecs: dict[str, Any]) -> None:
    props = ecs["Resources"]["Service"]["Properties"]
    assert props["DesiredCount"] == {"Ref": "MinTasks"}
    # On EC2 the service waits for the capacity provider association (a conditional DependsOn through Metadata).
    waits_for = ecs["Resources"]["Service"]["Metadata"]["s3sync"]["WaitsFor"]
    assert waits_for == {"Fn::If": ["IsEc2", {"Ref": "CapacityProviderAssociation"}, "nothing"]}
    assert ecs["Parameters"]["LaunchType"]["AllowedValues"] == ["EC2", "FARGATE"]
    assert props["NetworkConfiguration"]["Fn::If"][1]["AwsvpcConfiguration"]["AssignPublicIp"] == "ENABLED"
    assert ecs["Parameters"]["AmiId"]["Default"].startswith("/aws/service/ecs/optimized-ami/")


# --- credentials ------------------------------------------------------------------------------------------------------
def test_credentials_are_noecho_without_default_and_never_output(ecs: dict[str, Any], texts: dict[str, str]) -> None:
    params = ecs["Parameters"]
    for name in ("DestAccessKeyId", "DestSecretAccessKey"):
        assert params[name]["NoEcho"] in (True, "true"), name
        assert "Default" not in params[name], name
        assert name not in json.dumps(ecs["Outputs"]), name
    for doc_text in texts.values():
        assert not re.search(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b", doc_text)
    for name, param in params.items():
        if param.get("NoEcho") in (True, "true"):
            assert "Default" not in param, name
    secret = ecs["Resources"]["DestCredentials"]["Properties"]["SecretString"]["Fn::Sub"]
    assert json.loads(secret) == {
        contract.SECRET_ACCESS_KEY_ID_FIELD: "${DestAccessKeyId}",
        contract.SECRET_SECRET_ACCESS_KEY_FIELD: "${DestSecretAccessKey}",
    }


# --- parameters, outputs, cross-stack references ----------------------------------------------------------------------
def test_destination_parameters(ecs: dict[str, Any]) -> None:
    p = ecs["Parameters"]
    assert p["DestRegion"]["AllowedValues"] == ["cn-north-1", "cn-northwest-1"]
    assert p["DestPrefix"]["Default"] == "" and p["DestEndpointUrl"]["Default"] == ""
    assert "Default" not in p["DestBucket"]


def test_lambda_parameters_defaults(lam: dict[str, Any]) -> None:
    p = lam["Parameters"]
    assert p["EcsStackName"]["Default"] == "ecsStack"
    assert (p["MaxTasks"]["Default"], p["MinTasks"]["Default"], p["MinTasks"]["MinValue"]) == (10, 1, 0)
    assert "AllowedPattern" in p["SourceBucketName"]


def test_destination_encryption_parameters(lam: dict[str, Any]) -> None:
    """Empty by default (the bucket's default encryption); a KMS key only with aws:kms, refused at deploy time."""
    p = lam["Parameters"]
    assert p["DestSse"]["AllowedValues"] == ["", "AES256", "aws:kms"] and p["DestSse"]["Default"] == ""
    assert p["DestSseKmsKeyId"]["Default"] == ""
    pattern = re.compile(p["DestSseKmsKeyId"]["AllowedPattern"])
    for ok in ("", "1234abcd-12ab-34cd-56ef-1234567890ab", "alias/copies",
               "arn:aws-cn:kms:cn-north-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
               "arn:aws-cn:kms:cn-northwest-1:111122223333:alias/copies"):
        assert pattern.fullmatch(ok), ok
    for bad in ("alias copies", "arn:aws-cn:s3:::bucket", "key id\n"):
        assert not pattern.fullmatch(bad), bad
    rule = lam["Rules"]["DestSseKmsKeyNeedsKms"]
    assert rule["RuleCondition"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "DestSseKmsKeyId"}, ""]}]}
    assert [a["Assert"] for a in rule["Assertions"]] == [{"Fn::Equals": [{"Ref": "DestSse"}, "aws:kms"]}]


@pytest.mark.parametrize("name", NAMES)
def test_console_page_groups_labels_and_describes_every_parameter(docs: dict[str, dict[str, Any]], name: str) -> None:
    doc = docs[name]
    interface = doc["Metadata"]["AWS::CloudFormation::Interface"]
    grouped = [p for g in interface["ParameterGroups"] for p in g["Parameters"]]
    assert sorted(grouped) == sorted(doc["Parameters"])
    assert set(interface["ParameterLabels"]) == set(doc["Parameters"])
    for pname, param in doc["Parameters"].items():
        assert param.get("Description"), pname


@pytest.mark.parametrize("name", NAMES)
def test_names_follow_the_conventions(docs: dict[str, dict[str, Any]], name: str) -> None:
    doc = docs[name]
    for logical_id in doc["Resources"]:
        assert re.fullmatch(r"(?:[A-Z][a-z0-9]*)+", logical_id), logical_id
    prefixes = tuple(doc["Resources"]) + tuple(doc["Parameters"])
    for out_name, out in doc["Outputs"].items():
        assert out_name.startswith(prefixes), out_name
        if out_name in Exports.NOT_EXPORTED:
            assert "Export" not in out, out_name
        else:
            assert out["Export"]["Name"] == {"Fn::Sub": f"${{AWS::StackName}}-{out_name}"}
        assert out.get("Description"), out_name


def test_user_facing_outputs(ecs: dict[str, Any], lam: dict[str, Any]) -> None:
    assert {"ClusterName", "ServiceName", "TransferQueueUrl", "TransferDeadLetterQueueUrl", "TransfersTableName",
            "PartsTableName", "WorkerLogGroupName"} <= set(ecs["Outputs"])  # fmt: skip
    assert {"SourceBucketName", "CompletionTopicArn"} <= set(lam["Outputs"])


def test_every_import_matches_an_ecs_export(ecs: dict[str, Any], lam: dict[str, Any]) -> None:
    exports = {out["Export"]["Name"]["Fn::Sub"].replace("${AWS::StackName}", "${EcsStackName}")
               for out in ecs["Outputs"].values() if "Export" in out}  # fmt: skip
    imports = [n["Fn::ImportValue"] for n in walk(lam) if isinstance(n, dict) and "Fn::ImportValue" in n]
    assert imports
    for imported in imports:
        assert set(imported) == {"Fn::Sub"}, imported
        assert imported["Fn::Sub"] in exports, imported


def test_templates_are_plain_yaml(texts: dict[str, str]) -> None:
    """Long-form intrinsics, no `!Ref` tags: any YAML reader (moto, yaml.safe_load, the local runner) takes them."""
    import yaml

    for name, text in texts.items():
        assert yaml.safe_load(text)["AWSTemplateFormatVersion"] == "2010-09-09", name


# --- moto's CloudFormation engine -------------------------------------------------------------------------------------
def _function_env(handler: str) -> dict[str, Any]:
    import boto3

    functions = boto3.client("lambda", region_name="us-east-1").list_functions()["Functions"]
    (env,) = [f["Environment"]["Variables"] for f in functions if f["Handler"] == handler]
    return env


@pytest.mark.filterwarnings("ignore:Tried to parse:UserWarning")  # resource types moto's engine skips
@pytest.mark.parametrize("launch_type", ["EC2", "FARGATE"])
@pytest.mark.system
def test_stacks_create_update_and_delete_in_moto(texts: dict[str, str], launch_type: str) -> None:
    """Both stacks create in order, the imports resolve (optional values back to ""), an update applies, both delete.

    moto's CloudFormation has no AWS::SecretsManager::Secret, so the secret's ARN output is pinned to a literal here.
    """
    with moto_cloudformation(launch_type) as (cf, ecs_params):
        ecs_text = pin_secret(texts["ecs.yaml"])
        lam_params = {"SourceBucketName": "src-bucket", "CodeBucket": "code-bucket", "CodeKey": "fn.zip",
                      "Email": "ops@example.com"}  # fmt: skip
        cf.create_stack(StackName="ecsStack", TemplateBody=ecs_text, Parameters=params(ecs_params),
                        Capabilities=["CAPABILITY_IAM"])  # fmt: skip
        cf.create_stack(StackName="lamStackS", TemplateBody=texts["lambda.yaml"], Parameters=params(lam_params),
                        Capabilities=["CAPABILITY_IAM"])  # fmt: skip
        for name in ("ecsStack", "lamStackS"):
            assert cf.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
        splitter = _function_env(contract.HANDLERS["splitter"])
        assert splitter[Env.DEST_PREFIX] == splitter[Env.DEST_ENDPOINT_URL] == ""  # the optional exports, unmarked
        assert splitter[Env.DEST_BUCKET] == "dest-bucket"
        assert splitter[Env.QUEUE_URL].startswith("https://")
        assert splitter[Env.DEST_SSE] == splitter[Env.DEST_SSE_KMS_KEY_ID] == ""  # the bucket's default

        key = "arn:aws-cn:kms:cn-north-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
        cf.update_stack(StackName="lamStackS", TemplateBody=texts["lambda.yaml"],
                        Parameters=params({**lam_params, "MaxTasks": "20", "DestSse": "aws:kms",
                                            "DestSseKmsKeyId": key}),
                        Capabilities=["CAPABILITY_IAM"])  # fmt: skip
        assert str(_function_env(contract.HANDLERS["scale_out"])[Env.MAX_TASKS]) == "20"
        for handler in (contract.HANDLERS["splitter"], contract.HANDLERS["scale_in"]):
            env = _function_env(handler)
            assert (env[Env.DEST_SSE], env[Env.DEST_SSE_KMS_KEY_ID]) == ("aws:kms", key)

        cf.delete_stack(StackName="lamStackS")
        cf.delete_stack(StackName="ecsStack")
        statuses = {s["StackName"]: s["StackStatus"] for s in cf.list_stacks()["StackSummaries"]}
        assert statuses == {"lamStackS": "DELETE_COMPLETE", "ecsStack": "DELETE_COMPLETE"}


# --- what AWS refuses and neither cfn-lint nor moto sees (issue 12) -----------------------------------------------
def _sub(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{([\w:]+)\}", lambda m: values[m.group(1)], text)


def test_capacity_provider_name_never_starts_with_a_reserved_prefix(ecs: dict[str, Any]) -> None:
    """CreateCapacityProvider `name`: "Up to 255 characters are allowed. They include letters (both upper and
    lowercase letters), numbers, underscores (_), and hyphens (-). The name can't be prefixed with "aws", "ecs", or
    "fargate"." Without a Name, CloudFormation makes `<stack>-CapacityProvider-<random>`: "ecsStack-..." is refused."""
    props = ecs["Resources"]["CapacityProvider"]["Properties"]
    assert "Name" in props, "CloudFormation would name it after the stack (ecsStack-...), which ECS refuses"
    template = props["Name"]["Fn::Sub"]
    # the default stack name, the reserved words themselves as stack names, and the longest stack name allowed
    for stack in ("ecsStack", "ecs", "aws-stack", "FargateStack", "A" * 128):
        name = _sub(template, {"AWS::StackName": stack})
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,255}", name), name
        assert not name.lower().startswith(("aws", "ecs", "fargate")), name


def test_worker_task_sets_its_region_for_boto3(ecs: dict[str, Any]) -> None:
    """The EC2 launch type does not set AWS_REGION / AWS_DEFAULT_REGION in a container (Fargate does): without
    them, boto3.client("sqs") raises NoRegionError and the tasks crash-loop."""
    (container,) = ecs["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == {"Ref": "AWS::Region"}


def dockerfile_exec(instruction: str) -> list[str] | None:
    """The exec-form (JSON) argument of the last `instruction` line of container/Dockerfile, None if absent."""
    found = None
    for line in (ROOT / "container" / "Dockerfile").read_text(encoding="utf-8").splitlines():
        keyword, _, rest = line.strip().partition(" ")
        if keyword.upper() == instruction:
            found = json.loads(rest)  # exec form only: the shell form would run the worker under /bin/sh -c
    return found


def test_the_worker_runs_as_python_m_container_worker_once(ecs: dict[str, Any]) -> None:
    """ECS task definition: `entryPoint` maps to Docker's Entrypoint and `command` to Cmd; a container runs
    Entrypoint + Cmd. The image's ENTRYPOINT already is the command line, so the task definition sets neither
    (a Command equal to it ran `python -m container.worker python -m container.worker`)."""
    (container,) = ecs["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    entrypoint = container.get("EntryPoint", dockerfile_exec("ENTRYPOINT") or [])
    # an EntryPoint override also drops the image's CMD (Docker's rule); a Command replaces it
    cmd = container.get("Command", [] if "EntryPoint" in container else dockerfile_exec("CMD") or [])
    assert entrypoint + cmd == list(contract.WORKER_COMMAND)


def _principals(doc: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for logical_id, res in doc["Resources"].items():
        props = res.get("Properties", {})
        if res["Type"] == "AWS::Lambda::Permission":
            yield logical_id, props["Principal"]
        for node in walk(props):
            if isinstance(node, dict) and isinstance(node.get("Principal"), dict):
                for principal in as_list(node["Principal"].get("Service", [])):
                    yield logical_id, principal


@pytest.mark.parametrize("partition, suffix", [("aws", "amazonaws.com"), ("aws-cn", "amazonaws.com.cn")])
def test_every_service_principal_is_the_documented_one_in_each_partition(
    docs: dict[str, dict[str, Any]], partition: str, suffix: str
) -> None:
    """Each principal the templates name resolves, in `aws` and in `aws-cn`, to the name iam.SERVICE_PRINCIPALS
    records for that partition (with its source)."""
    from s3sync.stacks.iam import SERVICE_PRINCIPALS

    seen = set()
    for name, doc in docs.items():
        for logical_id, principal in _principals(doc):
            text = principal["Fn::Sub"] if isinstance(principal, dict) else principal
            assert isinstance(text, str), (name, logical_id, principal)
            service = text.split(".")[0]
            assert service in SERVICE_PRINCIPALS, f"{name}:{logical_id}: {text} is not in iam.SERVICE_PRINCIPALS"
            assert _sub(text, {"AWS::URLSuffix": suffix}) == SERVICE_PRINCIPALS[service][partition], (name, logical_id)
            seen.add(service)
    assert seen == set(SERVICE_PRINCIPALS)  # the table holds no principal the stacks do not use
    for service, entry in SERVICE_PRINCIPALS.items():
        assert "https://" in entry["source"] or "github.com" in entry["source"], service


# --- no setting a user may change later is locked by an export (issue 12 item 5) -----------------------------------
def _references(node: Any) -> Iterator[str]:
    """Logical ids and parameter names a template fragment refers to (Ref, Fn::GetAtt, ${...} in Fn::Sub)."""
    for n in walk(node):
        if not isinstance(n, dict) or len(n) != 1:
            continue
        (fn, arg), = n.items()
        if fn == "Ref":
            yield arg
        elif fn == "Fn::GetAtt":
            yield arg[0] if isinstance(arg, list) else arg.split(".")[0]
        elif fn == "Fn::Sub":
            text, names = (arg, {}) if isinstance(arg, str) else arg
            yield from (v.split(".")[0] for v in re.findall(r"\$\{([^}!]+)\}", text) if v not in names)


def _replaced_by(doc: dict[str, Any], logical_id: str, seen: set[str] | None = None) -> set[str]:
    """The parameters whose change replaces `logical_id` (or makes it disappear): through a Condition, a property
    that requires replacement (createOnlyProperties of the resource type's CloudFormation schema, as cfn-lint ships
    it, plus the documented ones the schema omits), or a resource such a property names, transitively."""
    from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

    seen = seen if seen is not None else set()
    if logical_id in seen or logical_id not in doc["Resources"]:
        return set()
    seen.add(logical_id)
    res = doc["Resources"][logical_id]
    found: set[str] = set()
    if "Condition" in res:
        found |= set(_references(doc["Conditions"][res["Condition"]])) - {"AWS::Region", "AWS::Partition"}
    schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema("us-east-1", res["Type"]).schema
    create_only = {p.split("/")[2] for p in schema.get("createOnlyProperties", [])}
    # AWS::ECS::Service "LaunchType ... Update requires: Replacement" (CloudFormation user guide)
    create_only |= {"AWS::ECS::Service": {"LaunchType"}}.get(res["Type"], set())
    for prop, value in res.get("Properties", {}).items():
        if prop not in create_only:
            continue
        conditions = [doc["Conditions"][n["Fn::If"][0]] for n in walk(value) if isinstance(n, dict) and "Fn::If" in n]
        for ref in [*_references(value), *_references(conditions)]:
            if ref in doc.get("Parameters", {}):
                found.add(ref)
            elif not ref.startswith("AWS::"):
                found |= _replaced_by(doc, ref, seen)
    return found


def test_lambda_imports_nothing_a_parameter_or_an_update_can_change(ecs: dict[str, Any], lam: dict[str, Any]) -> None:
    """CloudFormation refuses to update an export another stack imports ("Cannot update export ... as it is in use
    by ..."): every export lambda.yaml imports must keep its value whatever parameter of ecs.yaml changes. An
    exported value may refer to no parameter, and to no resource that a parameter change replaces or removes."""
    imported = {n["Fn::ImportValue"]["Fn::Sub"].split("-", 1)[1]
                for n in walk(lam) if isinstance(n, dict) and "Fn::ImportValue" in n}  # fmt: skip
    assert imported and not imported & Exports.NOT_EXPORTED
    for name in sorted(imported):
        value = ecs["Outputs"][name]["Value"]
        for ref in _references(value):
            assert ref not in ecs["Parameters"], f"{name} exports parameter {ref}"
            assert not _replaced_by(ecs, ref), f"{name}: {ref} is replaced when {_replaced_by(ecs, ref)} change"
    # the check does catch what used to be imported: the service (LaunchType replaces it), the destination
    assert _replaced_by(ecs, "Service") >= {"LaunchType"}
    assert "DestBucket" in set(_references(ecs["Outputs"]["DestBucket"]["Value"]))


def test_what_may_change_reaches_lambda_through_the_settings_parameter(ecs: dict[str, Any],
                                                                      lam: dict[str, Any]) -> None:
    """ecs.yaml writes the fields in SETTINGS_FIELDS order; each function variable of lambda.yaml picks its own."""
    param = ecs["Resources"]["SettingsParameter"]
    assert param["Type"] == "AWS::SSM::Parameter" and "Condition" not in param
    assert param["Properties"]["Name"] == {"Fn::Sub": "/s3sync/${AWS::StackName}/settings"}
    sep, written = param["Properties"]["Value"]["Fn::Join"]
    assert sep == "|" and written == [{"Fn::GetAtt": ["Service", "Name"]} if f == "ServiceName" else {"Ref": f}
                                      for f in SETTINGS_FIELDS]  # fmt: skip
    declared = lam["Parameters"]["EcsSettings"]
    assert declared["Type"] == "AWS::SSM::Parameter::Value<String>"
    assert declared["Default"] == "/s3sync/ecsStack/settings"
    # a value as the ECS stack would write it, read back through the functions' environment
    fields = {"ServiceName": "svc-1", "DestBucket": "dest", "DestRegion": "cn-north-1", "DestPrefix": "",
              "DestEndpointUrl": "https://s3.example"}  # fmt: skip
    stored = "|".join(fields[f] for f in SETTINGS_FIELDS)

    def read(node: Any) -> Any:
        if isinstance(node, dict) and "Fn::Select" in node:
            index, split = node["Fn::Select"]
            sep, source = split["Fn::Split"]
            assert source == {"Ref": "EcsSettings"}
            return stored.split(sep)[index]
        return node

    expected = {Env.DEST_BUCKET: "dest", Env.DEST_REGION: "cn-north-1", Env.DEST_PREFIX: "",
                Env.DEST_ENDPOINT_URL: "https://s3.example", Env.SERVICE: "svc-1"}  # fmt: skip
    for fn in of_type(lam, "AWS::Lambda::Function").values():
        variables = fn["Properties"]["Environment"]["Variables"]
        for var, want in expected.items():
            if var in variables:
                assert read(variables[var]) == want, var
