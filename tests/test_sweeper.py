"""The sweeper drives every stale unfinished job on, against moto's DynamoDB and SQS."""

from __future__ import annotations

import time
import uuid

import pytest

from s3sync.contract import Status
from s3sync.transfer.ledger import Job, Ledger, PartRecord
from s3sync.transfer.message import decode
from s3sync.transfer.settings import Settings
from s3sync.transfer.splitter import Splitter
from s3sync.transfer.sweeper import Sweeper
from tests.test_ledger import make_tables

LATER = 10_000  # seconds: every job below looks stale to a sweeper whose clock runs this far ahead


@pytest.fixture
def env(boto_client):
    ddb, sqs = boto_client("dynamodb"), boto_client("sqs")
    ledger = Ledger(ddb, *make_tables(ddb))
    queue_url = sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    settings = Settings(queue_url=queue_url, transfers_table=ledger.transfers, parts_table=ledger.parts_table)
    splitter = Splitter(source=boto_client("s3"), dest=None, sqs=sqs, ledger=ledger, settings=settings)
    sweeper = Sweeper(ledger=ledger, splitter=splitter, stale_after=60, max_redrives=2,
                      clock=lambda: time.time() + LATER, queue_busy=lambda: busy[0])
    return ledger, sqs, queue_url, sweeper


busy = [False]  # what the sweepers' queue_busy answers (the part queue as SQS counts it)


@pytest.fixture(autouse=True)
def queue_empty():
    busy[0] = False


def job(ledger: Ledger, status: str, total: int = 4, recorded: tuple[int, ...] = ()) -> Job:
    j = Job(job_id=uuid.uuid4().hex, status=Status.PLANNED, source_bucket="src", source_key="k.bin",
            source_etag='"e"', dest_bucket="dst", dest_key="k.bin", size=total * 5 * 2**20, part_size=5 * 2**20,
            total=total, remaining=total, upload_id="up-1", created_at=int(time.time()),
            updated_at=int(time.time()), attempt="a-1")
    assert ledger.create_job(j)
    for n in recorded:
        ledger.record_part(j.job_id, "a-1", "up-1", PartRecord(n, "e", "e", 5 * 2**20))
    if status in (Status.COPYING, Status.COMPLETING):
        ledger.mark_copying(j)
    if status == Status.COMPLETING:
        assert ledger.elect_completion(j.job_id)
    return ledger.get_job(j.job_id)


def drain(sqs, url) -> list[int]:
    parts = []
    while True:
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not msgs:
            return sorted(parts)
        for m in msgs:
            parts.append(decode(m["Body"]).part_number)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def test_missing_parts_are_re_sent_then_the_job_fails_with_their_numbers(env):
    ledger, sqs, url, sweeper = env
    j = job(ledger, Status.COPYING, total=4, recorded=(1, 3))
    first = sweeper.sweep()
    assert first.redriven == {j.job_id: 2}
    assert drain(sqs, url) == [2, 4]
    assert ledger.get_job(j.job_id).redrives == 1
    sweeper.sweep()
    assert drain(sqs, url) == [2, 4]
    last = sweeper.sweep()  # max_redrives reached
    assert last.failed == [j.job_id] and drain(sqs, url) == []
    failed = ledger.get_job(j.job_id)
    assert failed.status == Status.FAILED and "parts never copied: [2, 4]" in failed.error


def test_a_planned_job_is_resumed_with_every_part(env):
    ledger, sqs, url, sweeper = env
    j = job(ledger, Status.PLANNED, total=3)
    assert sweeper.sweep().resumed == [j.job_id]
    assert drain(sqs, url) == [1, 2, 3]
    assert ledger.get_job(j.job_id).status == Status.COPYING


@pytest.mark.system
def test_a_counted_job_whose_completion_never_ran_is_retriggered(env):
    ledger, sqs, url, sweeper = env
    j = job(ledger, Status.COPYING, total=2, recorded=(1, 2))
    before = ledger.get_job(j.job_id).updated_at
    time.sleep(1.1)
    assert sweeper.sweep().retriggered == [j.job_id]
    after = ledger.get_job(j.job_id)
    assert after.status == Status.COPYING and after.remaining == 0 and after.updated_at > before
    assert drain(sqs, url) == []


def test_a_stalled_completion_is_handed_back(env):
    ledger, _sqs, _url, sweeper = env
    j = job(ledger, Status.COMPLETING, total=1, recorded=(1,))
    assert sweeper.sweep().retriggered == [j.job_id]
    assert ledger.get_job(j.job_id).status == Status.COPYING


def test_fresh_and_finished_jobs_are_left_alone(env):
    ledger, sqs, url, sweeper = env
    fresh_sweeper = Sweeper(ledger=ledger, splitter=sweeper.splitter, stale_after=60)
    j = job(ledger, Status.COPYING, total=2)
    done = job(ledger, Status.COPYING, total=1, recorded=(1,))
    ledger.mark_done(ledger.elect_completion(done.job_id), "etag")
    result = fresh_sweeper.sweep()
    assert (result.redriven, result.resumed, result.retriggered, result.failed) == ({}, [], [], [])
    assert drain(sqs, url) == [] and ledger.get_job(j.job_id).redrives == 0


