"""Security (issue #5): encryption at rest and TLS-only access in the rendered templates, every checkov skip with its
reason, no secret in templates, logs, CLI output, error messages or state, and destination credentials that rotate
without a redeploy.

checkov itself runs in CI and in `make lint` (`.ci/checkov`, its own virtual environment); here we check what the
templates must say whatever a scanner thinks.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cfn_flip
import pytest

from s3sync.contract import Env, Status
from s3sync.errors import UserError
from s3sync.local.faults import FaultProxy
from s3sync.local.runner import BucketSpec, LocalOptions, LocalRunner
from s3sync.local.servers import RcloneS3Server
from s3sync.stacks.common import CHECKOV_SKIPS
from tests.conftest import make_client

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = {name: ROOT / "templates" / name for name in ("ecs.yaml", "lambda.yaml")}
S3SYNC = Path(sys.executable).parent / "s3sync"
MiB = 1024 * 1024

# Distinctive fake keys: any of them showing up in captured text is a leak.
SRC_KEY_ID = "SRCKEYIDS3SYNCSECURITY01"
SRC_SECRET = "src-secret-S3SYNC-sec-7Fq2/Lk9+Xx"
DEST_KEY_ID = "DSTKEYIDS3SYNCSECURITY02"
DEST_SECRET = "dest-secret-S3SYNC-sec-4Rt8/Pp1+Zz"
ROTATED_KEY_ID = "DSTKEYIDS3SYNCROTATED003"
ROTATED_SECRET = "rotated-secret-S3SYNC-sec-9Wm3/Jj5+Qq"


# --- the rendered templates ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def docs() -> dict[str, dict[str, Any]]:
    return {name: json.loads(cfn_flip.to_json(path.read_text(encoding="utf-8"))) for name, path in TEMPLATES.items()}


def resources(docs: dict[str, dict[str, Any]], type_: str) -> dict[str, dict[str, Any]]:
    return {f"{name}:{rid}": r for name, doc in docs.items() for rid, r in doc["Resources"].items()
            if r["Type"] == type_}


def skipped(resource: dict[str, Any]) -> dict[str, str]:
    return {s["id"]: s["comment"] for s in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])}


def deny_plain_http(statement: dict[str, Any], service: str) -> bool:
    actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
    return (statement["Effect"] == "Deny" and statement["Principal"] in ("*", {"AWS": "*"})
            and f"{service}:*" in actions and statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}})


def test_source_bucket_is_encrypted_and_refuses_plain_http(docs):
    [(where, bucket)] = resources(docs, "AWS::S3::Bucket").items()
    [rule] = bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms", "aws:kms:dsse")
    [policy] = resources(docs, "AWS::S3::BucketPolicy").values()
    assert policy["Properties"]["Bucket"] == {"Ref": where.split(":")[1]}
    [st] = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if deny_plain_http(s, "s3")]
    text = json.dumps(st["Resource"])  # the bucket and every object in it
    assert '"Fn::GetAtt": ["SourceBucket", "Arn"]' in text and "${SourceBucket.Arn}/*" in text


def test_every_queue_is_encrypted_and_refuses_plain_http(docs):
    queues = resources(docs, "AWS::SQS::Queue")
    assert {q.split(":")[1] for q in queues} >= {"TransferQueue", "TransferDeadLetterQueue"}
    covered: set[str] = set()
    for where, policy in resources(docs, "AWS::SQS::QueuePolicy").items():
        template = where.split(":")[0]
        attached = {f"{template}:{q['Ref']}" for q in policy["Properties"]["Queues"]}
        for st in policy["Properties"]["PolicyDocument"]["Statement"]:
            if deny_plain_http(st, "sqs"):
                denied = {f"{template}:{r['Fn::GetAtt'][0]}" for r in st["Resource"]}
                assert denied == attached, where  # the policy protects exactly the queues it is attached to
                covered |= denied
    for where, queue in queues.items():
        props = queue["Properties"]
        assert props.get("SqsManagedSseEnabled") is True or props.get("KmsMasterKeyId"), where
        assert where in covered, f"{where} has no queue policy denying aws:SecureTransport false"


def test_tables_secret_logs_and_topics_are_encrypted_at_rest(docs):
    for where, table in resources(docs, "AWS::DynamoDB::Table").items():
        assert table["Properties"]["SSESpecification"]["SSEEnabled"] is True, where
    for where, secret in resources(docs, "AWS::SecretsManager::Secret").items():
        # always encrypted (aws/secretsmanager unless KmsKeyId); the value only refers to NoEcho parameters
        value = secret["Properties"]["SecretString"]
        assert set(value) == {"Fn::Sub"} and re.fullmatch(r'\{"accessKeyId":"\$\{\w+\}","secretAccessKey":'
                                                         r'"\$\{\w+\}"\}', value["Fn::Sub"]), where
    groups = resources(docs, "AWS::Logs::LogGroup")
    assert len(groups) == 5
    for where, group in groups.items():  # CloudWatch Logs always encrypts; a KMS key or the stated reason
        assert group["Properties"].get("KmsKeyId") or "CKV_AWS_158" in skipped(group), where
    topics = resources(docs, "AWS::SNS::Topic")
    assert topics["lambda.yaml:CompletionTopic"]["Properties"]["KmsMasterKeyId"]  # it carries object names
    for where, topic in topics.items():
        assert topic["Properties"].get("KmsMasterKeyId") or "CKV_AWS_26" in skipped(topic), where
    for where, lt in resources(docs, "AWS::EC2::LaunchTemplate").items():
        data = lt["Properties"]["LaunchTemplateData"]
        assert all(m["Ebs"]["Encrypted"] is True for m in data["BlockDeviceMappings"]), where
        assert data["MetadataOptions"]["HttpTokens"] == "required", where


def test_every_checkov_skip_carries_its_reason(docs):
    seen = set()
    for name, doc in docs.items():
        for rid, resource in doc["Resources"].items():
            for check_id, comment in skipped(resource).items():
                assert re.fullmatch(r"CKV2?_AWS_\d+", check_id), (name, rid, check_id)
                assert comment == CHECKOV_SKIPS[check_id] and len(comment) > 40, (name, rid, check_id)
                seen.add(check_id)
    assert seen == set(CHECKOV_SKIPS), "a reason is listed for a check no resource skips (or the reverse)"


def test_no_secret_in_the_templates(docs):
    for name, path in TEMPLATES.items():
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b", text), name  # no access key id
        assert not re.search(r"[A-Za-z0-9/+=]{40}", text.replace("Fn::", "")), name  # nothing shaped like a secret
    params = docs["ecs.yaml"]["Parameters"]
    for key in ("DestAccessKeyId", "DestSecretAccessKey"):
        assert params[key]["NoEcho"] in (True, "true") and "Default" not in params[key]


def test_workers_can_reread_a_rotated_secret_in_aws(docs):
    """Rotation without a redeploy, as deployed: ECS injects the keys at task start, so a running worker can only
    pick up rotated keys by reading the secret itself: it needs the secret's ARN and the right to read it."""
    ecs = docs["ecs.yaml"]["Resources"]
    [container] = ecs["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert env.get(Env.DEST_SECRET_ARN) == {"Ref": "DestCredentials"}, \
        f"the worker task has no {Env.DEST_SECRET_ARN}: running tasks keep the old keys until replaced"
    statements = [s for p in ecs["TaskRole"]["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]
    assert any("secretsmanager:GetSecretValue" in s["Action"] and {"Ref": "DestCredentials"} in s["Resource"]
               for s in statements), "the task role may not read the secret"


# --- issue 18: who may read the keys, send parts, publish alarms; what the roles trust ----------------------------
def _statements(resource: dict[str, Any], key: str = "PolicyDocument") -> list[dict[str, Any]]:
    return resource["Properties"][key]["Statement"]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _path_pattern(key: str) -> dict[str, str]:
    return {"Fn::Sub": f"arn:${{AWS::Partition}}:iam::${{AWS::AccountId}}:role/s3sync/${{AWS::StackName}}/{key}/*"}


def test_only_the_copiers_may_read_the_china_keys(docs):
    """Item 2: a resource policy on the secret denies GetSecretValue to every principal but the worker task role
    (by ARN) and the roles lambda.yaml creates for the splitter and completion, or an operator creates, under
    /s3sync/<ECS stack>/<key>/; ECS no longer injects the keys, so the execution role reads nothing."""
    ecs, lam = docs["ecs.yaml"]["Resources"], docs["lambda.yaml"]["Resources"]
    [(where, policy)] = resources(docs, "AWS::SecretsManager::ResourcePolicy").items()
    assert where == "ecs.yaml:DestCredentialsPolicy"
    props = policy["Properties"]
    assert props["SecretId"] == {"Ref": "DestCredentials"} and props["BlockPublicPolicy"] is True
    [deny] = _statements(policy, "ResourcePolicy")
    assert (deny["Effect"], deny["Principal"], deny["Action"], deny["Resource"]) == (
        "Deny", "*", ["secretsmanager:GetSecretValue"], ["*"])
    assert deny["Condition"] == {"ArnNotLike": {"aws:PrincipalArn": [
        {"Fn::GetAtt": ["TaskRole", "Arn"]}, _path_pattern("splitter"), _path_pattern("completion"),
        _path_pattern("operator")]}}
    for key, fn in (("splitter", "Splitter"), ("completion", "Completion"), ("scale_in", "ScaleIn"),
                    ("scale_out", "ScaleOut")):
        assert lam[f"{fn}Role"]["Properties"]["Path"] == {"Fn::Sub": f"/s3sync/${{EcsStackName}}/{key}/"}
    [container] = ecs["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    assert "Secrets" not in container
    execution = json.dumps(ecs["ExecutionRole"]["Properties"]["Policies"])
    assert "secretsmanager" not in execution and "DestCredentials" not in execution


def test_only_the_senders_may_send_part_messages(docs):
    """Item 1: the part queue's policy denies SendMessage (and so SendMessageBatch) to all but the splitter, the
    sweeper (scale_in), completion (which sends a part again) and an operator's role."""
    policy = docs["ecs.yaml"]["Resources"]["TransferQueuePolicy"]
    [deny] = [st for st in _statements(policy) if st.get("Sid") == "OnlyTheSplittersSendParts"]
    assert (deny["Effect"], deny["Principal"], deny["Action"]) == ("Deny", "*", ["sqs:SendMessage"])
    assert deny["Resource"] == [{"Fn::GetAtt": ["TransferQueue", "Arn"]}]
    assert deny["Condition"] == {"ArnNotLike": {"aws:PrincipalArn": [
        _path_pattern("splitter"), _path_pattern("scale_in"), _path_pattern("completion"), _path_pattern("operator")]}}


def test_only_the_splitter_role_sends_to_its_dead_letter_queue(docs):
    """Item 1: Lambda puts a failed asynchronous invocation on the splitter's dead-letter queue with the function's
    role; every other principal is refused SendMessage there, so an operator never re-drives a forged failure."""
    lam = docs["lambda.yaml"]["Resources"]
    policy = lam["SplitterDeadLetterQueuePolicy"]
    assert policy["Properties"]["Queues"] == [{"Ref": "SplitterDeadLetterQueue"}]
    [deny] = [st for st in _statements(policy) if st.get("Sid") == "OnlyTheSplitterSendsFailures"]
    assert (deny["Effect"], deny["Principal"], deny["Action"]) == ("Deny", "*", ["sqs:SendMessage"])
    assert deny["Resource"] == [{"Fn::GetAtt": ["SplitterDeadLetterQueue", "Arn"]}]
    assert deny["Condition"] == {"ArnNotLike": {"aws:PrincipalArn": [{"Fn::GetAtt": ["SplitterRole", "Arn"]}]}}
    target = lam["Splitter"]["Properties"]["DeadLetterConfig"]["TargetArn"]
    assert target == {"Fn::GetAtt": ["SplitterDeadLetterQueue", "Arn"]}


def test_scale_topics_take_messages_from_their_own_alarm_only(docs):
    """Item 1: only the stack's alarm, through CloudWatch, may publish to each scale topic (aws:SourceArn and
    aws:SourceAccount on the Allow; a Deny for any other publisher)."""
    lam = docs["lambda.yaml"]["Resources"]
    for topic, alarm in (("ScaleOutTopic", "ScaleOutAlarm"), ("ScaleInTopic", "ScaleInAlarm")):
        [policy] = [r for r in lam.values() if r["Type"] == "AWS::SNS::TopicPolicy"
                    and r["Properties"]["Topics"] == [{"Ref": topic}]]
        allow, deny = _statements(policy)
        assert allow["Principal"] == {"Service": ["cloudwatch.amazonaws.com"]} and allow["Action"] == ["sns:Publish"]
        assert allow["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": [alarm, "Arn"]}},
                                      "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
        assert (deny["Effect"], deny["Principal"], deny["Action"], deny["Resource"]) == (
            "Deny", "*", ["sns:Publish"], [{"Ref": topic}])
        assert deny["Condition"] == {"ArnNotEquals": {"aws:SourceArn": {"Fn::GetAtt": [alarm, "Arn"]}}}
        assert lam[alarm]["Properties"]["AlarmActions"] == [{"Ref": topic}]


def test_ecs_roles_trust_tasks_of_this_account_and_region_only(docs):
    """Item 4: the ECS developer guide's recommended trust conditions on the task role (the worker's rights); the
    execution role keeps the documented plain trust (iam.trust says why)."""
    ecs = docs["ecs.yaml"]["Resources"]
    [st] = ecs["TaskRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert st["Principal"] == {"Service": ["ecs-tasks.amazonaws.com"]}
    assert st["Condition"] == {
        "ArnLike": {"aws:SourceArn": {"Fn::Sub": "arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}:*"}},
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    [st] = ecs["ExecutionRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert st["Principal"] == {"Service": ["ecs-tasks.amazonaws.com"]} and "Condition" not in st


def test_the_source_key_decrypts_through_s3_only(docs):
    """Item 4: the SourceKmsKeyArn grant holds only for requests S3 makes for the worker (kms:ViaService)."""
    [policy] = resources(docs, "AWS::IAM::ManagedPolicy").values()
    [st] = policy["Properties"]["PolicyDocument"]["Statement"]
    assert st["Action"] == ["kms:Decrypt"] and st["Resource"] == [{"Ref": "SourceKmsKeyArn"}]
    assert st["Condition"] == {"StringEquals": {"kms:ViaService": {"Fn::Sub": "s3.${AWS::Region}.amazonaws.com"}}}


@pytest.mark.parametrize("partition, image, repository", [
    ("aws", "123456789012.dkr.ecr.us-east-1.amazonaws.com/s3sync:1.0", "s3sync"),
    ("aws", "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/s3sync@sha256:" + "a" * 64, "team/s3sync"),
    ("aws", "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/s3sync:1.0@sha256:" + "b" * 64, "team/s3sync"),
    ("aws", "123456789012.dkr.ecr.us-east-1.amazonaws.com/s3sync", "s3sync"),
    ("aws-cn", "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/team/s3sync:2", "team/s3sync"),
    ("aws", "public.ecr.aws/docker/library/python:3.12", ""),  # not this account's ECR: no repository at all
])
def test_the_execution_role_pulls_from_the_image_uri_s_repository_only(docs, partition, image, repository):
    """Item 4: ECR reads on one repository, the one ImageUri names, resolved as CloudFormation would."""
    from s3sync.local.cfn import Resolver
    from s3sync.local.iam import Where

    where = Where(partition=partition, region="cn-north-1" if partition == "aws-cn" else "us-east-1")
    r = Resolver("ecsStack", docs["ecs.yaml"], {"ImageUri": image}, where)
    [policy] = r.resolve(docs["ecs.yaml"]["Resources"]["ExecutionRole"]["Properties"]["Policies"])
    pulls = [st for st in policy["PolicyDocument"]["Statement"] if "ecr:BatchGetImage" in st["Action"]]
    assert pulls == [{"Effect": "Allow", "Action": [
        "ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
        "Resource": [f"arn:{partition}:ecr:{where.region}:123456789012:repository/{repository}"]}]


def test_destination_endpoint_is_https_in_the_stacks_and_at_run_time(docs):
    """Item 3: DestEndpointUrl takes https:// only; the runtime refuses http:// unless `s3sync local` says so
    (S3SYNC_LOCAL_PLAIN_HTTP, set by the local runner, in no template)."""
    from s3sync.transfer.runtime import Runtime
    from s3sync.transfer.settings import ConfigError

    pattern = re.compile(docs["ecs.yaml"]["Parameters"]["DestEndpointUrl"]["AllowedPattern"])
    assert pattern.fullmatch("") and pattern.fullmatch("https://s3.cn-north-1.amazonaws.com.cn")
    for bad in ("http://s3.cn-north-1.amazonaws.com.cn", "ftp://x", "s3.cn-north-1.amazonaws.com.cn"):
        assert not pattern.fullmatch(bad), bad
    for name, path in TEMPLATES.items():
        assert Env.LOCAL_PLAIN_HTTP not in path.read_text(encoding="utf-8"), name
    base = {"AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            Env.DEST_BUCKET: "dst", Env.DEST_REGION: "cn-north-1", Env.DEST_ACCESS_KEY_ID: DEST_KEY_ID,
            Env.DEST_SECRET_ACCESS_KEY: DEST_SECRET}
    with pytest.raises(ConfigError, match="https://"):
        _ = Runtime({**base, Env.DEST_ENDPOINT_URL: "http://127.0.0.1:9"}).dest
    assert Runtime({**base, Env.DEST_ENDPOINT_URL: "https://127.0.0.1:9"}).dest.endpoint.endpoint_url
    assert Runtime({**base, Env.DEST_ENDPOINT_URL: "http://127.0.0.1:9", Env.LOCAL_PLAIN_HTTP: "1"}).dest.client


def test_ssh_from_the_whole_internet_only_when_asked(docs):
    """Item 2: SshCidr 0.0.0.0/0 is refused by a stack rule (and by `ssh_problems`, the same check for deploy)
    unless SshFromAnywhere is true; no other spelling of /0, and no prefix shorter than /8, passes the pattern."""
    from s3sync.stacks.ecs import SSH_RULE, ssh_problems

    params = docs["ecs.yaml"]["Parameters"]
    pattern = re.compile(params["SshCidr"]["AllowedPattern"])
    for ok in ("", "203.0.113.0/24", "10.0.0.0/8", "198.51.100.7/32", "0.0.0.0/0"):
        assert pattern.fullmatch(ok), ok
    for bad in ("1.2.3.4/0", "0.0.0.0/1", "128.0.0.0/7", "::/0", "10.0.0.0/33"):
        assert not pattern.fullmatch(bad), bad
    assert params["SshFromAnywhere"]["Default"] == "false"
    rule = docs["ecs.yaml"]["Rules"][SSH_RULE]
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "SshCidr"}, "0.0.0.0/0"]}
    assert [a["Assert"] for a in rule["Assertions"]] == [{"Fn::Equals": [{"Ref": "SshFromAnywhere"}, "true"]}]
    assert ssh_problems({"SshCidr": "0.0.0.0/0"}) and ssh_problems({"SshCidr": "0.0.0.0/0", "SshFromAnywhere": "false"})
    assert not ssh_problems({"SshCidr": "0.0.0.0/0", "SshFromAnywhere": "true"})
    assert not ssh_problems({"SshCidr": "203.0.113.0/24"})


def test_checkov_skip_reasons_are_true_of_the_templates(docs):
    """Item 7: each reason that states a fact about the stacks is checked against them."""
    types = {r["Type"] for doc in docs.values() for r in doc["Resources"].values()}
    # CKV_AWS_18: no access record is claimed unless the stacks make one
    [bucket] = resources(docs, "AWS::S3::Bucket").values()
    assert "AWS::CloudTrail::Trail" not in types and "LoggingConfiguration" not in bucket["Properties"]
    assert "no server access log" in CHECKOV_SKIPS["CKV_AWS_18"]
    assert "are the access record" not in CHECKOV_SKIPS["CKV_AWS_18"]
    # CKV_AWS_149: the resource policy it names exists and is attached to the secret it skips
    assert "DestCredentialsPolicy" in CHECKOV_SKIPS["CKV_AWS_149"]
    assert "DestCredentialsPolicy" in docs["ecs.yaml"]["Resources"]
    # CKV_AWS_88: 0.0.0.0/0 needs SshFromAnywhere, by a rule
    assert "SshFromAnywhere" in CHECKOV_SKIPS["CKV_AWS_88"]
    assert "SshFromAnywhereOnlyWhenAsked" in docs["ecs.yaml"]["Rules"]
    # CKV_AWS_26: every unencrypted topic it skips has a topic policy admitting its alarm only
    for where, topic in resources(docs, "AWS::SNS::Topic").items():
        if "CKV_AWS_26" in skipped(topic):
            stem, rid = where.split(":")
            assert any(p["Properties"]["Topics"] == [{"Ref": rid}] for p in
                       resources({stem: docs[stem]}, "AWS::SNS::TopicPolicy").values()), where
    assert "topic polic" in CHECKOV_SKIPS["CKV_AWS_26"]


# --- no secret in what a run leaves behind ------------------------------------------------------------------------
def _all_text(directory: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in directory.rglob("*") if p.is_file())


def _leaks(text: str, *values: str) -> list[str]:
    return [v for v in values if v in text]


@pytest.mark.system
def test_no_secret_in_cli_output_logs_or_state(tmp_path):
    """`s3sync local` (a subprocess, keys from the environment as documented) and `s3sync render`: every line they
    print, every log file, every state file, and the transfers table they leave, searched for the four key values."""
    objects = {"sec/multi.bin": os.urandom(6 * MiB + 1), "sec/small.txt": b"small"}
    state = tmp_path / "state"
    with RcloneS3Server(access_key_id=SRC_KEY_ID, secret_access_key=SRC_SECRET) as src, \
            RcloneS3Server(access_key_id=DEST_KEY_ID, secret_access_key=DEST_SECRET) as dst:
        s3 = make_client("s3", src.endpoint_url, aws_access_key_id=SRC_KEY_ID, aws_secret_access_key=SRC_SECRET)
        s3.create_bucket(Bucket="sec-src")
        for key, data in objects.items():
            s3.put_object(Bucket="sec-src", Key=key, Body=data)
        env = {**os.environ, "S3SYNC_SOURCE_ACCESS_KEY_ID": SRC_KEY_ID, "S3SYNC_SOURCE_SECRET_ACCESS_KEY": SRC_SECRET,
               "S3SYNC_DEST_ACCESS_KEY_ID": DEST_KEY_ID, "S3SYNC_DEST_SECRET_ACCESS_KEY": DEST_SECRET,
               "S3SYNC_LOG_LEVEL": "DEBUG"}
        local = subprocess.run(
            [str(S3SYNC), "local", "--until-idle", "--timeout", "120", "--source-bucket", "sec-src",
             "--source-endpoint-url", src.endpoint_url, "--dest-bucket", "sec-dst", "--dest-endpoint-url",
             dst.endpoint_url, "--part-size-mib", "5", "--max-tasks", "1", "--state-dir", str(state)],
            capture_output=True, text=True, timeout=180, env=env)
        assert local.returncode == 0, local.stderr[-3000:]
        d3 = make_client("s3", dst.endpoint_url, aws_access_key_id=DEST_KEY_ID, aws_secret_access_key=DEST_SECRET)
        for key, data in objects.items():
            assert d3.get_object(Bucket="sec-dst", Key=key)["Body"].read() == data
    render = subprocess.run([str(S3SYNC), "render", "--out", str(tmp_path / "rendered")], capture_output=True,
                            text=True, timeout=120, env=env)
    assert render.returncode == 0, render.stderr
    captured = local.stdout + local.stderr + render.stdout + render.stderr + _all_text(state) + \
        _all_text(tmp_path / "rendered")
    assert "worker started" in captured and "part copied" in captured  # the logs are in there
    assert _leaks(captured, SRC_SECRET, DEST_SECRET) == []
    assert _leaks(captured, SRC_KEY_ID, DEST_KEY_ID) == []  # not secret, but no reason to print it either


def test_refused_credentials_are_reported_without_the_secret(moto_server, tmp_path, capfd):
    """Wrong destination keys at start: one error naming the bucket and server, without the secret; the same for
    the runner's options, and for the reasons a FAILED job and its notification carry (test_reliability #6)."""
    with RcloneS3Server(access_key_id=DEST_KEY_ID, secret_access_key=DEST_SECRET) as dst:
        wrong = BucketSpec("sec-wrong-dst", dst.endpoint_url, DEST_KEY_ID, "not-" + DEST_SECRET, "cn-north-1")
        options = LocalOptions(endpoint_url=moto_server.endpoint_url, name="sec-wrong", until_idle=True,
                               timeout=30, dest=wrong, source=BucketSpec("sec-wrong-src"), state_dir=tmp_path)
        assert DEST_SECRET not in repr(options) and DEST_KEY_ID not in repr(options)
        with pytest.raises(UserError) as err:
            LocalRunner(options).run()
    message = str(err.value)
    assert "sec-wrong-dst" in message and dst.endpoint_url in message
    out, errs = capfd.readouterr()
    assert _leaks(message + out + errs + _all_text(tmp_path), DEST_SECRET, "not-" + DEST_SECRET) == []


@pytest.mark.system
def test_an_embedded_control_plane_holding_real_keys_answers_only_its_run(tmp_path):
    """Item 6: with real destination keys, the embedded control plane answers only requests made with the run's
    random key id: another user of the machine (any other key, or none) gets 403 from every service and from moto's
    own /moto-api/ (whose data.json would list the secret); the run's functions, workers and `s3sync status` (given
    the key from the state directory's 0600 file, as the start lines say) work, and the file is gone afterwards."""
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    from botocore.exceptions import ClientError  # noqa: PLC0415
    from click.testing import CliRunner  # noqa: PLC0415

    from s3sync.cli import cli  # noqa: PLC0415
    from s3sync.local.options import CONTROL_KEY_FILE  # noqa: PLC0415
    from s3sync.local.run import start_lines  # noqa: PLC0415

    name, state = "sec-embedded", tmp_path / "state"
    seen: dict[str, Any] = {}
    with RcloneS3Server(access_key_id=DEST_KEY_ID, secret_access_key=DEST_SECRET) as dst:
        dst.create_bucket(f"{name}-dst")

        def probe(runner: LocalRunner) -> None:
            if seen:
                return
            url = runner.endpoint_url
            key_file = state / CONTROL_KEY_FILE
            seen["mode"] = key_file.stat().st_mode & 0o777
            seen["key"] = key_file.read_text().strip() == runner.control_key != "testing"
            seen["lines"] = start_lines(runner)
            for other in ("testing", DEST_KEY_ID, runner.control_key[:-1]):
                sm = make_client("secretsmanager", url, aws_access_key_id=other, aws_secret_access_key=other)
                with pytest.raises(ClientError) as refused:
                    sm.get_secret_value(SecretId=runner.resources.secret_arn)
                seen.setdefault("refused", []).append(refused.value.response["Error"]["Code"])
                sqs = make_client("sqs", url, aws_access_key_id=other, aws_secret_access_key=other)
                with pytest.raises(ClientError):
                    sqs.list_queues()
            for path in ("/moto-api/data.json", "/"):
                with pytest.raises(urllib.error.HTTPError) as http:
                    urllib.request.urlopen(url + path, timeout=5)
                seen.setdefault("http", []).append(http.value.code)
            value = json.loads(runner.client("secretsmanager").get_secret_value(
                SecretId=runner.resources.secret_arn)["SecretString"])
            seen["own"] = value["accessKeyId"] == DEST_KEY_ID
            status = CliRunner().invoke(cli, ["status", "--endpoint-url", url, "--name-prefix", name],
                                        env={"S3SYNC_LOCAL_CONTROL_KEY": runner.control_key})
            seen["status"] = (status.exit_code, status.output[-2000:])
            runner.source_s3.put_object(Bucket=runner.options.source.name, Key="emb/a.txt", Body=b"behind a key")

        runner = LocalRunner(LocalOptions(
            name=name, until_idle=True, timeout=60, min_tasks=1, max_tasks=1, alarm_period=0.5, state_dir=state,
            source=BucketSpec(f"{name}-src"),
            dest=BucketSpec(f"{name}-dst", dst.endpoint_url, DEST_KEY_ID, DEST_SECRET, "cn-north-1")))
        summary = runner.run(on_tick=probe)
        d3 = make_client("s3", dst.endpoint_url, aws_access_key_id=DEST_KEY_ID, aws_secret_access_key=DEST_SECRET)
        assert d3.get_object(Bucket=f"{name}-dst", Key="emb/a.txt")["Body"].read() == b"behind a key"
    assert [(j.source_key, j.status) for j in summary.jobs] == [("emb/a.txt", Status.DONE)]
    assert seen["mode"] == 0o600 and seen["key"] and seen["own"]
    assert seen["refused"] == ["AccessDeniedException"] * 3 and seen["http"] == [403, 403]
    assert seen["status"][0] == 0, seen["status"][1]
    assert any("S3SYNC_LOCAL_CONTROL_KEY=$(cat " in line for line in seen["lines"])
    assert not (state / CONTROL_KEY_FILE).exists()


# --- rotation -------------------------------------------------------------------------------------------------------
@pytest.mark.system
def test_destination_credentials_rotate_without_a_redeploy(moto_server, tmp_path):
    """Object A copies with the first keys; then the secret gets new keys and the destination stops accepting the
    old ones (rotation); objects B and C copy with the new keys, read from the secret by the running splitter,
    workers and completion: no worker restarted, nothing failed, no secret in any log."""
    root = tmp_path / "dest-root"
    name = "sec-rotate"
    dst = RcloneS3Server(root, access_key_id=DEST_KEY_ID, secret_access_key=DEST_SECRET).start()
    servers = [dst]
    first = {"rot/a.bin": os.urandom(6 * MiB + 1)}
    later = {"rot/b.bin": os.urandom(11 * MiB + 2), "rot/c.txt": b"after the rotation"}
    stage: list[str] = []
    try:
        dst.create_bucket(f"{name}-dst")

        def drive(runner: LocalRunner) -> None:
            if not stage:
                stage.append("a")
                runner.source_s3.put_object(Bucket=runner.options.source.name, Key="rot/a.bin", Body=first["rot/a.bin"])
            elif stage == ["a"] and any(j.status == Status.DONE for j in runner.jobs()):
                stage.append("rotated")
                runner.client("secretsmanager").put_secret_value(
                    SecretId=runner.resources.secret_arn, SecretString=json.dumps(
                    {"accessKeyId": ROTATED_KEY_ID, "secretAccessKey": ROTATED_SECRET}))
                servers[0].stop()  # same buckets, same port: only the new keys work from now on
                servers[0] = RcloneS3Server(root, port=dst.port, access_key_id=ROTATED_KEY_ID,
                                            secret_access_key=ROTATED_SECRET).start()
                stage.append(str(len(list((tmp_path / "state" / "logs").glob("worker-*.log")))))
                for key, data in later.items():
                    runner.source_s3.put_object(Bucket=runner.options.source.name, Key=key, Body=data)

        runner = LocalRunner(LocalOptions(
            endpoint_url=moto_server.endpoint_url, name=name, until_idle=True, timeout=60, part_size_mib=5,
            worker_threads=2, min_tasks=1, max_tasks=1, visibility_timeout=5, alarm_period=0.5,
            source=BucketSpec(f"{name}-src"), state_dir=tmp_path / "state",
            dest=BucketSpec(f"{name}-dst", dst.endpoint_url, DEST_KEY_ID, DEST_SECRET, "cn-north-1")))
        started = time.monotonic()
        summary = runner.run(on_tick=drive)
        assert stage[:2] == ["a", "rotated"], stage
        jobs = {j.source_key: j for j in summary.jobs}
        assert {k: (j.status, j.error) for k, j in jobs.items()} == {k: (Status.DONE, None) for k in
                                                                     {**first, **later}}
        good = make_client("s3", servers[0].endpoint_url, aws_access_key_id=ROTATED_KEY_ID,
                           aws_secret_access_key=ROTATED_SECRET)
        for key, data in {**first, **later}.items():
            assert good.get_object(Bucket=f"{name}-dst", Key=key)["Body"].read() == data
        workers_after = len(list((tmp_path / "state" / "logs").glob("worker-*.log")))
        assert workers_after == int(stage[2]), "a worker was restarted to pick up the new keys"
        logs = _all_text(tmp_path / "state")
        assert "rotated" in logs  # a worker re-read the secret
        assert _leaks(logs, DEST_SECRET, ROTATED_SECRET) == []
        print(f"\n[security] rotation: 3 objects DONE across a key rotation in {time.monotonic() - started:.1f} s, "
              f"{workers_after} worker process(es), {logs.count('credentials rotated')} rotation(s) in worker logs")
    finally:
        for server in servers:
            server.stop()


def test_the_fault_proxy_never_leaves_loopback():
    """The reliability suite's proxy: loopback upstreams and a loopback listener only (see tests/test_faults.py)."""
    for upstream in ("http://10.0.0.1:9000", "http://192.168.1.1", "http://example.com"):
        with pytest.raises(ValueError):
            FaultProxy(upstream)
