"""Fault scenarios (issue #5): the real pipeline through `s3sync local` on real local servers, with faults injected.

Each scenario prints one line of figures ("[reliability] ..."): objects, bytes, faults injected, retries, time;
set S3SYNC_FIGURES=/path/file.jsonl to collect them as JSON lines (the reliability table of docs/testing.md comes
from there).

Servers: moto (session) for the control plane; `rclone serve s3` for fast buckets; moto's S3 where `If-Match` must be
enforced (rclone ignores it); `s3sync.local.faults.FaultProxy` in front of an S3 server to inject 503/500/resets or
to slow responses down (so that a part takes long enough to be interrupted).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from s3sync.contract import Status
from s3sync.local.faults import FaultProxy
from s3sync.local.runner import BucketSpec, LocalOptions, LocalRunner
from s3sync.local.servers import RcloneS3Server
from s3sync.transfer.checksums import multipart_etag, strip_etag
from tests.conftest import make_client

pytestmark = pytest.mark.timeout(240)

MiB = 1024 * 1024
CONTENT_TYPE = "application/x-reliability"


# --- helpers ----------------------------------------------------------------------------------------------------------
def options(moto_server: Any, name: str, **kw: Any) -> LocalOptions:
    base: dict[str, Any] = dict(
        endpoint_url=moto_server.endpoint_url, name=name, until_idle=True, part_size_mib=5, worker_threads=2,
        min_tasks=1, max_tasks=2, visibility_timeout=5, alarm_period=0.5, idle_grace=1.0, timeout=150,
        source=BucketSpec(f"{name}-src"), dest=BucketSpec(f"{name}-dst", region="cn-north-1"),
    )
    base.update(kw)
    return LocalOptions(**base)


def spec(server: RcloneS3Server, bucket: str, endpoint_url: str | None = None, region: str = "us-east-1") -> BucketSpec:
    return BucketSpec(bucket, endpoint_url or server.endpoint_url, server.access_key_id, server.secret_access_key,
                      region)


def direct(server: Any) -> Any:
    """A client straight to a server (never through a proxy): for uploads and for checking results."""
    if isinstance(server, RcloneS3Server):
        return make_client("s3", server.endpoint_url, aws_access_key_id=server.access_key_id,
                           aws_secret_access_key=server.secret_access_key)
    return make_client("s3", server.endpoint_url)  # moto


def put_all(s3: Any, bucket: str, objects: dict[str, bytes]) -> None:
    for key, data in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=CONTENT_TYPE, Metadata={"scenario": "rel"})


def once(fn: Callable[[LocalRunner], None]) -> Callable[[LocalRunner], None]:
    done: list[bool] = []

    def tick(runner: LocalRunner) -> None:
        if not done:
            done.append(True)
            fn(runner)
    return tick


def expected_etag(data: bytes, job: Any) -> str:
    if not job.multipart:
        return hashlib.md5(data).hexdigest()
    return multipart_etag(hashlib.md5(data[i:i + job.part_size]).hexdigest()
                          for i in range(0, len(data), job.part_size))


def check_identical(runner: LocalRunner, dest: Any, summary: Any, objects: dict[str, bytes]) -> None:
    """Every object DONE, counted exactly, byte-identical at the destination, with its ETag and headers."""
    jobs = {j.source_key: j for j in summary.jobs}
    assert set(jobs) == set(objects)
    for key, data in objects.items():
        job = jobs[key]
        assert job.status == Status.DONE, (key, job.status, job.error)
        assert job.done == job.total and job.remaining == 0 and job.done_bytes == len(data), key
        got = dest.get_object(Bucket=runner.options.dest.name, Key=key)
        assert got["Body"].read() == data, key
        assert got["ContentType"] == CONTENT_TYPE, key
        assert strip_etag(job.dest_etag) == expected_etag(data, job), key
        assert len(runner.ledger.parts(job.job_id, job.attempt)) == (0 if job.inline else job.total), key


def worker_lines(state_dir: Path) -> list[dict[str, Any]]:
    out = []
    for f in sorted((state_dir / "logs").glob("worker-*.log")):
        for line in f.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:  # a line cut by SIGKILL
                    pass
    return out


def open_uploads(dest: Any, bucket: str) -> list[dict[str, Any]]:
    try:
        return dest.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    except dest.exceptions.NoSuchUpload:  # rclone's answer for a bucket that never had a multipart upload
        return []


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[..., None]:
    """report(**figures): print one line of figures past pytest's capture, and append it to $S3SYNC_FIGURES."""
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def emit(**figures: Any) -> None:
        scenario = request.node.name
        line = f"[reliability] {scenario}: " + ", ".join(f"{k}={v}" for k, v in figures.items())
        with capture.global_and_fixture_disabled():
            print("\n" + line, flush=True)
        path = os.environ.get("S3SYNC_FIGURES")
        if path:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"scenario": scenario, **figures}, default=str) + "\n")
    return emit


