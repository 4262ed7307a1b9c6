"""`s3sync backfill` and the finder: a streaming merge-join of both listings, the comparison rule (size, MD5 ETags,
the ledger's DONE record), and hand-over to the splitter that is idempotent across runs; a DONE job whose copy is gone
gets a new attempt."""

from __future__ import annotations

import json

import boto3
import pytest
from click.testing import CliRunner

from s3sync.cli import cli
from s3sync.contract import Status
from s3sync.ops.backfill import do_backfill
from s3sync.transfer.events import ObjectRef
from s3sync.transfer.finder import Finder, Listed, ListingOrderError, listing, merge_join
from s3sync.transfer.ledger import PartRecord
from s3sync.transfer.reattempt import Reattempter
from tests.ops_support import make_system

MiB = 2**20


def listed(*keys: str) -> list[Listed]:
    return [Listed(k, 1, "e") for k in keys]


def test_merge_join_pairs_keys_and_counts_destination_only_ones():
    dest_only: list[str] = []
    pairs = list(merge_join(iter(listed("a", "b/1", "b/2", "d")), iter(listed("0", "b/1", "c", "d", "e")),
                            lambda d: dest_only.append(d.key)))
    assert [(s.key, d.key if d else None) for s, d in pairs] == [("a", None), ("b/1", "b/1"), ("b/2", None),
                                                                  ("d", "d")]
    assert dest_only == ["0", "c", "e"]


def test_a_listing_out_of_s3_order_is_refused():
    pages = [{"Contents": [{"Key": "b", "Size": 1, "ETag": "x"}, {"Key": "a", "Size": 1, "ETag": "y"}]}]

    class Server:  # a server that sorts differently from S3 (a boto3 stand-in, not s3sync code)
        def list_objects_v2(self, **_kw):
            return pages[0]

    with pytest.raises(ListingOrderError, match="listed 'a' after 'b'"):
        list(listing(lambda fn: fn(Server()), "bucket"))


def upload_multipart(s3, bucket: str, key: str, data: bytes, part: int = 5 * MiB) -> str:
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts = [{"PartNumber": i + 1, "ETag": s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=i + 1,
                                                          Body=data[o:o + part])["ETag"]}
             for i, o in enumerate(range(0, len(data), part))]
    return s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload,
                                        MultipartUpload={"Parts": parts})["ETag"]


@pytest.fixture
def system(moto_server):
    # the finder's hand-off to the splitter and workers: small objects go to the workers too (see
    # test_small_objects_are_copied_by_the_splitter_at_once for the default)
    sys_ = make_system(moto_server.endpoint_url, dest_prefix="copy/", inline_max_bytes=0)
    s3, src, dst = sys_.s3, sys_.src, sys_.dst
    for key, body in {"same.txt": b"same", "missing.txt": b"only here", "size.txt": b"longer", "etag.txt": b"aaaa",
                      "ü/unicode.txt": b"u"}.items():
        s3.put_object(Bucket=src, Key=key, Body=body)
    for key, body in {"same.txt": b"same", "size.txt": b"short", "etag.txt": b"bbbb", "zz-dest-only.txt": b"x",
                      "ü/unicode.txt": b"u"}.items():
        s3.put_object(Bucket=dst, Key="copy/" + key, Body=body)
    big = bytes(range(256)) * (20 * 1024 + 1)  # 5 MiB + 256 B: two parts
    etag = upload_multipart(s3, src, "multi.bin", big)
    assert etag.strip('"').endswith("-2")
    s3.put_object(Bucket=dst, Key="copy/multi.bin", Body=big)  # same bytes, plain MD5 ETag: not comparable
    s3.put_object(Bucket=sys_.dst, Key="elsewhere.txt", Body=b"outside the prefix")
    return sys_


