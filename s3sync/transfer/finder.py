"""The finder: objects of the source bucket whose copy is missing or differs, handed to the splitter.

Used by `s3sync backfill` (objects that existed before the stacks) and by the optional scheduled finder (the
splitter function on an EventBridge schedule: events that were lost). Streaming: both buckets are listed page by page
(ListObjectsV2 returns keys in ascending UTF-8 binary order) and merge-joined, so millions of keys pass through a
constant amount of memory: one page of each listing and a bounded window of splits in flight.

When is a copy "the same"? ETags differ across partitions for multipart objects whose part sizes differ (and are not
MD5s at all under SSE-KMS), so the rule is:
1. no object at the destination key                                     -> copy ("missing")
2. sizes differ                                                           -> copy ("size")
3. ETags equal                                                            -> same
4. both ETags plain MD5s (and different), copies not made under aws:kms -> copy ("etag")
5. otherwise (multipart or KMS ETag on either side): the transfers table has a DONE job for this source object and
   ETag (the copy was verified part by part when it was made)            -> same; else copy ("unverified"), or
   same with `size_only` (for copies made by another tool).
"Copy" is `Splitter.split`: idempotent by job id (a small object is copied by the splitter at once: "copied", or
"re-copied" when its DONE job exists). A DONE job whose copy is gone or differs gets a new attempt, once
a HeadObject confirms it (the listing may predate the job's completion: "copied-meanwhile").

The scheduled finder resumes where its last run stopped (FinderCursor), so a bucket larger than one run lists is
covered in a few runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from s3sync.contract import Status
from s3sync.errors import UserError
from s3sync.transfer import logs
from s3sync.transfer.checksums import is_md5_etag, strip_etag
from s3sync.transfer.credentials import DestClient
from s3sync.transfer.encryption import DestEncryption
from s3sync.transfer.errors import TransferError, classify
from s3sync.transfer.events import ObjectRef
from s3sync.transfer.ledger import Ledger
from s3sync.transfer.reattempt import Reattempter
from s3sync.transfer.splitter import Splitter, job_id_for

if TYPE_CHECKING:
    from mypy_boto3_ssm import SSMClient

log = logging.getLogger("s3sync.finder")

MAX_ERRORS_KEPT = 20


class ListingOrderError(UserError):
    """A server listed keys out of S3's order: a merge-join over it would be wrong."""


@dataclass(frozen=True)
class Listed:
    key: str
    size: int
    etag: str


