"""`s3sync status` against a transfers table on moto: per-object progress, totals, --failed, --stuck, --json, and
one-line errors for a wrong table, prefix or stack."""

from __future__ import annotations

import dataclasses
import json

import pytest
from click.testing import CliRunner

from s3sync.cli import cli
from s3sync.contract import Status
from s3sync.ops.status import collect
from tests.ops_support import make_system, put_job

MiB = 2**20


@pytest.fixture
def system(moto_server):
    sys_ = make_system(moto_server.endpoint_url)
    jobs = {
        "copying": put_job(sys_.ledger, Status.COPYING, key="big/copying.bin", total=4, recorded=(1, 2)),
        "stale": put_job(sys_.ledger, Status.PLANNED, key="stale.bin", total=2, age=600),
        "failed": put_job(sys_.ledger, Status.FAILED, key="failed.bin", total=3, recorded=(1,),
                          error="source changed: its ETag no longer matches the planned one"),
        "done1": put_job(sys_.ledger, Status.DONE, key="done-1.bin", total=1, recorded=(1,), size=MiB),
        "done2": put_job(sys_.ledger, Status.DONE, key="done-2.bin", total=2, recorded=(1, 2), age=30),
    }
    return sys_, jobs


def test_totals_rows_rate_eta_and_stuck(system):
    sys_, jobs = system
    report = collect(sys_.target)
    t = report.totals
    assert t.jobs == 5 and report.shown == 5
    assert {s: n for s, n in t.by_status.items() if n} == {"PLANNED": 1, "COPYING": 1, "FAILED": 1, "DONE": 2}
    assert (t.parts, t.parts_done) == (12, 2 + 0 + 1 + 1 + 2)
    assert t.bytes_done == 2 * 5 * MiB + 5 * MiB + MiB + 10 * MiB
    assert t.stuck == 1  # the PLANNED job idle for 600 s (stuck_after 60), not the fresh COPYING one
    order = [v.job.source_key for v in report.rows]
    assert set(order[:2]) == {"big/copying.bin", "stale.bin"} and order[2] == "failed.bin"  # unfinished first
    views = {v.job.source_key: v for v in report.rows}
    copying = views["big/copying.bin"]
    assert copying.rate and copying.rate > 0 and copying.eta == pytest.approx(10 * MiB / copying.rate)
    assert views["stale.bin"].stuck and not copying.stuck and views["stale.bin"].idle >= 600
    assert views["failed.bin"].rate is None and views["done-1.bin"].eta == 0.0
    assert report.queue == {"visible": 0, "in_flight": 0, "dead_letter": 0}


def test_failed_stuck_and_limit_select_server_side(system):
    sys_, jobs = system
    failed = collect(sys_.target, failed=True)
    assert [v.job.job_id for v in failed.rows] == [jobs["failed"].job_id] and failed.totals.jobs == 1
    stuck = collect(sys_.target, stuck=True)
    assert [v.job.job_id for v in stuck.rows] == [jobs["stale"].job_id]
    limited = collect(sys_.target, limit=2)
    assert limited.shown == 2 and limited.totals.jobs == 5
    assert {v.job.status for v in limited.rows} <= {Status.COPYING, Status.PLANNED}


