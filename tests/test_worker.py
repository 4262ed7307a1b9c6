"""The worker against real servers: moto (queue, ledger, secret, source) and rclone (destination)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
import time
import uuid
from typing import Any

import pytest

from s3sync.contract import Status
from s3sync.local.servers import RcloneS3Server
from s3sync.transfer.credentials import DestClient
from s3sync.transfer.endpoints import Endpoint, s3_client
from s3sync.transfer.ledger import Job, Ledger
from s3sync.transfer.message import PartMessage
from s3sync.transfer.worker import Worker
from tests.test_ledger import make_tables

MiB = 2**20


@pytest.fixture
def world(boto_client):
    ddb, sqs, s3 = boto_client("dynamodb"), boto_client("sqs"), boto_client("s3")
    ledger = Ledger(ddb, *make_tables(ddb))
    queue_url = sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    bucket = f"src-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    data = os.urandom(6 * MiB)
    etag = s3.put_object(Bucket=bucket, Key="obj.bin", Body=data)["ETag"]
    return dict(ledger=ledger, sqs=sqs, queue_url=queue_url, s3=s3, bucket=bucket, data=data, etag=etag,
                secrets=boto_client("secretsmanager"))



def whole_copy(w, dest_bucket: str) -> tuple[Job, PartMessage]:
    """The splitter's output for the 6 MiB object copied whole (GET + PUT), written by hand."""
    job = Job(job_id=uuid.uuid4().hex, status=Status.COPYING, source_bucket=w["bucket"], source_key="obj.bin",
              source_etag=w["etag"], dest_bucket=dest_bucket, dest_key="copy.bin", size=len(w["data"]),
              part_size=len(w["data"]), total=1, remaining=1, upload_id="-", created_at=1, updated_at=1,
              attempt=uuid.uuid4().hex[:16])
    return job, PartMessage(job_id=job.job_id, source_bucket=job.source_bucket, source_key="obj.bin",
                            source_etag=job.source_etag, dest_bucket=dest_bucket, dest_key="copy.bin",
                            part_number=1, total_parts=1, start=0, end=len(w["data"]) - 1, attempt=job.attempt)


def run_until(worker: Worker, done, timeout: float = 30.0) -> None:
    t = threading.Thread(target=worker.run, daemon=True)
    t.start()
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.1)
    worker.stop()
    t.join(timeout=10)


def make_dest(server: RcloneS3Server, key_id: str, secret: str, w, secret_value: tuple[str, str]) -> DestClient:
    arn = w["secrets"].create_secret(Name=f"dest-{uuid.uuid4().hex[:8]}", SecretString=json.dumps(
        {"accessKeyId": secret_value[0], "secretAccessKey": secret_value[1]}))["ARN"]

    def read():
        v = json.loads(w["secrets"].get_secret_value(SecretId=arn)["SecretString"])
        return v["accessKeyId"], v["secretAccessKey"]

    return DestClient(Endpoint("cn-north-1", server.endpoint_url, key_id, secret), s3_client, read)


def one_job_worker(w, dest: DestClient) -> tuple[Job, Worker]:
    """The whole-copy job written and its message queued, and a one-thread worker for it (not started)."""
    job, msg = whole_copy(w, "dst")
    assert w["ledger"].create_job(job)
    w["sqs"].send_message(QueueUrl=w["queue_url"], MessageBody=msg.encode())
    return job, Worker(sqs=w["sqs"], queue_url=w["queue_url"], ledger=w["ledger"], source=w["s3"], dest=dest,
                       threads=1, visibility_timeout=30, wait_seconds=1, stop_grace=1)


def test_rotated_destination_credentials_are_picked_up_without_a_restart(world, tmp_path):
    with RcloneS3Server(access_key_id="rotated-key-2", secret_access_key="rotated-secret-2") as server:
        server.create_bucket("dst")
        dest = make_dest(server, "old-key-1", "old-secret-1", world, ("rotated-key-2", "rotated-secret-2"))
        job, worker = one_job_worker(world, dest)
        run_until(worker, lambda: worker.stats.copied == 1)
        assert worker.stats.copied == 1 and worker.stats.failed_jobs == 0
        assert dest.rotations == 1
        got = dest.client.get_object(Bucket="dst", Key="copy.bin")["Body"].read()
        assert hashlib.sha256(got).digest() == hashlib.sha256(world["data"]).digest()
        assert world["ledger"].get_job(job.job_id).remaining == 0


