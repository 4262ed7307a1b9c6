"""The ledger's conditional writes against moto's DynamoDB: concurrent callers never count twice."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from s3sync.contract import PARTS_HASH_KEY, PARTS_RANGE_KEY, Status
from s3sync.transfer.ledger import (
    Attention,
    Job,
    Ledger,
    Outcome,
    PartRecord,
    transfers_table_keys,
)


def make_tables(ddb) -> tuple[str, str]:
    t, c = f"t-{uuid.uuid4().hex[:8]}", f"c-{uuid.uuid4().hex[:8]}"
    ddb.create_table(TableName=t, BillingMode="PAY_PER_REQUEST", **transfers_table_keys())  # with its index
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


def new_job(ledger: Ledger, total: int = 3, status: str = Status.COPYING, upload: str = "up-1",
            attempt: str = "a-1") -> Job:
    job = Job(job_id=uuid.uuid4().hex, status=status, source_bucket="s", source_key="k", source_etag='"e"',
              dest_bucket="d", dest_key="k", size=total * 10, part_size=10, total=total, remaining=total,
              upload_id=upload, created_at=1, updated_at=1, attempt=attempt)
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
        outcomes = list(pool.map(lambda _: ledger.record_part(job.job_id, "a-1", "up-1", part), range(8)))
    assert outcomes.count(Outcome.RECORDED) == 1
    assert outcomes.count(Outcome.DUPLICATE) == 7
    after = ledger.get_job(job.job_id)
    assert (after.remaining, after.done, after.done_bytes, after.rev) == (2, 1, 10, 1)
    assert [p.part for p in ledger.parts(job.job_id, "a-1")] == [2]
    assert ledger.part_recorded(job.job_id, "a-1", 2) and not ledger.part_recorded(job.job_id, "a-2", 2)


def test_a_part_of_another_attempt_or_a_failed_job_is_not_counted(ledger):
    job = new_job(ledger)
    assert ledger.record_part(job.job_id, "old-attempt", "up-0", PartRecord(1, "e", "e", 10)) == Outcome.INACTIVE
    assert ledger.mark_failed(job, "source changed", by="attempt")
    assert ledger.record_part(job.job_id, "a-1", "up-1", PartRecord(1, "e", "e", 10)) == Outcome.INACTIVE
    assert ledger.get_job(job.job_id).remaining == 3
    assert ledger.parts(job.job_id, "a-1") == []  # the transaction wrote nothing
    assert ledger.mark_failed(job, "again", by="attempt") is None  # FAILED stays FAILED, reason kept
    assert ledger.get_job(job.job_id).error == "source changed"


def test_an_earlier_attempts_part_items_count_for_nothing_and_are_overwritten(ledger):
    """Issue 13 items 7-8: a re-attempt needs no deletion of the old part items before its parts are enqueued."""
    job = new_job(ledger, total=2, attempt="a-1")
    assert ledger.record_part(job.job_id, "a-1", "up-1", PartRecord(1, "e1", "m1", 10)) == Outcome.RECORDED
    # a retry's claim: same item, a new attempt
    claimed = ledger.update_job(job.job_id, "SET attempt = :a, remaining = :two, done = :zero", "#s = :copying",
                                {":a": "a-2", ":two": 2, ":zero": 0, ":copying": Status.COPYING})
    assert claimed.attempt == "a-2"
    assert ledger.parts(job.job_id, "a-2") == [] and not ledger.part_recorded(job.job_id, "a-2", 1)
    # a late message of the first attempt is refused; the new attempt's part 1 replaces the old item
    assert ledger.record_part(job.job_id, "a-1", "up-1", PartRecord(2, "e2", "m2", 10)) == Outcome.INACTIVE
    assert ledger.record_part(job.job_id, "a-2", "up-2", PartRecord(1, "f1", "m1", 10)) == Outcome.RECORDED
    assert ledger.record_part(job.job_id, "a-2", "up-2", PartRecord(1, "f1", "m1", 10)) == Outcome.DUPLICATE
    assert [(p.part, p.etag) for p in ledger.parts(job.job_id, "a-2")] == [(1, "f1")]
    assert ledger.get_job(job.job_id).remaining == 1


def test_worker_never_fails_a_job_being_completed(ledger):
    """Issue 13 item 3: by="attempt" holds only while PLANNED/COPYING for the same attempt."""
    job = new_job(ledger, total=1)
    ledger.record_part(job.job_id, "a-1", "up-1", PartRecord(1, "e", "e", 10))
    elected = ledger.elect_completion(job.job_id)
    assert elected.status == Status.COMPLETING and elected.lease
    assert ledger.mark_failed(job, "NoSuchUpload seen by a late duplicate", by="attempt") is None
    assert ledger.mark_done(elected, "etag").status == Status.DONE


def test_completion_is_elected_once_and_only_when_every_part_is_counted(ledger):
    job = new_job(ledger, total=2)
    assert ledger.elect_completion(job.job_id) is None  # parts missing
    for n in (1, 2):
        assert ledger.record_part(job.job_id, "a-1", "up-1", PartRecord(n, "e", "e", 10)) == Outcome.RECORDED
    with ThreadPoolExecutor(8) as pool:
        winners = [j for j in pool.map(lambda _: ledger.elect_completion(job.job_id), range(8)) if j]
    assert len(winners) == 1 and winners[0].status == Status.COMPLETING
    assert ledger.mark_done(winners[0], "etag-2").status == Status.DONE
    assert ledger.mark_failed(winners[0], "late", by="lease") is None


def test_a_completion_whose_election_was_taken_back_cannot_write(ledger):
    """Issue 13 item 6: the sweeper hands a stale COMPLETING job back only as it read it (rev); the first
    completion's lease is then worthless, so two completions are never elected at once."""
    job = new_job(ledger, total=1)
    ledger.record_part(job.job_id, "a-1", "up-1", PartRecord(1, "e", "e", 10))
    first = ledger.elect_completion(job.job_id)
    seen_by_two_sweeps = ledger.get_job(job.job_id)
    assert ledger.release_completion(seen_by_two_sweeps, by_lease=False).status == Status.COPYING
    second = ledger.elect_completion(job.job_id)
    assert second is not None and second.lease != first.lease
    # the second sweep read the same COMPLETING job: its hand-back must not take the new election away
    assert ledger.release_completion(seen_by_two_sweeps, by_lease=False) is None
    assert ledger.mark_done(first, "stale") is None and ledger.release_completion(first) is None
    assert ledger.mark_failed(first, "stale", by="lease") is None
    assert ledger.mark_done(second, "etag").status == Status.DONE


