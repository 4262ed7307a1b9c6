"""The fault-injecting proxy (s3sync.local.faults.FaultProxy) on its own, in front of a real `rclone serve s3`.

What the reliability scenarios rely on: it forwards S3 requests unchanged (signatures stay valid), it injects each
fault kind as S3 or a broken network would show it, its decisions are repeatable from the seed, botocore's standard
retries get through a 20% fault rate, and it is loopback-only and bounded.
"""

from __future__ import annotations

import os
import socket
import time

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, ResponseStreamingError

from s3sync.local.faults import FAULT_KINDS, FaultProxy
from tests.conftest import make_client

pytestmark = pytest.mark.timeout(120)

BUCKET = "proxied"


def s3_via(proxy: FaultProxy, server, retries: int = 0):
    return make_client("s3", proxy.endpoint_url, aws_access_key_id=server.access_key_id,
                       aws_secret_access_key=server.secret_access_key,
                       config=Config(retries={"mode": "standard", "total_max_attempts": retries + 1},
                                     read_timeout=10,
                                     s3={"addressing_style": "path"}))


@pytest.fixture
def bucket(rclone_server):
    rclone_server.create_bucket(BUCKET)
    return rclone_server


def test_without_faults_every_request_is_forwarded_unchanged(bucket):
    data = os.urandom(3 * 1024 * 1024 + 5)
    with FaultProxy(bucket.endpoint_url) as proxy:
        s3 = s3_via(proxy, bucket)
        s3.put_object(Bucket=BUCKET, Key="a b/ü+%.bin", Body=data, Metadata={"k": "v"})
        got = s3.get_object(Bucket=BUCKET, Key="a b/ü+%.bin")
        assert got["Body"].read() == data
        assert {k.lower(): v for k, v in got["Metadata"].items()} == {"k": "v"}  # rclone capitalises keys
        part = s3.get_object(Bucket=BUCKET, Key="a b/ü+%.bin", Range="bytes=10-19")["Body"].read()
        assert part == data[10:20]
        assert s3.head_object(Bucket=BUCKET, Key="a b/ü+%.bin")["ContentLength"] == len(data)
        up = s3.create_multipart_upload(Bucket=BUCKET, Key="mp")["UploadId"]
        etag = s3.upload_part(Bucket=BUCKET, Key="mp", UploadId=up, PartNumber=1, Body=data)["ETag"]
        s3.complete_multipart_upload(Bucket=BUCKET, Key="mp", UploadId=up,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
        assert [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]] == ["a b/ü+%.bin", "mp"]
        s3.delete_object(Bucket=BUCKET, Key="mp")
        figures = proxy.figures()
    assert figures["faults"] == 0 and figures["requests"] == figures["forwarded"] == 9
    assert figures["by_method"] == {"DELETE": 1, "GET": 3, "HEAD": 1, "POST": 2, "PUT": 2}


@pytest.mark.parametrize(("kind", "status", "code"), [("slowdown", 503, "SlowDown"),
                                                      ("internal", 500, "InternalError")])
def test_error_faults_answer_s3_xml_errors_and_never_reach_the_server(bucket, kind, status, code):
    with FaultProxy(bucket.endpoint_url, fault_rate=1.0, kinds=[kind]) as proxy:
        s3 = s3_via(proxy, bucket)
        with pytest.raises(ClientError) as err:
            s3.put_object(Bucket=BUCKET, Key="never", Body=b"x" * 1000)
        assert err.value.response["Error"]["Code"] == code
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
        with pytest.raises(ClientError) as err:  # HEAD: the status alone, no body
            s3.head_object(Bucket=BUCKET, Key="never")
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
        assert proxy.figures()["by_kind"] == {kind: 2}
    direct = make_client("s3", bucket.endpoint_url, **_keys(bucket))
    assert "Contents" not in direct.list_objects_v2(Bucket=BUCKET)


def test_reset_before_the_request_reaches_the_server(bucket):
    with FaultProxy(bucket.endpoint_url, fault_rate=1.0, kinds=["reset"]) as proxy:
        s3 = s3_via(proxy, bucket)
        with pytest.raises(ConnectionClosedError):
            s3.put_object(Bucket=BUCKET, Key="never", Body=b"x" * 1000)
        assert proxy.figures()["by_kind"] == {"reset": 1}
    direct = make_client("s3", bucket.endpoint_url, **_keys(bucket))
    assert "Contents" not in direct.list_objects_v2(Bucket=BUCKET)