def listing(call: Callable[[Callable[[Any], Any]], Any], bucket: str, prefix: str = "", *, strip: str = "",
            start_after: str = "", what: str = "") -> Iterator[Listed]:
    """Every object under `prefix`, one page at a time; `call(fn)` runs `fn(client)` (a DestClient's `call`, or a
    plain client via `lambda fn: fn(client)`). Keys come back with `strip` removed from their front."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": strip + prefix}
    if start_after:
        kwargs["StartAfter"] = strip + start_after
    previous = ""
    while True:
        page = call(lambda c: c.list_objects_v2(**kwargs))
        for obj in page.get("Contents") or []:
            key = obj["Key"]
            if previous and key <= previous:
                raise ListingOrderError(f"{what or bucket} listed {key!r} after {previous!r}: not in S3's ascending "
                                        "UTF-8 order, so it cannot be compared by merge-join")
            previous = key
            yield Listed(key[len(strip):], int(obj.get("Size", 0)), str(obj.get("ETag", "")))
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return
        kwargs["ContinuationToken"] = token
        kwargs.pop("StartAfter", None)


def merge_join(source: Iterator[Listed], dest: Iterator[Listed],
               on_dest_only: Callable[[Listed], None] | None = None) -> Iterator[tuple[Listed, Listed | None]]:
    """Each source object with the destination object of the same key (None when there is none)."""
    d = next(dest, None)
    for s in source:
        while d is not None and d.key < s.key:
            if on_dest_only:
                on_dest_only(d)
            d = next(dest, None)
        if d is not None and d.key == s.key:
            yield s, d
            d = next(dest, None)
        else:
            yield s, None
    while d is not None:
        if on_dest_only:
            on_dest_only(d)
        d = next(dest, None)


@dataclass
class FindResult:
    listed: int = 0
    in_sync: int = 0
    dest_only: int = 0
    reasons: Counter = field(default_factory=Counter)  # why objects were (to be) copied
    outcomes: Counter = field(default_factory=Counter)  # what the splitter did with them
    errors: list[tuple[str, str]] = field(default_factory=list)
    error_count: int = 0
    stopped_at: str = ""  # set when a deadline ended the run early: resume after this key
    elapsed: float = 0.0
    dry_run: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def different(self) -> int:
        return sum(self.reasons.values())

    @property
    def complete(self) -> bool:
        return not self.stopped_at

    def as_dict(self) -> dict[str, Any]:
        return {"listed": self.listed, "in_sync": self.in_sync, "different": self.different,
                "dest_only": self.dest_only, "reasons": dict(self.reasons), "outcomes": dict(self.outcomes),
                "errors": self.error_count, "first_errors": [{"key": k, "reason": r} for k, r in self.errors],
                "complete": self.complete, "stopped_at": self.stopped_at or None, "dry_run": self.dry_run,
                "elapsed_s": round(self.elapsed, 3)}


class Finder:
    def __init__(self, *, source: Any, dest: DestClient | Any, ledger: Ledger, splitter: Splitter | None,
                 reattempter: Reattempter | None, source_bucket: str, dest_bucket: str, dest_prefix: str = "",
                 threads: int = 8, size_only: bool = False,
                 dest_encryption: DestEncryption = DestEncryption()) -> None:
        self.source = source
        self.dest = dest if isinstance(dest, DestClient) else DestClient.fixed(dest)
        self.ledger, self.splitter, self.reattempter = ledger, splitter, reattempter
        self.source_bucket, self.dest_bucket, self.dest_prefix = source_bucket, dest_bucket, dest_prefix
        self.threads, self.size_only = max(1, threads), size_only
        self.dest_encryption = dest_encryption  # what the copies are written with (Settings.dest_encryption)

    # --- the comparison rule --------------------------------------------------------------------------------------
    def difference(self, src: Listed, dst: Listed | None) -> str | None:
        """Why `src` needs a copy ("missing", "size", "etag", "unverified"), or None when its copy is the same."""
        if dst is None:
            return "missing"
        if src.size != dst.size:
            return "size"
        a, b = strip_etag(src.etag), strip_etag(dst.etag)
        if a == b:
            return None
        # A listing shows no encryption; a copy written under SSE-KMS (Env.DEST_SSE) has an MD5-looking ETag that is
        # no MD5: comparing it would copy such objects again on every run.
        if is_md5_etag(a) and is_md5_etag(b) and not self.dest_encryption.kms:
            return "etag"
        job = self.ledger.get_job(job_id_for(self.source_bucket, src.key, None, src.etag))
        if job is not None and job.status == Status.DONE and job.size == src.size:
            return None
        return None if self.size_only else "unverified"

    # --- the run --------------------------------------------------------------------------------------------------
    def run(self, prefix: str = "", *, dry_run: bool = False, start_after: str = "", deadline: float | None = None,
            on_object: Callable[[str, str, str], None] | None = None) -> FindResult:
        """Compare and (unless `dry_run`) hand every different object to the splitter. `deadline` (time.monotonic)
        stops listing early; `stopped_at` then says where to resume. `on_object(key, reason, outcome)` is called
        for every object that needed a copy."""
        result = FindResult(dry_run=dry_run)
        started = time.monotonic()
        src_iter = listing(lambda fn: fn(self.source), self.source_bucket, prefix, start_after=start_after,
                           what=f"source s3://{self.source_bucket}")
        dst_iter = listing(self.dest.call, self.dest_bucket, prefix, strip=self.dest_prefix, start_after=start_after,
                           what=f"destination s3://{self.dest_bucket}")

        def dest_only(_d: Listed) -> None:
            result.dest_only += 1

        window = threading.BoundedSemaphore(self.threads * 2)  # splits in flight: memory stays bounded
        copy = logs.in_this_context(self._copy)
        with ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="finder") as pool:
            for src, dst in merge_join(src_iter, dst_iter, dest_only):
                result.listed += 1
                reason = self.difference(src, dst)
                if reason is None:
                    result.in_sync += 1
                else:
                    with result.lock:
                        result.reasons[reason] += 1
                    if dry_run:
                        if on_object:
                            on_object(src.key, reason, "would copy")
                    else:
                        window.acquire()
                        fut = pool.submit(copy, src, reason, result, on_object)
                        fut.add_done_callback(lambda _f: window.release())
                if deadline is not None and time.monotonic() >= deadline:
                    result.stopped_at = src.key
                    break
        result.elapsed = time.monotonic() - started
        log.info("finder run", extra={"prefix": prefix, **{k: v for k, v in result.as_dict().items()
                                                            if k != "first_errors"}})
        return result

    def _copy(self, src: Listed, reason: str, result: FindResult, on_object: Callable[..., None] | None) -> None:
        try:
            outcome = self._split(src)
        except Exception as exc:  # noqa: BLE001 - one object's trouble never stops the run
            err = exc if isinstance(exc, TransferError) else classify(exc, "source")
            outcome = "error"
            with result.lock:
                result.error_count += 1
                if len(result.errors) < MAX_ERRORS_KEPT:
                    result.errors.append((src.key, err.reason))
            log.warning("finder could not hand an object over", extra={"key": src.key, "reason": err.reason})
        with result.lock:
            result.outcomes[outcome] += 1
        if on_object:
            on_object(src.key, reason, outcome)

    def _dest_now(self, key: str) -> Listed | None:
        """The destination object as it is now (HeadObject), None when there is none."""
        dest_key = self.dest_prefix + key
        try:
            head = self.dest.call(lambda c: c.head_object(Bucket=self.dest_bucket, Key=dest_key),
                                  f"s3://{self.dest_bucket}/{dest_key}")
        except TransferError as exc:
            if exc.code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return Listed(key, int(head.get("ContentLength", 0)), str(head.get("ETag", "")))

    def _split(self, src: Listed) -> str:
        if self.splitter is None:  # a finder for dry runs only
            raise ValueError("this finder has no splitter: run it with dry_run=True")
        split = self.splitter.split(ObjectRef(self.source_bucket, src.key, None, src.etag, src.size))
        if split.outcome in ("planned", "resumed"):
            return "enqueued"
        if split.outcome == "copied":  # a small object: the splitter copied it at once
            return "copied"
        if split.outcome == "missing":
            return "source-gone"
        if split.outcome == "failed":
            return "failed"
        # "duplicate" or "copied-again": the job of this very object and ETag exists
        job = self.ledger.get_job(split.job_id)
        if job is None or job.status not in Status.FINAL:
            return "in-progress"
        if job.status == Status.FAILED:
            return "failed-before"  # `s3sync retry` gives it a new attempt
        if split.outcome == "copied-again":  # a small object's DONE job: the splitter wrote the same bytes again
            return "re-copied"
        if self.reattempter is None:
            return "done-but-different"
        if self.difference(src, self._dest_now(src.key)) is None:
            # The destination listing was taken before this job completed: its copy is there now.
            return "copied-meanwhile"
        outcome = self.reattempter.reattempt(job, (Status.DONE,)).outcome
        return {"requeued": "re-copied", "superseded": "enqueued", "source-missing": "source-gone"}.get(
            outcome, "in-progress")


# --- where the scheduled finder stopped -------------------------------------------------------------------------------
SSM_VALUE_LIMIT = 4096  # bytes: a standard SSM parameter's value


@dataclass(frozen=True)
class Position:
    """The cursor's value: where the pass over one bucket and prefix stands."""

    bucket: str
    prefix: str
    start_after: str = ""  # the next run lists keys after this one ("": from the first key)
    pass_started_at: int = 0  # when the run that listed from the first key started
    runs: int = 0  # runs in this pass so far
    listed: int = 0  # source keys listed in this pass so far
    passes: int = 0  # passes that reached the end of the listing

    def after(self, result: FindResult, run_started: float) -> Position:
        """Where the next run starts once this run (started at `run_started`, from here) got `result`: after the last
        key it handed on, or, at the end of the listing, at the first key of a new pass."""
        started = self.pass_started_at if self.start_after else int(run_started)
        if result.complete:
            return Position(self.bucket, self.prefix, "", 0, 0, 0, self.passes + 1)
        return Position(self.bucket, self.prefix, result.stopped_at, started, self.runs + 1,
                        self.listed + result.listed, self.passes)