def test_completion_handed_back_counts_attempts(ledger):
    job = new_job(ledger, total=1)
    ledger.record_part(job.job_id, "a-1", "up-1", PartRecord(1, "e", "e", 10))
    elected = ledger.elect_completion(job.job_id)
    back = ledger.release_completion(elected)
    assert back.status == Status.COPYING and back.completion_attempts == 1 and back.lease is None
    assert ledger.elect_completion(job.job_id) is not None


def test_a_part_taken_back_by_completion_is_counted_again(ledger):
    job = new_job(ledger, total=2)
    for n in (1, 2):
        ledger.record_part(job.job_id, "a-1", "up-1", PartRecord(n, f"e{n}", f"m{n}", 10))
    elected = ledger.elect_completion(job.job_id)
    assert ledger.uncount_part(elected, PartRecord(2, "e2", "m2", 10))
    after = ledger.get_job(job.job_id)
    assert (after.remaining, after.done, after.done_bytes) == (1, 1, 10)
    assert ledger.release_completion(elected).status == Status.COPYING
    assert ledger.record_part(job.job_id, "a-1", "up-1", PartRecord(2, "f2", "m2", 10)) == Outcome.RECORDED
    assert ledger.get_job(job.job_id).remaining == 0
    stale = Job(**{**vars(elected), "lease": "not-mine"})
    assert ledger.uncount_part(stale, PartRecord(1, "e1", "m1", 10)) is False  # only the lease holder