def test_dry_run_reports_each_difference_by_the_rule(system):
    seen: list[tuple[str, str, str]] = []
    result = do_backfill(system.target, dry_run=True, on_object=lambda *a: seen.append(a))
    assert (result.listed, result.in_sync, result.dest_only) == (6, 2, 1)
    assert {k: r for k, r, _ in seen} == {"missing.txt": "missing", "size.txt": "size", "etag.txt": "etag",
                                          "multi.bin": "unverified"}
    assert system.messages() == [] and system.ledger.scan_jobs() == []
    trusting = do_backfill(system.target, dry_run=True, size_only=True)
    assert trusting.reasons == {"missing": 1, "size": 1, "etag": 1}
    only = do_backfill(system.target, dry_run=True, prefix="m")
    assert (only.listed, dict(only.reasons)) == (2, {"missing": 1, "unverified": 1})


def test_backfill_hands_differences_to_the_splitter_once(system):
    first = do_backfill(system.target)
    assert first.outcomes == {"enqueued": 4} and first.complete
    jobs = {j.source_key: j for j in system.ledger.scan_jobs()}
    assert set(jobs) == {"missing.txt", "size.txt", "etag.txt", "multi.bin"}
    assert all(j.status == Status.COPYING and j.dest_key == "copy/" + k for k, j in jobs.items())
    assert len(system.messages()) == 1 + 1 + 1 + 2
    again = do_backfill(system.target)  # the jobs exist (by object and ETag): nothing new
    assert again.outcomes == {"in-progress": 4} and system.messages() == []


def test_small_objects_are_copied_by_the_splitter_at_once(moto_server):
    """By default the splitter copies an object under the multipart threshold itself: backfill finds it copied, a
    second run finds it in sync; a copy deleted since is written again (its DONE job exists: "re-copied")."""
    sys_ = make_system(moto_server.endpoint_url, dest_prefix="copy/")
    sys_.s3.put_object(Bucket=sys_.src, Key="a.txt", Body=b"small a")
    sys_.s3.put_object(Bucket=sys_.src, Key="b.txt", Body=b"small b")
    first = do_backfill(sys_.target)
    assert first.outcomes == {"copied": 2} and sys_.messages() == []
    assert {j.source_key: (j.status, j.inline) for j in sys_.ledger.scan_jobs()} == {
        "a.txt": (Status.DONE, True), "b.txt": (Status.DONE, True)}
    assert sys_.s3.get_object(Bucket=sys_.dst, Key="copy/b.txt")["Body"].read() == b"small b"
    again = do_backfill(sys_.target)
    assert (again.in_sync, dict(again.outcomes)) == (2, {})
    sys_.s3.delete_object(Bucket=sys_.dst, Key="copy/a.txt")
    assert do_backfill(sys_.target).outcomes == {"re-copied": 1}
    assert sys_.s3.get_object(Bucket=sys_.dst, Key="copy/a.txt")["Body"].read() == b"small a"


@pytest.mark.system
def test_a_done_copy_is_trusted_and_a_vanished_one_copied_again(system):
    rt = system.target.runtime()
    split = rt.splitter().split(ObjectRef(system.src, "multi.bin"))
    job = system.ledger.get_job(split.job_id)
    for n, size in ((1, 5 * MiB), (2, 256)):  # as the workers and completion would leave it
        system.ledger.record_part(job.job_id, job.attempt, job.upload_id, PartRecord(n, "e", "e", size))
    system.ledger.mark_done(system.ledger.elect_completion(job.job_id), "f" * 32 + "-2")
    system.messages()
    assert "multi.bin" not in {k for k, *_ in _differences(system)}  # the ledger vouches for it
    system.s3.delete_object(Bucket=system.dst, Key="copy/multi.bin")
    result = do_backfill(system.target, prefix="multi")
    assert result.outcomes == {"re-copied": 1}
    again = system.ledger.get_job(job.job_id)
    assert again.status == Status.COPYING and again.upload_id != job.upload_id
    assert again.attempt != job.attempt and system.ledger.parts(job.job_id, again.attempt) == []
    assert sorted(m["part"]["n"] for m in system.messages()) == [1, 2]


