"""The engine on a long, thin link (s3sync.local.link in front of the destination): what bench B4 taught.

- A part that takes longer to send than botocore's connect timeout is not cut off (the socket's timeout while a
  request is sent is the connect timeout, and a bytes-like body went out in one `sendall`, whose timeout bounds the
  whole send: every attempt of every part over ~10 s failed, forever).
- A request that hangs is abandoned within the client's timeouts, the part goes back to the queue, is copied again
  and counted once.

Small figures and short timeouts keep each test to seconds; the bounds are generous.
"""

from __future__ import annotations

import hashlib
import os
import time

import pytest
from botocore.config import Config

from s3sync.local.link import MB, Link, LinkProfile
from s3sync.transfer.checksums import strip_etag
from s3sync.transfer.copier import copy_part, copy_whole
from s3sync.transfer.endpoints import s3_config, share_models
from s3sync.transfer.message import PartMessage
from s3sync.transfer.worker import Worker
from tests.test_link import _seed_for
from tests.test_worker import run_until, whole_copy, world  # noqa: F401 - the fixture

pytestmark = pytest.mark.timeout(120)

MiB = 2**20


def dest_via(link: Link, server, **config) -> object:
    """The worker's destination client (s3_config), through the link, with the timeouts and attempts given."""
    import boto3

    session = share_models(boto3.session.Session(aws_access_key_id=server.access_key_id,
                                                 aws_secret_access_key=server.secret_access_key,
                                                 region_name="cn-north-1"))
    return session.client("s3", endpoint_url=link.endpoint_url,
                          config=s3_config(4, path_style=True).merge(Config(**config)))


@pytest.mark.system
def test_a_part_slower_to_send_than_the_connect_timeout_is_not_cut_off(rclone_server, boto_client):
    rclone_server.create_bucket("src")
    rclone_server.create_bucket("dst")
    direct = boto_client("s3", rclone_server.endpoint_url, aws_access_key_id=rclone_server.access_key_id,
                         aws_secret_access_key=rclone_server.secret_access_key)
    data = os.urandom(12 * MiB)  # more than the sender's socket buffer takes at once (up to 4 MiB here)
    etag = strip_etag(direct.put_object(Bucket="src", Key="obj", Body=data)["ETag"])
    # 12 MiB at 4 MB/s: 3 s to send, ten times the connect timeout; one attempt only
    with Link(rclone_server.endpoint_url, LinkProfile(per_connection=4 * MB, handshake_rtts=0)) as link:
        dest = dest_via(link, rclone_server, connect_timeout=0.3, read_timeout=10,
                        retries={"mode": "standard", "total_max_attempts": 1})
        upload = dest.create_multipart_upload(Bucket="dst", Key="copy")["UploadId"]
        msg = PartMessage(job_id="j", source_bucket="src", source_key="obj", source_etag=etag, dest_bucket="dst",
                          dest_key="copy", part_number=1, total_parts=1, start=0, end=len(data) - 1,
                          upload_id=upload)
        started = time.monotonic()
        copied = copy_part(direct, dest, msg)
        took = time.monotonic() - started
        whole = PartMessage(job_id="w", source_bucket="src", source_key="obj", source_etag=etag, dest_bucket="dst",
                            dest_key="whole", part_number=1, total_parts=1, start=0, end=len(data) - 1)
        copy_whole(direct, dest, whole)
        sends = link.part_copies()
    assert copied.md5 == hashlib.md5(data).hexdigest() and took >= len(data) / (4 * MB) - 0.2
    assert direct.get_object(Bucket="dst", Key="whole")["Body"].read() == data
    assert sends["sent"] == sends["distinct"] == 2  # each went once, and in one attempt


@pytest.mark.system
def test_a_hung_part_is_abandoned_requeued_copied_again_and_counted_once(world, rclone_server):  # noqa: F811
    w = world
    rclone_server.create_bucket("dst-hang")
    # the first request to the destination hangs for good; the ones after it do not
    seed = _seed_for([True] + [False] * 5, 0.2)
    with Link(rclone_server.endpoint_url, LinkProfile(hang_chance=0.2, handshake_rtts=0), seed=seed) as link:
        dest = dest_via(link, rclone_server, connect_timeout=0.5, read_timeout=1,
                        retries={"mode": "standard", "total_max_attempts": 1})
        job, msg = whole_copy(w, "dst-hang")
        assert w["ledger"].create_job(job)
        w["sqs"].send_message(QueueUrl=w["queue_url"], MessageBody=msg.encode())
        worker = Worker(sqs=w["sqs"], queue_url=w["queue_url"], ledger=w["ledger"], source=w["s3"], dest=dest,
                        threads=1, visibility_timeout=30, wait_seconds=1, stop_grace=2)
        started = time.monotonic()
        run_until(worker, lambda: worker.stats.copied == 1, timeout=60)
        took = time.monotonic() - started
        figures = link.figures()
    assert worker.stats.copied == 1 and worker.stats.retries == 1 and worker.stats.duplicates == 0
    # abandoned within the client's timeouts, back in the queue after 2 s (2^receives), copied again
    assert took < 30, took
    assert figures["hangs"] == 1 and figures["part_copies"]["max_per_part"] == 2
    assert w["ledger"].get_job(job.job_id).remaining == 0  # counted once
    direct = dest_via_direct(rclone_server)
    assert direct.get_object(Bucket="dst-hang", Key="copy.bin")["Body"].read() == w["data"]


def dest_via_direct(server) -> object:
    import boto3

    return boto3.client("s3", endpoint_url=server.endpoint_url, aws_access_key_id=server.access_key_id,
                        aws_secret_access_key=server.secret_access_key, region_name="cn-north-1",
                        config=s3_config(4, path_style=True))
