"""Directed regressions for the interleavings of issue 13 that the simulation (tests/test_simulation.py) found or
that were read in the code: each test replays one history against moto's server (or rclone) with the real engine.

1. an upload aborted from outside before completion, and an older object of the same size at the key: not DONE;
2. a counted part uploaded again under SSE-KMS (a new ETag for the same bytes): DONE, not FAILED;
5. the job's conditional create (and a retry's claim) applied with its answer lost, botocore's retry failing the
   condition: the splitter goes on with its own upload instead of aborting it;
9. a source that refuses the HEAD (403): a FAILED job with the reason, never a silent skip; a missing one (404)
   is skipped;
10. two versions of one key finishing in the wrong order: the destination ends with the newest.
(3, 6, 7, 8 are in tests/test_worker.py and tests/test_ledger.py; 4 in tests/test_sweeper.py; 11 in
tests/test_worker.py.)
"""

from __future__ import annotations

import os
import random
import uuid
from typing import Any

from s3sync.contract import Status
from s3sync.local.servers import RcloneS3Server
from s3sync.transfer.completion import Completer
from s3sync.transfer.copier import copy_message
from s3sync.transfer.credentials import DestClient
from s3sync.transfer.encryption import DestEncryption
from s3sync.transfer.endpoints import Endpoint, s3_client
from s3sync.transfer.events import ObjectRef
from s3sync.transfer.ledger import Ledger, Outcome, PartRecord
from s3sync.transfer.message import PartMessage, decode
from s3sync.transfer.newest import Newest
from s3sync.transfer.reattempt import Reattempter
from s3sync.transfer.settings import Settings
from s3sync.transfer.splitter import Splitter, marker_of
from tests.conftest import make_client
from tests.simulation import kms_etags
from tests.test_ledger import make_tables

MiB = 2**20
KEY_ARN = "arn:aws-cn:kms:cn-north-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