def test_a_copy_that_lands_after_the_listing_is_not_made_again(system):
    """The completion of a job can land between the finder's destination listing and its look at the ledger: the
    finder sees a DONE job whose copy its listing lacks, and must look again (HeadObject) before re-copying."""
    rt = system.target.runtime()
    splitter = rt.splitter()
    split = splitter.split(ObjectRef(system.src, "missing.txt"))
    job = system.ledger.get_job(split.job_id)
    system.messages()
    dest = boto3.client("s3", endpoint_url=system.target.endpoint_url, region_name="us-east-1")

    def completion_lands(**_kw):  # after the destination listing, the copy and its DONE record land
        if system.ledger.get_job(job.job_id).status != Status.DONE:
            dest.put_object(Bucket=system.dst, Key="copy/missing.txt", Body=b"only here")
            system.ledger.record_part(job.job_id, job.attempt, job.upload_id,
                                      PartRecord(1, "e", "e", len(b"only here")))
            system.ledger.mark_done(system.ledger.elect_completion(job.job_id), "e")

    dest.meta.events.register("after-call.s3.ListObjectsV2", completion_lands)
    finder = Finder(source=rt.source, dest=dest, ledger=rt.ledger, splitter=splitter,
                    reattempter=Reattempter(ledger=rt.ledger, splitter=splitter, source=rt.source, dest=rt.dest),
                    source_bucket=system.src, dest_bucket=system.dst, dest_prefix="copy/")
    result = finder.run("missing")
    assert (result.reasons, result.outcomes) == ({"missing": 1}, {"copied-meanwhile": 1})
    assert system.ledger.get_job(job.job_id).upload_id == job.upload_id and system.messages() == []
    dest.delete_object(Bucket=system.dst, Key="copy/missing.txt")  # now truly gone: a new attempt
    assert finder.run("missing").outcomes == {"re-copied": 1}


def _differences(system):
    seen: list[tuple[str, str, str]] = []
    do_backfill(system.target, dry_run=True, on_object=lambda *a: seen.append(a))
    return seen