@pytest.fixture
def rclone() -> Iterator[Callable[..., RcloneS3Server]]:
    """Factory of `rclone serve s3` servers, all stopped at the end."""
    started: list[RcloneS3Server] = []

    def start(*buckets: str, **kwargs: Any) -> RcloneS3Server:
        server = RcloneS3Server(**kwargs).start()
        started.append(server)
        for b in buckets:
            server.create_bucket(b)
        return server

    yield start
    for server in started:
        server.stop()


# --- 1. SIGKILL mid-part, five times ----------------------------------------------------------------------------------
@pytest.mark.system
def test_worker_killed_mid_part_five_times(moto_server, rclone, tmp_path, report):
    name = "rel-kill"
    src, dst = rclone(f"{name}-src"), rclone(f"{name}-dst")
    data = os.urandom(16 * MiB + 77)  # 4 parts of 5 MiB (the last 1 MiB + 77 B)
    objects = {"big/killed.bin": data}
    put_all(direct(src), f"{name}-src", objects)
    kills: list[dict[str, Any]] = []
    started: dict[tuple[int, str, int], float] = {}

    def killer(runner: LocalRunner) -> None:
        """Kill the worker that has been copying a part for 0.4 s and not finished it (its GET is throttled)."""
        if len(kills) >= 5:
            return
        lines = worker_lines(tmp_path)
        finished = {(r["pid"], r.get("job"), r.get("part")) for r in lines
                    if r["msg"] in ("part copied", "part was already counted", "part will be retried")}
        ours = set(json.loads((tmp_path / "workers.json").read_text())) if (tmp_path / "workers.json").exists() \
            else set()
        dead = {k["pid"] for k in kills}
        for r in lines:
            ident = (r["pid"], r.get("job"), r.get("part"))
            if r["msg"] != "copying part" or ident in finished or r["pid"] in dead or r["pid"] not in ours:
                continue
            first_seen = started.setdefault(ident, time.monotonic())
            if time.monotonic() - first_seen >= 0.4:
                os.kill(r["pid"], signal.SIGKILL)
                kills.append({"pid": r["pid"], "part": r["part"], "at": round(time.monotonic() - t0, 1)})
                return

    # 3 MiB/s from the source: a 5 MiB part takes ~1.7 s, long enough to be killed in the middle.
    with FaultProxy(src.endpoint_url, bandwidth=3 * MiB) as slow:
        runner = LocalRunner(options(moto_server, name, source=spec(src, f"{name}-src", slow.endpoint_url),
                                     dest=spec(dst, f"{name}-dst"), state_dir=tmp_path, worker_threads=1,
                                     min_tasks=1, max_tasks=1, visibility_timeout=4))
        t0 = time.monotonic()
        summary = runner.run(on_tick=killer)
    assert len(kills) == 5, kills
    check_identical(runner, direct(dst), summary, objects)
    lines = worker_lines(tmp_path)
    copies = [r for r in lines if r["msg"] == "copying part"]
    counted = [(r["job"], r["part"]) for r in lines if r["msg"] == "part copied"]
    assert sorted(counted) == sorted(set(counted)) and len(counted) == summary.jobs[0].total  # each counted once
    assert len(list((tmp_path / "logs").glob("worker-*.log"))) >= 6  # the service replaced every killed task
    assert summary.dlq_messages == 0 and open_uploads(direct(dst), f"{name}-dst") == []
    report(objects=1, bytes=len(data), faults=f"5 SIGKILL (parts {[k['part'] for k in kills]})",
           retries=f"{len(copies) - len(counted)} part re-deliveries", workers_started=len(
               list((tmp_path / "logs").glob("worker-*.log"))), time_s=round(summary.elapsed, 1))


