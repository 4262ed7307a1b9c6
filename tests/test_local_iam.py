"""The local system refuses what AWS refuses: every call of a function or worker is checked against its own role.

Three layers: the evaluator (policy evaluation logic, pure), the mapping of API calls to IAM requests (pure), and
the enforcement on real clients against the moto server (a refused call never reaches it). Then `s3sync local`
itself: a role missing one action fails the run with AccessDenied naming the action, the resource and the role; the
functions get exactly their template environment.
"""

from __future__ import annotations

import copy
import os
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError, NoRegionError

from s3sync.contract import DEFAULT_PART_SIZE_MIB, HANDLERS, Env
from s3sync.local.cfn import LAMBDA_RESERVED, LocalStacks, Resolver, TemplateError
from s3sync.local.iam import (
    CallLedger,
    Enforcer,
    NotModelled,
    PolicyError,
    Request,
    Role,
    Stmt,
    Where,
    conditions_hold,
    evaluate,
    requests_for,
    service_decision,
)
from s3sync.local.runner import BucketSpec, LocalOptions, LocalRunner, local_templates
from s3sync.transfer.runtime import Runtime
from tests.conftest import make_client

ACCOUNT = "123456789012"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/test-Role"
TABLE = f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/t"


def stmts(*docs: dict[str, Any], resource_based: bool = False) -> list[Stmt]:
    return [Stmt(f"test #{i}", d, resource_based) for i, d in enumerate(docs, 1)]