class World:
    """Buckets, the ledger and the part queue on moto's server; the engine's pieces wired as Runtime wires them."""

    def __init__(self, endpoint_url: str, *, versioned: bool = False, encryption: DestEncryption = DestEncryption()):
        name = f"eo-{uuid.uuid4().hex[:8]}"
        self.s3, self.sqs, self.ddb = (make_client(s, endpoint_url) for s in ("s3", "sqs", "dynamodb"))
        self.src, self.dst = f"{name}-src", f"{name}-dst"
        for bucket in (self.src, self.dst):
            self.s3.create_bucket(Bucket=bucket)
        if versioned:
            self.s3.put_bucket_versioning(Bucket=self.src, VersioningConfiguration={"Status": "Enabled"})
        transfers, parts = make_tables(self.ddb)
        self.queue = self.sqs.create_queue(QueueName=f"{name}-parts")["QueueUrl"]
        self.ledger = Ledger(self.ddb, transfers, parts)
        self.settings = Settings(queue_url=self.queue, transfers_table=transfers, parts_table=parts,
                                 dest_bucket=self.dst, part_size=5 * MiB, dest_encryption=encryption)
        self.dest = s3_client(Endpoint("us-east-1", endpoint_url, "testing", "testing"))
        self.splitter = Splitter(source=self.s3, dest=self.dest, sqs=self.sqs, ledger=self.ledger,
                                 settings=self.settings)
        reattempter = Reattempter(ledger=self.ledger, splitter=self.splitter, source=self.s3, dest=self.dest)
        self.splitter.newest = Newest(source=self.s3, dest=DestClient.fixed(self.dest), ledger=self.ledger,
                                      reattempt=lambda job: reattempter.reattempt(job, (Status.DONE,)))
        self.completer = Completer(dest=self.dest, ledger=self.ledger,
                                   requeue=lambda job, parts: self.splitter.enqueue(job, only=parts),
                                   newest=self.splitter.newest)

    def messages(self) -> list[PartMessage]:
        out = []
        while batch := self.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10).get("Messages", []):
            for m in batch:
                out.append(decode(m["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=m["ReceiptHandle"])
        return sorted(out, key=lambda m: (m.source_key, m.part_number))

    def copy(self, msg: PartMessage, *, count: bool = True) -> str:
        """What a worker does with one message: copy, then count in the ledger."""
        copied = copy_message(self.s3, self.dest, msg)
        if not count:
            return ""
        return self.ledger.record_part(msg.job_id, msg.attempt, msg.upload_id or "-",
                                       PartRecord(copied.part, copied.etag, copied.md5, copied.size, copied.kms))

    def dest_bytes(self, key: str) -> bytes:
        return self.dest.get_object(Bucket=self.dst, Key=key)["Body"].read()


def test_1_an_aborted_upload_and_an_older_copy_of_the_same_size_are_not_done(moto_server):
    w = World(moto_server.endpoint_url)
    data = os.urandom(11 * MiB)
    w.s3.put_object(Bucket=w.src, Key="big.bin", Body=data)
    job_id = w.splitter.split(ObjectRef(w.src, "big.bin")).job_id
    for msg in w.messages():
        assert w.copy(msg) == Outcome.RECORDED
    job = w.ledger.get_job(job_id)
    # a lifecycle rule aborts the upload; the key still holds an older object of the same size (a plain ETag)
    w.dest.abort_multipart_upload(Bucket=w.dst, Key="big.bin", UploadId=job.upload_id)
    w.dest.put_object(Bucket=w.dst, Key="big.bin", Body=os.urandom(len(data)))
    result = w.completer.complete(job_id)
    failed = w.ledger.get_job(job_id)
    assert result.outcome == "failed" and failed.status == Status.FAILED
    assert "upload no longer exists" in failed.error and "not this copy" in failed.error


def test_1_a_lost_complete_answer_is_recognised_by_the_copys_marker(moto_server):
    """The other side of 1: CompleteMultipartUpload went through, its answer was lost, the retry meets
    NoSuchUpload. Under SSE-KMS the object's ETag proves nothing: the `s3sync-job` marker it was created with does."""
    with kms_etags(random.Random(1)):
        w = World(moto_server.endpoint_url, encryption=DestEncryption("aws:kms", KEY_ARN))
        data = os.urandom(11 * MiB)
        w.s3.put_object(Bucket=w.src, Key="big.bin", Body=data)
        job_id = w.splitter.split(ObjectRef(w.src, "big.bin")).job_id
        for msg in w.messages():
            w.copy(msg)
        job = w.ledger.get_job(job_id)
        parts = [{"PartNumber": p.part, "ETag": p.etag} for p in w.ledger.parts(job_id, job.attempt)]
        w.dest.complete_multipart_upload(Bucket=w.dst, Key="big.bin", UploadId=job.upload_id,
                                         MultipartUpload={"Parts": parts})  # "the first try", answer lost
        assert w.completer.complete(job_id).outcome == "done"
        head = w.dest.head_object(Bucket=w.dst, Key="big.bin")
        assert marker_of(head["Metadata"]) == job_id and w.dest_bytes("big.bin") == data


def test_2_a_counted_part_uploaded_again_under_sse_kms_completes(moto_server):
    """A part counted with ETag E1 is uploaded again (a re-sent message that raced past the ledger check): under
    SSE-KMS the same bytes get E2, ListParts shows E2. Both uploads were checked against their Content-MD5 by the
    destination: completion completes with E2 instead of failing a correct copy."""
    with kms_etags(random.Random(2)):
        w = World(moto_server.endpoint_url, encryption=DestEncryption("aws:kms", KEY_ARN))
        data = os.urandom(11 * MiB)
        w.s3.put_object(Bucket=w.src, Key="big.bin", Body=data)
        job_id = w.splitter.split(ObjectRef(w.src, "big.bin")).job_id
        msgs = w.messages()
        for msg in msgs:
            w.copy(msg)
        job = w.ledger.get_job(job_id)
        counted = {p.part: p.etag for p in w.ledger.parts(job_id, job.attempt)}
        w.copy(msgs[1], count=False)  # the duplicate upload of part 2
        listed = {p["PartNumber"]: p["ETag"].strip('"') for p in
                  w.dest.list_parts(Bucket=w.dst, Key="big.bin", UploadId=job.upload_id)["Parts"]}
        assert listed[2] != counted[2]  # the destination now holds another ETag for the same bytes
        result = w.completer.complete(job_id)
        assert result.outcome == "done", w.ledger.get_job(job_id).error
        assert w.dest_bytes("big.bin") == data


def test_2_a_part_whose_bytes_differ_is_sent_again_not_failed(moto_server):
    """Not SSE-KMS: a listed ETag that is not the MD5 counted means the destination holds other bytes for that part
    (a server that lost it, a racing writer): the part is taken back from the ledger and sent again."""
    w = World(moto_server.endpoint_url)
    data = os.urandom(11 * MiB)
    w.s3.put_object(Bucket=w.src, Key="big.bin", Body=data)
    job_id = w.splitter.split(ObjectRef(w.src, "big.bin")).job_id
    msgs = w.messages()
    for msg in msgs:
        w.copy(msg)
    job = w.ledger.get_job(job_id)
    w.dest.upload_part(Bucket=w.dst, Key="big.bin", UploadId=job.upload_id, PartNumber=2, Body=os.urandom(5 * MiB))
    assert w.completer.complete(job_id).outcome == "requeued"
    back = w.ledger.get_job(job_id)
    assert (back.status, back.remaining) == (Status.COPYING, 1)
    [again] = w.messages()
    assert again.part_number == 2 and again.attempt == job.attempt
    assert w.copy(again) == Outcome.RECORDED
    assert w.completer.complete(job_id).outcome == "done"
    assert w.dest_bytes("big.bin") == data


def lose_first_answer(client: Any, operation: str, other: Any, method: str) -> list[str]:
    """The first `operation` is applied by `other` (the first try, whose answer was lost) just before the client
    sends it again (botocore's retry), which then fails its own condition."""
    seen: list[str] = []

    def apply_first(params: dict[str, Any], **_: Any) -> None:
        if not seen:
            seen.append(operation)
            getattr(other, method)(**params)

    client.meta.events.register(f"before-parameter-build.dynamodb.{operation}", apply_first)
    return seen


def test_5_a_lost_answer_to_the_jobs_create_does_not_abort_the_splitters_own_upload(moto_server):
    w = World(moto_server.endpoint_url)
    data = os.urandom(6 * MiB)
    w.s3.put_object(Bucket=w.src, Key="big.bin", Body=data)
    seen = lose_first_answer(w.ddb, "PutItem", make_client("dynamodb", moto_server.endpoint_url), "put_item")
    result = w.splitter.split(ObjectRef(w.src, "big.bin"))
    assert seen and result.outcome == "planned"
    job = w.ledger.get_job(result.job_id)
    assert job.status == Status.COPYING
    uploads = [u["UploadId"] for u in w.dest.list_multipart_uploads(Bucket=w.dst).get("Uploads", [])]
    assert uploads == [job.upload_id]  # not aborted
    for msg in w.messages():
        assert msg.upload_id == job.upload_id and w.copy(msg) == Outcome.RECORDED
    assert w.completer.complete(job.job_id).outcome == "done" and w.dest_bytes("big.bin") == data


def test_5_a_lost_answer_to_a_retrys_claim_is_recognised(moto_server):
    w = World(moto_server.endpoint_url)
    w.s3.put_object(Bucket=w.src, Key="big.bin", Body=os.urandom(6 * MiB))
    job_id = w.splitter.split(ObjectRef(w.src, "big.bin")).job_id
    w.messages()
    job = w.ledger.get_job(job_id)
    failed = w.ledger.mark_failed(job, "destination refused access (AccessDenied)", by="attempt")
    seen = lose_first_answer(w.ddb, "UpdateItem", make_client("dynamodb", moto_server.endpoint_url), "update_item")
    result = Reattempter(ledger=w.ledger, splitter=w.splitter, source=w.s3, dest=w.dest).reattempt(failed)
    assert seen and result.outcome == "requeued"
    again = w.ledger.get_job(job_id)
    uploads = [u["UploadId"] for u in w.dest.list_multipart_uploads(Bucket=w.dst).get("Uploads", [])]
    assert again.upload_id in uploads and {m.attempt for m in w.messages()} == {again.attempt}


def test_9_a_source_that_refuses_the_head_is_a_failed_job_and_a_missing_one_is_skipped(moto_server):
    with RcloneS3Server(access_key_id="right-key", secret_access_key="right-secret") as server:
        server.create_bucket("src")
        (server.root / "src" / "there.bin").write_bytes(b"x" * 100)
        w = World(moto_server.endpoint_url)
        refused = s3_client(Endpoint("us-east-1", server.endpoint_url, "right-key", "wrong-secret"))
        splitter = Splitter(source=refused, dest=w.dest, sqs=w.sqs, ledger=w.ledger, settings=w.settings)
        result = splitter.split(ObjectRef("src", "there.bin", etag="abc", size=100))
        assert result.outcome == "refused"
        job = w.ledger.get_job(result.job_id)
        assert job.status == Status.FAILED and "source refused access" in job.error
        allowed = s3_client(Endpoint("us-east-1", server.endpoint_url, "right-key", "right-secret"))
        splitter = Splitter(source=allowed, dest=w.dest, sqs=w.sqs, ledger=w.ledger, settings=w.settings)
        assert splitter.split(ObjectRef("src", "gone.bin")).outcome == "missing"
        assert w.messages() == []


def test_10_the_destination_ends_with_the_newest_version(moto_server):
    """Versions v1 and v2 of one key: v2's job finishes first, then v1's late copy lands on the key. Whichever
    finishes last sees the other DONE: v2 is copied again and the destination ends with v2."""
    w = World(moto_server.endpoint_url, versioned=True)
    v1, v2 = os.urandom(6 * MiB), os.urandom(6 * MiB)
    ref1 = ObjectRef(w.src, "k.bin", w.s3.put_object(Bucket=w.src, Key="k.bin", Body=v1)["VersionId"])
    old = w.splitter.split(ref1).job_id
    old_msgs = w.messages()
    ref2 = ObjectRef(w.src, "k.bin", w.s3.put_object(Bucket=w.src, Key="k.bin", Body=v2)["VersionId"])
    new = w.splitter.split(ref2).job_id
    for msg in w.messages():
        w.copy(msg)
    assert w.completer.complete(new).outcome == "done" and w.dest_bytes("k.bin") == v2
    for msg in old_msgs:  # the old version's copy arrives late
        w.copy(msg)
    assert w.completer.complete(old).outcome in ("done", "failed")
    again = w.ledger.get_job(new)
    assert again.status == Status.COPYING  # v2 is copied once more
    for msg in w.messages():
        assert msg.job_id == new
        w.copy(msg)
    assert w.completer.complete(new).outcome == "done"
    assert w.dest_bytes("k.bin") == v2


def test_10_a_small_objects_late_copy_does_not_win_over_a_newer_version(moto_server):
    """The same for small objects, which the splitter copies itself: v1's PutObject is held until v2 has been
    split, copied and made DONE; v1's copy then lands on the key, and its job, once DONE, sees v2 DONE at the
    source and re-copies v2."""
    w = World(moto_server.endpoint_url, versioned=True)
    v1, v2 = os.urandom(1000), os.urandom(2000)
    ref1 = ObjectRef(w.src, "k.bin", w.s3.put_object(Bucket=w.src, Key="k.bin", Body=v1)["VersionId"])
    ref2 = ObjectRef(w.src, "k.bin", w.s3.put_object(Bucket=w.src, Key="k.bin", Body=v2)["VersionId"])
    outcomes: list[str] = []

    def v2_first(params: dict[str, Any], **_: Any) -> None:
        if not outcomes and params["ContentLength"] == len(v1):
            outcomes.append(w.splitter.split(ref2).outcome)

    w.dest.meta.events.register("before-parameter-build.s3.PutObject", v2_first)
    assert w.splitter.split(ref1).outcome == "copied" and outcomes == ["copied"]
    [again] = w.messages()  # v2 again, through a worker: the newer version's job was DONE, its copy overwritten
    assert again.source_version == ref2.version_id and w.copy(again) == Outcome.RECORDED
    assert w.completer.complete(again.job_id).outcome == "done"
    assert w.dest_bytes("k.bin") == v2
