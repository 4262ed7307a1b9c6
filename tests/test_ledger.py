"""The ledger's conditional writes against moto's DynamoDB: concurrent callers never count twice."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from s3sync.contract import PARTS_HASH_KEY, PARTS_RANGE_KEY, TRANSFERS_HASH_KEY, Status
from s3sync.transfer.ledger import Job, Ledger, Outcome, PartRecord


def make_tables(ddb) -> tuple[str, str]:
    t, c = f"t-{uuid.uuid4().hex[:8]}", f"c-{uuid.uuid4().hex[:8]}"
    ddb.create_table(TableName=t, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": TRANSFERS_HASH_KEY, "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": TRANSFERS_HASH_KEY, "KeyType": "HASH"}])
    ddb.create_table(TableName=c, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": PARTS_HASH_KEY, "AttributeType": "S"},
                                           {"AttributeName": PARTS_RANGE_KEY, "AttributeType": "N"}],
                     KeySchema=[{"AttributeName": PARTS_HASH_KEY, "KeyType": "HASH"},
                                {"AttributeName": PARTS_RANGE_KEY, "KeyType": "RANGE"}])
    return t, c


@pytest.fixture
def ledger(boto_client) -> Ledger:
    ddb = boto_client("dynamodb")
    return Ledger(ddb, *make_tables(ddb))


def new_job(ledger: Ledger, total: int = 3, status: str = Status.COPYING, upload: str = "up-1") -> Job:
    job = Job(job_id=uuid.uuid4().hex, status=status, source_bucket="s", source_key="k", source_etag='"e"',
              dest_bucket="d", dest_key="k", size=total * 10, part_size=10, total=total, remaining=total,
              upload_id=upload, created_at=1, updated_at=1)
    assert ledger.create_job(job)
    return job


def test_create_job_is_conditional(ledger):
    job = new_job(ledger)
    assert ledger.create_job(job) is False
    assert ledger.get_job(job.job_id) == job


def test_the_same_part_recorded_by_eight_racing_workers_counts_once(ledger):
    job = new_job(ledger)
    part = PartRecord(part=2, etag="abc", md5="abc", size=10)
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda _: ledger.record_part(job.job_id, "up-1", part), range(8)))
    assert outcomes.count(Outcome.RECORDED) == 1
    assert outcomes.count(Outcome.DUPLICATE) == 7
    after = ledger.get_job(job.job_id)
    assert (after.remaining, after.done, after.done_bytes) == (2, 1, 10)
    assert [p.part for p in ledger.parts(job.job_id)] == [2]


def test_a_part_of_another_upload_or_a_failed_job_is_not_counted(ledger):
    job = new_job(ledger)
    assert ledger.record_part(job.job_id, "stale-upload", PartRecord(1, "e", "e", 10)) == Outcome.INACTIVE
    assert ledger.mark_failed(job.job_id, "source changed")
    assert ledger.record_part(job.job_id, "up-1", PartRecord(1, "e", "e", 10)) == Outcome.INACTIVE
    assert ledger.get_job(job.job_id).remaining == 3
    assert ledger.parts(job.job_id) == []  # the transaction wrote nothing
    assert ledger.mark_failed(job.job_id, "again") is None  # FAILED stays FAILED, reason kept
    assert ledger.get_job(job.job_id).error == "source changed"


def test_completion_is_elected_once_and_only_when_every_part_is_counted(ledger):
    job = new_job(ledger, total=2)
    assert ledger.elect_completion(job.job_id) is None  # parts missing
    for n in (1, 2):
        assert ledger.record_part(job.job_id, "up-1", PartRecord(n, "e", "e", 10)) == Outcome.RECORDED
    with ThreadPoolExecutor(8) as pool:
        winners = [j for j in pool.map(lambda _: ledger.elect_completion(job.job_id), range(8)) if j]
    assert len(winners) == 1 and winners[0].status == Status.COMPLETING
    assert ledger.mark_done(job.job_id, "etag-2").status == Status.DONE
    assert ledger.mark_failed(job.job_id, "late") is None


def test_completion_handed_back_counts_attempts(ledger):
    job = new_job(ledger, total=1)
    ledger.record_part(job.job_id, "up-1", PartRecord(1, "e", "e", 10))
    ledger.elect_completion(job.job_id)
    back = ledger.release_completion(job.job_id)
    assert back.status == Status.COPYING and back.completion_attempts == 1
    assert ledger.elect_completion(job.job_id) is not None


def test_parts_are_listed_sorted_across_pages(ledger):
    job = new_job(ledger, total=120)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: ledger.record_part(job.job_id, "up-1", PartRecord(n, f"e{n}", f"m{n}", 10)),
                      range(120, 0, -1)))
    parts = ledger.parts(job.job_id)
    assert [p.part for p in parts] == list(range(1, 121))
    assert ledger.get_job(job.job_id).remaining == 0