def test_refused_credentials_that_did_not_rotate_fail_the_job_at_once_naming_the_destination(world):
    with RcloneS3Server(access_key_id="right-key", secret_access_key="right-secret") as server:
        server.create_bucket("dst")
        dest = make_dest(server, "wrong-key", "wrong-secret-value", world, ("wrong-key", "wrong-secret-value"))
        job, worker = one_job_worker(world, dest)
        started = time.monotonic()
        run_until(worker, lambda: worker.stats.failed_jobs == 1)
        assert time.monotonic() - started < 15
        failed = world["ledger"].get_job(job.job_id)
        assert failed.status == Status.FAILED
        assert "destination refused the access key id (InvalidAccessKeyId)" in failed.error
        assert server.endpoint_url in failed.error and "s3://dst/copy.bin" in failed.error
        assert "wrong-secret-value" not in failed.error
        assert worker.stats.retries == 0
        attrs = world["sqs"].get_queue_attributes(QueueUrl=world["queue_url"], AttributeNames=["All"])["Attributes"]
        assert attrs["ApproximateNumberOfMessages"] == "0" and attrs["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_prefetch_keeps_copies_to_the_threads_and_batched_deletes_empty_the_queue(world):
    """8 small jobs, 2 copy threads, 2 prefetched: never more than 2 copies (part buffers) at once, receives bring
    several messages but never more than threads + prefetch, every part counted once, and after stop() every
    message is deleted (the batched deletes are flushed)."""
    w = world
    active, peak, received = [0], [0], []
    lock = threading.Lock()

    def started(**_):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])

    def finished(**_):
        with lock:
            active[0] -= 1

    w["s3"].meta.events.register("before-call.s3.GetObject", started)
    w["sqs"].meta.events.register("after-call.sqs.ReceiveMessage",
                                  lambda parsed, **_: received.append(len(parsed.get("Messages", []))))
    with RcloneS3Server() as server:
        server.create_bucket("dst")
        dest = s3_client(Endpoint("cn-north-1", server.endpoint_url, server.access_key_id, server.secret_access_key))
        dest.meta.events.register("after-call.s3.PutObject", finished)
        jobs = []
        for _ in range(8):
            job, msg = whole_copy(w, "dst")
            assert w["ledger"].create_job(job)
            w["sqs"].send_message(QueueUrl=w["queue_url"], MessageBody=msg.encode())
            jobs.append(job)
        worker = Worker(sqs=w["sqs"], queue_url=w["queue_url"], ledger=w["ledger"], source=w["s3"], dest=dest,
                        threads=2, prefetch=2, visibility_timeout=30, wait_seconds=1, stop_grace=5)
        run_until(worker, lambda: worker.stats.copied + worker.stats.duplicates + worker.stats.skipped >= 8)
    assert worker.stats.copied == 8 and worker.stats.duplicates == 0
    assert peak[0] <= 2, f"{peak[0]} copies at once with 2 threads"
    assert max(received) > 1 and max(received) <= 4, received
    assert all(w["ledger"].get_job(j.job_id).remaining == 0 for j in jobs)
    attrs = w["sqs"].get_queue_attributes(QueueUrl=w["queue_url"], AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "0" and attrs["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_a_part_sent_again_is_not_copied_again_and_a_late_refusal_never_fails_a_completing_job(world, request):
    """Issue 13 items 2 and 3. A part sent again (the splitter's retry, a sweeper's re-drive: each copy a first
    delivery) is found counted in the ledger and not carried across the border twice (under SSE-KMS a second upload
    would also change the part's ETag). And a copy that asked the ledger before the other copy counted the last
    part, then meets NoSuchUpload because completion completed the upload meanwhile, is a late duplicate: the job,
    COMPLETING at that moment, is not failed, and completion makes it DONE."""
    from s3sync.transfer.checksums import content_md5
    from s3sync.transfer.ledger import PartRecord

    w = world
    server = RcloneS3Server()  # it answers NoSuchUpload for a completed upload, as S3 does
    server.start()
    request.addfinalizer(server.stop)
    server.create_bucket("dst-parts")
    dest = s3_client(Endpoint("cn-north-1", server.endpoint_url, server.access_key_id, server.secret_access_key))
    upload = dest.create_multipart_upload(Bucket="dst-parts", Key="copy.bin")["UploadId"]
    size = len(w["data"])
    job = Job(job_id=uuid.uuid4().hex, status=Status.COPYING, source_bucket=w["bucket"], source_key="obj.bin",
              source_etag=w["etag"], dest_bucket="dst-parts", dest_key="copy.bin", size=size, part_size=5 * MiB,
              total=2, remaining=2, upload_id=upload, created_at=1, updated_at=1, attempt="attempt-1")
    assert w["ledger"].create_job(job)
    ranges = ((1, (0, 5 * MiB - 1)), (2, (5 * MiB, size - 1)))
    msgs = [PartMessage(job_id=job.job_id, source_bucket=w["bucket"], source_key="obj.bin", source_etag=w["etag"],
                        dest_bucket="dst-parts", dest_key="copy.bin", part_number=n, total_parts=2, start=start,
                        end=end, upload_id=upload, attempt=job.attempt)
            for n, (start, end) in ranges]
    uploads: list[int] = []
    dest.meta.events.register("after-call.s3.UploadPart", lambda http_response, **_: uploads.append(
        http_response.status_code))

    def serve(*bodies: str) -> Worker:
        # a queue per round: a stopped worker's last long poll cannot take the next round's message
        url = w["sqs"].create_queue(QueueName=f"q-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        for body in bodies:
            w["sqs"].send_message(QueueUrl=url, MessageBody=body)
        worker = Worker(sqs=w["sqs"], queue_url=url, ledger=w["ledger"], source=w["s3"], dest=dest,
                        threads=1, visibility_timeout=30, wait_seconds=1, stop_grace=5)
        st = worker.stats
        run_until(worker, lambda: st.copied + st.duplicates + st.skipped + st.failed_jobs >= len(bodies))
        attrs = w["sqs"].get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert attrs["ApproximateNumberOfMessages"] == "0" and attrs["ApproximateNumberOfMessagesNotVisible"] == "0"
        return worker

    first = serve(msgs[0].encode())
    assert (first.stats.copied, first.stats.failed_jobs) == (1, 0)
    again = serve(msgs[0].encode())  # part 1 sent once more: a first delivery, found counted
    assert (again.stats.copied, again.stats.skipped, again.stats.failed_jobs) == (0, 1, 0)
    assert uploads == [200]  # not uploaded twice

    # part 2: this worker asks the ledger (not counted), reads the source; before its UploadPart the other copy of
    # the message uploads and counts part 2, and completion is elected and completes the upload (not yet DONE)
    elected: list[Job] = []

    def other_copy_and_completion(**_):
        if elected:
            return
        part2 = w["data"][5 * MiB:]
        md5 = hashlib.md5(part2).hexdigest()
        etag = other.upload_part(Bucket="dst-parts", Key="copy.bin", UploadId=upload, PartNumber=2, Body=part2,
                                 ContentMD5=content_md5(md5))["ETag"].strip('"')
        assert w["ledger"].record_part(job.job_id, job.attempt, upload, PartRecord(2, etag, md5, len(part2)))
        elected.append(w["ledger"].elect_completion(job.job_id))
        parts = [{"PartNumber": p.part, "ETag": p.etag} for p in w["ledger"].parts(job.job_id, job.attempt)]
        other.complete_multipart_upload(Bucket="dst-parts", Key="copy.bin", UploadId=upload,
                                        MultipartUpload={"Parts": parts})

    other = s3_client(Endpoint("cn-north-1", server.endpoint_url, server.access_key_id, server.secret_access_key))
    dest.meta.events.register("before-call.s3.UploadPart", other_copy_and_completion)
    late = serve(msgs[1].encode())
    assert elected and elected[0].status == Status.COMPLETING
    assert uploads[-1] == 404  # NoSuchUpload: the upload was completed under it
    assert (late.stats.duplicates, late.stats.failed_jobs, late.stats.copied) == (1, 0, 0)
    assert w["ledger"].get_job(job.job_id).status == Status.COMPLETING  # not failed
    assert w["ledger"].mark_done(elected[0], "x").status == Status.DONE
    assert dest.get_object(Bucket="dst-parts", Key="copy.bin")["Body"].read() == w["data"]


def two_part_job(w, dest: Any, bucket: str) -> tuple[Job, list[PartMessage]]:
    upload = dest.create_multipart_upload(Bucket=bucket, Key="copy.bin")["UploadId"]
    size = len(w["data"])
    job = Job(job_id=uuid.uuid4().hex, status=Status.COPYING, source_bucket=w["bucket"], source_key="obj.bin",
              source_etag=w["etag"], dest_bucket=bucket, dest_key="copy.bin", size=size, part_size=5 * MiB,
              total=2, remaining=2, upload_id=upload, created_at=1, updated_at=1, attempt="attempt-1")
    assert w["ledger"].create_job(job)
    msgs = [PartMessage(job_id=job.job_id, source_bucket=w["bucket"], source_key="obj.bin", source_etag=w["etag"],
                        dest_bucket=bucket, dest_key="copy.bin", part_number=n, total_parts=2, start=start, end=end,
                        upload_id=upload, attempt=job.attempt)
            for n, (start, end) in ((1, (0, 5 * MiB - 1)), (2, (5 * MiB, size - 1)))]
    return job, msgs


def test_a_worker_copies_the_lowest_part_it_holds_first(world):
    """Issue 13 item 11: servers that assemble parts in order block later parts until the earlier ones arrive; a
    worker holding parts 2 and 1 (received in that order) copies 1 first."""
    w = world
    with RcloneS3Server() as server:
        server.create_bucket("dst-order")
        dest = s3_client(Endpoint("cn-north-1", server.endpoint_url, server.access_key_id, server.secret_access_key))
        order: list[int] = []
        dest.meta.events.register("before-parameter-build.s3.UploadPart",
                                  lambda params, **_: order.append(params["PartNumber"]))
        job, msgs = two_part_job(w, dest, "dst-order")
        for msg in reversed(msgs):
            w["sqs"].send_message(QueueUrl=w["queue_url"], MessageBody=msg.encode())
        worker = Worker(sqs=w["sqs"], queue_url=w["queue_url"], ledger=w["ledger"], source=w["s3"], dest=dest,
                        threads=1, prefetch=1, visibility_timeout=30, wait_seconds=1, stop_grace=5)
        run_until(worker, lambda: worker.stats.copied == 2)
    assert order == [1, 2], worker.stats
    assert w["ledger"].get_job(job.job_id).remaining == 0


@pytest.mark.system
def test_messages_waiting_behind_a_blocked_copy_are_released_to_other_workers(world):
    """Issue 13 item 11: the worker's only copy thread is blocked (the server holds its upload); the part waiting
    for that thread goes back to the queue after park_after instead of waiting for the blocked copy."""
    w = world
    release = threading.Event()
    with RcloneS3Server() as server:
        server.create_bucket("dst-park")
        dest = s3_client(Endpoint("cn-north-1", server.endpoint_url, server.access_key_id, server.secret_access_key))
        def hold_part_1(params: dict[str, Any], **_: Any) -> None:
            if params["PartNumber"] == 1:
                release.wait(20)

        dest.meta.events.register("before-parameter-build.s3.UploadPart", hold_part_1)
        job, msgs = two_part_job(w, dest, "dst-park")
        w["sqs"].send_message_batch(QueueUrl=w["queue_url"], Entries=[
            {"Id": str(m.part_number), "MessageBody": m.encode()} for m in msgs])
        worker = Worker(sqs=w["sqs"], queue_url=w["queue_url"], ledger=w["ledger"], source=w["s3"], dest=dest,
                        threads=1, prefetch=1, visibility_timeout=30, wait_seconds=1, stop_grace=5, park_after=1.0)
        t = threading.Thread(target=worker.run, daemon=True)
        t.start()
        try:
            deadline = time.monotonic() + 15
            while len(worker._inflight) < 2 and time.monotonic() < deadline:  # it holds both: 1 copying, 2 waiting
                time.sleep(0.05)
            taken: list[int] = []
            deadline = time.monotonic() + 15
            while not taken and time.monotonic() < deadline:  # another worker: the parked part is visible again
                got = w["sqs"].receive_message(QueueUrl=w["queue_url"], WaitTimeSeconds=1).get("Messages", [])
                taken = [json.loads(m["Body"])["part"]["n"] for m in got]
            assert taken == [2], taken
            assert worker.stats.copied == 0  # part 1 is still blocked
        finally:
            release.set()
            worker.stop()
            t.join(timeout=10)


@pytest.mark.system
def test_forged_messages_are_refused_and_nothing_is_written(world):
    """Issue 18 item 1: whoever may send to the part queue cannot make the workers write where the ledger did not
    plan (another key, another bucket), read an outsized range into memory, or copy for a job that does not exist.
    Each forged message is refused with its reason and never acted on; the real one is copied."""
    w = world
    with RcloneS3Server() as server:
        for bucket in ("dst-forged", "other-bucket"):
            server.create_bucket(bucket)
        dest = s3_client(Endpoint("cn-north-1", server.endpoint_url, server.access_key_id, server.secret_access_key))
        job, real = whole_copy(w, "dst-forged")
        assert w["ledger"].create_job(job)
        forged = [
            dataclasses.replace(real, dest_key="elsewhere/copy.bin"),
            dataclasses.replace(real, dest_bucket="other-bucket"),
            dataclasses.replace(real, end=5 * 2**30 - 1),
            dataclasses.replace(real, job_id="f" * 32),
        ]
        for msg in (*forged, real):
            w["sqs"].send_message(QueueUrl=w["queue_url"], MessageBody=msg.encode())
        worker = Worker(sqs=w["sqs"], queue_url=w["queue_url"], ledger=w["ledger"], source=w["s3"], dest=dest,
                        threads=1, visibility_timeout=30, wait_seconds=1, stop_grace=1, dest_bucket="dst-forged")
        run_until(worker, lambda: worker.stats.copied == 1 and worker.stats.refused >= len(forged))
        assert worker.stats.copied == 1 and worker.stats.refused >= len(forged)
        written = {(b, o["Key"]) for b in ("dst-forged", "other-bucket")
                   for o in dest.list_objects_v2(Bucket=b).get("Contents", [])}
        assert written == {("dst-forged", "copy.bin")}
        assert w["ledger"].get_job(job.job_id).remaining == 0  # the real one counted once