def allow(action: Any, resource: Any, **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def deny(action: Any, resource: Any, **extra: Any) -> dict[str, Any]:
    return {"Effect": "Deny", "Action": action, "Resource": resource, **extra}


def allowed(policy: list[Stmt], action: str, resource: str, context: dict[str, Any] | None = None,
            principals: tuple[str, ...] = (ROLE_ARN,)) -> bool:
    return evaluate(Request(action, resource), policy, context, principals).allowed


# --- the evaluator --------------------------------------------------------------------------------------------------
def test_actions_match_case_insensitively_with_wildcards():
    policy = stmts(allow(["sqs:Send*", "dynamodb:?etItem"], "*"))
    assert allowed(policy, "sqs:SendMessage", "*")
    assert allowed(policy, "SQS:sendmessage", "*")
    assert allowed(policy, "dynamodb:GetItem", "*")
    assert not allowed(policy, "dynamodb:UpdateItem", "*")
    assert not allowed(policy, "sqs:ReceiveMessage", "*")


def test_resource_wildcards_keep_to_their_segment_unless_they_end_it():
    policy = stmts(allow("sqs:SendMessage", f"arn:aws:sqs:*-east-1:{ACCOUNT}:q"))
    assert allowed(policy, "sqs:SendMessage", f"arn:aws:sqs:us-east-1:{ACCOUNT}:q")
    assert not allowed(policy, "sqs:SendMessage", f"arn:aws:sqs:a:b-east-1:{ACCOUNT}:q")  # a mid-segment * stays
    assert not allowed(policy, "sqs:SendMessage", f"arn:aws:sqs:us-east-1:{ACCOUNT}:q2")
    assert allowed(stmts(allow("sqs:SendMessage", "arn:aws:sqs:*")), "sqs:SendMessage",
                   f"arn:aws:sqs:us-east-1:{ACCOUNT}:q")  # a * ending a segment crosses colons
    objects = stmts(allow("s3:GetObject", "arn:aws:s3:::bucket/*"))
    assert allowed(objects, "s3:GetObject", "arn:aws:s3:::bucket/a:b/c d.bin")  # a colon inside the key
    assert not allowed(objects, "s3:GetObject", "arn:aws:s3:::bucket")  # the bucket is not an object
    assert not allowed(objects, "s3:GetObject", "arn:aws:s3:::bucket2/k")
    assert not allowed(stmts(allow("s3:GetObject", "arn:aws:s3:::Bucket/*")), "s3:GetObject",
                       "arn:aws:s3:::bucket/k")  # resources are case-sensitive


def test_an_explicit_deny_wins_over_any_allow():
    policy = stmts(allow("dynamodb:*", "*"), deny("dynamodb:DeleteItem", TABLE))
    assert allowed(policy, "dynamodb:GetItem", TABLE)
    decision = evaluate(Request("dynamodb:DeleteItem", TABLE), policy)
    assert not decision.allowed and "explicit deny in an identity-based policy (test #2)" in decision.why


def test_nothing_allows_means_an_implicit_deny_naming_the_action():
    decision = evaluate(Request("sns:Publish", "arn:aws:sns:us-east-1:1:t"), stmts(allow("sqs:SendMessage", "*")))
    assert not decision.allowed
    assert decision.why == "because no identity-based policy allows the sns:Publish action"


def test_not_action_and_not_resource():
    policy = stmts({"Effect": "Allow", "NotAction": "iam:*", "NotResource": TABLE})
    assert allowed(policy, "sqs:SendMessage", "arn:aws:sqs:us-east-1:1:q")
    assert not allowed(policy, "iam:PassRole", "*")
    assert not allowed(policy, "dynamodb:GetItem", TABLE)


def test_conditions_missing_keys_follow_the_documented_rules():
    ctx = {"aws:PrincipalArn": ROLE_ARN}
    assert conditions_hold({"StringEquals": {"aws:PrincipalArn": ROLE_ARN}}, ctx)
    assert not conditions_hold({"StringEquals": {"aws:SourceVpc": "vpc-1"}}, ctx)  # absent: false
    assert conditions_hold({"StringNotEquals": {"aws:SourceVpc": "vpc-1"}}, ctx)  # absent, negated: true
    assert conditions_hold({"StringEqualsIfExists": {"aws:SourceVpc": "vpc-1"}}, ctx)  # absent, IfExists: true
    assert conditions_hold({"Null": {"aws:SourceVpc": "true"}}, ctx)
    assert not conditions_hold({"Null": {"aws:PrincipalArn": "true"}}, ctx)
    assert conditions_hold({"StringLike": {"AWS:PRINCIPALARN": "arn:aws:iam::*:role/test-*"}}, ctx)  # any case
    assert not conditions_hold({"StringNotEquals": {"aws:PrincipalArn": [ROLE_ARN, "other"]}}, ctx)
    # keys are ANDed, values ORed
    assert conditions_hold({"StringEquals": {"aws:PrincipalArn": ["x", ROLE_ARN]}}, ctx)
    assert not conditions_hold({"StringEquals": {"aws:PrincipalArn": ROLE_ARN, "aws:SourceVpc": "v"}}, ctx)


def test_condition_operators_the_policies_may_use():
    ctx = {"aws:SecureTransport": "true", "aws:SourceArn": "arn:aws:s3:::bucket", "n": "5",
           "dynamodb:Attributes": ["a", "b"]}
    assert conditions_hold({"Bool": {"aws:SecureTransport": "TRUE"}}, ctx)
    assert not conditions_hold({"Bool": {"aws:SecureTransport": "false"}}, ctx)
    assert conditions_hold({"ArnLike": {"aws:SourceArn": "arn:aws:s3:::buck*"}}, ctx)
    assert conditions_hold({"ArnEquals": {"aws:SourceArn": "arn:*:s3:::bucket"}}, ctx)
    assert not conditions_hold({"ArnLike": {"aws:SourceArn": "arn:aws:s3:*"}}, ctx)  # each of the 6 parts alone
    assert conditions_hold({"ArnNotLike": {"aws:SourceArn": "arn:aws:sqs:*:*:*"}}, ctx)
    assert conditions_hold({"NumericLessThan": {"n": "10"}, "NumericGreaterThanEquals": {"n": 5}}, ctx)
    assert conditions_hold({"ForAllValues:StringEquals": {"dynamodb:Attributes": ["a", "b", "c"]}}, ctx)
    assert not conditions_hold({"ForAllValues:StringEquals": {"dynamodb:Attributes": ["a"]}}, ctx)
    assert conditions_hold({"ForAnyValue:StringEquals": {"dynamodb:Attributes": ["b", "z"]}}, ctx)
    assert conditions_hold({"ForAllValues:StringEquals": {"absent": ["x"]}}, ctx)  # absent: true
    assert not conditions_hold({"ForAnyValue:StringEquals": {"absent": ["x"]}}, ctx)  # absent: false
    with pytest.raises(PolicyError, match="IpAddress"):
        conditions_hold({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, ctx)
    with pytest.raises(PolicyError):
        conditions_hold({"Sometimes:StringEquals": {"k": "v"}}, ctx)


def test_deny_insecure_transport_as_the_templates_write_it_refuses_plain_http_only():
    bucket_policy = stmts({"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": ["s3:*"],
                           "Resource": ["arn:aws:s3:::b", "arn:aws:s3:::b/*"],
                           "Condition": {"Bool": {"aws:SecureTransport": "false"}}}, resource_based=True)
    policy = stmts(allow("s3:GetObject", "arn:aws:s3:::b/*")) + bucket_policy
    assert allowed(policy, "s3:GetObject", "arn:aws:s3:::b/k", {"aws:SecureTransport": "true"})
    decision = evaluate(Request("s3:GetObject", "arn:aws:s3:::b/k"), policy, {"aws:SecureTransport": "false"},
                        (ROLE_ARN,))
    assert not decision.allowed and "resource-based" in decision.why


def test_resource_based_allow_counts_only_for_the_principal_it_names():
    def topic_policy(principal: Any) -> list[Stmt]:
        return stmts({"Effect": "Allow", "Principal": principal, "Action": "sns:Publish", "Resource": "*"},
                     resource_based=True)
    topic = "arn:aws:sns:us-east-1:1:t"
    assert allowed(topic_policy({"AWS": [ROLE_ARN]}), "sns:Publish", topic)
    assert allowed(topic_policy("*"), "sns:Publish", topic)
    assert not allowed(topic_policy({"AWS": "arn:aws:iam::1:role/other"}), "sns:Publish", topic)
    assert not allowed(topic_policy({"Service": "cloudwatch.amazonaws.com"}), "sns:Publish", topic)


def test_policy_variables_and_statements_without_resource_are_refused_not_guessed():
    with pytest.raises(PolicyError, match="policy variables"):
        allowed(stmts(allow("s3:GetObject", "arn:aws:s3:::b/${aws:username}/*")), "s3:GetObject", "arn:aws:s3:::b/k")
    with pytest.raises(PolicyError, match="Resource"):
        allowed(stmts({"Effect": "Allow", "Action": "s3:GetObject"}), "s3:GetObject", "arn:aws:s3:::b/k")


def test_a_role_without_one_action():
    role = Role("R", ROLE_ARN, tuple(stmts(allow(["sqs:SendMessage", "sns:Publish"], "*"), allow("sns:Publish", "x"))))
    less = role.without("sns:Publish")
    assert [s.doc["Action"] for s in less.statements] == [["sqs:SendMessage"]]
    assert role.session_arn == f"arn:aws:sts::{ACCOUNT}:assumed-role/test-Role/local"


# --- API calls -> IAM requests -------------------------------------------------------------------------------------
W = Where(secrets={"my-secret": f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:my-secret-AbCdEf"})


def test_sqs_batches_are_authorized_as_their_single_actions_on_the_queue_of_the_url():
    [r] = requests_for("sqs", "DeleteMessageBatch", {"QueueUrl": f"http://127.0.0.1:5000/{ACCOUNT}/parts"}, W)
    assert r == Request("sqs:DeleteMessage", f"arn:aws:sqs:us-east-1:{ACCOUNT}:parts")
    [r] = requests_for("sqs", "SendMessageBatch",
                       {"QueueUrl": f"https://sqs.eu-west-1.amazonaws.com/{ACCOUNT}/q"}, W)
    assert r.action == "sqs:SendMessage" and r.resource == f"arn:aws:sqs:eu-west-1:{ACCOUNT}:q"


def test_dynamodb_transactions_need_each_items_action_on_its_table():
    reqs = requests_for("dynamodb", "TransactWriteItems", {"TransactItems": [
        {"Put": {"TableName": "parts", "Item": {}}}, {"Update": {"TableName": "jobs", "Key": {}}},
        {"ConditionCheck": {"TableName": "jobs", "Key": {}}}]}, W)
    assert [(r.action, r.resource.rsplit("/", 1)[-1]) for r in reqs] == [
        ("dynamodb:PutItem", "parts"), ("dynamodb:UpdateItem", "jobs"), ("dynamodb:ConditionCheckItem", "jobs")]
    assert all(dict(r.context)["dynamodb:EnclosingOperation"] == "TransactWriteItems" for r in reqs)
    [q] = requests_for("dynamodb", "Query", {"TableName": "t", "IndexName": "by-status"}, W)
    assert q.resource == f"{TABLE}/index/by-status"
    assert [r.resource for r in requests_for("dynamodb", "BatchWriteItem", {"RequestItems": {"a": [], "b": []}}, W)] \
        == [f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/a", f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/b"]


def test_s3_operations_map_to_the_actions_s3_checks():
    def one(op: str, **params: Any) -> tuple[str, str]:
        [r] = requests_for("s3", op, {"Bucket": "b", **params}, W)
        return r.action, r.resource
    assert one("HeadObject", Key="k") == ("s3:GetObject", "arn:aws:s3:::b/k")
    assert one("GetObject", Key="k", VersionId="v1") == ("s3:GetObjectVersion", "arn:aws:s3:::b/k")
    assert one("UploadPart", Key="k") == ("s3:PutObject", "arn:aws:s3:::b/k")
    assert one("CompleteMultipartUpload", Key="k") == ("s3:PutObject", "arn:aws:s3:::b/k")
    assert one("ListParts", Key="k") == ("s3:ListMultipartUploadParts", "arn:aws:s3:::b/k")
    assert one("ListObjectsV2") == ("s3:ListBucket", "arn:aws:s3:::b")
    assert one("HeadBucket") == ("s3:ListBucket", "arn:aws:s3:::b")


def test_ecs_secrets_sns_and_streams_resources():
    [svc] = requests_for("ecs", "UpdateService", {"cluster": "c", "service": "s", "desiredCount": 1}, W)
    assert svc == Request("ecs:UpdateService", f"arn:aws:ecs:us-east-1:{ACCOUNT}:service/c/s")
    [svc] = requests_for("ecs", "DescribeServices",
                         {"cluster": f"arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/c", "services": ["s"]}, W)
    assert svc.resource == f"arn:aws:ecs:us-east-1:{ACCOUNT}:service/c/s"
    [sec] = requests_for("secretsmanager", "GetSecretValue", {"SecretId": "my-secret"}, W)
    assert sec.resource == W.secrets["my-secret"]
    [pub] = requests_for("sns", "Publish", {"TopicArn": "arn:aws:sns:us-east-1:1:t", "Message": "m"}, W)
    assert pub == Request("sns:Publish", "arn:aws:sns:us-east-1:1:t")
    stream = f"{TABLE}/stream/2026"
    [rec] = requests_for("dynamodbstreams", "GetRecords", {"ShardIterator": "it"}, W, stream_of={"it": stream}.get)
    assert rec == Request("dynamodb:GetRecords", stream)
    with pytest.raises(NotModelled):
        requests_for("dynamodbstreams", "GetRecords", {"ShardIterator": "unknown"}, W)
    with pytest.raises(NotModelled, match="requests_for"):
        requests_for("glacier", "ListVaults", {}, W)
    assert requests_for("sts", "GetCallerIdentity", {}, W) == []


# --- enforcement on real clients (moto) ----------------------------------------------------------------------------
def make_table(ddb: Any, name: str) -> None:
    ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])


def test_a_call_outside_the_role_fails_before_it_is_sent_naming_action_resource_and_role(moto_server):
    ddb = make_client("dynamodb", moto_server.endpoint_url)
    make_table(ddb, "iam-allowed")
    make_table(ddb, "iam-other")
    role = Role("TestRole (test.yaml)", ROLE_ARN, tuple(stmts(
        allow(["dynamodb:GetItem", "dynamodb:UpdateItem"], f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/iam-allowed"))))
    ledger = CallLedger()
    client = Enforcer("test", role, Where(), ledger).instrument("control", make_client("dynamodb",
                                                                                      moto_server.endpoint_url))
    client.get_item(TableName="iam-allowed", Key={"id": {"S": "x"}})
    with pytest.raises(ClientError) as info:
        client.get_item(TableName="iam-other", Key={"id": {"S": "x"}})
    err = info.value.response["Error"]
    assert err["Code"] == "AccessDeniedException"
    assert f"arn:aws:sts::{ACCOUNT}:assumed-role/test-Role/local is not authorized to perform: dynamodb:GetItem " \
           f"on resource: arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/iam-other" in err["Message"]
    assert "TestRole" in err["Message"]
    # a transaction needs each item's action: UpdateItem is allowed, PutItem is not
    with pytest.raises(ClientError, match="dynamodb:PutItem"):
        client.transact_write_items(TransactItems=[
            {"Update": {"TableName": "iam-allowed", "Key": {"id": {"S": "x"}}, "UpdateExpression": "SET a = :a",
                        "ExpressionAttributeValues": {":a": {"S": "1"}}}},
            {"Put": {"TableName": "iam-allowed", "Item": {"id": {"S": "y"}}}}])
    assert "Item" not in ddb.get_item(TableName="iam-allowed", Key={"id": {"S": "x"}})  # nothing was sent
    assert [(d.action, d.resource.rsplit("/", 1)[-1]) for d in ledger.denials] == [
        ("dynamodb:GetItem", "iam-other"), ("dynamodb:PutItem", "iam-allowed")]
    assert ledger.total == 4  # GetItem, GetItem, and the transaction's two items


def test_without_list_bucket_a_missing_key_is_403_as_in_s3(moto_server):
    s3 = make_client("s3", moto_server.endpoint_url)
    s3.create_bucket(Bucket="iam-missing")
    objects = allow("s3:GetObject", "arn:aws:s3:::iam-missing/*")
    for statements, code in (([objects], "403"), ([objects, allow("s3:ListBucket", "arn:aws:s3:::iam-missing")],
                                                  "404")):
        role = Role("R", ROLE_ARN, tuple(stmts(*statements)))
        client = Enforcer("t", role, Where(), CallLedger()).instrument("source", make_client("s3",
                                                                                           moto_server.endpoint_url))
        with pytest.raises(ClientError) as info:
            client.head_object(Bucket="iam-missing", Key="nope")
        assert info.value.response["Error"]["Code"] == code
        with pytest.raises(ClientError) as info:
            client.get_object(Bucket="iam-missing", Key="nope")
        assert info.value.response["Error"]["Code"] == ("AccessDenied" if code == "403" else "NoSuchKey")


def test_destination_calls_are_recorded_but_not_the_roles(moto_server):
    s3 = make_client("s3", moto_server.endpoint_url)
    s3.create_bucket(Bucket="iam-china")
    ledger = CallLedger()
    client = Enforcer("t", Role("R", ROLE_ARN, ()), Where(), ledger).instrument("dest", make_client(
        "s3", moto_server.endpoint_url))
    client.put_object(Bucket="iam-china", Key="k", Body=b"x")  # the role allows nothing; the China keys do
    [(key, n)] = ledger.calls.items()
    assert key[1:4] == ("dest", "s3:PutObject", "arn:aws:s3:::iam-china/k") and "China" in key[4] and n == 1
    assert ledger.denials == []


def test_record_only_mode_lets_the_call_through_and_keeps_the_refusal(moto_server):
    ledger = CallLedger()
    client = Enforcer("t", Role("R", ROLE_ARN, ()), Where(), ledger, enforce=False).instrument(
        "control", make_client("sqs", moto_server.endpoint_url))
    client.list_queues()
    assert [d.action for d in ledger.denials] == ["sqs:ListQueues"]


# --- the templates, resolved ----------------------------------------------------------------------------------------
def test_resolver_handles_the_intrinsics_and_conditions_the_templates_use():
    template = {
        "Parameters": {"Mode": {"Type": "String", "Default": "off"}, "Name": {"Type": "String"}},
        "Conditions": {"On": {"Fn::Equals": [{"Ref": "Mode"}, "on"]},
                       "Either": {"Fn::Or": [{"Condition": "On"},
                                             {"Fn::Not": [{"Fn::Equals": [{"Ref": "Name"}, ""]}]}]}},
        "Resources": {"Q": {"Type": "AWS::SQS::Queue"},
                      "Only": {"Type": "AWS::SNS::Topic", "Condition": "On"}},
    }
    r = Resolver("st", template, {"Name": "n"}, Where(), exports={"st-X": "|a|b"})
    assert r.resolve({"Fn::Sub": "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:${Q.QueueName}"}) \
        == f"arn:aws:sqs:us-east-1:{ACCOUNT}:st-Q"
    assert r.resolve({"Fn::Sub": ["${A}-${!Literal}", {"A": {"Ref": "Name"}}]}) == "n-${Literal}"
    imported = {"Fn::ImportValue": {"Fn::Sub": "${AWS::StackName}-X"}}
    assert r.resolve({"Fn::Select": [2, {"Fn::Split": ["|", imported]}]}) == "b"
    assert r.resolve([{"Fn::If": ["On", "yes", {"Ref": "AWS::NoValue"}]}, "kept"]) == ["kept"]
    assert r.condition("Either") and not r.condition("On") and not r.enabled("Only")
    assert r.resolve({"Fn::GetAtt": ["Q", "Arn"]}) == f"arn:aws:sqs:us-east-1:{ACCOUNT}:st-Q"
    with pytest.raises(TemplateError, match="condition is false"):
        r.resolve({"Ref": "Only"})
    with pytest.raises(TemplateError, match="no stack exports"):
        r.resolve({"Fn::ImportValue": "nope"})


def stacks(**params: str) -> LocalStacks:
    options = LocalOptions(source=BucketSpec("src-bucket"), dest=BucketSpec("dst-bucket", region="cn-north-1"))
    return LocalStacks(local_templates(options), {"SourceBucketName": "src-bucket", "DestBucket": "dst-bucket",
                                                  **params}, Where())


def _plain(node: Any) -> bool:
    if isinstance(node, dict):
        return not any(k == "Ref" or k.startswith("Fn::") for k in node) and all(_plain(v) for v in node.values())
    if isinstance(node, list):
        return all(_plain(v) for v in node)
    return isinstance(node, (str, int, float, bool))


@pytest.mark.parametrize("propagate", ["false", "true"])
def test_every_roles_statements_resolve_to_plain_arns(propagate):
    ls = stacks(PropagateDeletes=propagate)
    roles = [ls.function_role(k) for k in HANDLERS] + [ls.task_role(), ls.execution_role()]
    for role in roles:
        assert role.statements, role.name
        for s in role.statements:
            assert _plain(dict(s.doc)), (role.name, s.source, s.doc)
            for resource in s.doc.get("Resource", []):
                assert resource == "*" or resource.startswith("arn:aws:"), (role.name, resource)
    task = ls.task_role()
    assert any("s3:GetObject" in s.doc["Action"] and "arn:aws:s3:::src-bucket/*" in s.doc["Resource"]
               for s in task.statements), "the lambda stack's policy on the task role is part of it"


def test_functions_get_their_template_environment_and_reserved_names_are_refused():
    ls = stacks()
    for key in HANDLERS:
        fn = ls.function(key)
        assert fn.handler == HANDLERS[key] and fn.environment
        assert all(isinstance(v, str) for v in fn.environment.values())
    assert ls.function("completion").environment[Env.DEST_BUCKET] == "dst-bucket"
    templates = local_templates(LocalOptions())
    bad = copy.deepcopy(templates)
    splitter = next(r for r in bad["lambda"]["Resources"].values()
                    if r["Type"] == "AWS::Lambda::Function" and r["Properties"]["Handler"] == HANDLERS["splitter"])
    splitter["Properties"]["Environment"]["Variables"]["AWS_REGION"] = "us-west-2"
    with pytest.raises(TemplateError, match="reserved"):
        LocalStacks(bad, {}, Where()).function("splitter")
    assert "AWS_REGION" in LAMBDA_RESERVED


# --- the Runtime reads its own environment only --------------------------------------------------------------------
def test_a_runtime_never_reads_the_processs_environment(monkeypatch):
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://from-the-shell:1")
    monkeypatch.setenv(Env.PART_SIZE_MIB, "99")
    keys = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    with pytest.raises(NoRegionError):  # item 2 of issue 12: no region in the environment, none borrowed
        Runtime(dict(keys)).client("sqs")
    rt = Runtime({**keys, "AWS_REGION": "eu-west-1"})
    sqs = rt.client("sqs")
    assert sqs.meta.region_name == "eu-west-1" and sqs.meta.endpoint_url == "https://sqs.eu-west-1.amazonaws.com"
    assert rt.settings.part_size == DEFAULT_PART_SIZE_MIB * 2**20  # the default, not the shell's 99
    local = Runtime({**keys, "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": "http://local:5"}).client("dynamodb")
    assert local.meta.endpoint_url == "http://local:5"


# --- s3sync local ---------------------------------------------------------------------------------------------------
def options(moto_server, name: str, **kw: Any) -> LocalOptions:
    base = dict(endpoint_url=moto_server.endpoint_url, name=name, until_idle=True, part_size_mib=5, worker_threads=2,
                min_tasks=1, max_tasks=1, visibility_timeout=20, alarm_period=0.5, timeout=60, idle_grace=0.3,
                source=BucketSpec(f"{name}-src"), dest=BucketSpec(f"{name}-dst", region="cn-north-1"))
    base.update(kw)
    return LocalOptions(**base)


@pytest.mark.system
def test_functions_run_with_exactly_their_template_environment(moto_server, monkeypatch, tmp_path):
    monkeypatch.setenv(Env.DEST_PREFIX, "from-the-shell/")  # the runner's shell reaches no function
    monkeypatch.setenv(Env.STUCK_AFTER_SECONDS, "1")
    runner = LocalRunner(options(moto_server, "iam-env", state_dir=tmp_path, stuck_after=45))
    summary = runner.run()
    assert summary.ok and summary.denied == []
    local_only = {"AWS_ENDPOINT_URL", Env.SOURCE_ENDPOINT_URL, Env.SOURCE_ACCESS_KEY_ID, Env.SOURCE_SECRET_ACCESS_KEY,
                  Env.LOCAL_PLAIN_HTTP}
    for key in HANDLERS:
        fn = runner.stacks.function(key)
        env = runner.runtimes[key].env
        assert set(env) == set(fn.environment) | set(LAMBDA_RESERVED) - {"_X_AMZN_TRACE_ID", "AWS_ACCESS_KEY",
                                                                         "AWS_LAMBDA_RUNTIME_API"} \
            | {"TZ", "LANG", "PATH", "LD_LIBRARY_PATH", "PYTHONPATH"} | local_only, key
        assert {k: env[k] for k in fn.environment} == dict(fn.environment), key
        assert env["AWS_LAMBDA_FUNCTION_NAME"] == fn.name and env["_HANDLER"] == HANDLERS[key]
        assert "from-the-shell/" not in env.values()
    assert runner.runtimes["scale_in"].settings.stuck_after == 45  # the options' value, through the template
    assert (tmp_path / "iam" / "task-role.json").exists()


def _without(templates: dict[str, Any], stack: str, role: str, action: str) -> dict[str, Any]:
    out = copy.deepcopy(templates)
    removed = 0
    for policy in out[stack]["Resources"][role]["Properties"]["Policies"]:
        for st in policy["PolicyDocument"]["Statement"]:
            if action in st["Action"]:
                st["Action"].remove(action)
                removed += 1
    assert removed, f"{role} has no {action}"
    return out


@pytest.mark.parametrize("stack, role, action, component", [
    ("lambda", "CompletionRole", "sns:Publish", "function completion"),
    ("ecs", "TaskRole", "sqs:DeleteMessage", "worker"),
    # the event source mapping polls the event queue with the splitter's role (issue 15)
    ("lambda", "SplitterRole", "sqs:ReceiveMessage", "splitter event source mapping"),
])
@pytest.mark.system
def test_a_role_without_one_action_fails_the_run_with_access_denied_naming_it(moto_server, tmp_path, stack, role,
                                                                             action, component):
    name = f"iam-no-{action.split(':')[1].lower()}"
    base = options(moto_server, name, state_dir=tmp_path)
    runner = LocalRunner(options(moto_server, name, state_dir=tmp_path,
                                 templates=_without(local_templates(base), stack, role, action)))
    started = time.monotonic()

    def upload(r: LocalRunner) -> None:
        if not r.source_s3.list_objects_v2(Bucket=r.options.source.name).get("KeyCount"):
            r.source_s3.put_object(Bucket=r.options.source.name, Key="k.bin", Body=os.urandom(6 * 2**20))

    summary = runner.run(on_tick=upload)
    assert not summary.ok
    assert time.monotonic() - started < 40  # the run stops at the refusal, not at its timeout
    assert summary.denied, "the refusal reached the runner"
    denial = summary.denied[0]
    assert (denial.component, denial.action) == (component, action)
    assert role in denial.role and denial.resource.startswith("arn:aws:")
    assert f"no identity-based policy allows the {action} action" in denial.line()
    if component == "worker":  # the worker's own log says so too, as AWS's error would
        logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("worker-*.log"))
        assert f"is not authorized to perform: {action}" in logs


def test_only_s3_for_the_source_bucket_may_send_to_the_event_queue():
    """S3 sending a notification (issue 15): the event queue's policy admits s3.amazonaws.com for the source bucket
    of this account only; another bucket, another account, another service is refused (an explicit deny)."""
    ls = stacks()
    statements = ls.resource_statements()
    queue = ls.lambda_.get_att("EventQueue", "Arn")
    bucket = f"arn:aws:s3:::{ls.lambda_.ref('SourceBucketName')}"
    send = Request("sqs:SendMessage", queue)
    assert service_decision("s3.amazonaws.com", send, statements, bucket, ACCOUNT).allowed
    assert not service_decision("s3.amazonaws.com", send, statements, "arn:aws:s3:::another-bucket", ACCOUNT).allowed
    assert not service_decision("s3.amazonaws.com", send, statements, bucket, "111122223333").allowed
    assert not service_decision("sns.amazonaws.com", send, statements, bucket, ACCOUNT).allowed


# --- resource policies that name who may (issue 18 items 1 and 2) -------------------------------------------------
def _with_broad_identity(role: Role) -> Role:
    """The role as if its identity policy allowed everything: only the resource policies can then say no."""
    return Role(role.name, role.arn, (*role.statements, Stmt("broad", {"Effect": "Allow", "Action": "*",
                                                                       "Resource": "*"})), role.session)


def test_only_the_copiers_read_the_china_keys_and_only_the_senders_send_parts():
    """The secret's resource policy and the queue policies, as `s3sync local` evaluates them for each role of
    the stacks, each given an identity policy that allows everything: GetSecretValue only for the worker task role
    and the splitter and completion roles; SendMessage (and so SendMessageBatch) only for the splitter, the sweeper
    (scale_in) and completion; an operator's role under /s3sync/<ECS stack>/operator/ may do both; any other role
    of the account, the ECS execution role included, neither. Only the splitter's role (Lambda sends its failed
    asynchronous invocations with it) may send to the splitter's dead-letter queue."""
    ls = stacks()
    where = Where(secrets={})
    secret = ls.ecs.ref("DestCredentials")
    queue = ls.ecs.get_att("TransferQueue", "Arn")
    dlq = ls.ecs.get_att("TransferDeadLetterQueue", "Arn")
    failures = ls.lambda_.get_att("SplitterDeadLetterQueue", "Arn")
    roles = {key: ls.function_role(key) for key in HANDLERS}
    roles["worker"], roles["execution"] = ls.task_role(), ls.execution_role()
    resource_policies = tuple(ls.resource_statements())
    for name, path in (("operator", "/s3sync/ecsStack/operator/"), ("admin", "/"), ("lookalike", "/s3sync/other/")):
        roles[name] = Role(name, f"arn:aws:iam::{ACCOUNT}:role{path}{name}", resource_policies)
    decisions = {}
    for name, role in roles.items():
        enforcer = Enforcer(name, _with_broad_identity(role), where, CallLedger())
        decisions[name] = (enforcer.allows("secretsmanager:GetSecretValue", secret),
                           enforcer.allows("sqs:SendMessage", queue), enforcer.allows("sqs:SendMessage", dlq),
                           enforcer.allows("sqs:SendMessage", failures))
    assert decisions == {  # secret, parts, parts' DLQ (SQS moves messages there), the splitter's failures
        "splitter": (True, True, True, True), "completion": (True, True, True, False),
        "scale_in": (False, True, True, False), "scale_out": (False, False, True, False),
        "worker": (True, False, True, False), "execution": (False, False, True, False),
        "operator": (True, True, True, False), "admin": (False, False, True, False),
        "lookalike": (False, False, True, False),
    }
    # the splitter's own role ARN is what the policies match: its IAM path names the ECS stack and the function
    assert roles["splitter"].arn == f"arn:aws:iam::{ACCOUNT}:role/s3sync/ecsStack/splitter/lamStackS-SplitterRole"


def test_a_service_request_is_judged_by_the_resource_policy_with_its_source_arn():
    """CloudWatch publishing an alarm's notification: the topic policy admits the service principal only for the
    stack's own alarm (aws:SourceArn, aws:SourceAccount); any other alarm, and any role, is refused even with an
    identity policy that allows sns:Publish."""
    ls = stacks()
    statements = ls.resource_statements()
    topic = ls.lambda_.ref("ScaleOutTopic")
    alarm = ls.lambda_.get_att("ScaleOutAlarm", "Arn")
    other_alarm = ls.lambda_.get_att("ScaleInAlarm", "Arn")
    assert alarm == f"arn:aws:cloudwatch:us-east-1:{ACCOUNT}:alarm:lamStackS-ScaleOutAlarm"
    publish = Request("sns:Publish", topic)
    assert service_decision("cloudwatch.amazonaws.com", publish, statements, alarm, ACCOUNT).allowed
    refused = service_decision("cloudwatch.amazonaws.com", publish, statements, other_alarm, ACCOUNT)
    assert not refused.allowed and "explicit deny" in refused.why
    assert not service_decision("cloudwatch.amazonaws.com", publish, statements, alarm, "111122223333").allowed
    assert not service_decision("events.amazonaws.com", publish, statements, alarm, ACCOUNT).allowed
    completion = Enforcer("completion", _with_broad_identity(ls.function_role("completion")), Where(), CallLedger())
    assert not completion.allows("sqs:SendMessage", ls.lambda_.get_att("EventQueue", "Arn"))  # no forged S3 event
    assert not completion.allows("sns:Publish", topic)
    assert completion.allows("sns:Publish", ls.lambda_.ref("CompletionTopic"))  # its own topic: no such policy
