"""Server-side encryption of the copies (S3SYNC_DEST_SSE / DestSse): AES256 or aws:kms (with an optional key), applied
by the splitter to CreateMultipartUpload and, through the part message, by the worker to PutObject.

- end to end through `s3sync local` on moto: a multipart and a single-part object copied under each mode arrive
  byte-identical, and HEAD shows the encryption (and key) asked for;
- SSE-KMS ETags are no MD5s. moto gives MD5 ETags even under aws:kms, so a botocore hook on the destination client
  rewrites every ETag it reads into another value, as S3 answers for SSE-KMS objects: under aws:kms the copy and the
  completion succeed (ETag equality skipped), under AES256 the very same answers are refused (the check is live);
- what stays under aws:kms: Content-MD5 on every UploadPart and PutObject (recorded as sent), and a body that does not
  match it is refused by the destination (rclone checks Content-MD5) and fails the copy;
- bad values are refused clearly: environment (Settings, a function's cold start) and `s3sync local` options;
- `s3sync backfill` does not take an SSE-KMS copy's ETag for an MD5.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from s3sync.contract import Env, Status
from s3sync.local.runner import BucketSpec, LocalOptions, LocalRunner
from s3sync.ops.backfill import do_backfill
from s3sync.transfer.completion import Completer
from s3sync.transfer.copier import copy_message
from s3sync.transfer.encryption import DestEncryption
from s3sync.transfer.endpoints import Endpoint, s3_client
from s3sync.transfer.errors import PermanentError, RetryableError
from s3sync.transfer.events import ObjectRef
from s3sync.transfer.ledger import Ledger, PartRecord
from s3sync.transfer.message import PartMessage, decode
from s3sync.transfer.settings import ConfigError, Settings
from s3sync.transfer.splitter import Splitter, job_id_for
from tests.conftest import make_client
from tests.ops_support import make_system
from tests.test_ledger import make_tables

MiB = 2**20
KEY_ARN = "arn:aws-cn:kms:cn-north-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
S3SYNC = [str(Path(sys.executable).parent / "s3sync")]


# --- settings: what is accepted, what is refused --------------------------------------------------------------------
@pytest.mark.parametrize("mode, key, params", [
    ("", "", {}),
    ("AES256", "", {"ServerSideEncryption": "AES256"}),
    ("aws:kms", "", {"ServerSideEncryption": "aws:kms"}),
    ("aws:kms", KEY_ARN, {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": KEY_ARN}),
    ("aws:kms", "alias/copies", {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/copies"}),
])
def test_settings_read_the_encryption_from_the_environment(mode, key, params):
    settings = Settings.from_env({Env.DEST_SSE: mode, Env.DEST_SSE_KMS_KEY_ID: key})
    assert settings.dest_encryption.request_params() == params
    assert settings.dest_encryption.kms == (mode == "aws:kms")
    assert Settings.from_env({}).dest_encryption == DestEncryption()  # unset: the bucket's default


@pytest.mark.parametrize("mode, key, reason", [
    ("aes256", "", "must be empty (the bucket's default), AES256 or aws:kms, got 'aes256'"),
    ("aws:kms:dsse", "", "must be empty (the bucket's default), AES256 or aws:kms"),
    ("none", "", "must be empty (the bucket's default), AES256 or aws:kms"),
    ("AES256", KEY_ARN, "a KMS key id needs aws:kms encryption, not AES256"),
    ("", "alias/copies", "a KMS key id needs aws:kms encryption, not the bucket default"),
    ("aws:kms", "alias copies", "not a KMS key id, key ARN, alias ARN or alias/name: 'alias copies'"),
    ("aws:kms", "arn:aws-cn:s3:::a-bucket", "not a KMS key id"),
])
def test_bad_encryption_settings_are_refused_naming_the_variables(mode, key, reason):
    with pytest.raises(ConfigError) as info:
        Settings.from_env({Env.DEST_SSE: mode, Env.DEST_SSE_KMS_KEY_ID: key})
    message = str(info.value)
    assert message.startswith(f"{Env.DEST_SSE}={mode!r}, {Env.DEST_SSE_KMS_KEY_ID}={key!r}: ")
    assert reason in message


def test_a_function_with_a_bad_setting_stops_at_its_cold_start(monkeypatch, sample_event):
    """The splitter function refuses to run (every event fails, S3 retries, then its dead-letter queue keeps them)
    instead of writing copies without the encryption that was asked for."""
    from functions import _common
    from functions.splitter import handler

    monkeypatch.setenv(Env.DEST_SSE, "aws:KMS")
    _common.runtime.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"S3SYNC_DEST_SSE='aws:KMS'.*AES256 or aws:kms"):
            handler(sample_event("s3-object-created"))
    finally:
        _common.runtime.cache_clear()


@pytest.mark.parametrize("args, message", [
    (["--dest-sse", "aws:KMS"], "Invalid value for '--dest-sse'"),
    (["--dest-sse", "AES256", "--dest-sse-kms-key-id", KEY_ARN], "a KMS key id needs aws:kms encryption"),
    (["--dest-sse-kms-key-id", "alias/copies"], "a KMS key id needs aws:kms encryption, not the bucket default"),
    (["--dest-sse", "aws:kms", "--dest-sse-kms-key-id", "not a key!"], "not a KMS key id, key ARN, alias ARN"),
])
def test_local_refuses_bad_encryption_options_in_one_line(args, message):
    result = subprocess.run([*S3SYNC, "local", "--until-idle", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


# --- end to end through `s3sync local` ------------------------------------------------------------------------------
@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode, key", [("AES256", ""), ("aws:kms", KEY_ARN)])
@pytest.mark.system
def test_local_copies_under_the_encryption_asked_for(moto_server, mode, key):
    name = f"sse-{mode.replace(':', '')}".lower()
    objects = {"big/multipart.bin": os.urandom(11 * MiB + 12345), "small/one part.txt": os.urandom(3000)}
    runner = LocalRunner(LocalOptions(
        endpoint_url=moto_server.endpoint_url, name=name, until_idle=True, part_size_mib=5, worker_threads=2,
        min_tasks=1, max_tasks=1, visibility_timeout=20, alarm_period=0.5, timeout=180, idle_grace=0.5,
        source=BucketSpec(f"{name}-src"), dest=BucketSpec(f"{name}-dst", region="cn-north-1"),
        dest_encryption=DestEncryption(mode, key)))
    uploaded: list[bool] = []

    def upload(r: LocalRunner) -> None:
        if not uploaded:
            uploaded.append(True)
            for k, data in objects.items():
                r.source_s3.put_object(Bucket=r.options.source.name, Key=k, Body=data)

    summary = runner.run(on_tick=upload)
    assert summary.ok, [(j.source_key, j.status, j.error) for j in summary.jobs]
    jobs = {j.source_key: j for j in summary.jobs}
    assert jobs["big/multipart.bin"].total == 3 and not jobs["small/one part.txt"].multipart
    for k, data in objects.items():
        assert jobs[k].status == Status.DONE, (k, jobs[k].error)
        got = runner.dest_s3.get_object(Bucket=runner.options.dest.name, Key=k)
        assert got["Body"].read() == data, k
        head = runner.dest_s3.head_object(Bucket=runner.options.dest.name, Key=k)
        assert head["ServerSideEncryption"] == mode, k
        assert head.get("SSEKMSKeyId", "") == key, k


# --- ETags that are no MD5s (SSE-KMS), and what is still checked ----------------------------------------------------
def rewrite_etags(client: Any, operations: set[str]) -> None:
    """Make `client` read, for `operations`, an ETag that is not the MD5 S3 (here moto) computed, as S3 answers for
    SSE-KMS objects: deterministic per ETag (ListParts agrees with UploadPart), a multipart "-N" suffix kept. The
    part ETags that CompleteMultipartUpload sends back are translated to moto's, so that client and server each
    see one consistent set, as with S3."""
    real_of: dict[str, str] = {}

    def fake(etag: str) -> str:
        plain, _, count = etag.strip('"').partition("-")
        other = hashlib.sha256(b"kms:" + plain.encode()).hexdigest()[:32]
        real_of[other] = plain
        return f'"{other}-{count}"' if count else f'"{other}"'

    def send_real(params: dict[str, Any], **_: Any) -> None:
        for part in params.get("MultipartUpload", {}).get("Parts", []):
            part["ETag"] = '"{}"'.format(real_of.get(part["ETag"].strip('"'), part["ETag"].strip('"')))

    def rewrite(parsed: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name not in operations:
            return
        if "ETag" in parsed:
            parsed["ETag"] = fake(parsed["ETag"])
        for part in parsed.get("Parts", []):
            part["ETag"] = fake(part["ETag"])

    client.meta.events.register("after-call.s3", rewrite)
    client.meta.events.register("before-parameter-build.s3.CompleteMultipartUpload", send_real)


def record_content_md5(client: Any) -> list[tuple[str, str, str]]:
    """(operation, Content-MD5 header, base64 MD5 of the body) of every PutObject / UploadPart the client sends."""
    sent: list[tuple[str, str, str]] = []

    def record(request: Any, event_name: str, **_: Any) -> None:
        body = request.body if isinstance(request.body, (bytes, bytearray)) else request.body.read()
        digest = base64.b64encode(hashlib.md5(body).digest()).decode()
        header = request.headers.get("Content-MD5")
        sent.append((event_name.rsplit(".", 1)[-1], header.decode() if isinstance(header, bytes) else header,
                     digest))
        if not isinstance(request.body, (bytes, bytearray)):
            request.body.seek(0)

    for op in ("PutObject", "UploadPart"):
        client.meta.events.register(f"before-send.s3.{op}", record)
    return sent


@pytest.fixture
def system(moto_server):
    """Source and destination buckets, the ledger and a part queue on moto; a splitter factory per encryption."""
    name = f"kms-{uuid.uuid4().hex[:8]}"
    s3, sqs, ddb = (make_client(s, moto_server.endpoint_url) for s in ("s3", "sqs", "dynamodb"))
    for bucket in (f"{name}-src", f"{name}-dst"):
        s3.create_bucket(Bucket=bucket)
    transfers, parts = make_tables(ddb)
    queue = sqs.create_queue(QueueName=f"{name}-parts")["QueueUrl"]
    ledger = Ledger(ddb, transfers, parts)
    objects = {"big.bin": os.urandom(11 * MiB + 7), "small.txt": os.urandom(1000)}
    for k, data in objects.items():
        s3.put_object(Bucket=f"{name}-src", Key=k, Body=data)

    def splitter(encryption: DestEncryption, dest: Any, inline_max_bytes: int = 0) -> Splitter:
        """inline_max_bytes 0 (default here): the small object goes to a worker too, whose copier is tested."""
        settings = Settings(queue_url=queue, transfers_table=transfers, parts_table=parts, dest_bucket=f"{name}-dst",
                            part_size=5 * MiB, dest_encryption=encryption, inline_max_bytes=inline_max_bytes)
        return Splitter(source=s3, dest=dest, sqs=sqs, ledger=ledger, settings=settings)

    def dest_client() -> Any:
        return s3_client(Endpoint("us-east-1", moto_server.endpoint_url, "testing", "testing"))

    def messages() -> list[PartMessage]:
        out = []
        while batch := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
            for m in batch:
                out.append(decode(m["Body"]))
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
        return sorted(out, key=lambda m: (m.source_key, m.part_number))

    return dict(s3=s3, src=f"{name}-src", dst=f"{name}-dst", ledger=ledger, objects=objects, splitter=splitter,
                dest_client=dest_client, messages=messages)


def split_and_copy(system: dict[str, Any], encryption: DestEncryption, dest: Any) -> tuple[dict[str, str], list]:
    """Split both objects, copy every part message with the worker's copier and count it; returns the job ids by key
    and the copy errors (RetryableError / PermanentError) met."""
    splitter = system["splitter"](encryption, dest)
    jobs = {k: splitter.split(ObjectRef(system["src"], k)).job_id for k in system["objects"]}
    errors = []
    for msg in system["messages"]():
        try:
            copied = copy_message(system["s3"], dest, msg)
        except (RetryableError, PermanentError) as exc:
            errors.append(exc)
            continue
        system["ledger"].record_part(msg.job_id, msg.attempt, msg.upload_id or "-",
                                     PartRecord(copied.part, copied.etag, copied.md5, copied.size, copied.kms))
    return jobs, errors


def test_kms_etags_are_not_compared_with_md5s_but_content_md5_is_sent(system):
    dest = system["dest_client"]()
    rewrite_etags(dest, {"PutObject", "UploadPart", "ListParts", "CompleteMultipartUpload", "HeadObject"})
    sent = record_content_md5(dest)
    jobs, errors = split_and_copy(system, DestEncryption("aws:kms", KEY_ARN), dest)
    assert errors == []  # no ETag was taken for an MD5
    # every body went with its Content-MD5, which S3 checks whatever the encryption
    assert sorted(op for op, _, _ in sent) == ["PutObject", "UploadPart", "UploadPart", "UploadPart"]
    assert all(header == digest for _, header, digest in sent)
    completer = Completer(dest=dest, ledger=system["ledger"])
    for key, job_id in jobs.items():
        assert completer.complete(job_id).outcome == "done", key
        job = system["ledger"].get_job(job_id)
        assert job.status == Status.DONE, (key, job.error)
        # the big object got it at CreateMultipartUpload (splitter), the small one at PutObject (its part message)
        head = system["s3"].head_object(Bucket=system["dst"], Key=key)
        assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", KEY_ARN)
        body = system["s3"].get_object(Bucket=system["dst"], Key=key)["Body"].read()
        assert body == system["objects"][key]
        # what the copy recorded is S3's (rewritten) ETag, and the MD5 of the bytes sent
        for part in system["ledger"].parts(job_id, job.attempt):
            assert part.etag != part.md5 and part.kms


def test_the_same_answers_are_refused_when_the_copy_is_not_kms_encrypted(system):
    dest = system["dest_client"]()
    rewrite_etags(dest, {"PutObject", "UploadPart"})
    jobs, errors = split_and_copy(system, DestEncryption("AES256"), dest)
    assert len(errors) == 4 and all(isinstance(e, RetryableError) for e in errors)
    assert all("differs from the MD5 sent" in e.reason for e in errors)


def test_a_small_object_the_splitter_copies_is_checked_as_a_workers_copy_is(system):
    """By default the splitter copies small objects itself: the same copier, so the same rules: under KMS the ETag
    is not taken for an MD5 (DONE), Content-MD5 is sent; without KMS a wrong ETag is a passing error (the event is
    delivered again), and no job is written."""
    dest = system["dest_client"]()
    rewrite_etags(dest, {"PutObject", "HeadObject"})
    sent = record_content_md5(dest)
    splitter = system["splitter"](DestEncryption("aws:kms", KEY_ARN), dest, inline_max_bytes=5 * MiB)
    result = splitter.split(ObjectRef(system["src"], "small.txt"))
    job = system["ledger"].get_job(result.job_id)
    assert result.outcome == "copied" and job.status == Status.DONE and job.inline
    assert [(op, header == digest) for op, header, digest in sent] == [("PutObject", True)]
    head = system["s3"].head_object(Bucket=system["dst"], Key="small.txt")
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", KEY_ARN)
    assert system["s3"].get_object(Bucket=system["dst"], Key="small.txt")["Body"].read() == system["objects"][
        "small.txt"]

    other = f"{system['src']}-again"  # the same object under another source bucket name: another job
    system["s3"].create_bucket(Bucket=other)
    system["s3"].put_object(Bucket=other, Key="small.txt", Body=system["objects"]["small.txt"])
    plain = system["dest_client"]()
    rewrite_etags(plain, {"PutObject"})
    with pytest.raises(RetryableError, match="differs from the MD5 sent"):
        system["splitter"](DestEncryption("AES256"), plain, inline_max_bytes=5 * MiB).split(
            ObjectRef(other, "small.txt"))
    assert system["ledger"].get_job(job_id_for(other, "small.txt", None, head_etag(system, other))) is None


def head_etag(system: dict[str, Any], bucket: str) -> str:
    return system["s3"].head_object(Bucket=bucket, Key="small.txt")["ETag"]


@pytest.mark.parametrize("mode, outcome", [("aws:kms", "done"), ("AES256", "failed")])
def test_completion_skips_the_multipart_etag_check_only_under_kms(system, mode, outcome):
    """Parts copied as they are; only CompleteMultipartUpload's answer carries an ETag that is not md5(part MD5s)."""
    jobs, errors = split_and_copy(system, DestEncryption(mode), system["dest_client"]())
    assert errors == []
    dest = system["dest_client"]()
    rewrite_etags(dest, {"CompleteMultipartUpload"})
    result = Completer(dest=dest, ledger=system["ledger"]).complete(jobs["big.bin"])
    assert result.outcome == outcome, result
    if outcome == "failed":
        assert "checksum mismatch" in result.detail
        assert system["ledger"].get_job(jobs["big.bin"]).status == Status.FAILED