def test_decisions_on_a_read_hold_only_while_nothing_changed(ledger):
    job = new_job(ledger, total=2)
    seen = ledger.get_job(job.job_id)
    ledger.record_part(job.job_id, "a-1", "up-1", PartRecord(1, "e", "e", 10))  # progress since the read
    assert ledger.note_redrive(seen) is None
    assert ledger.mark_failed(seen, "stuck", by="rev") is None
    fresh = ledger.get_job(job.job_id)
    assert fresh.rev == seen.rev + 1
    assert ledger.note_redrive(fresh).redrives == 1


def test_parts_are_listed_sorted_across_pages(ledger):
    job = new_job(ledger, total=120)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: ledger.record_part(job.job_id, "a-1", "up-1",
                                                   PartRecord(n, f"e{n}", f"m{n}", 10)),
                      range(120, 0, -1)))
    parts = ledger.parts(job.job_id, "a-1")
    assert [p.part for p in parts] == list(range(1, 121))
    assert ledger.get_job(job.job_id).remaining == 0


def test_a_job_is_in_the_attention_index_exactly_while_unfinished_or_failed(ledger):
    """The sparse index lists the unfinished jobs (the sweeper's) and the failed ones (the operator's), never a DONE
    one: created, failed, claimed again (retry), completed, a DONE job claimed again (re-copy)."""
    from s3sync.transfer.reattempt import Reattempter

    claim = Reattempter(ledger=ledger, splitter=None, source=None, dest=None)._claim

    def listed(kind: str) -> set[str]:
        return set(ledger.attention_ids(kind))

    a, b, c = (new_job(ledger, status=s) for s in (Status.PLANNED, Status.COPYING, Status.DONE))
    assert listed(Attention.UNFINISHED) == {a.job_id, b.job_id} and listed(Attention.FAILED) == set()
    assert ledger.mark_failed(a, "source refused", by="attempt")
    assert listed(Attention.UNFINISHED) == {b.job_id} and listed(Attention.FAILED) == {a.job_id}
    assert [j.job_id for j in ledger.failed_jobs()] == [a.job_id]
    assert claim(ledger.get_job(a.job_id), 30, 10, 3, "up-2", "a-2")  # `s3sync retry`
    assert listed(Attention.UNFINISHED) == {a.job_id, b.job_id} and listed(Attention.FAILED) == set()
    for n in (1, 2, 3):
        assert ledger.record_part(b.job_id, "a-1", "up-1", PartRecord(n, "e", "e", 10)) == Outcome.RECORDED
    assert listed(Attention.UNFINISHED) == {a.job_id, b.job_id}  # counting parts leaves the index alone
    assert ledger.mark_done(ledger.elect_completion(b.job_id), "etag-3")
    assert listed(Attention.UNFINISHED) == {a.job_id}
    assert claim(ledger.get_job(c.job_id), 30, 10, 3, "up-3", "a-3")  # a DONE job copied again
    assert {j.job_id for j in ledger.unfinished_jobs()} == {a.job_id, c.job_id}
    assert ledger.unfinished_jobs(created_before=0) == []  # both were created at 1
    assert {j.job_id for j in ledger.unfinished_jobs(created_before=1)} == {a.job_id, c.job_id}


def test_unfinished_jobs_reads_every_shard_and_more_than_one_batch(ledger):
    jobs = {new_job(ledger, status=Status.COPYING).job_id for _ in range(130)}  # BatchGetItem takes 100 keys
    finished = new_job(ledger, status=Status.COPYING)
    assert ledger.mark_failed(finished, "refused", by="attempt")
    assert {j.job_id for j in ledger.unfinished_jobs()} == jobs
    assert {int(Attention.of(j, Status.COPYING).split("#")[1]) for j in jobs} == set(range(16))