def test_cli_json_and_mistakes(system, moto_server):
    t = system.target
    args = ["backfill", "--endpoint-url", t.endpoint_url, "--table", t.transfers_table, "--parts-table",
            t.parts_table, "--queue-url", t.queue_url, "--source-bucket", t.source_bucket, "--source-endpoint-url",
            t.endpoint_url, "--dest-bucket", t.dest_bucket, "--dest-endpoint-url", t.endpoint_url,
            "--dest-prefix", "copy/"]
    result = CliRunner().invoke(cli, [*args, "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert (doc["listed"], doc["in_sync"], doc["different"], doc["dry_run"]) == (6, 2, 4, True)
    wrong = CliRunner().invoke(cli, ["backfill", "--endpoint-url", moto_server.endpoint_url, "--table", "t"])
    assert wrong.exit_code == 1 and "backfill needs --source-bucket, --dest-bucket" in wrong.output
    gone = CliRunner().invoke(cli, [*args[:-6], "--dest-bucket", "no-such-bucket-here", "--dest-endpoint-url",
                                    t.endpoint_url, "--dry-run"])
    assert gone.exit_code == 1 and "destination bucket missing (NoSuchBucket)" in gone.output
    assert len(gone.output.strip().splitlines()) == 1


# --- issue 15: the scheduled finder resumes where its last run stopped -----------------------------------------------
class Ticks:
    """A clock for the finder's deadline only: every reading is one second later (s3sync.transfer.finder and
    functions.finder read `time` through their module; nothing else sees this)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        self.now += 1
        return self.now

    def time(self) -> float:
        return 1_700_000_000.0 + self.now


class ShortContext:
    """A Lambda context with MARGIN_S + 3 s left: a run gets 3 ticks, i.e. hands on two keys, then stops."""

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        from functions.finder import MARGIN_S

        return int((MARGIN_S + 3) * 1000)


@pytest.fixture
def finder_env(moto_server, monkeypatch):
    """The splitter function as Lambda runs it, with the stack's FinderCursor parameter (as lambda.yaml makes it)."""
    import functions.finder
    import s3sync.transfer.finder
    from functions import _common
    from s3sync.contract import Env

    sys_ = make_system(moto_server.endpoint_url, dest_prefix="copy/", inline_max_bytes=0)
    name = f"/s3sync/{sys_.target.transfers_table}/finder-cursor"
    boto3.client("ssm", endpoint_url=moto_server.endpoint_url, region_name="us-east-1", aws_access_key_id="t",
                 aws_secret_access_key="t").put_parameter(Name=name, Value="{}", Type="String")
    for k, v in {**sys_.target.env(), "AWS_ENDPOINT_URL": moto_server.endpoint_url, Env.FINDER_CURSOR: name}.items():
        monkeypatch.setenv(k, v)
    ticks = Ticks()
    monkeypatch.setattr(functions.finder, "time", ticks)
    monkeypatch.setattr(s3sync.transfer.finder, "time", ticks)
    _common.runtime.cache_clear()
    yield sys_, name
    _common.runtime.cache_clear()


def test_the_scheduled_finder_resumes_where_its_last_run_stopped(finder_env):
    """Seven objects, two per run: four runs cover the bucket, each after the key the last one handed on; the run that
    reaches the end sends the next one back to the first key, which finds the jobs the pass made."""
    from functions.splitter import handler

    sys_, name = finder_env
    keys = [f"k{i}" for i in range(7)]
    for key in keys:
        sys_.s3.put_object(Bucket=sys_.src, Key=key, Body=key.encode())
    runs = [handler({"s3sync": "find", "bucket": sys_.src}, ShortContext()) for _ in range(5)]
    assert [(r["started_after"], r["listed"], r["stopped_at"]) for r in runs] == [
        (None, 2, "k1"), ("k1", 2, "k3"), ("k3", 2, "k5"), ("k5", 1, None), (None, 2, "k1")]
    assert [r["cursor"]["next_start_after"] for r in runs] == ["k1", "k3", "k5", None, "k1"]
    assert [dict(r["outcomes"]) for r in runs] == [{"enqueued": 2}] * 3 + [{"enqueued": 1}, {"in-progress": 2}]
    assert sorted(j.source_key for j in sys_.ledger.scan_jobs()) == keys  # each object handed over once
    ssm = boto3.client("ssm", endpoint_url=sys_.target.endpoint_url, region_name="us-east-1",
                       aws_access_key_id="t", aws_secret_access_key="t")
    kept = json.loads(ssm.get_parameter(Name=name)["Parameter"]["Value"])
    assert (kept["start_after"], kept["passes"], kept["runs"], kept["bucket"]) == ("k1", 1, 1, sys_.src)
    # an event that names its own start wins; another prefix starts a pass of its own
    assert handler({"s3sync": "find", "bucket": sys_.src, "start_after": "k4"}, ShortContext())["listed"] == 2
    other = handler({"s3sync": "find", "bucket": sys_.src, "prefix": "k6"}, ShortContext())
    assert (other["started_after"], other["listed"], other["complete"]) == (None, 1, True)


def test_without_the_parameter_every_run_starts_at_the_first_key(finder_env, monkeypatch):
    """No FinderSchedule (the parameter is the template's, made with one): nothing is kept, nothing created."""
    from functions import _common
    from functions.splitter import handler
    from s3sync.contract import Env

    sys_, _name = finder_env
    monkeypatch.setenv(Env.FINDER_CURSOR, "/s3sync/no-such-stack/finder-cursor")
    _common.runtime.cache_clear()
    for key in ("a", "b", "c"):
        sys_.s3.put_object(Bucket=sys_.src, Key=key, Body=b"x")
    runs = [handler({"s3sync": "find", "bucket": sys_.src}, ShortContext()) for _ in range(2)]
    assert [(r["started_after"], r["stopped_at"], "cursor" in r) for r in runs] == [(None, "b", False)] * 2