class FinderCursor:
    """Where the scheduled finder's last run stopped, kept between runs in one SSM parameter (lambda.yaml's
    `FinderCursor`, named by contract.Env.FINDER_CURSOR).

    A run lists from the key after the cursor and stops `functions.finder.MARGIN_S` before the function's timeout;
    the cursor is then the last key it handed on, and the next run resumes after it: a bucket larger than one run
    lists is covered in a few runs (before, every run started over and never got past the first run's share). The
    run that reaches the end of the listing sets it back to the first key: the next run starts a new pass. A run that
    fails leaves the cursor where it was (its keys are listed again).

    Why an SSM parameter, not an item of the transfers table: that table holds jobs, which the stream, the sweeper's
    index, `status` and every Scan read as jobs; a standard parameter costs nothing, is written once per run (far
    under its throughput limit), is readable and resettable in the console, and is the template's resource, so it
    goes with the stack. The code never creates it: where it does not exist (no FinderSchedule, another deployment),
    nothing is kept and every run starts at the first key, as before.
    Two runs that overlap (a schedule shorter than the function's timeout) each write where they stopped, the later
    write wins: some keys are then listed twice, or a pass starts later, and none is left out of every pass (the
    finder hands an object over once however often it is listed: the splitter is idempotent)."""

    def __init__(self, ssm: SSMClient, name: str) -> None:
        self.ssm, self.name = ssm, name

    def load(self, bucket: str, prefix: str) -> Position | None:
        """Where to start for this bucket and prefix; None when no cursor is kept (the parameter does not exist).
        A cursor of another bucket or prefix, or one that cannot be read, starts a new pass."""
        try:
            value = self.ssm.get_parameter(Name=self.name)["Parameter"]["Value"]
        except self.ssm.exceptions.ParameterNotFound:
            return None
        fresh = Position(bucket, prefix)
        try:
            doc = json.loads(value)
            kept = Position(**{f.name: doc[f.name] for f in dataclasses.fields(Position) if f.name in doc})
        except (ValueError, TypeError):
            log.warning("finder cursor unreadable: starting a new pass", extra={"parameter": self.name})
            return fresh
        return kept if (kept.bucket, kept.prefix) == (bucket, prefix) else fresh

    def save(self, position: Position) -> bool:
        """Write the position (False, and nothing written, when it does not fit a parameter: a pathological key)."""
        value = json.dumps(dataclasses.asdict(position), ensure_ascii=False, sort_keys=True)
        if len(value.encode("utf-8")) > SSM_VALUE_LIMIT:
            log.warning("finder cursor too long for an SSM parameter: not kept",
                        extra={"parameter": self.name, "key": position.start_after[:100]})
            return False
        self.ssm.put_parameter(Name=self.name, Value=value, Type="String", Overwrite=True)
        return True