def test_reset_mid_body_cuts_a_streamed_get_and_loses_the_answer_of_a_put(bucket):
    data = os.urandom(1024 * 1024)
    direct = make_client("s3", bucket.endpoint_url, **_keys(bucket))
    direct.put_object(Bucket=BUCKET, Key="obj", Body=data)
    with FaultProxy(bucket.endpoint_url, fault_rate=1.0, kinds=["reset_mid_body"]) as proxy:
        s3 = s3_via(proxy, bucket)
        resp = s3.get_object(Bucket=BUCKET, Key="obj")  # status and headers arrive ...
        assert resp["ContentLength"] == len(data)
        with pytest.raises(ResponseStreamingError):  # ... the body stops half-way: botocore cannot retry that
            resp["Body"].read()
        with pytest.raises(ConnectionClosedError):  # no body to cut: the server did it, the answer is lost
            s3.put_object(Bucket=BUCKET, Key="written", Body=b"y" * 1000)
        assert proxy.figures()["by_kind"] == {"reset_after_upstream": 1, "reset_mid_body": 1}
    assert direct.get_object(Bucket=BUCKET, Key="written")["Body"].read() == b"y" * 1000


@pytest.mark.system
def test_the_seed_repeats_the_same_faults_for_the_same_requests(bucket):
    def run(seed: int) -> list[bool]:
        outcome = []
        with FaultProxy(bucket.endpoint_url, fault_rate=0.3, kinds=["slowdown"], seed=seed) as proxy:
            s3 = s3_via(proxy, bucket)
            for _ in range(40):
                try:
                    s3.list_objects_v2(Bucket=BUCKET)
                    outcome.append(True)
                except ClientError:
                    outcome.append(False)
        return outcome

    first, again, other = run(11), run(11), run(12)
    assert first == again and first != other
    assert 4 <= first.count(False) <= 20  # about 30% of 40


@pytest.mark.system
def test_botocore_standard_retries_get_through_twenty_percent_faults(bucket):
    """The engine's setting (standard mode, max_attempts 8, i.e. 8 retries): every call succeeds; the proxy sees
    the retries."""
    objects = {f"k{i}": os.urandom(64 * 1024 + i) for i in range(30)}
    started = time.monotonic()
    with FaultProxy(bucket.endpoint_url, fault_rate=0.2, seed=5,
                    kinds=["slowdown", "internal", "reset"]) as proxy:
        s3 = s3_via(proxy, bucket, retries=8)
        for key, data in objects.items():
            s3.put_object(Bucket=BUCKET, Key=key, Body=data)
            assert s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == len(data)
        figures = proxy.figures()
    print(f"\nproxy figures over {time.monotonic() - started:.1f} s: {figures}")
    assert figures["faults"] >= 6 and figures["retries_seen"] == figures["faults"]
    direct = make_client("s3", bucket.endpoint_url, **_keys(bucket))
    for key, data in objects.items():
        assert direct.get_object(Bucket=BUCKET, Key=key)["Body"].read() == data


def test_bandwidth_slows_responses_down(bucket):
    data = os.urandom(512 * 1024)
    make_client("s3", bucket.endpoint_url, **_keys(bucket)).put_object(Bucket=BUCKET, Key="slow", Body=data)
    with FaultProxy(bucket.endpoint_url, bandwidth=1024 * 1024) as proxy:
        s3 = s3_via(proxy, bucket)
        started = time.monotonic()
        assert s3.get_object(Bucket=BUCKET, Key="slow")["Body"].read() == data
        assert time.monotonic() - started >= 0.4  # 512 KiB at 1 MiB/s


def test_it_serves_and_forwards_to_loopback_only():
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy("http://192.0.2.10:9000")
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy("http://127.0.0.1:9000", host="0.0.0.0")
    with pytest.raises(ValueError, match="http://"):
        FaultProxy("https://127.0.0.1:9000")
    with pytest.raises(ValueError, match="fault kinds"):
        FaultProxy("http://127.0.0.1:9000", kinds=["explode"])
    assert set(FAULT_KINDS) == {"slowdown", "internal", "reset", "reset_mid_body"}


def test_bounded_body_and_a_closed_port_after_exit(bucket):
    with FaultProxy(bucket.endpoint_url, max_body=1000) as proxy:
        s3 = s3_via(proxy, bucket)
        with pytest.raises(ClientError) as err:
            s3.put_object(Bucket=BUCKET, Key="big", Body=b"z" * 5000)
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
        port = proxy.port
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_upstream_down_answers_bad_gateway():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    with FaultProxy(f"http://127.0.0.1:{dead}", timeout=2) as proxy:
        s3 = make_client("s3", proxy.endpoint_url,
                         config=Config(retries={"mode": "standard", "total_max_attempts": 1}))
        with pytest.raises(ClientError) as err:
            s3.list_buckets()
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 502
        assert proxy.figures()["upstream_errors"] == 1


def _keys(server) -> dict[str, str]:
    return {"aws_access_key_id": server.access_key_id, "aws_secret_access_key": server.secret_access_key}
