"""The worker against real servers: moto (queue, ledger, secret, source) and rclone (destination)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid

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
              part_size=len(w["data"]), total=1, remaining=1, upload_id="-", created_at=1, updated_at=1)
    return job, PartMessage(job_id=job.job_id, source_bucket=job.source_bucket, source_key="obj.bin",
                            source_etag=job.source_etag, dest_bucket=dest_bucket, dest_key="copy.bin",
                            part_number=1, total_parts=1, start=0, end=len(w["data"]) - 1)


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


def test_a_part_sent_again_is_counted_once_even_after_its_upload_is_completed(world, request):
    """A first delivery of a multipart part is copied without asking the ledger first (a redelivery asks). A part
    sent twice (the splitter or the sweeper sending it again: each copy a first delivery) is then uploaded again
    with the same bytes and counted once; once the upload is completed, UploadPart answers NoSuchUpload, which is
    recognised as a duplicate: the DONE job is not failed."""
    w = world
    server = RcloneS3Server()  # it answers NoSuchUpload for a completed upload, as S3 does (moto answers 500)
    server.start()
    request.addfinalizer(server.stop)
    server.create_bucket("dst-parts")
    dest = s3_client(Endpoint("cn-north-1", server.endpoint_url, server.access_key_id, server.secret_access_key))
    upload = dest.create_multipart_upload(Bucket="dst-parts", Key="copy.bin")["UploadId"]
    size = len(w["data"])
    job = Job(job_id=uuid.uuid4().hex, status=Status.COPYING, source_bucket=w["bucket"], source_key="obj.bin",
              source_etag=w["etag"], dest_bucket="dst-parts", dest_key="copy.bin", size=size, part_size=5 * MiB,
              total=2, remaining=2, upload_id=upload, created_at=1, updated_at=1)
    assert w["ledger"].create_job(job)
    msgs = [PartMessage(job_id=job.job_id, source_bucket=w["bucket"], source_key="obj.bin", source_etag=w["etag"],
                        dest_bucket="dst-parts", dest_key="copy.bin", part_number=n, total_parts=2, start=start,
                        end=end, upload_id=upload)
            for n, (start, end) in ((1, (0, 5 * MiB - 1)), (2, (5 * MiB, size - 1)))]
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

    first = serve(msgs[0].encode(), msgs[1].encode())
    assert (first.stats.copied, first.stats.duplicates, first.stats.failed_jobs) == (2, 0, 0)
    again = serve(msgs[1].encode())  # part 2 sent once more: a first delivery too
    assert (again.stats.copied, again.stats.duplicates, again.stats.failed_jobs) == (0, 1, 0)
    assert uploads == [200, 200, 200]  # the duplicate was uploaded again (same bytes), and counted once
    counted = w["ledger"].get_job(job.job_id)
    assert (counted.remaining, counted.done, counted.done_bytes) == (0, 2, size)
    parts = [{"PartNumber": p.part, "ETag": p.etag} for p in w["ledger"].parts(job.job_id)]
    dest.complete_multipart_upload(Bucket="dst-parts", Key="copy.bin", UploadId=upload,
                                   MultipartUpload={"Parts": parts})
    assert w["ledger"].elect_completion(job.job_id) and w["ledger"].mark_done(job.job_id, "x")

    late = serve(msgs[0].encode())  # part 1 once more, after the upload is completed
    assert (late.stats.duplicates, late.stats.failed_jobs, late.stats.copied) == (1, 0, 0)
    assert uploads[-1] == 404
    assert w["ledger"].get_job(job.job_id).status == Status.DONE
    assert dest.get_object(Bucket="dst-parts", Key="copy.bin")["Body"].read() == w["data"]
