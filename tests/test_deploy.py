"""`s3sync deploy` / `s3sync destroy` against moto's CloudFormation (its real HTTP server), plus the paths moto cannot
show (events arriving over time, failures, stacks in bad states, "no updates") against a small stand-in.

moto (5.2) has no CloudFormation model for AWS::SecretsManager::Secret: it skips the resource, drops the ECS stack's
output that refers to it, and the Lambda stack's import of that output then fails. The `moto_secrets` fixture
checks for that and, only if moto lacks it, gives moto's engine a model backed by moto's own Secrets Manager, for
the test's duration. The templates and the product code are used unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from botocore.exceptions import ClientError
from click.testing import CliRunner, Result

from s3sync import contract
from s3sync.cli import cli
from s3sync.contract import Env
from s3sync.deploy import EventTail, apply_stack, do_deploy
from s3sync.errors import UserError
from s3sync.stacks import StackConfig

KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
KEYS_ENV = {"S3SYNC_DEST_ACCESS_KEY_ID": KEY_ID, "S3SYNC_DEST_SECRET_ACCESS_KEY": SECRET}
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/s3sync:1"
# moto reports an SSM-typed parameter with its resolved value (AWS reports the path, and ResolvedValue apart), so an
# update could not tell a defaulted AmiId from a chosen one: give it explicitly in moto.
AMI_PARAM = "AmiId=/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id"
pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse:UserWarning")  # resource types moto's engine skips


# --- moto's CloudFormation and the secret -----------------------------------------------------------------------------
class _MotoSecret:
    """AWS::SecretsManager::Secret for moto's CloudFormation engine, stored in moto's Secrets Manager (tests only)."""

    def __init__(self, arn: str) -> None:
        self.arn = arn

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::SecretsManager::Secret"

    @staticmethod
    def cloudformation_name_type() -> str:
        return "Name"

    @staticmethod
    def _backend(account_id: str, region: str) -> Any:
        from moto.secretsmanager.models import secretsmanager_backends

        return secretsmanager_backends[account_id][region]

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **_):  # type: ignore[no-untyped-def]
        props = cloudformation_json.get("Properties", {})
        created = cls._backend(account_id, region_name).create_secret(
            name=props.get("Name", resource_name), secret_string=props.get("SecretString"), secret_binary=None,
            description=props.get("Description"), tags=[], kms_key_id=None, client_request_token=None,
            replica_regions=[], force_overwrite=False,
        )  # fmt: skip
        created = json.loads(created) if isinstance(created, str) else created
        return cls(created["ARN"])

    @classmethod
    def update_from_cloudformation_json(cls, original_resource, new_resource_name, cloudformation_json, account_id,
                                        region_name):  # type: ignore[no-untyped-def]  # fmt: skip
        secret = cloudformation_json.get("Properties", {}).get("SecretString")
        cls._backend(account_id, region_name).update_secret(secret_id=original_resource.arn, secret_string=secret)
        return original_resource

    @property
    def physical_resource_id(self) -> str:  # what Ref returns: the ARN, as for a real secret
        return self.arn

    def is_created(self) -> bool:
        return True

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return attr == "Id"

    def get_cfn_attribute(self, attr: str) -> str:
        return self.arn

    def delete(self, account_id: str, region_name: str) -> None:
        self._backend(account_id, region_name).delete_secret(
            secret_id=self.arn, recovery_window_in_days=None, force_delete_without_recovery=True
        )


@pytest.fixture
def moto_secrets(monkeypatch: pytest.MonkeyPatch) -> bool:
    """True when moto needed the stand-in (it does not model AWS::SecretsManager::Secret itself)."""
    from moto.cloudformation import parsing

    native = parsing.get_model_map
    if _MotoSecret.cloudformation_type() in native():
        return False
    monkeypatch.setattr(parsing, "get_model_map", lambda: {**native(), _MotoSecret.cloudformation_type(): _MotoSecret})
    return True


@pytest.fixture
def moto_change_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto (5.2) executes a change set with less than its create_stack / update_stack do: a stack made by a CREATE
    change set sees no other stack's exports (its ImportValue fails: "No export named ... found"), its own exports are
    never listed, and its outputs and parameters stay those it had before (none, for a new stack). For the test's
    duration, a change set is applied as update_stack applies a template (resources, then outputs and parameters),
    with the account's exports in view and registered afterwards, as create_stack does. The events, statuses and
    describe_change_set answers stay moto's own."""
    from moto.cloudformation.models import ChangeSet, CloudFormationBackend, Stack

    create, execute = CloudFormationBackend.create_change_set, CloudFormationBackend.execute_change_set

    def create_change_set(self: Any, *args: Any, **kwargs: Any) -> tuple[str, str]:
        change_set_id, stack_id = create(self, *args, **kwargs)
        stack = self.stacks[stack_id]
        stack.cross_stack_resources = stack.resource_map.cross_stack_resources = self.exports
        return change_set_id, stack_id

    def apply(self: Any) -> None:  # Stack.update without its events
        from moto.ssm.models import ssm_backends

        stack = self.stack
        stack.template = self.template
        stack._parse_template()
        resources = stack.resource_map
        for key, decl in (stack.template_dict.get("Parameters") or {}).items():
            # an SSM-typed parameter naming the same parameter, which now holds another value, is a change in AWS
            # (see has_parameters below); moto would not update the resources that refer to it
            if str(decl.get("Type", "")).startswith("AWS::SSM::Parameter::Value") and key in self.parameters:
                found = ssm_backends[stack.account_id][stack.region_name].get_parameter(self.parameters[key])
                if found is not None and found.value != resources.resolved_parameters.get(key):
                    resources.input_parameters = {**resources.input_parameters, key: None}
        resources.update(stack.template_dict, self.parameters)
        stack.output_map = stack._create_output_map()
        if self.parameters:
            stack.parameters = self.parameters

    def execute_change_set(self: Any, change_set_name: str, stack_name: str | None = None) -> None:
        execute(self, change_set_name, stack_name)
        stack = self.stacks[self.describe_change_set(change_set_name).stack_id]
        for export in stack.exports:
            self.exports[export.name] = export

    def has_parameters(self: Any, other: dict[str, Any]) -> bool:
        """AWS resolves an SSM-typed parameter on every update ("CloudFormation always fetches the latest values
        from Parameter Store when it updates stacks"): the same name with a new value is a change. moto compares
        names only."""
        from moto.ssm.models import ssm_backends

        if self.parameters != other:
            return False
        for key, decl in (self.template_dict.get("Parameters") or {}).items():
            if str(decl.get("Type", "")).startswith("AWS::SSM::Parameter::Value") and key in other:
                found = ssm_backends[self.account_id][self.region_name].get_parameter(other[key])
                if found is None or found.value != self.resource_map.resolved_parameters.get(key):
                    return False
        return True

    monkeypatch.setattr(CloudFormationBackend, "create_change_set", create_change_set)
    monkeypatch.setattr(CloudFormationBackend, "execute_change_set", execute_change_set)
    monkeypatch.setattr(ChangeSet, "apply", apply)
    monkeypatch.setattr(Stack, "has_parameters", has_parameters)