def test_a_job_whose_parts_wait_in_a_busy_queue_is_not_stuck(env):
    """Issue 13 item 4: after a backfill the queue holds thousands of parts; a job whose parts wait there makes no
    progress for longer than stale_after, and is neither re-driven nor failed while anything is queued or in
    flight. Once the queue is empty, what is still missing is re-driven."""
    ledger, sqs, url, sweeper = env
    j = job(ledger, Status.COPYING, total=3, recorded=(2,))
    busy[0] = True
    for _ in range(5):  # more sweeps than max_redrives
        result = sweeper.sweep()
        assert (result.redriven, result.failed) == ({}, [])
    after = ledger.get_job(j.job_id)
    assert after.status == Status.COPYING and after.redrives == 0 and drain(sqs, url) == []
    busy[0] = False
    assert sweeper.sweep().redriven == {j.job_id: 2}
    assert drain(sqs, url) == [1, 3]


def test_a_planned_job_whose_parts_are_all_counted_goes_on_to_completion(env):
    """The splitter died after enqueueing (before PLANNED -> COPYING) and every part got counted: the sweep sends
    nothing and moves it on, whatever its re-drive count (it was never failed as "parts never copied: []")."""
    ledger, sqs, url, sweeper = env
    j = job(ledger, Status.PLANNED, total=2, recorded=(1, 2))
    for _ in range(3):
        ledger.note_redrive(ledger.get_job(j.job_id))
    assert sweeper.sweep().resumed == [j.job_id]
    after = ledger.get_job(j.job_id)
    assert after.status == Status.COPYING and after.remaining == 0 and drain(sqs, url) == []


class LaggingIndex:
    """The DynamoDB client as a lagging global secondary index shows it (GSI reads are eventually consistent): the
    first page of every Query on an index still lists the jobs in `stale`, as it did before they finished."""

    def __init__(self, ddb, stale):
        self.ddb, self.stale = ddb, stale

    def __getattr__(self, name):
        return getattr(self.ddb, name)

    def query(self, **kwargs):
        resp = self.ddb.query(**kwargs)
        if "IndexName" in kwargs and "ExclusiveStartKey" not in kwargs:
            resp["Items"] = [{"job_id": {"S": j}} for j in self.stale] + resp["Items"]
        return resp


def test_a_job_the_lagging_index_still_lists_is_read_again_and_left_alone(env):
    """The sweeper acts on what a strongly consistent read of each candidate shows, never on the index's listing:
    a DONE job, and a FAILED one, the index still names are not touched; the stuck one is driven on once."""
    ledger, sqs, url, sweeper = env
    done = job(ledger, Status.COMPLETING, total=1, recorded=(1,))
    assert ledger.mark_done(done, "etag")
    failed = job(ledger, Status.COPYING, total=2)
    assert ledger.mark_failed(failed, "refused", by="attempt")
    stuck = job(ledger, Status.COPYING, total=2, recorded=(1,))
    before = {j: ledger.get_job(j) for j in (done.job_id, failed.job_id)}
    ledger.ddb = LaggingIndex(ledger.ddb, [done.job_id, failed.job_id])
    result = sweeper.sweep()
    assert result.as_dict() == {"resumed": [], "redriven": {stuck.job_id: 1}, "retriggered": [], "failed": []}
    assert drain(sqs, url) == [2]
    assert {j: ledger.get_job(j) for j in before} == before  # not written to (rev unchanged)


def test_a_sweep_reads_the_index_not_the_table(env):
    """What a sweep reads grows with the unfinished jobs, not with the DONE ones: no Scan, and jobs created less
    than `stale_after` ago are not even asked for."""
    ledger, _sqs, _url, sweeper = env
    for _ in range(20):
        d = job(ledger, Status.COMPLETING, total=1, recorded=(1,))
        assert ledger.mark_done(d, "etag")
    stuck = job(ledger, Status.PLANNED, total=1)
    calls = []
    ledger.ddb.meta.events.register("after-call.dynamodb",
                                    lambda model, parsed, **_: calls.append((model.name, parsed)))
    fresh = Sweeper(ledger=ledger, splitter=sweeper.splitter, stale_after=60, clock=time.time,
                    queue_busy=lambda: False)
    assert fresh.sweep().as_dict()["resumed"] == []
    assert {name for name, _ in calls} == {"Query"}  # 16 shards, nothing old enough: no job read at all
    calls.clear()
    assert sweeper.sweep().resumed == [stuck.job_id]
    reads = [(name, p) for name, p in calls if name in ("Query", "BatchGetItem", "Scan")]
    assert "Scan" not in {name for name, _ in reads}
    assert sum(p.get("Count", 0) for name, p in reads if name == "Query") == 1
    assert sum(len(r) for name, p in reads if name == "BatchGetItem" for r in p["Responses"].values()) == 1