# --- 2. every message delivered three times ---------------------------------------------------------------------------
@pytest.mark.system
def test_every_message_delivered_three_times(moto_server, rclone, tmp_path, report):
    name = "rel-dup3"
    dst = rclone(f"{name}-dst")  # moto's S3 breaks when two clients upload the same part number at once
    objects = {f"dup/object-{i}.bin": os.urandom(11 * MiB + i) for i in range(2)}
    objects["dup/small.txt"] = b"three times"
    completions: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "done":
                completions.append(getattr(record, "job", ""))

    handler = Collect()
    logging.getLogger("s3sync.completion").addHandler(handler)
    try:
        runner = LocalRunner(options(moto_server, name, duplicate_messages=3, state_dir=tmp_path,
                                     dest=spec(dst, f"{name}-dst", region="cn-north-1")))
        summary = runner.run(on_tick=once(lambda r: put_all(r.source_s3, r.options.source.name, objects)))
    finally:
        logging.getLogger("s3sync.completion").removeHandler(handler)
    assert summary.ok, [(j.source_key, j.status, j.error) for j in summary.jobs]
    check_identical(runner, direct(dst), summary, objects)
    done = [n for n in summary.notices if n.get("status") == Status.DONE]
    assert len(done) == len(objects)  # one notification per object
    # one completion per object the workers copied (the small one: copied and made DONE by the splitter)
    assert sorted(completions) == sorted(j.job_id for j in summary.jobs if not j.inline)
    lines = worker_lines(tmp_path)
    counted = [(r["job"], r["part"]) for r in lines if r["msg"] == "part copied"]
    repeated = [r for r in lines if r["msg"] in ("part was already counted",
                                                "part already counted or job inactive; acknowledged")]
    total = sum(j.total for j in summary.jobs if not j.inline)
    assert len(counted) == len(set(counted)) == total
    assert len(repeated) == 2 * total  # the 2nd and 3rd delivery of every part: recognised, never counted
    report(objects=len(objects), bytes=sum(map(len, objects.values())),
           faults=f"{2 * total} extra deliveries", retries=f"{len(repeated)} acknowledged without counting",
           completions=len(completions), time_s=round(summary.elapsed, 1))