def test_under_kms_a_body_that_does_not_match_its_content_md5_is_refused(rclone_server, boto_client):
    """rclone checks Content-MD5 (moto does not): a body changed on the way fails the copy, KMS or not (retryable:
    the part is read and sent again)."""
    s3 = boto_client("s3")
    src = f"src-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=src)
    data = os.urandom(4000)
    etag = s3.put_object(Bucket=src, Key="k", Body=data)["ETag"]
    dest = s3_client(Endpoint("us-east-1", rclone_server.endpoint_url, rclone_server.access_key_id,
                              rclone_server.secret_access_key))
    dest.create_bucket(Bucket="dst")

    def corrupt(request: Any, **_: Any) -> None:
        body = bytearray(request.body if isinstance(request.body, (bytes, bytearray)) else request.body.read())
        body[0] ^= 0xFF
        request.body = bytes(body)

    dest.meta.events.register("before-send.s3.PutObject", corrupt)
    msg = PartMessage(job_id="j", source_bucket=src, source_key="k", source_etag=etag, dest_bucket="dst",
                      dest_key="k", part_number=1, total_parts=1, start=0, end=len(data) - 1,
                      headers={"ServerSideEncryption": "aws:kms"}, attempt="a")
    with pytest.raises(RetryableError, match="BadDigest"):
        copy_message(s3, dest, msg)
    assert "Contents" not in dest.list_objects_v2(Bucket="dst")


# --- the finder: a KMS copy's ETag says nothing about its bytes -----------------------------------------------------
@pytest.mark.parametrize("mode, reason", [("", "etag"), ("AES256", "etag"), ("aws:kms", "unverified")])
def test_backfill_does_not_take_a_kms_copys_etag_for_an_md5(moto_server, mode, reason):
    """`s3sync backfill --dry-run` on a target whose copies are written with `mode` (DestSse of the Lambda stack):
    a copy of the same size whose ETag differs is "etag" (plain MD5s differ: the bytes differ), except under aws:kms,
    where the ETag proves nothing and only a DONE job would vouch for the copy."""
    sys_ = make_system(moto_server.endpoint_url)
    target = dataclasses.replace(sys_.target, dest_sse=mode)
    sys_.s3.put_object(Bucket=sys_.src, Key="same size.txt", Body=b"source bytes")
    sys_.s3.put_object(Bucket=sys_.dst, Key="same size.txt", Body=b"copied bytes")
    seen: list[tuple[str, ...]] = []
    do_backfill(target, dry_run=True, on_object=lambda *a: seen.append(a))
    assert [a[:2] for a in seen] == [("same size.txt", reason)]
