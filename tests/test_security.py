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


# --- no secret in what a run leaves behind ------------------------------------------------------------------------
def _all_text(directory: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in directory.rglob("*") if p.is_file())


def _leaks(text: str, *values: str) -> list[str]:
    return [v for v in values if v in text]


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


# --- rotation -------------------------------------------------------------------------------------------------------
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
                runner.source_s3.put_object(Bucket=runner.o.source.name, Key="rot/a.bin", Body=first["rot/a.bin"])
            elif stage == ["a"] and any(j.status == Status.DONE for j in runner.jobs()):
                stage.append("rotated")
                runner.client("secretsmanager").put_secret_value(SecretId=runner.r.secret_arn, SecretString=json.dumps(
                    {"accessKeyId": ROTATED_KEY_ID, "secretAccessKey": ROTATED_SECRET}))
                servers[0].stop()  # same buckets, same port: only the new keys work from now on
                servers[0] = RcloneS3Server(root, port=dst.port, access_key_id=ROTATED_KEY_ID,
                                            secret_access_key=ROTATED_SECRET).start()
                stage.append(str(len(list((tmp_path / "state" / "logs").glob("worker-*.log")))))
                for key, data in later.items():
                    runner.source_s3.put_object(Bucket=runner.o.source.name, Key=key, Body=data)

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