# --- 3. 20% of S3 requests on both sides fail -------------------------------------------------------------------------
@pytest.mark.system
def test_twenty_percent_s3_faults_on_both_sides(moto_server, rclone, tmp_path, report):
    """Source on rclone, destination on moto's S3: a retried CompleteMultipartUpload whose first answer was lost
    gets NoSuchUpload, and completion then checks the object's ETag, which moto (like S3) gives as "<md5>-N" while
    rclone gives the whole-file MD5 (see test_lost_complete_answer_is_recognised)."""
    name = "rel-flaky"
    src = rclone(f"{name}-src")
    dst = moto_server
    direct(dst).create_bucket(Bucket=f"{name}-dst")
    objects = {f"flaky/multi-{i}.bin": os.urandom(size) for i, size in enumerate(
        (11 * MiB + 1, 11 * MiB + 2, 6 * MiB + 3, 16 * MiB + 4))}
    objects.update({f"flaky/small-{i}.bin": os.urandom(size) for i, size in enumerate(
        (0, 1, 1000, 64 * 1024, 300 * 1024, 5 * MiB - 1))})
    put_all(direct(src), f"{name}-src", objects)
    seed = int(os.environ.get("S3SYNC_FAULT_SEED", "3"))  # explore other fault sequences with this
    with FaultProxy(src.endpoint_url, fault_rate=0.2, seed=seed) as p_src, \
            FaultProxy(dst.endpoint_url, fault_rate=0.2, seed=seed + 1) as p_dst:
        runner = LocalRunner(options(moto_server, name, state_dir=tmp_path, timeout=120,
                                     source=spec(src, f"{name}-src", p_src.endpoint_url),
                                     dest=BucketSpec(f"{name}-dst", p_dst.endpoint_url, "testing", "testing")))
        summary = runner.run()
        p_src.fault_rate = p_dst.fault_rate = 0.0
        f_src, f_dst = p_src.figures(), p_dst.figures()
    assert summary.elapsed < 120, "did not finish within the bound"
    check_identical(runner, direct(dst), summary, objects)
    assert summary.dlq_messages == 0
    lines = worker_lines(tmp_path)
    engine_retries = [r for r in lines if r["msg"] == "part will be retried"]
    orphans = open_uploads(direct(dst), f"{name}-dst")
    report(objects=len(objects), bytes=sum(map(len, objects.values())),
           faults=f"source {f_src['faults']} {f_src['by_kind']} of {f_src['requests']} requests; "
                  f"destination {f_dst['faults']} {f_dst['by_kind']} of {f_dst['requests']} requests",
           retries=f"botocore+engine {f_src['retries_seen'] + f_dst['retries_seen']} repeated requests, "
                   f"{len(engine_retries)} parts re-queued by the engine",
           orphan_uploads=len(orphans), time_s=round(summary.elapsed, 1))
    assert f_src["faults"] > 0 and f_dst["faults"] > 0


def _complete_multipart(method: str, path: str) -> bool:
    return method == "POST" and "uploadId=" in path


@pytest.mark.parametrize("kind", ["reset_mid_body"])
@pytest.mark.system
def test_lost_complete_answer_is_recognised(moto_server, tmp_path, report, kind):
    """CompleteMultipartUpload done at the destination but its answer lost (reset) or refused once (503): the
    retry finds the upload gone (NoSuchUpload) or completes it; either way the job ends DONE with the right ETag."""
    name = f"rel-lostcomplete-{kind.replace('_', '')}"
    direct(moto_server).create_bucket(Bucket=f"{name}-dst")
    data = os.urandom(11 * MiB + 5)
    with FaultProxy(moto_server.endpoint_url, fault_rate=1.0, kinds=[kind], only=_complete_multipart,
                    max_faults=1) as proxy:
        runner = LocalRunner(options(moto_server, name, state_dir=tmp_path, timeout=60,
                                     dest=BucketSpec(f"{name}-dst", proxy.endpoint_url, "testing", "testing")))
        summary = runner.run(on_tick=once(lambda r: put_all(r.source_s3, r.options.source.name, {"k.bin": data})))
        figures = proxy.figures()
    assert figures["faults"] == 1
    check_identical(runner, direct(moto_server), summary, {"k.bin": data})
    report(objects=1, bytes=len(data), faults=f"CompleteMultipartUpload: {figures['by_kind']}",
           retries=figures["retries_seen"], time_s=round(summary.elapsed, 1))


# --- 4. the source is overwritten during its transfer -----------------------------------------------------------------
def _first_part_copied(state_dir: Path) -> bool:
    return any(r["msg"] == "part copied" for r in worker_lines(state_dir))


