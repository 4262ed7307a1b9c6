"""Delete propagation and the splitter function's routing: ObjectRemoved notifications and EventBridge "Object Deleted"
events delete the copy (unless the key was written again), ObjectCreated still plans, the scheduled finder's event
runs the finder; end to end through `s3sync local --propagate-deletes`, with objects placed by `s3sync backfill`: a
deleted object's copy goes, and the same bytes written again are copied again.

Issue 18 item 1: events that the deployed configuration does not name (another bucket, a deletion with propagation
off, no source bucket configured) are refused with their reason and nothing is read, written or deleted; a delete
propagates only on the source's 404, never on a 403."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from s3sync.cli import cli
from s3sync.contract import Env, Metric, Status
from s3sync.local.iam import CallLedger, Enforcer, Role, Stmt, Where
from s3sync.local.runner import BucketSpec, LocalOptions, LocalRunner
from s3sync.ops.backfill import do_backfill
from s3sync.ops.context import resolve
from s3sync.transfer import logs
from s3sync.transfer.deletes import DeletePropagator, Deletion, deletion_refs
from s3sync.transfer.settings import Settings
from tests.conftest import make_client
from tests.ops_support import make_system

MiB = 2**20


def removed(bucket: str, key: str, name: str = "ObjectRemoved:Delete") -> dict:
    return {"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": name, "eventTime": "2024-05-01T12:00:00.000Z",
            "s3": {"bucket": {"name": bucket}, "object": {"key": key, "sequencer": "0A1"}}}


def created(bucket: str, key: str) -> dict:
    return {"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
            "eventTime": "2024-05-01T12:00:00.000Z", "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}


def eventbridge_deleted(bucket: str, key: str, kind: str = "Permanently Deleted") -> dict:
    """The documented EventBridge shape (S3 user guide, "EventBridge event message structure")."""
    return {"version": "0", "id": "2ee9cc15-d022-99ea-1fb8-1b1bac4850f9", "detail-type": "Object Deleted",
            "source": "aws.s3", "account": "123456789012", "time": "2021-11-12T00:00:00Z", "region": "us-east-1",
            "resources": [f"arn:aws:s3:::{bucket}"],
            "detail": {"version": "0", "bucket": {"name": bucket},
                       "object": {"key": key, "sequencer": "617f0837b476e463"}, "request-id": "0BH729840619AG5K",
                       "requester": "123456789012", "source-ip-address": "1.2.3.4", "reason": "DeleteObject",
                       "deletion-type": kind}}


def test_deletions_are_read_from_both_shapes():
    event = {"Records": [removed("b", "dir/a+b%25.txt"), created("b", "new.txt"),
                         removed("b", "marker", "ObjectRemoved:DeleteMarkerCreated")]}
    assert list(deletion_refs(event)) == [Deletion("b", "dir/a b%.txt", None, "Delete", "0A1"),
                                          Deletion("b", "marker", None, "DeleteMarkerCreated", "0A1")]
    assert list(deletion_refs(eventbridge_deleted("b", "x/y+z", "Delete Marker Created"))) == [
        Deletion("b", "x/y z", None, "DeleteMarkerCreated", "617f0837b476e463")]
    assert list(deletion_refs({"Event": "s3:TestEvent"})) == [] and list(deletion_refs({"Records": [
        created("b", "k")]})) == []


@pytest.fixture
def handler_env(moto_server, monkeypatch):
    """The splitter function as Lambda runs it: environment from the target, a fresh `runtime()`."""
    from functions import _common

    sys_ = make_system(moto_server.endpoint_url, dest_prefix="copy/")
    for k, v in sys_.target.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)
    monkeypatch.setenv(Env.PROPAGATE_DELETES, "true")  # as the template sets it with PropagateDeletes true
    _common.runtime.cache_clear()
    yield sys_
    _common.runtime.cache_clear()
    logs.setup("INFO")  # runtime() bound the JSON logs to this test's captured stderr


def test_splitter_function_routes_deletions_creations_and_the_finder(handler_env, capsys):
    from functions.splitter import handler

    sys_ = handler_env
    s3, src, dst = sys_.s3, sys_.src, sys_.dst
    for key in ("gone file.txt", "written again.txt", "by eventbridge.txt"):
        s3.put_object(Bucket=dst, Key="copy/" + key, Body=b"copy")
    s3.put_object(Bucket=src, Key="written again.txt", Body=b"newer")  # the delete arrives after a new write
    s3.put_object(Bucket=src, Key="new.txt", Body=b"created")
    out = handler({"Records": [removed(src, "gone+file.txt"), removed(src, "written+again.txt"),
                               created(src, "new.txt")]})
    assert out["deletes"] == [{"key": "gone file.txt", "dest_key": "copy/gone file.txt", "outcome": "deleted"},
                              {"key": "written again.txt", "dest_key": "copy/written again.txt", "outcome": "kept"}]
    [job] = out["jobs"]  # a small object: copied by the splitter at once
    assert job["outcome"] == "copied" and sys_.ledger.get_job(job["job"]).status == Status.DONE
    assert handler(eventbridge_deleted(src, "by+eventbridge.txt"))["deletes"][0]["outcome"] == "deleted"
    left = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=dst).get("Contents", []))
    assert left == ["copy/new.txt", "copy/written again.txt"]

    found = handler({"s3sync": "find", "bucket": src})  # the scheduled finder's input
    assert (found["listed"], found["in_sync"], found["complete"]) == (2, 1, True)
    assert found["outcomes"] == {"copied": 1}  # new.txt is in sync; the other differs in size
    emf = [json.loads(line) for line in capsys.readouterr().err.splitlines() if '"_aws"' in line]
    assert {Metric.OBJECTS_DELETED, Metric.OBJECTS_FOUND} <= {k for line in emf for k in line}
    assert [line[Metric.OBJECTS_FOUND] for line in emf if Metric.OBJECTS_FOUND in line] == [1]


@pytest.mark.system
def test_local_backfill_then_deletes_and_rewrites_propagate(moto_server):
    name = "ops-deletes-e2e"
    before = {"old/a.txt": b"existed before the stacks", "old/b.bin": bytes(range(256)) * (20 * 1024 + 7),
              "other/c.txt": b"c"}
    src = BucketSpec(f"{name}-src")
    runner = LocalRunner(LocalOptions(endpoint_url=moto_server.endpoint_url, name=name, until_idle=True,
                                      part_size_mib=5, worker_threads=2, min_tasks=1, max_tasks=1,
                                      visibility_timeout=20, alarm_period=0.5, timeout=90, idle_grace=0.5,
                                      propagate_deletes=True, source=src, dest=BucketSpec(f"{name}-dst")))
    runner.endpoint_url = moto_server.endpoint_url
    seed = runner.s3(src)  # objects older than the system: no event will ever name them
    seed.create_bucket(Bucket=src.name)
    for key, data in before.items():
        seed.put_object(Bucket=src.name, Key=key, Body=data)
    state: dict[str, object] = {}
    # `s3sync backfill --endpoint-url URL --name-prefix NAME ...`, called as a function while the runner's threads
    # log (click's CliRunner would swap sys.stderr under them); the CLI itself runs after the run
    def tick(r: LocalRunner) -> None:
        dst = r.options.dest.name
        if "backfill" not in state:
            target = resolve(endpoint_url=moto_server.endpoint_url, name_prefix=name, part_size_mib=5,
                             source_bucket=f"{name}-src", dest_bucket=f"{name}-dst")
            state["backfill"] = (do_backfill(target, prefix="old/"), do_backfill(target))
            return
        jobs = {j.source_key: j for j in r.jobs()}
        keys = {o["Key"] for o in r.dest_s3.list_objects_v2(Bucket=dst).get("Contents", [])}
        if "deleted" not in state and len(jobs) == 3 and all(j.status == Status.DONE for j in jobs.values()):
            r.source_s3.delete_object(Bucket=r.options.source.name, Key="old/a.txt")
            state["deleted"] = jobs["old/a.txt"]
        elif "deleted" in state and "rewritten" not in state and "old/a.txt" not in keys:
            state["gone_from_dest"] = sorted(keys)
            done_at = state["deleted"].updated_at  # type: ignore[attr-defined]
            time.sleep(max(0.0, done_at + 2.2 - time.time()))  # a rewrite, not a late copy of the first event
            r.source_s3.put_object(Bucket=r.options.source.name, Key="old/a.txt", Body=before["old/a.txt"])
            state["rewritten"] = time.time()

    summary = runner.run(on_tick=tick)
    only_old, everything = state["backfill"]  # type: ignore[misc]
    # the small ones are copied by the splitter at once, the 5 MiB one goes to the workers
    assert (only_old.listed, only_old.outcomes) == (2, {"copied": 1, "enqueued": 1})
    # the second run finds old/ in progress or already copied (its listing may predate a completion, which the
    # finder's HeadObject then sees), and copies only other/c.txt
    assert (everything.listed, everything.outcomes["copied"]) == (3, 1)
    assert everything.in_sync + everything.outcomes["in-progress"] + everything.outcomes["copied-meanwhile"] == 2
    assert state.get("gone_from_dest") == ["old/b.bin", "other/c.txt"]
    assert summary.ok and {j.source_key for j in summary.jobs} == set(before)
    [a] = [j for j in summary.jobs if j.source_key == "old/a.txt"]
    # the rewrite (the same bytes: the same job) was copied again: a small object by the splitter, whose job stays
    # as it was (its copy is the same), a large one by a new attempt of its job
    assert a.status == Status.DONE and (a.inline or a.updated_at > state["deleted"].updated_at)  # type: ignore
    copied_at = runner.dest_s3.head_object(Bucket=runner.options.dest.name, Key="old/a.txt")["LastModified"].timestamp()
    assert copied_at > state["rewritten"] - 1.5  # type: ignore[operator]  # seconds-resolution, 2.2 s after
    for key, data in before.items():
        assert runner.dest_s3.get_object(Bucket=runner.options.dest.name, Key=key)["Body"].read() == data, key
    final = CliRunner().invoke(cli, ["backfill", "--endpoint-url", moto_server.endpoint_url, "--name-prefix", name,
                                     "--source-bucket", f"{name}-src", "--dest-bucket", f"{name}-dst", "--dry-run",
                                     "--json"])
    doc = json.loads(final.stdout)
    assert (doc["listed"], doc["in_sync"], doc["different"]) == (3, 3, 0)


def _reload(monkeypatch, **env: str | None) -> None:
    """A fresh cold start of the function with these variables changed (None: unset)."""
    from functions import _common

    for k, v in env.items():
        if v is None:
            monkeypatch.delenv(k, raising=False)
        else:
            monkeypatch.setenv(k, v)
    _common.runtime.cache_clear()


def _dest_keys(sys_) -> list[str]:
    return sorted(o["Key"] for o in sys_.s3.list_objects_v2(Bucket=sys_.dst).get("Contents", []))


def test_events_the_configuration_does_not_name_are_refused_and_nothing_is_written_or_deleted(handler_env,
                                                                                              monkeypatch):
    from functions.splitter import handler

    sys_ = handler_env
    s3, src = sys_.s3, sys_.src
    other = f"{src}-other"
    s3.create_bucket(Bucket=other)
    s3.put_object(Bucket=other, Key="planted.bin", Body=b"x" * 1024)  # readable, yet not ours to copy
    s3.put_object(Bucket=sys_.dst, Key="copy/kept.txt", Body=b"copy")  # a copy whose source is gone
    s3.put_object(Bucket=other, Key="kept.txt", Body=b"other")

    # another bucket: neither a creation, nor a deletion (even with propagation on), nor a finder run
    out = handler({"Records": [created(other, "planted.bin"), removed(other, "kept.txt")]})
    assert out["jobs"] == [] and "deletes" not in out
    assert [(r["kind"], r["bucket"], r["key"]) for r in out["refused"]] == [("created", other, "planted.bin"),
                                                                           ("deleted", other, "kept.txt")]
    assert all("is not this stack's source bucket" in r["reason"] for r in out["refused"])
    assert handler(eventbridge_deleted(other, "kept.txt"))["refused"][0]["kind"] == "deleted"
    found = handler({"s3sync": "find", "bucket": other})
    assert [r["kind"] for r in found["refused"]] == ["find"] and "listed" not in found

    # deletions of our own bucket while propagation is off: refused, the copy stays
    _reload(monkeypatch, **{Env.PROPAGATE_DELETES: "false"})
    for event in ({"Records": [removed(src, "kept.txt")]}, eventbridge_deleted(src, "kept.txt")):
        out = handler(event)
        assert "deletes" not in out and "delete propagation is off" in out["refused"][0]["reason"]

    # no source bucket configured at all: nothing is admitted
    _reload(monkeypatch, **{Env.SOURCE_BUCKET: None, Env.PROPAGATE_DELETES: "true"})
    s3.put_object(Bucket=src, Key="ours.txt", Body=b"ours")
    out = handler({"Records": [created(src, "ours.txt"), removed(src, "kept.txt")]})
    assert out["jobs"] == [] and len(out["refused"]) == 2
    assert all("no source bucket is configured" in r["reason"] for r in out["refused"])

    # a key that cannot exist at the destination (DestPrefix + key over S3's 1,024 bytes)
    _reload(monkeypatch, **{Env.SOURCE_BUCKET: src})
    out = handler({"Records": [created(src, "k" * 1020)]})
    assert out["jobs"] == [] and "at most 1024" in out["refused"][0]["reason"]

    assert sys_.ledger.scan_jobs() == [] and sys_.messages() == []  # no job, no part message
    assert _dest_keys(sys_) == ["copy/kept.txt"]  # nothing written, nothing deleted

    # and what the configuration names still goes through
    out = handler({"Records": [created(src, "ours.txt")]})
    assert [j["outcome"] for j in out["jobs"]] == ["copied"] and "refused" not in out


def test_a_delete_propagates_only_when_the_source_answers_404(moto_server):
    """Without s3:ListBucket S3 answers 403 for a missing key (here the local IAM makes the moto server's 404 a
    403, as AWS does): that says nothing about the key, so the copy is kept; with it, 404 deletes the copy."""
    sys_ = make_system(moto_server.endpoint_url, dest_prefix="copy/")
    sys_.s3.put_object(Bucket=sys_.dst, Key="copy/gone.txt", Body=b"copy")
    settings = Settings(dest_bucket=sys_.dst, dest_prefix="copy/")
    read = {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": f"arn:aws:s3:::{sys_.src}/*"}
    listing = {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": f"arn:aws:s3:::{sys_.src}"}
    outcomes = []
    for statements in ([read], [read, listing]):
        role = Role("SplitterRole", "arn:aws:iam::123456789012:role/test-splitter",
                    tuple(Stmt(f"test #{i}", st) for i, st in enumerate(statements)))
        source = Enforcer("splitter", role, Where(), CallLedger()).instrument(
            "source", make_client("s3", moto_server.endpoint_url))
        result = DeletePropagator(source=source, dest=sys_.s3, settings=settings).propagate(
            Deletion(sys_.src, "gone.txt"))
        outcomes.append((result.outcome, _dest_keys(sys_)))
    assert outcomes[0][0] == "refused" and outcomes[0][1] == ["copy/gone.txt"]
    assert outcomes[1] == ("deleted", [])