def test_cli_json_and_text(system):
    sys_, jobs = system
    base = ["status", "--endpoint-url", sys_.target.endpoint_url, "--table", sys_.target.transfers_table,
            "--queue-url", sys_.target.queue_url, "--dlq-url", sys_.target.dlq_url, "--stuck-after", "60"]
    result = CliRunner().invoke(cli, [*base, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    by_key = {j["source"].rsplit("/", 1)[-1]: j for j in doc["jobs"]}
    assert by_key["copying.bin"]["percent"] == 50.0 and by_key["copying.bin"]["parts_done"] == 2
    assert by_key["stale.bin"]["stuck"] is True and by_key["failed.bin"]["error"].startswith("source changed")
    assert doc["totals"]["jobs"] == 5 and doc["totals"]["stuck"] == 1 and doc["queue"]["dead_letter"] == 0

    text = CliRunner().invoke(cli, base)
    assert text.exit_code == 0, text.output
    out = text.output
    assert "big/copying.bin" in out and "2/4" in out and "stuck" in out and "source changed" in out
    assert "5 job(s): 1 planned, 1 copying, 2 done, 1 failed; 1 stuck" in out
    assert "queue: 0 visible, 0 in flight; dead-letter queue: 0" in out

    failed_only = CliRunner().invoke(cli, [*base, "--failed", "--json"])
    assert [j["status"] for j in json.loads(failed_only.output)["jobs"]] == ["FAILED"]


@pytest.mark.parametrize("args, message", [
    (["--name-prefix", "no-such-prefix"], "transfers table no-such-prefix-transfers does not exist"),
    (["--stack", "noSuchStack"], "stack noSuchStack does not exist"),
    (["--table", "no-such-table"], "transfers table no-such-table does not exist"),
])
def test_wrong_names_are_one_line_errors(moto_server, args, message):
    result = CliRunner().invoke(cli, ["status", "--endpoint-url", moto_server.endpoint_url, *args])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


# --- issue 15: what status reads does not grow with the DONE jobs ---------------------------------------------------
def recorded_calls(monkeypatch) -> list[tuple[str, dict]]:
    """Every DynamoDB call the ops commands make, with its answer."""
    from s3sync.ops.context import Target

    calls: list[tuple[str, dict]] = []
    real = Target.client

    def client(self, service):
        made = real(self, service)
        made.meta.events.register("after-call.dynamodb", lambda model, parsed, **_: calls.append((model.name, parsed)))
        return made

    monkeypatch.setattr(Target, "client", client)
    return calls


def items_read(calls) -> int:
    return sum(p.get("Count", 0) if name in ("Scan", "Query") else
               sum(len(r) for r in p.get("Responses", {}).values()) if name == "BatchGetItem" else 0
               for name, p in calls)


def test_a_larger_table_is_read_through_its_index(system, monkeypatch):
    """A table that counts more jobs than status reads whole (2 here, 1,000 by default): the unfinished and failed
    jobs come from the Attention index, exactly; the DONE ones are never read, their number is the table's item count
    less those."""
    sys_, jobs = system
    calls = recorded_calls(monkeypatch)
    report = collect(sys_.target, whole_up_to=2)
    t = report.totals
    assert (t.read, t.done_estimated, t.jobs) == ("index", True, 5)
    assert {s: n for s, n in t.by_status.items() if n} == {"PLANNED": 1, "COPYING": 1, "FAILED": 1, "DONE": 2}
    assert (t.parts, t.parts_done, t.stuck) == (4 + 2 + 3, 2 + 0 + 1, 1)  # of the unfinished and failed jobs
    assert {v.job.source_key for v in report.rows} == {"big/copying.bin", "stale.bin", "failed.bin"}
    ops = [name for name, _ in calls]
    assert ops.count("DescribeTable") == 1 and ops.count("Query") == 32 and "Scan" not in ops  # 16 shards x 2
    assert items_read(calls) == 3 + 3  # the index's keys, the jobs they name
    assert [v.job.job_id for v in collect(sys_.target, failed=True, whole_up_to=2).rows] == [jobs["failed"].job_id]
    stuck = collect(sys_.target, stuck=True, whole_up_to=2)
    assert [v.job.job_id for v in stuck.rows] == [jobs["stale"].job_id] and not stuck.totals.done_estimated
    everything = collect(sys_.target, whole_up_to=2, everything=True).totals
    assert (everything.read, everything.done_estimated, everything.parts) == ("table", False, 12)


def test_cli_says_which_numbers_are_estimates_and_all_reads_everything(system, monkeypatch):
    sys_, _jobs = system
    monkeypatch.setattr("s3sync.ops.status.WHOLE_TABLE_UP_TO", 2)
    base = ["status", "--endpoint-url", sys_.target.endpoint_url, "--table", sys_.target.transfers_table,
            "--stuck-after", "60"]
    out = CliRunner().invoke(cli, base, env={"COLUMNS": "200"}).output
    assert "5 job(s): 1 planned, 1 copying, about 2 done, 1 failed; 1 stuck" in out
    assert "unfinished and failed: parts 3/9" in out and "DONE jobs are not read" in out and "done-1.bin" not in out
    doc = json.loads(CliRunner().invoke(cli, [*base, "--json"]).output)
    assert doc["totals"]["done_estimated"] is True and doc["totals"]["read"] == "index"
    out = CliRunner().invoke(cli, [*base, "--all"], env={"COLUMNS": "200"}).output
    assert "5 job(s): 1 planned, 1 copying, 2 done, 1 failed; 1 stuck" in out and "done-1.bin" in out
    assert "parts 6/12" in out and "not read" not in out


def test_a_table_without_the_index_is_read_whole_and_reindex_fills_the_index(moto_server):
    """An ECS stack from before the index: status still answers (a Scan, said); after the stack update, jobs written
    before the index lack its attribute until `status --reindex` gives it to them (DONE ones need none)."""
    from s3sync.contract import ATTENTION_ATTR
    from s3sync.transfer.ledger import Attention

    sys_ = make_system(moto_server.endpoint_url)
    old = [put_job(sys_.ledger, s, key=f"{s.lower()}.bin", total=2, recorded=(1, 2) if s == Status.DONE else ())
           for s in (Status.COPYING, Status.FAILED, Status.DONE)]
    for job in old:  # as the previous version wrote them
        sys_.ddb.update_item(TableName=sys_.target.transfers_table, Key={"job_id": {"S": job.job_id}},
                             UpdateExpression="REMOVE #a", ExpressionAttributeNames={"#a": ATTENTION_ATTR})
    assert list(sys_.ledger.attention_ids(Attention.UNFINISHED)) == []
    bare = f"{sys_.target.transfers_table}-bare"
    sys_.ddb.create_table(TableName=bare, BillingMode="PAY_PER_REQUEST",
                          AttributeDefinitions=[{"AttributeName": "job_id", "AttributeType": "S"}],
                          KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}])
    for job in old:
        sys_.ddb.put_item(TableName=bare, Item=sys_.ddb.get_item(TableName=sys_.target.transfers_table,
                                                                 Key={"job_id": {"S": job.job_id}})["Item"])
    report = collect(dataclasses.replace(sys_.target, transfers_table=bare), whole_up_to=1)
    assert len(report.rows) == 3 and report.totals.read == "table" and "no Attention index" in report.note

    base = ["status", "--endpoint-url", sys_.target.endpoint_url, "--table", sys_.target.transfers_table]
    result = CliRunner().invoke(cli, [*base, "--reindex"])
    assert result.exit_code == 0, result.output
    assert "reindexed: 2 job(s) put into the index, 0 changed meanwhile" in result.output
    assert list(sys_.ledger.attention_ids(Attention.UNFINISHED)) == [old[0].job_id]
    assert list(sys_.ledger.attention_ids(Attention.FAILED)) == [old[1].job_id]
    assert "reindexed: 0 job(s)" in CliRunner().invoke(cli, [*base, "--reindex"]).output  # once is enough