@pytest.mark.system
def test_source_overwritten_during_transfer_never_mixes(moto_server, rclone, tmp_path, report):
    """moto's S3 enforces If-Match (412), rclone does not (tests/test_local_servers.py): the source is moto."""
    name = "rel-overwrite"
    moto_s3 = direct(moto_server)
    moto_s3.create_bucket(Bucket=f"{name}-src")
    dst = rclone(f"{name}-dst")
    old, new = os.urandom(16 * MiB + 5), os.urandom(11 * MiB + 9)
    key = "changing/object.bin"
    put_all(moto_s3, f"{name}-src", {key: old})
    overwritten: list[float] = []

    def overwrite(runner: LocalRunner) -> None:
        if not overwritten and _first_part_copied(tmp_path):
            put_all(moto_s3, f"{name}-src", {key: new})
            overwritten.append(time.monotonic())

    with FaultProxy(moto_server.endpoint_url, bandwidth=4 * MiB) as slow:
        runner = LocalRunner(options(moto_server, name, state_dir=tmp_path, worker_threads=1, max_tasks=1,
                                     source=BucketSpec(f"{name}-src", slow.endpoint_url, "testing", "testing"),
                                     dest=spec(dst, f"{name}-dst", region="cn-north-1")))
        summary = runner.run(on_tick=overwrite)
    assert overwritten, "the first part was never copied"
    jobs = sorted(summary.jobs, key=lambda j: j.created_at)
    by_etag = {strip_etag(j.source_etag): j for j in jobs}
    stale = by_etag[hashlib.md5(old).hexdigest()]
    assert stale.status == Status.FAILED and "source changed" in (stale.error or ""), stale
    assert stale.done < stale.total  # it stopped part-way
    # never a mixed object: the destination holds exactly the new version (or nothing, had the new job failed)
    got = direct(dst).get_object(Bucket=f"{name}-dst", Key=key)["Body"].read()
    assert got == new
    fresh = by_etag[hashlib.md5(new).hexdigest()]
    assert fresh.status == Status.DONE and strip_etag(fresh.dest_etag) == expected_etag(new, fresh)
    assert open_uploads(direct(dst), f"{name}-dst") == []  # the stale upload was aborted
    failed = [n for n in summary.notices if n.get("status") == Status.FAILED]
    assert len(failed) == 1 and "source changed" in failed[0]["reason"]
    lines = worker_lines(tmp_path)
    report(objects="1 (2 versions)", bytes=len(old) + len(new), faults="1 overwrite after part 1",
           retries=f"{sum(r['msg'] == 'copying part' and r.get('job') == stale.job_id for r in lines)} part copies "
                   f"of the stale job ({stale.done}/{stale.total} counted)",
           outcome=f"stale FAILED ({stale.error.split(':')[0]}), new DONE", time_s=round(summary.elapsed, 1))


# --- 5. the source is deleted during its transfer ---------------------------------------------------------------------
@pytest.mark.system
def test_source_deleted_during_transfer_fails_cleanly(moto_server, rclone, tmp_path, report):
    name = "rel-deleted"
    moto_s3 = direct(moto_server)
    moto_s3.create_bucket(Bucket=f"{name}-src")
    dst = rclone(f"{name}-dst")
    data = os.urandom(21 * MiB + 3)  # 5 parts
    key = "vanishing/object.bin"
    put_all(moto_s3, f"{name}-src", {key: data})
    deleted: list[float] = []

    def delete(runner: LocalRunner) -> None:
        if not deleted and _first_part_copied(tmp_path):
            moto_s3.delete_object(Bucket=f"{name}-src", Key=key)
            deleted.append(time.monotonic())

    with FaultProxy(moto_server.endpoint_url, bandwidth=4 * MiB) as slow:
        runner = LocalRunner(options(moto_server, name, state_dir=tmp_path, worker_threads=2, max_tasks=2,
                                     source=BucketSpec(f"{name}-src", slow.endpoint_url, "testing", "testing"),
                                     dest=spec(dst, f"{name}-dst", region="cn-north-1"), timeout=90))
        summary = runner.run(on_tick=delete)
    assert deleted, "the first part was never copied"
    [job] = summary.jobs
    assert job.status == Status.FAILED and "source object missing" in (job.error or ""), job
    assert open_uploads(direct(dst), f"{name}-dst") == []  # upload aborted
    failed = [n for n in summary.notices if n.get("status") == Status.FAILED]
    assert len(failed) == 1 and "source object missing" in failed[0]["reason"]
    lines = worker_lines(tmp_path)
    copies = [r for r in lines if r["msg"] == "copying part" and r.get("job") == job.job_id]
    assert len(copies) <= job.total + 2, "the parts of a failed job kept being retried"
    assert summary.dlq_messages == 0 and summary.elapsed < 60
    report(objects=1, bytes=len(data), faults="1 delete after part 1",
           retries=f"{len(copies)} part copies for {job.total} parts", outcome=f"FAILED ({job.error.split(':')[0]})",
           time_s=round(summary.elapsed, 1))


