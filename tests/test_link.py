"""The link emulator (s3sync.local.link.Link) on its own: delay, per-connection and aggregate caps, stalls and hangs,
measured through it, and the counting of requests and part uploads that benchmark B4 relies on.

Every bound on time is a lower bound the emulator guarantees by construction (less a pacing credit of SLACK) or a
generous upper bound (a shared machine may be slow, never fast); figures are small so that the file runs in seconds.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ConnectionClosedError, ReadTimeoutError

from s3sync.local.link import MB, PROFILES, SLACK, Link, LinkProfile, _RequestReader
from tests.conftest import make_client

pytestmark = pytest.mark.timeout(120)

BUCKET = "linked"


@pytest.fixture
def sink() -> Iterator[int]:
    """A loopback TCP server: reads "N\\n" then N bytes, answers "ok\\n"; many connections at once."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    stop = threading.Event()

    def handle(conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as f:
            while line := f.readline():
                left = int(line)
                while left:
                    got = f.read(min(left, 1 << 20))
                    if not got:
                        return
                    left -= len(got)
                conn.sendall(b"ok\n")

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join(timeout=2)
    srv.close()


class Peer:
    """One client connection through the link to the sink."""

    def __init__(self, link: Link) -> None:
        self.sock = socket.create_connection(("127.0.0.1", link.port), timeout=30)
        self.file = self.sock.makefile("rb")

    def exchange(self, size: int = 0) -> float:
        started = time.monotonic()
        self.sock.sendall(f"{size}\n".encode() + b"x" * size)
        assert self.file.readline() == b"ok\n"
        return time.monotonic() - started

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.mark.system
def test_round_trips_take_the_rtt_and_a_new_connection_its_handshake_first(sink):
    with Link(f"http://127.0.0.1:{sink}", LinkProfile(rtt=0.2, handshake_rtts=2)) as link:
        peer = Peer(link)
        first = peer.exchange()
        again = [peer.exchange() for _ in range(3)]
        peer.close()
    assert 0.6 <= first < 0.6 + 2.0  # handshake (2 RTT) + the exchange's own round trip
    assert all(0.2 <= t < 0.2 + 2.0 for t in again), again


def test_one_connection_moves_at_most_its_cap(sink):
    rate = 2 * MB
    with Link(f"http://127.0.0.1:{sink}", LinkProfile(rtt=0.0, handshake_rtts=0, per_connection=rate)) as link:
        peer = Peer(link)
        peer.exchange()
        took = peer.exchange(MB)
        peer.close()
        figures = link.figures()
    # 1 MB at 2 MB/s: 0.5 s, less the pacing credit and one read ahead of the cap; a generous ceiling
    assert 0.5 - SLACK - 0.05 <= took < 0.5 + 3.0, took
    assert figures["bytes"]["up"] >= MB and figures["connections"] == 1


@pytest.mark.system
def test_connections_share_the_aggregate_fairly(sink):
    profile = LinkProfile(rtt=0.0, handshake_rtts=0, per_connection=8 * MB, aggregate=2 * MB)
    size, n = MB // 2, 4
    took: list[float] = [0.0] * n
    with Link(f"http://127.0.0.1:{sink}", profile) as link:
        peers = [Peer(link) for _ in range(n)]
        for p in peers:
            p.exchange()
        started = time.monotonic()

        def send(i: int) -> None:
            took[i] = peers[i].exchange(size)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        total = time.monotonic() - started
        for p in peers:
            p.close()
    # alone, each would take 0.5 MB / 8 MB/s = 0.06 s; together they share 2 MB/s: 2 MB take 1 s
    assert 1.0 - SLACK - 0.1 <= total < 1.0 + 4.0, total
    # first come, first served in small chunks: nobody finishes in a fraction of the others' time
    assert min(took) >= 0.5 * max(took), took


def s3_via(link: Link, server: Any, **config: Any) -> Any:
    return make_client("s3", link.endpoint_url, aws_access_key_id=server.access_key_id,
                       aws_secret_access_key=server.secret_access_key,
                       config=Config(s3={"addressing_style": "path"}, **config))


def test_requests_and_every_part_upload_are_counted(rclone_server):
    rclone_server.create_bucket(BUCKET)
    part = b"p" * (5 * 1024 * 1024)
    with Link(rclone_server.endpoint_url, LinkProfile(rtt=0.01, handshake_rtts=0)) as link:
        s3 = s3_via(link, rclone_server)
        s3.put_object(Bucket=BUCKET, Key="whole", Body=b"w" * 1000)
        up = s3.create_multipart_upload(Bucket=BUCKET, Key="a b/mp")["UploadId"]
        e1 = s3.upload_part(Bucket=BUCKET, Key="a b/mp", UploadId=up, PartNumber=1, Body=part)["ETag"]
        s3.upload_part(Bucket=BUCKET, Key="a b/mp", UploadId=up, PartNumber=1, Body=part)  # sent again
        e2 = s3.upload_part(Bucket=BUCKET, Key="a b/mp", UploadId=up, PartNumber=2, Body=b"end")["ETag"]
        s3.complete_multipart_upload(Bucket=BUCKET, Key="a b/mp", UploadId=up, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
        assert s3.get_object(Bucket=BUCKET, Key="a b/mp")["Body"].read() == part + b"end"
        figures = link.figures()
        parts = dict(link.parts)
    assert parts == {(f"/{BUCKET}/a b/mp", up, 1): 2, (f"/{BUCKET}/a b/mp", up, 2): 1}
    assert figures["part_copies"] == {"distinct": 3, "sent": 4, "max_per_part": 2, "sent_twice": 1,
                                      "sent_more_than_twice": 0}
    assert figures["requests"] == {"GET": 1, "POST": 2, "PUT": 4}
    assert figures["bytes"]["up"] > 2 * len(part) and "opaque_connections" not in figures


@pytest.mark.system
def test_a_stalled_request_stops_its_connection_then_goes_on(rclone_server):
    rclone_server.create_bucket(BUCKET)
    profile = LinkProfile(rtt=0.0, handshake_rtts=0, stall_chance=1.0, stall_seconds=0.5)
    with Link(rclone_server.endpoint_url, profile) as link:
        s3 = s3_via(link, rclone_server, read_timeout=10, retries={"total_max_attempts": 1})
        started = time.monotonic()
        s3.put_object(Bucket=BUCKET, Key="k", Body=b"s" * 100_000)
        took = time.monotonic() - started
        assert s3.get_object(Bucket=BUCKET, Key="k")["Body"].read() == b"s" * 100_000
        figures = link.figures()
    assert 0.5 <= took < 0.5 + 3.0, took  # a stall shorter than the read timeout: slow, never an error
    assert figures["stalls"] == 2 and "hangs" not in figures


def _seed_for(draws: list[bool], chance: float) -> int:
    """A seed whose first draws fall below `chance` exactly where `draws` says True."""
    for seed in range(10_000):
        rng = random.Random(seed)
        if all((rng.random() < chance) == want for want in draws):
            return seed
    raise AssertionError("no seed found")


@pytest.mark.system
def test_a_hung_request_is_cut_by_the_clients_read_timeout_and_its_retry_goes_through(rclone_server):
    rclone_server.create_bucket(BUCKET)
    profile = LinkProfile(rtt=0.0, handshake_rtts=0, hang_chance=0.5)
    seed = _seed_for([True, False, False], 0.5)  # the PUT hangs; its retry and the GET do not
    with Link(rclone_server.endpoint_url, profile, seed=seed) as link:
        s3 = s3_via(link, rclone_server, read_timeout=0.5, retries={"mode": "standard", "total_max_attempts": 2})
        started = time.monotonic()
        s3.put_object(Bucket=BUCKET, Key="k", Body=b"h" * 200_000)
        took = time.monotonic() - started
        assert s3.get_object(Bucket=BUCKET, Key="k")["Body"].read() == b"h" * 200_000
        figures = link.figures()
        deadline = time.monotonic() + 5
        while link.open_connections > 1 and time.monotonic() < deadline:  # the hung one is closed by the client
            time.sleep(0.05)
        assert link.open_connections <= 1
    assert 0.5 <= took < 0.5 + 5.0, took
    assert figures["hangs"] == 1 and figures["part_copies"]["max_per_part"] == 2  # the PUT went twice
    with Link(rclone_server.endpoint_url, LinkProfile(hang_chance=1.0, handshake_rtts=0)) as link:
        s3 = s3_via(link, rclone_server, read_timeout=0.3, retries={"mode": "standard", "total_max_attempts": 2})
        with pytest.raises((ReadTimeoutError, ConnectionClosedError)):
            s3.put_object(Bucket=BUCKET, Key="never", Body=b"n" * 10)
        assert link.figures()["hangs"] == 2


def test_the_request_reader_frames_requests_split_anywhere():
    stream = (b"PUT /b/k?partNumber=3&uploadId=u1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
              b"GET /b/k HTTP/1.1\r\nHost: x\r\n\r\n"
              b"POST /b/k?uploads HTTP/1.1\r\ncontent-length: 0\r\n\r\n")
    for size in (1, 2, 3, 7, len(stream)):
        reader = _RequestReader()
        found = []
        for i in range(0, len(stream), size):
            found += reader.feed(stream[i:i + size])
        assert [(m, t, n) for _, m, t, n in found] == [("PUT", "/b/k?partNumber=3&uploadId=u1", 5),
                                                     ("GET", "/b/k", 0), ("POST", "/b/k?uploads", 0)]
        assert found[0][0] == stream.index(b"hello") and not reader.opaque
    chunked = _RequestReader()
    chunked.feed(b"PUT /b/k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert chunked.opaque  # forwarded untouched, no longer counted


def test_profiles_scale_bandwidth_and_keep_delays_and_the_flows_it_takes():
    good = PROFILES["cn-good"]
    assert (good.rtt, good.per_connection, good.aggregate) == (0.150, 4 * MB, 200 * MB)
    fitted = good.fitted(40 * MB)
    assert fitted.aggregate == pytest.approx(40 * MB) and fitted.per_connection == pytest.approx(0.8 * MB)
    assert fitted.rtt == good.rtt and fitted.flows_to_fill == pytest.approx(good.flows_to_fill) == 50
    assert fitted.scale == pytest.approx(0.2) and "x0.2 of the path's" in fitted.describe()
    assert good.fitted(None) is good and good.fitted(500 * MB) is good  # never scaled up
    evening = PROFILES["cn-evening"]
    assert evening.stall_chance == 0.01 and evening.stall_seconds == 5.0
    assert "1.0% of requests stall 5 s" in evening.describe()
    with pytest.raises(ValueError):
        LinkProfile(per_connection=0)
    with pytest.raises(ValueError):
        LinkProfile(stall_chance=1.5)


def test_it_serves_loopback_only():
    with pytest.raises(ValueError, match="loopback"):
        Link("http://10.0.0.1:9000")
    with pytest.raises(ValueError, match="loopback"):
        Link("http://127.0.0.1:9000", host="0.0.0.0")
    with pytest.raises(ValueError, match="http://"):
        Link("https://127.0.0.1:9000")


def test_a_link_in_its_own_process_serves_and_counts_the_same(sink):
    from s3sync.local.link import LinkProcess

    with LinkProcess(f"http://127.0.0.1:{sink}", LinkProfile(rtt=0.1, handshake_rtts=0)) as link:
        peer = Peer(link)
        assert peer.exchange(1000) >= 0.1
        peer.close()
        figures = link.figures()
        link.reset()
        assert link.figures()["bytes"] == {"up": 0, "down": 0}
        link.set_profile(LinkProfile(rtt=0.0, handshake_rtts=0))
    assert figures["connections"] == 1 and figures["bytes"]["up"] >= 1000
    with pytest.raises(ValueError, match="loopback"):
        LinkProcess("http://10.0.0.1:9000")


def test_part_uploads_and_object_puts_are_told_from_other_requests():
    from s3sync.local.link import _object_put, _part_of

    assert _part_of("PUT", "/b/a%20b?partNumber=7&uploadId=u%2B1") == ("/b/a b", "u+1", 7)
    assert _part_of("PUT", "/b/k?uploadId=u") is None and _part_of("POST", "/b/k?partNumber=1&uploadId=u") is None
    assert _object_put("PUT", "/b/k?x-id=PutObject") == "/b/k"  # the Go SDK's PutObject (rclone)
    assert _object_put("PUT", "/b/a%20b") == "/b/a b"
    assert _object_put("PUT", "/b/k?tagging") is None and _object_put("PUT", "/b?notification=") is None
    assert _object_put("GET", "/b/k") is None
