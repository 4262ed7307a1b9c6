"""End to end through `s3sync local`: the real handlers and worker processes against real local servers.

Each test runs a LocalRunner on the session's moto server (its own resource names) and checks what a user would:
bytes, ETags, metadata, the ledger's counts, the notifications, and the scaling of the worker service.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time

import pytest

from s3sync.contract import Status
from s3sync.local.runner import BucketSpec, LocalOptions, LocalRunner
from s3sync.transfer.checksums import multipart_etag, strip_etag
from s3sync.transfer.plan import MiB
from s3sync.transfer.splitter import marker_of, source_metadata

pytestmark = pytest.mark.timeout(240)

AWKWARD_KEYS = {
    "empty.bin": 0,
    "one byte.txt": 1,
    "dir/sub dir/ünï cödé 数据.dat": 3000,
    "plus+and%25percent%/a+b.bin": 5 * MiB - 1,
    "edge/exactly 5 MiB": 5 * MiB,
    "edge/5 MiB + 1": 5 * MiB + 1,
    "nested/a/b/c/odd-multipart.bin": 12 * MiB + 12345,
}


def body_for(key: str, size: int) -> bytes:
    seed = hashlib.sha256(key.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size] if size < 4096 else os.urandom(size)


def expected_etag(data: bytes, job) -> str:
    if not job.multipart:
        return hashlib.md5(data).hexdigest()
    return multipart_etag(hashlib.md5(data[i:i + job.part_size]).hexdigest()
                          for i in range(0, len(data), job.part_size))


def run_in_thread(runner: LocalRunner, on_tick=None):
    out: dict = {}

    def target():
        try:
            out["summary"] = runner.run(on_tick=on_tick)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            out["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, out


def once(fn):
    done = []

    def tick(runner):
        if not done:
            done.append(True)
            fn(runner)
    return tick


def options(moto_server, name, **kw) -> LocalOptions:
    base = dict(endpoint_url=moto_server.endpoint_url, name=name, until_idle=True, part_size_mib=5,
                worker_threads=2, min_tasks=1, max_tasks=2, visibility_timeout=20, alarm_period=0.5,
                timeout=180, source=BucketSpec(f"{name}-src"), dest=BucketSpec(f"{name}-dst", region="cn-north-1"))
    base.update(kw)
    return LocalOptions(**base)


def upload_all(objects: dict[str, bytes]):
    def tick(runner: LocalRunner):
        for key, data in objects.items():
            runner.source_s3.put_object(Bucket=runner.options.source.name, Key=key, Body=data,
                                        ContentType="application/x-test", Metadata={"origin": "e2e", "k": key[:8]})
    return once(tick)


def check_identical(runner: LocalRunner, summary, objects: dict[str, bytes], prefix: str = "") -> None:
    jobs = {j.source_key: j for j in summary.jobs}
    assert set(jobs) == set(objects)
    for key, data in objects.items():
        job = jobs[key]
        assert job.status == Status.DONE, (key, job.error)
        assert job.done == job.total and job.remaining == 0 and job.done_bytes == len(data)
        got = runner.dest_s3.get_object(Bucket=runner.options.dest.name, Key=prefix + key)
        assert got["Body"].read() == data, key
        assert got["ContentType"] == "application/x-test"
        # S3 lower-cases metadata keys; rclone capitalises them: keys are case-insensitive. The copy also names
        # its job (the s3sync-job marker: completion's proof after a lost answer)
        assert source_metadata(got["Metadata"]) == {"origin": "e2e", "k": key[:8]}
        assert marker_of(got["Metadata"]) == job.job_id
        assert strip_etag(job.dest_etag) == expected_etag(data, job)
        assert len(runner.ledger.parts(job.job_id, job.attempt)) == (0 if job.inline else job.total)


@pytest.mark.system
def test_awkward_objects_arrive_identical_through_moto_notifications(moto_server):
    objects = {k: body_for(k, n) for k, n in AWKWARD_KEYS.items()}
    runner = LocalRunner(options(moto_server, "e2e-awkward", dest_prefix="copied/"))
    summary = runner.run(on_tick=upload_all(objects))
    assert summary.ok, [(j.source_key, j.status, j.error) for j in summary.jobs]
    check_identical(runner, summary, objects, prefix="copied/")
    multipart = {j.source_key: j.total for j in summary.jobs if j.multipart}
    assert multipart == {"edge/exactly 5 MiB": 1, "edge/5 MiB + 1": 2, "nested/a/b/c/odd-multipart.bin": 3}
    done = [n for n in summary.notices if n.get("status") == Status.DONE]
    assert sorted(n["source"] for n in done) == sorted(f"s3://e2e-awkward-src/{k}" for k in objects)


@pytest.mark.system
def test_every_message_delivered_twice_counts_once(moto_server, rclone_server, tmp_path):
    # The destination is rclone: moto's S3 breaks when two clients upload the same part number at once.
    objects = {f"dup/object-{i}.bin": os.urandom(11 * MiB + i) for i in range(2)}
    objects["dup/small.txt"] = b"hello twice"
    dest = BucketSpec("dup-dst", rclone_server.endpoint_url, rclone_server.access_key_id,
                      rclone_server.secret_access_key)
    runner = LocalRunner(options(moto_server, "e2e-dup", duplicate_messages=2, state_dir=tmp_path, dest=dest))
    summary = runner.run(on_tick=upload_all(objects))
    assert summary.ok
    check_identical(runner, summary, objects)
    # one completion per object: one DONE notification each, one "done" line in the completion log
    done = [n for n in summary.notices if n.get("status") == Status.DONE]
    assert len(done) == len(objects)
    worker_lines = [json.loads(line) for f in (tmp_path / "logs").glob("worker-*.log")
                    for line in f.read_text().splitlines() if line.startswith("{")]
    counted = [(r["job"], r["part"]) for r in worker_lines if r["msg"] == "part copied"]
    repeated = [r for r in worker_lines if r["msg"] in ("part was already counted",
                                                        "part already counted or job inactive; acknowledged")]
    # (the small object is copied by the splitter: no part message, nothing counted)
    assert len(counted) == len(set(counted)) == sum(j.total for j in summary.jobs if not j.inline)
    assert len(repeated) == len(counted)  # every second delivery was recognised, none counted


@pytest.mark.system
def test_worker_killed_mid_part_is_recovered(moto_server, tmp_path):
    data = os.urandom(30 * MiB + 77)  # moto reads the whole object per ranged GET: parts take seconds
    runner = LocalRunner(options(moto_server, "e2e-kill", state_dir=tmp_path, worker_threads=1, min_tasks=1,
                                 max_tasks=1, visibility_timeout=6))
    killed: list[dict] = []

    def killer():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for f in (tmp_path / "logs").glob("worker-*.log"):
                for line in f.read_text().splitlines():
                    rec = json.loads(line) if line.startswith("{") else {}
                    if rec.get("msg") == "copying part" and rec.get("part") == 2:
                        os.kill(rec["pid"], signal.SIGKILL)
                        killed.append(rec)
                        return
            time.sleep(0.05)

    threading.Thread(target=killer, daemon=True).start()
    summary = runner.run(on_tick=upload_all({"big/killed.bin": data}))
    assert killed, "no worker was caught copying part 2"
    check_identical(runner, summary, {"big/killed.bin": data})
    lines = [json.loads(line) for f in (tmp_path / "logs").glob("worker-*.log")
             for line in f.read_text().splitlines() if line.startswith("{")]
    # every part the dead worker started and did not finish is taken up by another worker: copied again, or, where
    # the dead worker's recorder thread had counted it in the ledger just before the kill (and before its "part
    # copied" line), found counted and acknowledged. Which parts those are depends on when the kill lands.
    dead = killed[0]["pid"]
    started = {r["part"] for r in lines if r["msg"] == "copying part" and r["pid"] == dead}
    finished = {r["part"] for r in lines if r["msg"] == "part copied" and r["pid"] == dead}
    others = [r for r in lines if r.get("pid") != dead]
    assert 2 in started and started - finished, (started, finished)
    taken_up = ("part copied", "part already counted or job inactive; acknowledged")
    for part in started - finished:
        assert any(r.get("part") == part and r["msg"] in taken_up for r in others), part
    assert len(list((tmp_path / "logs").glob("worker-*.log"))) >= 2  # the service replaced the dead task


@pytest.mark.system
def test_backlog_scales_out_to_max_and_back_to_min(moto_server):
    # MinTasks 0: no worker drains the backlog before alarm A has seen it, so the test does not race the worker.
    # inline_max_bytes 0: these small objects go to the workers (by default the splitter copies them itself)
    objects = {f"many/obj-{i:03d}": os.urandom(2048) for i in range(40)}
    runner = LocalRunner(options(moto_server, "e2e-scale", worker_threads=1, min_tasks=0, max_tasks=3,
                                 inline_max_bytes=0, scale_out_threshold=5, alarm_period=0.3, scale_in_periods=2,
                                 idle_grace=3.0))
    summary = runner.run(on_tick=upload_all(objects))
    assert summary.ok
    assert summary.max_workers == 3
    assert summary.desired_counts[0] == 0 and 3 in summary.desired_counts and summary.desired_counts[-1] == 0


@pytest.mark.system
def test_malformed_message_reaches_the_dlq_with_its_reason(moto_server, tmp_path):
    def inject(runner: LocalRunner):
        runner.client("sqs").send_message(QueueUrl=runner.resources.queue_url, MessageBody='{"v": 99, "job": "x"}')

    runner = LocalRunner(options(moto_server, "e2e-poison", state_dir=tmp_path, max_receive_count=2,
                                 visibility_timeout=10))
    summary = runner.run(on_tick=once(inject))
    assert summary.dlq_messages == 1
    lines = [json.loads(line) for f in (tmp_path / "logs").glob("worker-*.log")
             for line in f.read_text().splitlines() if line.startswith("{")]
    bad = [r for r in lines if r["msg"] == "malformed message"]
    assert bad and all("unknown message version 99" in r["reason"] for r in bad)


@pytest.mark.system
def test_source_deleted_before_copy_fails_the_job_and_aborts_the_upload(moto_server):
    data = os.urandom(11 * MiB)

    def upload_then_delete(runner: LocalRunner):
        runner.source_s3.put_object(Bucket=runner.options.source.name, Key="gone.bin", Body=data)
        deadline = time.monotonic() + 30
        while not runner.jobs() and time.monotonic() < deadline:  # the splitter planned it
            time.sleep(0.05)
        runner.source_s3.delete_object(Bucket=runner.options.source.name, Key="gone.bin")

    # no worker until the backlog alarm fires: the object is gone before any part is read
    runner = LocalRunner(options(moto_server, "e2e-gone", min_tasks=0, max_tasks=1, scale_out_threshold=1,
                                 alarm_period=1.0))
    summary = runner.run(on_tick=once(upload_then_delete))
    [job] = summary.jobs
    assert job.status == Status.FAILED and "source object missing" in job.error
    uploads = runner.dest_s3.list_multipart_uploads(Bucket=runner.options.dest.name).get("Uploads", [])
    assert uploads == []
    failed = [n for n in summary.notices if n.get("status") == Status.FAILED]
    assert len(failed) == 1 and "source object missing" in failed[0]["reason"]


@pytest.mark.system
def test_lost_part_messages_are_re_driven_by_the_scheduled_sweep(moto_server):
    data = os.urandom(11 * MiB + 5)

    def upload_then_lose_every_message(runner: LocalRunner):
        runner.source_s3.put_object(Bucket=runner.options.source.name, Key="lost.bin", Body=data,
                                    ContentType="application/x-test", Metadata={"origin": "e2e", "k": "lost.bin"})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(j.status == Status.COPYING for j in runner.jobs()):
            time.sleep(0.05)
        runner.client("sqs").purge_queue(QueueUrl=runner.resources.queue_url)  # every part message is gone

    # no worker and a threshold the backlog never reaches: only the sweep can bring this job home
    runner = LocalRunner(options(moto_server, "e2e-sweep", min_tasks=0, max_tasks=1, scale_out_threshold=1000,
                                 stuck_after=3))
    summary = runner.run(on_tick=once(upload_then_lose_every_message))
    check_identical(runner, summary, {"lost.bin": data})
    [job] = summary.jobs
    assert job.redrives >= 1
    assert 1 in summary.desired_counts  # the sweep asked for a worker when it re-sent the parts