# --- 6. wrong destination credentials ---------------------------------------------------------------------------------
DEST_KEY_ID = "S3SYNCRELIABILITYKEYID0001"
DEST_SECRET = "s3sync-reliability-secret-Zq7+Xw/9Kp"
REVOKED_SECRET = "s3sync-revoked-secret-Hh3/Vv8+Mm"


@pytest.mark.system
def test_wrong_destination_credentials_fail_fast(moto_server, rclone, tmp_path, capfd, report):
    """The destination stops accepting the key the system holds (revoked): FAILED fast, named, no retry storm."""
    name = "rel-badkey"
    root = tmp_path / "dest-root"
    dst = rclone(f"{name}-dst", root=root, access_key_id=DEST_KEY_ID, secret_access_key=REVOKED_SECRET)
    objects = {"creds/big.bin": os.urandom(11 * MiB), "creds/small.txt": b"small"}
    revoked_at: list[float] = []

    def revoke_then_upload(runner: LocalRunner) -> None:
        dst.stop()  # the same buckets on the same port, now accepting only the new secret
        rclone(root=root, port=dst.port, access_key_id=DEST_KEY_ID, secret_access_key=DEST_SECRET)
        revoked_at.append(time.monotonic())
        counter.requests = 0
        put_all(runner.source_s3, runner.options.source.name, objects)

    with FaultProxy(dst.endpoint_url) as counter:  # no faults: it counts what reaches the destination
        runner = LocalRunner(options(moto_server, name, state_dir=tmp_path, timeout=60,
                                     dest=spec(dst, f"{name}-dst", counter.endpoint_url, "cn-north-1")))
        summary = runner.run(on_tick=once(revoke_then_upload))
        dest_requests = counter.figures()
    out, err = capfd.readouterr()
    jobs = {j.source_key: j for j in summary.jobs}
    statuses = {k: (j.status, j.error) for k, j in jobs.items()}
    slowest = max((j.updated_at - j.created_at for j in jobs.values()), default=None)
    report(objects=len(objects), bytes=sum(map(len, objects.values())), faults="destination key revoked",
           retries=f"{dest_requests['requests']} requests reached the destination",
           outcome=statuses, slowest_job_s=slowest, time_s=round(summary.elapsed, 1))
    assert set(jobs) == set(objects), f"not every object got a job: {statuses}"
    for key, job in jobs.items():
        assert job.status == Status.FAILED, (key, job.status, job.error)
        assert "destination" in job.error and f"{name}-dst" in job.error, job.error
    assert slowest is not None and slowest <= 15, f"a job took {slowest} s to fail"
    assert dest_requests["requests"] <= 20, f"retry storm: {dest_requests}"
    good = make_client("s3", dst.endpoint_url, aws_access_key_id=DEST_KEY_ID, aws_secret_access_key=DEST_SECRET)
    assert open_uploads(good, f"{name}-dst") == [] and "Contents" not in good.list_objects_v2(Bucket=f"{name}-dst")
    assert [p for p in (root / f"{name}-dst").rglob("*")] == []  # not a byte landed, not even a temporary file
    captured = out + err + "".join(f.read_text(errors="replace") for f in tmp_path.rglob("*.log"))
    for secret in (DEST_SECRET, REVOKED_SECRET):
        assert secret not in captured