@pytest.fixture
def aws(fresh_moto: Any, boto_client: Any, moto_secrets: bool, moto_change_sets: None,
        tmp_path: Path) -> SimpleNamespace:  # fmt: skip
    """An empty moto with a VPC, a subnet and the code bucket; `args` deploys the whole system."""
    ec2 = boto_client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"]
    boto_client("s3").create_bucket(Bucket="code-bucket")
    common = ["--endpoint-url", fresh_moto.endpoint_url, "--region", "us-east-1", "--poll-seconds", "0.01"]
    deploy = ["deploy", "--bucket", "code-bucket", "--prefix", "s3sync/v1", "--out", str(tmp_path / "out"), *common]
    create = ["--image-uri", IMAGE, "--dest-bucket", "dest-bucket", "--vpc-id", vpc, "--subnet-id", subnet,
              "--source-bucket", "src-bucket", "--email", "ops@example.com", "--param", AMI_PARAM]  # fmt: skip
    return SimpleNamespace(client=boto_client, out=tmp_path / "out", deploy=deploy, create=create,
                           destroy=["destroy", *common])  # fmt: skip


def run(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
    return CliRunner(env=env).invoke(cli, list(args), input=input)


def ok(result: Result) -> str:
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    return result.output


def one_line_error(result: Result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("Error: ") and "Traceback" not in result.output, result.output
    return lines[-1]


def outputs(cf: Any, name: str) -> dict[str, str]:
    stack = cf.describe_stacks(StackName=name)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def function(lam: Any, name: str) -> dict[str, Any]:
    return lam.get_function(FunctionName=name)["Configuration"]


# --- the whole cycle in moto ------------------------------------------------------------------------------------------
@pytest.mark.system
def test_deploy_creates_updates_and_destroys_both_stacks(aws: SimpleNamespace,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    cf, client = aws.client("cloudformation"), aws.client

    # 1. create: ECS stack first, then the Lambda stack, events and outputs shown
    out = ok(run(*aws.deploy, *aws.create, env=KEYS_ENV))
    lines = out.splitlines()
    assert lines.index("ecsStack: CREATE_COMPLETE") < next(
        i for i, line in enumerate(lines) if line.startswith("lamStackS: change set for creating"))
    assert "  Add      TransferQueue                    AWS::SQS::Queue" in lines  # the change set, shown first
    assert any(line.endswith("ecsStack  ecsStack  AWS::CloudFormation::Stack  CREATE_IN_PROGRESS  User Initiated")
               for line in lines)
    assert "lamStackS: CREATE_COMPLETE" in lines
    assert "outputs of ecsStack:" in lines and "outputs of lamStackS:" in lines
    assert "DestAccessKeyId=****" in out
    for name in ("ecsStack", "lamStackS"):
        assert cf.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    ecs_out, lam_out = outputs(cf, "ecsStack"), outputs(cf, "lamStackS")
    assert f"  TransferQueueUrl = {ecs_out['TransferQueueUrl']}" in lines

    # the queue redrives to its dead-letter queue
    sqs = client("sqs")
    attrs = sqs.get_queue_attributes(QueueUrl=ecs_out["TransferQueueUrl"], AttributeNames=["All"])["Attributes"]
    redrive = json.loads(attrs["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == ecs_out["TransferDeadLetterQueueArn"]
    assert int(redrive["maxReceiveCount"]) == contract.DEFAULT_MAX_RECEIVE_COUNT
    assert int(attrs["VisibilityTimeout"]) == contract.DEFAULT_VISIBILITY_TIMEOUT
    # the tables have the contract's keys, and the transfers table its stream
    ddb = client("dynamodb")
    transfers = ddb.describe_table(TableName=ecs_out["TransfersTableName"])["Table"]
    parts = ddb.describe_table(TableName=ecs_out["PartsTableName"])["Table"]
    assert [(k["AttributeName"], k["KeyType"]) for k in transfers["KeySchema"]] == [
        (contract.TRANSFERS_HASH_KEY, "HASH")]
    assert [(k["AttributeName"], k["KeyType"]) for k in parts["KeySchema"]] == [
        (contract.PARTS_HASH_KEY, "HASH"), (contract.PARTS_RANGE_KEY, "RANGE"),
    ]  # fmt: skip
    assert transfers["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": contract.TRANSFERS_STREAM_VIEW}
    assert transfers["LatestStreamArn"] == ecs_out["TransfersTableStreamArn"]
    # the functions run the packaged code, with the contract's handlers and their environment
    manifest = json.loads((aws.out / "package.json").read_text())
    zip_bytes = (aws.out / manifest["lambda"]["zip"]).read_bytes()
    stored = client("s3").get_object(Bucket="code-bucket", Key=manifest["lambda"]["code_key"])["Body"].read()
    assert stored == zip_bytes
    lam = client("lambda")
    import base64
    import hashlib

    code_sha = base64.b64encode(hashlib.sha256(zip_bytes).digest()).decode()
    for key, logical in (("splitter", "Splitter"), ("scale_out", "ScaleOut"), ("scale_in", "ScaleIn"),
                         ("completion", "Completion")):  # fmt: skip
        fn = function(lam, lam_out[f"{logical}Name"])
        assert fn["Handler"] == contract.HANDLERS[key]
        assert fn["CodeSha256"] == code_sha, key
    splitter = function(lam, lam_out["SplitterName"])["Environment"]["Variables"]
    assert splitter[Env.QUEUE_URL] == ecs_out["TransferQueueUrl"]
    assert splitter[Env.TRANSFERS_TABLE] == ecs_out["TransfersTableName"]
    assert splitter[Env.PARTS_TABLE] == ecs_out["PartsTableName"]
    assert (splitter[Env.DEST_BUCKET], splitter[Env.DEST_REGION]) == ("dest-bucket", "cn-north-1")
    assert splitter[Env.DEST_PREFIX] == splitter[Env.DEST_ENDPOINT_URL] == ""
    assert splitter[Env.DEST_SECRET_ARN] == ecs_out["DestCredentialsArn"]
    scale_out = function(lam, lam_out["ScaleOutName"])["Environment"]["Variables"]
    assert (scale_out[Env.CLUSTER], str(scale_out[Env.MAX_TASKS])) == (ecs_out["ClusterName"], "10")
    completion = function(lam, lam_out["CompletionName"])["Environment"]["Variables"]
    assert completion[Env.COMPLETION_TOPIC_ARN] == lam_out["CompletionTopicArn"]
    # the NoEcho parameters reached the secret, and nothing else
    secret = client("secretsmanager").get_secret_value(SecretId=ecs_out["DestCredentialsArn"])["SecretString"]
    assert json.loads(secret) == {contract.SECRET_ACCESS_KEY_ID_FIELD: KEY_ID,
                                  contract.SECRET_SECRET_ACCESS_KEY_FIELD: SECRET}  # fmt: skip

    # 2. update without the keys: they keep their previous values; new values for MaxTasks and VisibilityTimeout
    # (moto's queue update applies VisibilityTimeout, not a new redrive policy)
    out2 = ok(run(*aws.deploy, "--param", "MaxTasks=20", "--param", "VisibilityTimeout=600", "--param", AMI_PARAM))
    assert "ecsStack: UPDATE_COMPLETE" in out2 and "lamStackS: UPDATE_COMPLETE" in out2
    assert "DestAccessKeyId=(previous)" in out2 and "SourceBucketName=(previous)" in out2
    assert "CREATE_IN_PROGRESS" not in out2  # the events of the first deploy are history
    ecs_out2 = outputs(cf, "ecsStack")
    scale_out = function(lam, outputs(cf, "lamStackS")["ScaleOutName"])["Environment"]["Variables"]
    assert str(scale_out[Env.MAX_TASKS]) == "20"
    attrs = sqs.get_queue_attributes(QueueUrl=ecs_out2["TransferQueueUrl"], AttributeNames=["VisibilityTimeout"])
    assert int(attrs["Attributes"]["VisibilityTimeout"]) == 600
    secret = client("secretsmanager").get_secret_value(SecretId=ecs_out2["DestCredentialsArn"])["SecretString"]
    assert json.loads(secret)[contract.SECRET_SECRET_ACCESS_KEY_FIELD] == SECRET

    # 3. destroy asks first; then deletes the Lambda stack, then the ECS stack; a second run finds nothing
    assert run(*aws.destroy, input="n\n").exit_code == 1
    assert cf.describe_stacks(StackName="lamStackS")["Stacks"][0]["StackStatus"] == "UPDATE_COMPLETE"
    out3 = ok(run(*aws.destroy, "--yes"))
    assert (out3.index("lamStackS: deleting") < out3.index("lamStackS: DELETE_COMPLETE")
            < out3.index("ecsStack: deleting"))
    statuses = {s["StackName"]: s["StackStatus"] for s in cf.list_stacks()["StackSummaries"]}
    assert statuses == {"lamStackS": "DELETE_COMPLETE", "ecsStack": "DELETE_COMPLETE"}
    assert "nothing to delete" in ok(run(*aws.destroy, "--yes"))

    # The China keys never appear in what was printed or logged.
    for text in (out, out2, out3, caplog.text):
        assert KEY_ID not in text and SECRET not in text


def parameter(cf: Any, stack: str, key: str) -> str:
    params = cf.describe_stacks(StackName=stack)["Stacks"][0]["Parameters"]
    return next(str(p["ParameterValue"]) for p in params if p["ParameterKey"] == key)


@pytest.mark.system
def test_destination_and_launch_type_change_later_through_change_sets(aws: SimpleNamespace) -> None:
    """Issue 12 items 5 and 9 (and 7 on an update): after both stacks exist, the destination bucket and the launch
    type each change with one `s3sync deploy`; a change set that removes or replaces resources waits for a yes;
    --no-execute changes nothing; an unchanged deploy is "no changes"; a size that stops fitting is refused before
    any stack changes. moto lets an import be changed where AWS refuses it: tests/test_templates.py proves on the
    templates that nothing lambda.yaml imports can change."""
    cf, lam, ssm = aws.client("cloudformation"), aws.client("lambda"), aws.client("ssm")
    ok(run(*aws.deploy, *aws.create, env=KEYS_ENV))
    assert parameter(cf, "ecsStack", "LaunchType") == "EC2"

    def env(logical: str) -> dict[str, str]:
        return function(lam, outputs(cf, "lamStackS")[f"{logical}Name"])["Environment"]["Variables"]

    # 1. another destination bucket: the ECS stack, its settings parameter and the functions all follow
    out = ok(run(*aws.deploy, "--dest-bucket", "other-bucket", "--param", AMI_PARAM))
    assert "ecsStack: UPDATE_COMPLETE" in out and "lamStackS: UPDATE_COMPLETE" in out
    settings = ssm.get_parameter(Name="/s3sync/ecsStack/settings")["Parameter"]["Value"].split("|")
    assert settings[1] == "other-bucket" and outputs(cf, "ecsStack")["DestBucket"] == "other-bucket"
    assert env("Splitter")[Env.DEST_BUCKET] == env("Completion")[Env.DEST_BUCKET] == "other-bucket"

    # 2. EC2 -> FARGATE with --no-execute: both change sets are shown, then deleted; nothing changes
    switch = [*aws.deploy, "--launch-type", "FARGATE", "--param", "TaskCpu=4096", "--param", "TaskMemory=8192",
              "--param", AMI_PARAM]  # fmt: skip
    shown = ok(run(*switch, "--no-execute"))
    assert "ecsStack: not executed (--no-execute); the change set was deleted" in shown
    # the Lambda stack's change set is made against the ECS stack as it is now: nothing to change there yet
    assert "lamStackS: no changes (stays UPDATE_COMPLETE)" in shown
    assert parameter(cf, "ecsStack", "LaunchType") == "EC2" and "outputs of" not in shown
    for stack in ("ecsStack", "lamStackS"):  # only the executed change sets are left
        assert {c["ExecutionStatus"] for c in cf.list_change_sets(StackName=stack)["Summaries"]} == {"EXECUTE_COMPLETE"}

    # 3. executed (--yes: in AWS this change set replaces the service and removes the instances' resources; moto's
    # change sets list neither, see the stand-in tests below): the functions scale the service the stack has now
    switched = ok(run(*switch, "--yes"))
    assert "ecsStack: UPDATE_COMPLETE" in switched
    # the Lambda stack changes when the service's name does (AWS replaces the service; moto updates it in place)
    assert "lamStackS: UPDATE_COMPLETE" in switched or "lamStackS: no changes" in switched
    assert parameter(cf, "ecsStack", "LaunchType") == "FARGATE"
    service = outputs(cf, "ecsStack")["ServiceName"]
    assert env("ScaleOut")[Env.SERVICE] == env("ScaleIn")[Env.SERVICE] == service
    assert ssm.get_parameter(Name="/s3sync/ecsStack/settings")["Parameter"]["Value"].startswith(f"{service}|")

    # 4. the same again: both change sets are empty, which is a success
    again = ok(run(*aws.deploy, "--param", AMI_PARAM))
    assert "ecsStack: no changes (stays UPDATE_COMPLETE)" in again and "lamStackS: no changes" in again

    # 5. back to EC2 keeps TaskCpu 4096 (chosen before), which a c5.large cannot hold: refused, nothing changed
    message = one_line_error(run(*aws.deploy, "--launch-type", "EC2", "--param", AMI_PARAM, "--yes"))
    assert "TaskCpu 4096 does not fit InstanceType c5.large" in message and "nothing was changed" in message
    assert parameter(cf, "ecsStack", "LaunchType") == "FARGATE"


@pytest.mark.filterwarnings("ignore:Unable to delete:UserWarning")  # conditional resources moto never created
@pytest.mark.system
def test_removing_resources_waits_for_a_yes(aws: SimpleNamespace, fresh_moto: Any) -> None:
    """A change set that removes resources (here: a library user renders lambda.yaml without the operations
    additions) runs only after a yes; declined, the stack and its change sets are as before."""
    ok(run(*aws.deploy, *aws.create, env=KEYS_ENV))
    cf = aws.client("cloudformation")
    kwargs = dict(bucket="code-bucket", prefix="s3sync/v1", region="us-east-1", endpoint_url=fresh_moto.endpoint_url,
                  parameters={"AmiId": AMI_PARAM.split("=", 1)[1]}, poll_s=0.01,
                  config=dataclasses.replace(StackConfig(), operations=False))  # fmt: skip
    asked: list[str] = []
    printed: list[str] = []
    with pytest.raises(UserError, match="stack lamStackS not changed: .*Dashboard \\(removed\\).* needs a yes"):
        do_deploy(aws.out, echo=printed.append, confirm=lambda q: asked.append(q) or False, **kwargs)
    assert len(asked) == 1 and "Dashboard (removed)" in asked[0] and "what these resources hold is lost" in asked[0]
    assert "  Remove   Dashboard                        AWS::CloudWatch::Dashboard  REMOVED" in printed
    resources = {r.get("LogicalResourceId")
                 for r in cf.list_stack_resources(StackName="lamStackS")["StackResourceSummaries"]}
    assert "Dashboard" in resources
    assert {c["ExecutionStatus"] for c in cf.list_change_sets(StackName="lamStackS")["Summaries"]} == {
        "EXECUTE_COMPLETE"}

    result = do_deploy(aws.out, echo=printed.append, confirm=lambda q: True, **kwargs)
    assert [o.action for o in result.stacks] == ["unchanged", "update"]
    resources = {r.get("LogicalResourceId")
                 for r in cf.list_stack_resources(StackName="lamStackS")["StackResourceSummaries"]}
    assert "Dashboard" not in resources


# --- user mistakes against moto ---------------------------------------------------------------------------------------
@pytest.mark.system
def test_a_missing_code_bucket_is_a_one_line_error(aws: SimpleNamespace) -> None:
    args = [a.replace("code-bucket", "no-such-bucket") for a in aws.deploy]
    assert "bucket no-such-bucket does not exist" in one_line_error(run(*args, *aws.create, env=KEYS_ENV))


def test_a_new_stack_names_every_missing_parameter(aws: SimpleNamespace) -> None:
    message = one_line_error(run(*aws.deploy, "--image-uri", IMAGE))
    assert message.startswith("Error: stack ecsStack (ecs.yaml) needs: ")
    for name, option in (("DestBucket", "--dest-bucket"), ("VpcId", "--vpc-id"), ("SubnetId", "--subnet-id"),
                         ("DestAccessKeyId", "S3SYNC_DEST_ACCESS_KEY_ID")):  # fmt: skip
        assert name in message and option in message
    assert "ImageUri" not in message
    assert aws.client("cloudformation").list_stacks()["StackSummaries"] == []  # nothing was created


def code_bucket_keys(aws: SimpleNamespace) -> list[str]:
    return [o["Key"] for o in aws.client("s3").list_objects_v2(Bucket="code-bucket").get("Contents", [])]


def test_every_bad_value_is_reported_before_anything_is_packaged_or_uploaded(aws: SimpleNamespace) -> None:
    """Issue 19 item 5: bad bucket names (all of them, not the first), an unknown parameter and the missing ones
    are found before the package is built or uploaded."""
    args = [*aws.deploy, "--image-uri", IMAGE, "--source-bucket", "My_Source", "--dest-bucket", "dest_bucket!",
            "--email", "ops@example.com"]  # fmt: skip
    message = one_line_error(run(*args, env=KEYS_ENV))
    for part in ("VpcId (--vpc-id)", "SubnetId (--subnet-id)", "SourceBucketName of lambda.yaml: 'My_Source'",
                 "DestBucket of ecs.yaml: 'dest_bucket!'", "nothing was packaged, uploaded or changed"):
        assert part in message, message
    unknown = one_line_error(run(*aws.deploy, *aws.create, "--param", "NoSuch=1", "--param", "Other=2", env=KEYS_ENV))
    assert "unknown parameters 'NoSuch', 'Other'" in unknown
    assert not (aws.out / "package.json").exists() and code_bucket_keys(aws) == []
    assert aws.client("cloudformation").list_stacks()["StackSummaries"] == []


def test_ssh_open_to_the_whole_internet_is_refused_before_anything_is_packaged(aws: SimpleNamespace) -> None:
    """Issue 18 item 2: ecs.yaml's rule (SshCidr 0.0.0.0/0 only with SshFromAnywhere=true), checked by deploy first."""
    message = one_line_error(run(*aws.deploy, *aws.create, "--param", "SshCidr=0.0.0.0/0", env=KEYS_ENV))
    assert "SshCidr 0.0.0.0/0 opens SSH to the whole internet" in message
    assert "nothing was packaged, uploaded or changed" in message
    assert not (aws.out / "package.json").exists() and code_bucket_keys(aws) == []
    assert aws.client("cloudformation").list_stacks()["StackSummaries"] == []


def test_deploy_and_destroy_follow_aws_region_and_say_which_region(aws: SimpleNamespace) -> None:
    """Issue 19 item 3: AWS_REGION alone (boto3's session reads only AWS_DEFAULT_REGION and the profile)."""
    env = {"AWS_DEFAULT_REGION": None, "AWS_REGION": "us-east-1"}  # type: ignore[dict-item]
    without_region = [a for a in aws.deploy if a not in ("--region", "us-east-1")]
    result = run(*without_region, "--image-uri", IMAGE, env={**env, **KEYS_ENV})
    assert "region us-east-1 (from AWS_REGION)" in result.output
    assert "needs: " in one_line_error(result) and "no AWS region" not in result.output
    destroy = [a for a in aws.destroy if a not in ("--region", "us-east-1")]
    out = ok(run(*destroy, "--yes", env=env))
    assert out.splitlines()[0] == "region us-east-1 (from AWS_REGION)" and "nothing to delete" in out
    assert "region us-east-1 (from --region)" in ok(run(*aws.destroy, "--yes"))


@pytest.mark.system
def test_destroy_asks_only_about_stacks_that_exist(aws: SimpleNamespace) -> None:
    """Issue 19 item 5: nothing to delete needs no question; a no deletes nothing."""
    result = run(*aws.destroy)  # no --yes, no input: it would have been asked, and aborted
    assert "nothing to delete" in ok(result) and "Delete the stack" not in result.output
    ok(run(*aws.deploy, *aws.create, env=KEYS_ENV))
    declined = run(*aws.destroy, input="n\n")
    assert "Delete the stacks lamStackS and ecsStack in us-east-1? [y/N]" in declined.output
    assert "nothing was deleted" in one_line_error(declined)
    statuses = {s["StackName"]: s["StackStatus"] for s in aws.client("cloudformation").list_stacks()["StackSummaries"]}
    assert statuses == {"ecsStack": "CREATE_COMPLETE", "lamStackS": "CREATE_COMPLETE"}


class Recorder:
    """Real boto3 clients against moto, each call's parameters recorded by a botocore hook (what the code sent)."""

    def __init__(self, endpoint_url: str) -> None:
        from tests.conftest import make_client

        self.endpoint_url = endpoint_url
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.cache: dict[str, Any] = {}
        self.before: dict[str, Any] = {}  # "Service.Operation" -> fn(params), run before the call is sent
        self.make_client = make_client

    def __call__(self, service: str) -> Any:
        if service not in self.cache:
            client = self.make_client(service, self.endpoint_url)
            client.meta.events.register("provide-client-params", self._record)
            self.cache[service] = client
        return self.cache[service]

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        name = f"{model.service_model.service_name}.{model.name}"
        self.calls.append((model.service_model.service_name, model.name, dict(params)))
        if name in self.before:
            self.before[name](params)


@pytest.mark.system
def test_code_bucket_owner_is_checked_code_pinned_by_version_and_templates_inline(
    aws: SimpleNamespace, fresh_moto: Any
) -> None:
    """Issue 18 item 5: every S3 call to the code bucket names the deployer's account (STS) as ExpectedBucketOwner;
    the functions' zip is pinned by its S3 version (CodeVersion) in a versioned bucket; both templates go inline
    (TemplateBody), so CloudFormation reads nothing back from the bucket."""
    s3 = aws.client("s3")
    s3.put_bucket_versioning(Bucket="code-bucket", VersioningConfiguration={"Status": "Enabled"})
    rec = Recorder(fresh_moto.endpoint_url)
    params = {"DestBucket": "dest-bucket", "VpcId": aws.create[aws.create.index("--vpc-id") + 1],
              "SubnetId": aws.create[aws.create.index("--subnet-id") + 1], "SourceBucketName": "src-bucket",
              "Email": "ops@example.com", "AmiId": AMI_PARAM.split("=", 1)[1]}  # fmt: skip
    printed: list[str] = []
    result = do_deploy(aws.out, bucket="code-bucket", prefix="s3sync/v1", region="us-east-1", parameters=params,
                       image_uri=IMAGE, dest_access_key_id=KEY_ID, dest_secret_access_key=SECRET, poll_s=0.01,
                       echo=printed.append, clients=rec)  # fmt: skip
    account = aws.client("sts").get_caller_identity()["Account"]
    to_bucket = [(op, p) for service, op, p in rec.calls if service == "s3" and p.get("Bucket") == "code-bucket"]
    assert {op for op, _ in to_bucket} == {"GetBucketLocation", "PutObject"} and len(to_bucket) == 4
    assert all(p.get("ExpectedBucketOwner") == account for _, p in to_bucket), to_bucket
    change_sets = [p for service, op, p in rec.calls if op == "CreateChangeSet"]
    assert len(change_sets) == 2 and all("TemplateBody" in p and "TemplateURL" not in p for p in change_sets)
    version = s3.head_object(Bucket="code-bucket", Key=result.package.code_key)["VersionId"]
    assert result.package.upload is not None and result.package.upload.code_version == version
    queries = {link.template: parse_qs(urlsplit(link.url).fragment.partition("?")[2])
               for link in result.package.upload.links}  # fmt: skip
    assert queries["lambda.yaml"]["param_CodeVersion"] == [version]  # the quick-create link launches this zip too
    assert "param_CodeVersion" not in queries["ecs.yaml"]
    lam_params = {p["ParameterKey"]: p["ParameterValue"] for p in change_sets[1]["Parameters"]}
    assert lam_params["CodeVersion"] == version and lam_params["CodeKey"] == result.package.code_key
    assert parameter(aws.client("cloudformation"), "lamStackS", "CodeVersion") == version
    assert any(f"version {version}" in line and f"account {account}" in line for line in printed)


@pytest.mark.system
def test_a_zip_replaced_in_an_unversioned_bucket_fails_the_deploy(aws: SimpleNamespace, fresh_moto: Any) -> None:
    """Issue 18 item 5, the hash check: in an unversioned bucket, another writer replaces the zip between the upload
    and Lambda's read; the functions' CodeSha256 is not the uploaded zip's, and deploy fails saying so."""
    rec = Recorder(fresh_moto.endpoint_url)
    replaced: list[str] = []

    def swap(params: dict[str, Any]) -> None:
        if params["StackName"] == "lamStackS" and not replaced:
            key = next(k for k in code_bucket_keys(aws) if k.endswith(".zip"))
            aws.client("s3").put_object(Bucket="code-bucket", Key=key, Body=b"PK\x05\x06" + b"\0" * 18)
            replaced.append(key)

    rec.before["cloudformation.CreateChangeSet"] = swap
    params = {"DestBucket": "dest-bucket", "VpcId": aws.create[aws.create.index("--vpc-id") + 1],
              "SubnetId": aws.create[aws.create.index("--subnet-id") + 1], "SourceBucketName": "src-bucket",
              "Email": "ops@example.com", "AmiId": AMI_PARAM.split("=", 1)[1]}  # fmt: skip
    printed: list[str] = []
    with pytest.raises(UserError) as info:
        do_deploy(aws.out, bucket="code-bucket", region="us-east-1", parameters=params, image_uri=IMAGE,
                  dest_access_key_id=KEY_ID, dest_secret_access_key=SECRET, poll_s=0.01, echo=printed.append,
                  clients=rec)  # fmt: skip
    assert replaced and "the functions do not run the zip that was uploaded" in str(info.value)
    assert "Splitter" in str(info.value) and "\n" not in str(info.value)
    assert any("not versioned" in line for line in printed)


@pytest.mark.system
def test_the_secret_key_is_asked_without_echo(fake_aws: SimpleNamespace, tmp_path: Path) -> None:
    """Issue 18 item 6: with only the key id given, the secret is asked for, without echo."""
    base = ["deploy", "--bucket", "code-bucket", "--out", str(tmp_path), *CREATE, "--no-execute"]
    asked = run(*base, env={"S3SYNC_DEST_ACCESS_KEY_ID": KEY_ID}, input=f"{SECRET}\n")
    assert asked.exit_code == 0, asked.output
    assert "China secret access key: " in asked.output and SECRET not in asked.output
    assert "DestSecretAccessKey=****" in asked.output and "warning" not in asked.output


@pytest.mark.system
def test_a_secret_on_the_command_line_is_warned_about(fake_aws: SimpleNamespace, tmp_path: Path) -> None:
    """Issue 18 item 6: given on the command line, the secret works but is warned about (ps, shell history)."""
    base = ["deploy", "--bucket", "code-bucket", "--out", str(tmp_path), *CREATE, "--no-execute"]
    given = run(*base, "--dest-access-key-id", KEY_ID, "--dest-secret-access-key", SECRET)
    assert given.exit_code == 0, given.output
    assert "warning: --dest-secret-access-key on the command line is visible" in given.stderr
    assert "S3SYNC_DEST_SECRET_ACCESS_KEY" in given.stderr and SECRET not in given.output


@pytest.mark.parametrize(("key_id", "secret", "message"), [
    ("AKIAX", SECRET, "DestAccessKeyId: the value given has 5 character(s); an AWS access key id has 20"),
    (KEY_ID, "s", "DestSecretAccessKey: the value given has 1 character(s); an AWS secret access key has 40"),
    ("akia-not-a-key-id-0000", SECRET, "DestAccessKeyId: the value given is not upper-case letters and digits"),
])  # fmt: skip
def test_implausible_keys_are_refused_for_the_right_reason(fake_aws: SimpleNamespace, tmp_path: Path, key_id: str,
                                                           secret: str, message: str) -> None:  # fmt: skip
    """Issue 19 item 6: a key of the wrong length is refused for its length, before anything happens."""
    env = {"S3SYNC_DEST_ACCESS_KEY_ID": key_id, "S3SYNC_DEST_SECRET_ACCESS_KEY": secret}
    result = run("deploy", "--bucket", "code-bucket", "--out", str(tmp_path), *CREATE, env=env)
    assert message in one_line_error(result)
    assert not fake_aws.cf.calls and not fake_aws.uploads


def test_masking_replaces_only_whole_values_of_a_secret() -> None:
    """Issue 19 item 6: a secret inside another word is not masked (which garbled the text and showed where it
    occurs); the value itself is, wherever it stands alone."""
    from s3sync.aws import redact

    assert redact("uploading to s3://code-bucket/ DestAccessKeyId=s", ("s",)) == \
        "uploading to s3://code-bucket/ DestAccessKeyId=****"  # fmt: skip
    assert redact(f"bad key {KEY_ID}: '{SECRET}'", (KEY_ID, SECRET)) == "bad key ****: '****'"
    assert redact(f"x{KEY_ID}", (KEY_ID,)) == f"x{KEY_ID}"


# --- user mistakes, against the stand-in below (they never reach a stack) ---------------------------------------------
@pytest.fixture
def fake_aws(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """Clients that answer like an account with the code bucket and no stacks; records what was uploaded."""
    cf = FakeCloudFormation()
    uploads: list[str] = []
    s3 = SimpleNamespace(get_bucket_location=lambda Bucket, **kw: {"LocationConstraint": None},  # noqa: N803
                         get_caller_identity=lambda: {"Account": "123456789012"},
                         put_object=lambda **kw: uploads.append(kw["Key"]))  # fmt: skip
    monkeypatch.setattr("s3sync.deploy.client_factory", lambda *a: lambda s: cf if s == "cloudformation" else s3)
    return SimpleNamespace(cf=cf, uploads=uploads)


#: The calls that change (or prepare to change) a stack.
CHANGING = {"create_change_set", "execute_change_set", "create_stack", "update_stack"}
CREATE = ["--image-uri", IMAGE, "--dest-bucket", "dest-bucket", "--vpc-id", "vpc-1", "--subnet-id", "subnet-1",
          "--source-bucket", "src-bucket", "--email", "ops@example.com"]  # fmt: skip


def test_a_bad_key_is_refused_without_being_repeated(fake_aws: SimpleNamespace, tmp_path: Path) -> None:
    env = {**KEYS_ENV, "S3SYNC_DEST_ACCESS_KEY_ID": "akia-not-a-key-id-0000"}
    result = run("deploy", "--bucket", "code-bucket", "--out", str(tmp_path), *CREATE, env=env)
    message = one_line_error(result)
    assert "DestAccessKeyId" in message and "upper-case letters and digits" in message
    assert "akia-not-a-key-id-0000" not in result.output and SECRET not in result.output
    assert not CHANGING & set(fake_aws.cf.calls)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--param", f"DestSecretAccessKey={SECRET}"], {}, "NoEcho parameter"),
        (["--param", "ecs.DestAccessKeyId=AKIAIOSFODNN7EXAMPLE"], {}, "NoEcho parameter"),
        ([], {"S3SYNC_DEST_ACCESS_KEY_ID": KEY_ID}, "no China secret access key given"),  # asked; no answer
        (["--param", "NoSuchParameter=1"], KEYS_ENV, "unknown parameter 'NoSuchParameter'"),
        (["--param", "web.MaxTasks=1"], KEYS_ENV, "the stack prefix is one of ecs, lambda"),
        (["--param", "MaxTasks=many"], KEYS_ENV, "not a number"),
        (["--param", "MinTasks=-1"], KEYS_ENV, "below the minimum 0"),
        (["--email", "nobody"], KEYS_ENV, "is not an email address"),
        (["--lambda-stack-name", "ecsStack"], KEYS_ENV, "different names"),
        (["--region", "us-gov-west-1"], KEYS_ENV, "GovCloud region"),
        (["--param", "CodeKey=other.zip"], KEYS_ENV, "CodeKey comes from the package"),
        (["--param", "EcsStackName=other"], KEYS_ENV, "EcsStackName comes from --ecs-stack"),
        # sizes AWS would refuse (ecs.yaml's Rules say the same), and part buffers larger than the task
        (["--launch-type", "FARGATE", "--param", "TaskCpu=256", "--param", "TaskMemory=4096"], KEYS_ENV,
         "on FARGATE, TaskCpu 256 takes TaskMemory 512, 1024 or 2048 MiB, not 4096"),
        (["--param", "TaskMemory=8192"], KEYS_ENV, "TaskMemory 8192 MiB does not fit InstanceType c5.large"),
        (["--param", "WorkerThreads=32", "--param", "PartSizeMiB=64"], KEYS_ENV,
         "WorkerThreads 32 x PartSizeMiB 64 needs 2816 MiB of TaskMemory"),
    ],
)
def test_deploy_option_mistakes_are_one_line_errors(
    fake_aws: SimpleNamespace, tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    result = run("deploy", "--bucket", "code-bucket", "--out", str(tmp_path), *CREATE, *args, env=env)
    assert message in one_line_error(result)
    assert SECRET not in result.output and KEY_ID not in result.output
    assert not CHANGING & set(fake_aws.cf.calls)


# --- what moto cannot show: a stand-in for the CloudFormation API -----------------------------------------------------
class FakeCloudFormation:
    """One stack (whatever name is asked for). Each describe_stacks by stack id, while the stack is in progress,
    plays the next `steps` entry (logical id, status[, reason]) as an event."""

    meta = SimpleNamespace(region_name="us-east-1")

    def __init__(self, name: str = "ecsStack", status: str | None = None, steps: list[tuple] | None = None,
                 no_updates: bool = False, changes: list[dict[str, Any]] | None = None) -> None:  # fmt: skip
        self.name, self.status, self.steps, self.no_updates = name, status, list(steps or []), no_updates
        self.changes = changes or [{"Type": "Resource", "ResourceChange": {
            "Action": "Add", "LogicalResourceId": "TransferQueue", "ResourceType": "AWS::SQS::Queue"}}]
        self.change_set_type = ""
        self.stack_id = f"arn:aws:cloudformation:us-east-1:123456789012:stack/{name}/1"
        self.events: list[dict[str, Any]] = []
        self.calls: list[str] = []
        self.clock = datetime(2025, 1, 1, tzinfo=timezone.utc)
        if status:
            self._event(name, status)  # history of an earlier operation

    def _event(self, logical: str, status: str, reason: str | None = None) -> None:
        self.clock += timedelta(seconds=1)
        event = {"EventId": f"e{len(self.events)}", "StackName": self.name, "LogicalResourceId": logical,
                 "ResourceType": "AWS::CloudFormation::Stack" if logical == self.name else "AWS::SQS::Queue",
                 "ResourceStatus": status, "Timestamp": self.clock}  # fmt: skip
        if reason:
            event["ResourceStatusReason"] = reason
        self.events.insert(0, event)  # newest first, as the API returns them
        if logical == self.name:
            self.status = status

    def describe_stacks(self, StackName: str) -> dict[str, Any]:  # noqa: N803
        self.calls.append("describe_stacks")
        by_id = StackName == self.stack_id
        if self.status is None or (self.status == "DELETE_COMPLETE" and not by_id):  # a deleted stack has only its id
            raise ClientError({"Error": {"Code": "ValidationError", "Message": f"Stack with id {StackName} does not "
                                         "exist"}}, "DescribeStacks")  # fmt: skip
        if by_id and self.steps and self.status.endswith("_IN_PROGRESS"):  # waiting: the operation moves on
            self._event(*self.steps.pop(0))
        return {"Stacks": [{"StackName": self.name, "StackId": self.stack_id, "StackStatus": self.status,
                            "Parameters": [],
                            "Outputs": [{"OutputKey": "QueueUrl", "OutputValue": "https://q"}]}]}

    def describe_stack_events(self, StackName: str, NextToken: str | None = None) -> dict[str, Any]:  # noqa: N803
        return {"StackEvents": list(self.events)}

    def get_template(self, StackName: str) -> dict[str, Any]:  # noqa: N803
        return {"TemplateBody": "Parameters: {}\n"}

    def describe_stack_resources(self, StackName: str) -> dict[str, Any]:  # noqa: N803
        return {"StackResources": []}  # no functions: nothing for the code check to read

    def create_change_set(self, **kwargs: Any) -> dict[str, str]:
        self.calls.append("create_change_set")
        self.change_set_type = kwargs["ChangeSetType"]
        if self.change_set_type == "CREATE":  # the stack exists from now on, empty
            self._event(self.name, "REVIEW_IN_PROGRESS", "User Initiated")
        return {"Id": f"arn:aws:cloudformation:us-east-1:123456789012:changeSet/{kwargs['ChangeSetName']}/1",
                "StackId": self.stack_id}  # fmt: skip

    def describe_change_set(self, ChangeSetName: str, NextToken: str | None = None) -> dict[str, Any]:  # noqa: N803
        if self.no_updates:
            return {"Status": "FAILED", "Changes": [], "StatusReason": "The submitted information didn't contain "
                    "changes. Submit different information to create a change set."}  # fmt: skip
        return {"Status": "CREATE_COMPLETE", "Changes": self.changes}

    def execute_change_set(self, ChangeSetName: str) -> None:  # noqa: N803
        self.calls.append("execute_change_set")
        self._event(self.name, f"{self.change_set_type}_IN_PROGRESS", "User Initiated")

    def delete_change_set(self, ChangeSetName: str) -> None:  # noqa: N803
        self.calls.append("delete_change_set")

    def delete_stack(self, **kwargs: Any) -> None:
        self.calls.append("delete_stack")
        self._event(self.name, "DELETE_IN_PROGRESS", "User Initiated")


def _apply(cf: FakeCloudFormation, echo: Any) -> Any:
    state = cf.describe_stacks(StackName=cf.name)["Stacks"][0] if cf.status else None
    return apply_stack(cf, cf.name, state, "https://b.s3.us-east-1.amazonaws.com/ecs.yaml", [], ["CAPABILITY_IAM"],
                       echo, (SECRET,), 0.0, 5.0)  # fmt: skip


def test_events_are_printed_as_they_come_once_each_oldest_first() -> None:
    cf = FakeCloudFormation(steps=[
        ("TransferDeadLetterQueue", "CREATE_IN_PROGRESS"),
        ("TransferDeadLetterQueue", "CREATE_COMPLETE"),
        ("TransferQueue", "CREATE_IN_PROGRESS", "Resource creation Initiated"),
        ("TransferQueue", "CREATE_COMPLETE"),
        ("ecsStack", "CREATE_COMPLETE"),
    ])  # fmt: skip
    printed: list[tuple[str, str]] = []
    outcome = _apply(cf, lambda line: printed.append((line, cf.status)))
    events = [line for line, _ in printed if line[:2].isdigit()]
    assert [e.split("  ", 2)[2] for e in events] == [
        "ecsStack  AWS::CloudFormation::Stack  CREATE_IN_PROGRESS  User Initiated",
        "TransferDeadLetterQueue  AWS::SQS::Queue  CREATE_IN_PROGRESS",
        "TransferDeadLetterQueue  AWS::SQS::Queue  CREATE_COMPLETE",
        "TransferQueue  AWS::SQS::Queue  CREATE_IN_PROGRESS  Resource creation Initiated",
        "TransferQueue  AWS::SQS::Queue  CREATE_COMPLETE",
        "ecsStack  AWS::CloudFormation::Stack  CREATE_COMPLETE",
    ]
    # The resource events were printed while the stack was still being created, not at the end.
    assert [status for line, status in printed if "TransferDeadLetterQueue" in line] == ["CREATE_IN_PROGRESS"] * 2
    assert events[0].startswith("00:00:02  ecsStack  ")  # the change set's REVIEW_IN_PROGRESS is not printed
    assert (outcome.action, outcome.status, dict(outcome.outputs)) == ("create", "CREATE_COMPLETE",
                                                                       {"QueueUrl": "https://q"})  # fmt: skip


def test_no_updates_is_a_success() -> None:
    cf = FakeCloudFormation(status="UPDATE_COMPLETE", no_updates=True)
    printed: list[str] = []
    outcome = _apply(cf, printed.append)
    assert (outcome.action, outcome.status) == ("unchanged", "UPDATE_COMPLETE")
    assert printed[-1] == "ecsStack: no changes (stays UPDATE_COMPLETE)"
    assert "UPDATE_COMPLETE" not in " ".join(printed[:-1])  # the earlier operation's events are not replayed


def test_a_failed_operation_is_a_one_line_error_with_its_first_reason() -> None:
    cf = FakeCloudFormation(steps=[
        ("TransferQueue", "CREATE_FAILED", f"Resource handler returned message: denied for {SECRET}"),
        ("TransfersTable", "CREATE_FAILED", "Resource creation cancelled"),
        ("ecsStack", "ROLLBACK_IN_PROGRESS", "The following resource(s) failed to create: [TransferQueue]."),
        ("ecsStack", "ROLLBACK_COMPLETE"),
    ])  # fmt: skip
    printed: list[str] = []
    with pytest.raises(UserError) as info:
        _apply(cf, printed.append)
    assert str(info.value).startswith("stack ecsStack: create ended in ROLLBACK_COMPLETE: TransferQueue: Resource")
    assert "\n" not in str(info.value)


@pytest.mark.system
def test_deploy_masks_the_keys_in_everything_it_prints_or_raises(tmp_path: Path) -> None:
    """Even a message from AWS that quotes a key comes out masked."""
    cf = FakeCloudFormation(steps=[("DestCredentials", "CREATE_FAILED", f"bad key {KEY_ID}"),
                                   ("ecsStack", "ROLLBACK_COMPLETE")])  # fmt: skip
    s3 = SimpleNamespace(get_bucket_location=lambda Bucket, **kw: {"LocationConstraint": None},  # noqa: N803
                         get_caller_identity=lambda: {"Account": "123456789012"},
                         put_object=lambda **kw: None)  # fmt: skip
    printed: list[str] = []
    params = {"DestBucket": "dest-bucket", "VpcId": "vpc-1", "SubnetId": "subnet-1", "SourceBucketName": "src-b",
              "Email": "ops@example.com"}  # fmt: skip
    with pytest.raises(UserError) as info:
        do_deploy(tmp_path, bucket="code-bucket", parameters=params, image_uri=IMAGE, dest_access_key_id=KEY_ID,
                  dest_secret_access_key=SECRET, echo=printed.append, poll_s=0.0,
                  clients=lambda service: cf if service == "cloudformation" else s3)  # fmt: skip
    assert "bad key ****" in str(info.value) and "bad key ****" in "\n".join(printed)
    assert not any(KEY_ID in line or SECRET in line for line in [*printed, str(info.value)])


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ("ROLLBACK_COMPLETE",
         "is ROLLBACK_COMPLETE: its creation failed and it cannot be updated; run `s3sync destroy`"),
        ("UPDATE_IN_PROGRESS", "is busy (UPDATE_IN_PROGRESS)"),
        ("UPDATE_ROLLBACK_FAILED", "is UPDATE_ROLLBACK_FAILED and cannot be updated"),
        ("DELETE_FAILED", "is DELETE_FAILED and cannot be updated"),
    ],
)
def test_a_stack_in_a_bad_state_is_a_one_line_error_before_anything_is_uploaded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, status: str, message: str
) -> None:
    cf = FakeCloudFormation(status=status)
    s3 = SimpleNamespace(get_bucket_location=pytest.fail, put_object=pytest.fail)
    monkeypatch.setattr("s3sync.deploy.client_factory", lambda *a: lambda s: cf if s == "cloudformation" else s3)
    result = run("deploy", "--bucket", "code-bucket", "--out", str(tmp_path), env=KEYS_ENV)
    assert f"Error: stack ecsStack {message}" in one_line_error(result)
    assert not CHANGING & set(cf.calls)
    assert not (tmp_path / "package.json").exists()


def test_destroy_refuses_a_busy_stack_and_waits_for_one_being_deleted(monkeypatch: pytest.MonkeyPatch) -> None:
    busy = FakeCloudFormation(name="lamStackS", status="UPDATE_IN_PROGRESS")
    monkeypatch.setattr("s3sync.deploy.client_factory", lambda *a: lambda s: busy)
    assert "lamStackS is busy (UPDATE_IN_PROGRESS)" in one_line_error(run("destroy", "--yes"))
    deleting = FakeCloudFormation(name="lamStackS", status="DELETE_IN_PROGRESS",
                                  steps=[("lamStackS", "DELETE_COMPLETE")])  # fmt: skip
    monkeypatch.setattr("s3sync.deploy.client_factory", lambda *a: lambda s: deleting)
    result = run("destroy", "--yes", "--ecs-stack-name", "otherStack", "--poll-seconds", "0.01")
    out = ok(result)
    assert "delete_stack" not in deleting.calls and "lamStackS: DELETE_COMPLETE" in out


def test_tail_prints_nothing_of_the_history_of_an_existing_stack() -> None:
    cf = FakeCloudFormation(status="UPDATE_COMPLETE")
    printed: list[str] = []
    tail = EventTail(cf, cf.stack_id, printed.append)
    tail.poll()
    assert printed == []
    cf._event("TransferQueue", "UPDATE_COMPLETE")
    tail.poll()
    tail.poll()
    assert len(printed) == 1 and "TransferQueue" in printed[0]


# --- change sets: what moto's cannot show (replacements), against the stand-in ----------------------------------------
RISKY = [
    {"Type": "Resource", "ResourceChange": {
        "Action": "Modify", "LogicalResourceId": "Service", "ResourceType": "AWS::ECS::Service", "Replacement": "True",
        "Details": [{"Target": {"Attribute": "Properties", "Name": "LaunchType", "RequiresRecreation": "Always"}},
                    {"Target": {"Attribute": "Properties", "Name": "DesiredCount", "RequiresRecreation": "Never"}}]}},
    {"Type": "Resource", "ResourceChange": {
        "Action": "Remove", "LogicalResourceId": "CapacityProvider", "ResourceType": "AWS::ECS::CapacityProvider"}},
    {"Type": "Resource", "ResourceChange": {
        "Action": "Modify", "LogicalResourceId": "TaskDefinition", "ResourceType": "AWS::ECS::TaskDefinition",
        "Replacement": "Conditional"}},
    {"Type": "Resource", "ResourceChange": {
        "Action": "Modify", "LogicalResourceId": "TransferQueue", "ResourceType": "AWS::SQS::Queue",
        "Replacement": "False"}},
]  # fmt: skip


def test_change_set_lines_say_what_is_replaced_and_why() -> None:
    cf = FakeCloudFormation(status="UPDATE_COMPLETE", changes=RISKY, steps=[("ecsStack", "UPDATE_COMPLETE")])
    printed: list[str] = []
    outcome = apply_stack(cf, "ecsStack", cf.describe_stacks(StackName="ecsStack")["Stacks"][0], "https://t", [], [],
                          printed.append, (), 0.0, 5.0, yes=True)  # fmt: skip
    assert outcome.action == "update" and "execute_change_set" in cf.calls
    lines = [line for line in printed if line.startswith("  ")]
    assert lines == [
        "  Modify   Service                          AWS::ECS::Service  REPLACED (LaunchType)",
        "  Remove   CapacityProvider                 AWS::ECS::CapacityProvider  REMOVED",
        "  Modify   TaskDefinition                   AWS::ECS::TaskDefinition  MAY BE REPLACED",
        "  Modify   TransferQueue                    AWS::SQS::Queue",
    ]


@pytest.mark.parametrize(("answer", "executed"), [("n\n", False), ("", False), ("y\ny\n", True)])
@pytest.mark.system
def test_the_cli_asks_before_a_replacement_or_removal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, answer: str, executed: bool
) -> None:
    """No answer (end of input) is a no; a declined change set is deleted and nothing runs."""
    cf = FakeCloudFormation(status="UPDATE_COMPLETE", changes=RISKY, steps=[("ecsStack", "UPDATE_COMPLETE")] * 2)
    s3 = SimpleNamespace(get_bucket_location=lambda Bucket, **kw: {"LocationConstraint": None},  # noqa: N803
                         get_caller_identity=lambda: {"Account": "123456789012"},
                         put_object=lambda **kw: None)  # fmt: skip
    monkeypatch.setattr("s3sync.deploy.client_factory", lambda *a: lambda s: cf if s == "cloudformation" else s3)
    result = run("deploy", "--bucket", "code-bucket", "--out", str(tmp_path), *CREATE, env=KEYS_ENV, input=answer)
    assert "ecsStack: Service (replaced), CapacityProvider (removed), TaskDefinition (may be replaced): what " \
           "these resources hold is lost. Execute the change set? [y/N]" in result.output
    if executed:
        ok(result)
        assert cf.calls.count("execute_change_set") == 2  # both stacks (the stand-in plays both)
    else:
        assert "needs a yes (answer y, or pass --yes)" in one_line_error(result)
        assert "execute_change_set" not in cf.calls and "delete_change_set" in cf.calls


@pytest.mark.system
def test_yes_skips_the_question_and_no_execute_only_shows(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s3 = SimpleNamespace(get_bucket_location=lambda Bucket, **kw: {"LocationConstraint": None},  # noqa: N803
                         get_caller_identity=lambda: {"Account": "123456789012"},
                         put_object=lambda **kw: None)  # fmt: skip
    cf = FakeCloudFormation(status="UPDATE_COMPLETE", changes=RISKY, steps=[("ecsStack", "UPDATE_COMPLETE")] * 2)
    monkeypatch.setattr("s3sync.deploy.client_factory", lambda *a: lambda s: cf if s == "cloudformation" else s3)
    out = ok(run("deploy", "--bucket", "code-bucket", "--out", str(tmp_path), *CREATE, "--yes", env=KEYS_ENV))
    assert "Execute the change set?" not in out and cf.calls.count("execute_change_set") == 2

    cf = FakeCloudFormation(status="UPDATE_COMPLETE", changes=RISKY)
    monkeypatch.setattr("s3sync.deploy.client_factory", lambda *a: lambda s: cf if s == "cloudformation" else s3)
    out = ok(run("deploy", "--bucket", "code-bucket", "--out", str(tmp_path), *CREATE, "--no-execute", env=KEYS_ENV))
    assert "  Modify   Service                          AWS::ECS::Service  REPLACED (LaunchType)" in out
    assert "execute_change_set" not in cf.calls and cf.calls.count("delete_change_set") == 2
    assert "Execute the change set?" not in out and "outputs of" not in out


def test_a_failed_change_set_is_a_one_line_error_and_a_new_stack_is_removed() -> None:
    cf = FakeCloudFormation()
    cf.describe_change_set = lambda **kw: {"Status": "FAILED",  # type: ignore[method-assign]
                                           "StatusReason": "No export named ecsStack-TransferQueueArn found"}
    cf.delete_stack = lambda **kw: cf.calls.append("delete_stack")  # type: ignore[method-assign]
    with pytest.raises(UserError, match="stack ecsStack: the change set failed: No export named"):
        _apply(cf, print)
    assert "delete_stack" in cf.calls and "execute_change_set" not in cf.calls
