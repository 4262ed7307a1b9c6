"""`s3sync retry`: a FAILED job gets a new attempt (new plan, new upload, old parts gone, fresh counters) exactly once
however many retries race; the dead-letter queue goes back to the part queue, minus what can only do harm; and
end to end through `s3sync local`, a job that failed because the destination bucket was missing completes after
`retry --failed`."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time

import pytest
from click.testing import CliRunner

from s3sync.cli import cli
from s3sync.contract import Status
from s3sync.local.runner import BucketSpec, LocalOptions, LocalRunner
from s3sync.ops.context import resolve
from s3sync.ops.retry import do_retry, redrive_dlq, render
from s3sync.transfer.events import ObjectRef
from s3sync.transfer.ledger import PartRecord
from s3sync.transfer.message import decode
from s3sync.transfer.reattempt import Reattempter
from tests.ops_support import make_system, put_job

MiB = 2**20
pytestmark = pytest.mark.timeout(120)


def failed_job(sys_, key: str = "big.bin", size: int = 5 * MiB + 1):
    """Split a real object (2 parts at 5 MiB), count one part, then fail it as the engine does (the completion
    function aborts the upload); its messages are gone."""
    data = os.urandom(size)
    sys_.s3.put_object(Bucket=sys_.src, Key=key, Body=data)
    rt = sys_.target.runtime()
    split = rt.splitter().split(ObjectRef(sys_.src, key))
    job = sys_.ledger.get_job(split.job_id)
    sys_.ledger.record_part(job.job_id, job.attempt, job.upload_id, PartRecord(1, "e1", "e1", min(size, 5 * MiB)))
    sys_.ledger.mark_failed(job, "destination refused access (AccessDenied)", by="attempt")
    if job.multipart:
        sys_.s3.abort_multipart_upload(Bucket=sys_.dst, Key=key, UploadId=job.upload_id)
    sys_.messages()
    return sys_.ledger.get_job(job.job_id), data


def test_a_failed_job_gets_a_fresh_attempt(moto_server):
    sys_ = make_system(moto_server.endpoint_url)
    old, _ = failed_job(sys_)
    assert old.status == Status.FAILED and len(sys_.ledger.parts(old.job_id, old.attempt)) == 1

    report = do_retry(sys_.target, [old.job_id[:10]])  # a unique prefix, as `status` shows it
    [result] = report.jobs
    assert (result.outcome, result.parts) == ("requeued", 2)
    new = sys_.ledger.get_job(old.job_id)
    assert new.status == Status.COPYING and new.upload_id not in (old.upload_id, "-")
    assert (new.remaining, new.done, new.done_bytes, new.total, new.error) == (2, 0, 0, 2, None)
    raw = sys_.ddb.get_item(TableName=sys_.target.transfers_table, Key={"job_id": {"S": old.job_id}})["Item"]
    assert raw["previous_error"]["S"] == "destination refused access (AccessDenied)" and raw["attempts"]["N"] == "1"
    # the old attempt's part 1 counts for nothing in the new one (issue 13 item 7: nothing to delete first)
    assert new.attempt != old.attempt and sys_.ledger.parts(old.job_id, new.attempt) == []
    assert not sys_.ledger.part_recorded(old.job_id, new.attempt, 1)
    msgs = [decode(json.dumps(m)) for m in sys_.messages()]
    assert sorted(m.part_number for m in msgs) == [1, 2] and {m.upload_id for m in msgs} == {new.upload_id}
    assert {m.attempt for m in msgs} == {new.attempt}
    uploads = sys_.s3.list_multipart_uploads(Bucket=sys_.dst).get("Uploads", [])
    assert [u["UploadId"] for u in uploads] == [new.upload_id]
    # a second retry finds nothing to do: the job is no longer FAILED
    again = do_retry(sys_.target, [old.job_id])
    assert [r.outcome for r in again.jobs] == ["not-finished"] and not again.ok


def test_racing_retries_act_once(moto_server):
    sys_ = make_system(moto_server.endpoint_url)
    old, _ = failed_job(sys_)
    rt = sys_.target.runtime()
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def retry() -> None:
        r = Reattempter(ledger=rt.ledger, splitter=rt.splitter(), source=rt.source, dest=rt.dest,
                        part_size=5 * MiB)
        barrier.wait()
        outcomes.append(r.reattempt(old).outcome)  # all four read the job as FAILED

    threads = [threading.Thread(target=retry) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["busy", "busy", "busy", "requeued"]
    new = sys_.ledger.get_job(old.job_id)
    assert len(sys_.messages()) == 2  # one attempt's parts, once
    uploads = sys_.s3.list_multipart_uploads(Bucket=sys_.dst).get("Uploads", [])
    assert [u["UploadId"] for u in uploads] == [new.upload_id]  # the losers aborted theirs


@pytest.mark.system
def test_changed_or_deleted_sources(moto_server):
    sys_ = make_system(moto_server.endpoint_url, inline_max_bytes=0)  # jobs a worker failed
    changed, _ = failed_job(sys_, "changed.bin", 2 * MiB)
    gone, _ = failed_job(sys_, "gone.bin", 1000)
    sys_.s3.put_object(Bucket=sys_.src, Key="changed.bin", Body=b"new content")
    sys_.s3.delete_object(Bucket=sys_.src, Key="gone.bin")
    report = do_retry(sys_.target, [], failed=True)
    by_job = {r.job_id: r for r in report.jobs}
    assert by_job[gone.job_id].outcome == "source-missing"
    superseded = by_job[changed.job_id]
    assert superseded.outcome == "superseded" and superseded.new_job_id not in ("", changed.job_id)
    assert sys_.ledger.get_job(superseded.new_job_id).size == len(b"new content")
    assert sys_.ledger.get_job(changed.job_id).status == Status.FAILED  # the old object's job stays as it was
    assert report.dlq is not None and report.dlq.moved == 0


@pytest.mark.system
def test_dead_letter_queue_moves_only_what_can_still_help(moto_server):
    sys_ = make_system(moto_server.endpoint_url)
    active = put_job(sys_.ledger, Status.COPYING, upload="up-now")
    done = put_job(sys_.ledger, Status.DONE, total=1, recorded=(1,), size=10, upload="up-d")

    def body(job_id: str, upload: str, part: int = 1) -> str:
        # put_job's attempt token is "a-<upload>": a message of another upload is another attempt's
        return json.dumps({"v": 2, "job": job_id, "src": {"bucket": "src", "key": "k.bin", "etag": '"e"'},
                           "dst": {"bucket": "dst", "key": "k.bin", "upload": upload, "attempt": f"a-{upload}"},
                           "part": {"n": part, "of": 4, "start": 0, "end": 9}})

    for b in (body(active.job_id, "up-now", 2), body(active.job_id, "up-old", 3), body(done.job_id, "up-d"),
              body("f" * 32, "up-x"), '{"v": 99}'):
        sys_.sqs.send_message(QueueUrl=sys_.target.dlq_url, MessageBody=b)
    result = redrive_dlq(sys_.sqs, sys_.target.dlq_url, sys_.target.queue_url, sys_.ledger)
    assert result.as_dict() == {"moved": 1, "dropped": 3, "malformed": 1}
    [moved] = sys_.messages()
    assert (moved["job"], moved["dst"]["upload"], moved["part"]["n"]) == (active.job_id, "up-now", 2)
    attrs = sys_.sqs.get_queue_attributes(QueueUrl=sys_.target.dlq_url, AttributeNames=["All"])["Attributes"]
    assert int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"]) == 1


def test_worker_forgets_a_job_it_saw_fail(moto_server):
    from s3sync.transfer.worker import Worker

    sys_ = make_system(moto_server.endpoint_url, inline_max_bytes=0)  # small.txt goes to the worker
    sys_.s3.put_object(Bucket=sys_.src, Key="small.txt", Body=b"copied by the second attempt")
    rt = sys_.target.runtime()
    job_id = rt.splitter().split(ObjectRef(sys_.src, "small.txt")).job_id
    sys_.s3.delete_bucket(Bucket=sys_.dst)  # the worker's PUT fails: it marks the job FAILED
    worker = Worker(sqs=sys_.sqs, queue_url=sys_.target.queue_url, ledger=sys_.ledger, source=rt.source, dest=rt.dest,
                    threads=1, visibility_timeout=10, wait_seconds=1, stop_grace=0.5)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while sys_.ledger.get_job(job_id).status != Status.FAILED and time.monotonic() < deadline:
            time.sleep(0.1)
        sys_.s3.create_bucket(Bucket=sys_.dst)
        assert [r.outcome for r in do_retry(sys_.target, [job_id]).jobs] == ["requeued"]
        deadline = time.monotonic() + 2
        while sys_.ledger.get_job(job_id).remaining and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sys_.ledger.get_job(job_id).remaining == 0  # the same worker copied and counted the new attempt
    finally:
        worker.stop()
        thread.join(timeout=10)


@pytest.mark.parametrize("args, message, code", [
    ([], "name the jobs to retry", 2),  # a usage error: nothing was looked at
    (["not-a-job"], "'not-a-job' is not a job id", 1),
    (["abcdef12"], "no job abcdef12 in", 1),
])
def test_retry_mistakes_are_one_line_errors(moto_server, args, message, code):
    sys_ = make_system(moto_server.endpoint_url)
    t = sys_.target
    result = CliRunner().invoke(cli, ["retry", *args, "--endpoint-url", t.endpoint_url, "--table", t.transfers_table,
                                      "--parts-table", t.parts_table, "--queue-url", t.queue_url])
    assert result.exit_code == code and message in result.output and "Traceback" not in result.output


@pytest.mark.system
def test_local_job_failed_by_a_missing_bucket_completes_after_retry(moto_server):
    name = "ops-retry-e2e"
    # failed by the splitter (CreateMultipartUpload refused); see test_worker_forgets_a_job_it_saw_fail for one
    # failed by a worker
    objects = {"retry/multi.bin": os.urandom(6 * MiB + 5)}
    runner = LocalRunner(LocalOptions(endpoint_url=moto_server.endpoint_url, name=name, until_idle=True,
                                      part_size_mib=5, worker_threads=2, min_tasks=1, max_tasks=1,
                                      visibility_timeout=20, alarm_period=0.5, timeout=90, idle_grace=0.3,
                                      source=BucketSpec(f"{name}-src"), dest=BucketSpec(f"{name}-dst")))
    state: dict[str, object] = {}

    def tick(r: LocalRunner) -> None:
        if "uploaded" not in state:  # the destination bucket vanishes before anything is copied
            r.dest_s3.delete_bucket(Bucket=r.options.dest.name)
            for key, data in objects.items():
                r.source_s3.put_object(Bucket=r.options.source.name, Key=key, Body=data)
            state["uploaded"] = time.monotonic()
            return
        jobs = r.jobs()
        if "retried" not in state and jobs and all(j.status == Status.FAILED for j in jobs):
            state["errors"] = sorted(j.error for j in jobs)
            r.dest_s3.create_bucket(Bucket=r.options.dest.name)
            # `s3sync retry --failed --endpoint-url URL --name-prefix NAME`, as functions: click's CliRunner would
            # swap sys.stderr under the runner's logging threads
            report = do_retry(resolve(endpoint_url=r.endpoint_url, name_prefix=name), [], failed=True)
            lines: list[str] = []
            render(report, lines.append)
            state["retried"] = "\n".join(lines)
            assert report.ok, lines

    summary = runner.run(on_tick=tick)
    assert "retried" in state, state
    assert all("destination bucket missing" in e for e in state["errors"])  # type: ignore[union-attr]
    assert "retry/multi.bin  new attempt enqueued (2 part(s))" in state["retried"]  # the job's own 5 MiB parts
    assert summary.ok, [(j.source_key, j.status, j.error) for j in summary.jobs]
    for key, data in objects.items():
        got = runner.dest_s3.get_object(Bucket=runner.options.dest.name, Key=key)["Body"].read()
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), key
    statuses = [n.get("status") for n in summary.notices]
    assert statuses.count(Status.FAILED) == 1 and statuses.count(Status.DONE) == 1
    status = CliRunner().invoke(cli, ["status", "--endpoint-url", moto_server.endpoint_url, "--name-prefix", name,
                                      "--json"])
    doc = json.loads(status.stdout)
    assert doc["totals"]["by_status"]["DONE"] == 1 and doc["totals"]["bytes_done"] == sum(map(len, objects.values()))