# --- 7. malformed and unknown-version messages ------------------------------------------------------------------------
@pytest.mark.system
def test_poison_messages_reach_the_dlq_while_the_rest_completes(moto_server, rclone, tmp_path, report):
    name = "rel-poison"
    dst = rclone(f"{name}-dst")
    poison = ['{"v": 99, "job": "x"}', "not json at all", '{"v": 1, "job": "x"}',
              json.dumps({"v": 1, "job": "j", "src": {}, "dst": {}, "part": {"n": 3, "of": 2, "start": 0, "end": 1}})]
    objects = {f"ok/obj-{i}.bin": os.urandom(size) for i, size in enumerate((2000, 6 * MiB + 1, 300 * 1024))}

    def inject(runner: LocalRunner) -> None:
        sqs = runner.client("sqs")
        for body in poison:
            sqs.send_message(QueueUrl=runner.resources.queue_url, MessageBody=body)
        put_all(runner.source_s3, runner.options.source.name, objects)

    runner = LocalRunner(options(moto_server, name, state_dir=tmp_path, max_receive_count=3,
                                 dest=spec(dst, f"{name}-dst", region="cn-north-1")))
    summary = runner.run(on_tick=once(inject))
    assert summary.dlq_messages == len(poison)
    check_identical(runner, direct(dst), summary, objects)
    lines = worker_lines(tmp_path)
    bad = [r for r in lines if r["msg"] == "malformed message"]
    assert {r["message_id"] for r in bad} and len({r["message_id"] for r in bad}) == len(poison)
    assert all(r["reason"] for r in bad) and max(r["receives"] for r in bad) <= 3
    assert any("unknown message version 99" in r["reason"] for r in bad)
    report(objects=len(objects), bytes=sum(map(len, objects.values())),
           faults=f"{len(poison)} malformed messages", retries=f"{len(bad)} receives of them, all logged with a reason",
           dlq=summary.dlq_messages, time_s=round(summary.elapsed, 1))


# --- 8. a hundred objects at once -------------------------------------------------------------------------------------
@pytest.mark.system
def test_a_hundred_objects_at_once(moto_server, rclone, tmp_path, report):
    name = "rel-hundred"
    dst = rclone(f"{name}-dst")
    rng = random.Random(8)
    sizes = [rng.randint(0, 256 * 1024) for _ in range(96)] + [6 * MiB + 1, 7 * MiB + 2, 11 * MiB + 3, 5 * MiB]
    objects = {f"many/{i:03d}.bin": os.urandom(size) for i, size in enumerate(sizes)}
    assert len(objects) == 100
    runner = LocalRunner(options(moto_server, name, state_dir=tmp_path, worker_threads=4, max_tasks=3,
                                 scale_out_threshold=20, timeout=150,
                                 dest=spec(dst, f"{name}-dst", region="cn-north-1")))
    summary = runner.run(on_tick=once(lambda r: put_all(r.source_s3, r.options.source.name, objects)))
    assert not [j for j in summary.jobs if j.status not in Status.FINAL], "jobs left unfinished"
    assert summary.ok, [(j.source_key, j.status, j.error) for j in summary.jobs if j.status != Status.DONE]
    check_identical(runner, direct(dst), summary, objects)
    done = [n for n in summary.notices if n.get("status") == Status.DONE]
    assert len(done) == 100
    report(objects=100, bytes=sum(map(len, objects.values())), faults="none (load)",
           retries=sum(r["msg"] == "part will be retried" for r in worker_lines(tmp_path)),
           max_workers=summary.max_workers, time_s=round(summary.elapsed, 1))
