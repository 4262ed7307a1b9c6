"""`s3sync status`: the transfers table as progress per object (parts, bytes, rate, ETA) and totals.

What it reads does not grow with the DONE jobs (issue 15). DescribeTable first: the table's item count ("DynamoDB
updates this value approximately every six hours") and whether its sparse `Attention` index is there and ACTIVE.
- A table that counts at most WHOLE_TABLE_UP_TO items is read with one Scan page of that many: when that is the whole
  table (no LastEvaluatedKey), every job is shown and counted exactly, as before (a demo, a test, a young system);
- otherwise the index (s3sync.transfer.ledger) names the unfinished and the failed jobs, which are read (BatchGetItem)
  and shown and counted exactly; the DONE ones are not read: their number is the item count less the jobs the index
  lists, marked as an estimate, and their bytes and parts are not totalled;
- `everything` (`--all`): every page of a Scan, exact totals and the latest DONE rows, at a cost that grows with the
  table.
A table without the index (an ECS stack older than it), or whose index is still being built, is scanned whole, and
the report says so. Totals count every selected job; rows keep only the `limit` most relevant (unfinished first,
then failed, then the most recently finished), so memory stays bounded however many jobs are read.

"Stuck" is the sweeper's notion (s3sync.transfer.sweeper): an unfinished job whose `updated_at` is at least
`stuck_after` seconds old, i.e. no part counted, no state change for that long.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from s3sync.aws import aws_errors
from s3sync.contract import ATTENTION_INDEX, Status
from s3sync.errors import UserError
from s3sync.ops.context import Target
from s3sync.transfer.ledger import Job, Ledger, from_image

#: A table of at most this many jobs is read whole with one Scan page (exact totals, DONE rows); a larger one is read
#: through the Attention index. ~0.5 KB a job: one page stays under Scan's 1 MB.
WHOLE_TABLE_UP_TO = 1000

_PRIORITY = {Status.PLANNED: 2, Status.COPYING: 2, Status.COMPLETING: 2, Status.FAILED: 1, Status.DONE: 0}


def is_stuck(job: Job, now: float, stuck_after: float) -> bool:
    """The sweeper's test: unfinished and idle for `stuck_after` seconds."""
    return job.status not in Status.FINAL and now - job.updated_at >= stuck_after


@dataclass(frozen=True)
class JobView:
    job: Job
    rate: float | None  # bytes per second
    eta: float | None  # seconds
    idle: float  # seconds since the last change
    stuck: bool

    @classmethod
    def of(cls, job: Job, now: float, stuck_after: float) -> JobView:
        if job.status == Status.DONE:
            rate = job.size / max(1.0, job.updated_at - job.created_at)
            eta: float | None = 0.0
        elif job.status == Status.FAILED:
            rate, eta = None, None
        else:
            rate = job.done_bytes / max(1.0, now - job.created_at) if job.done_bytes else None
            eta = (job.size - job.done_bytes) / rate if rate else None
        return cls(job, rate, eta, max(0.0, now - job.updated_at), is_stuck(job, now, stuck_after))

    def as_dict(self) -> dict[str, Any]:
        j = self.job
        return {
            "job_id": j.job_id, "status": j.status, "source": f"s3://{j.source_bucket}/{j.source_key}",
            "destination": f"s3://{j.dest_bucket}/{j.dest_key}", "size": j.size, "bytes_done": j.done_bytes,
            "parts_done": j.done, "parts_total": j.total, "percent": round(100.0 * _fraction(j), 1),
            "rate_bytes_per_s": round(self.rate, 1) if self.rate is not None else None,
            "eta_s": round(self.eta, 1) if self.eta is not None else None, "idle_s": round(self.idle, 1),
            "stuck": self.stuck, "error": j.error, "dest_etag": j.dest_etag, "redrives": j.redrives,
            "created_at": j.created_at, "updated_at": j.updated_at,
        }


def _fraction(job: Job) -> float:
    if job.status == Status.DONE:
        return 1.0
    if job.size:
        return min(1.0, job.done_bytes / job.size)
    return job.done / job.total if job.total else 0.0


@dataclass
class Totals:
    jobs: int = 0
    by_status: dict[str, int] = field(default_factory=lambda: {s: 0 for s in Status.ALL})
    size: int = 0
    bytes_done: int = 0
    parts: int = 0
    parts_done: int = 0
    stuck: int = 0
    rate: float = 0.0  # sum over unfinished jobs
    left: int = 0  # bytes unfinished jobs still have to copy
    done_estimated: bool = False  # DONE jobs not read: by_status[DONE] is the table's item count less the indexed
    read: str = "table"  # "table": every job was read; "index": the unfinished and failed ones (the index's)

    def add(self, view: JobView) -> None:
        j = view.job
        self.jobs += 1
        self.by_status[j.status] = self.by_status.get(j.status, 0) + 1
        self.size += j.size
        self.bytes_done += j.size if j.status == Status.DONE else j.done_bytes
        self.parts += j.total
        self.parts_done += j.total if j.status == Status.DONE else j.done
        self.stuck += view.stuck
        if j.status not in Status.FINAL:
            self.left += max(0, j.size - j.done_bytes)
            self.rate += view.rate or 0.0

    @property
    def eta(self) -> float | None:
        if not self.left:
            return 0.0
        return self.left / self.rate if self.rate else None

    def estimate_done(self, count: int) -> None:
        """DONE jobs that were not read: counted in `jobs` and `by_status`, not in bytes or parts."""
        self.done_estimated = True
        self.jobs += count
        self.by_status[Status.DONE] = self.by_status.get(Status.DONE, 0) + count

    def as_dict(self) -> dict[str, Any]:
        return {"jobs": self.jobs, "by_status": self.by_status, "size": self.size, "bytes_done": self.bytes_done,
                "parts": self.parts, "parts_done": self.parts_done, "stuck": self.stuck,
                "rate_bytes_per_s": round(self.rate, 1), "eta_s": None if self.eta is None else round(self.eta, 1),
                "read": self.read, "done_estimated": self.done_estimated}


@dataclass
class StatusReport:
    where: str
    rows: list[JobView]
    totals: Totals
    shown: int
    queue: dict[str, int] = field(default_factory=dict)
    now: float = 0.0
    note: str = ""  # how the jobs were read, when it is not the usual

    def as_dict(self) -> dict[str, Any]:
        return {"where": self.where, "jobs": [r.as_dict() for r in self.rows], "totals": self.totals.as_dict(),
                "queue": self.queue, "shown": self.shown, "now": int(self.now), "note": self.note or None}


@dataclass
class Reading:
    """The selected jobs, and how they were read."""

    jobs: Iterable[Job]
    done_estimate: int | None = None  # read through the index: DONE jobs not read, estimated (None: none selected)
    read: str = "table"
    note: str = ""


def _selected(job: Job, failed: bool, stuck: bool, now: float, stuck_after: float) -> bool:
    if failed and job.status != Status.FAILED:
        return False
    return not stuck or is_stuck(job, now, stuck_after)


def read_jobs(target: Target, *, failed: bool = False, stuck: bool = False, now: float | None = None,
              everything: bool = False, whole_up_to: int | None = None) -> Reading:
    """The selected jobs (all, FAILED ones, stuck ones): the whole table when it holds at most `whole_up_to` jobs
    (one Scan page), else the unfinished and failed jobs the Attention index lists, each read; `everything`: a
    Scan of every page."""
    now = time.time() if now is None else now
    if everything:
        return Reading(_scan(target, failed=failed, stuck=stuck, now=now))
    table = _describe(target)
    index = {i.get("IndexName"): i for i in table.get("GlobalSecondaryIndexes") or []}.get(ATTENTION_INDEX)
    if index is None or index.get("IndexStatus", "ACTIVE") != "ACTIVE":
        why = (f"the transfers table has no {ATTENTION_INDEX} index (an ECS stack from before it): every job was "
               "read; update the ECS stack, then run `s3sync status --reindex` once" if index is None else
               f"the transfers table's {ATTENTION_INDEX} index is {index.get('IndexStatus')} (being built after a "
               "stack update): every job was read")
        return Reading(_scan(target, failed=failed, stuck=stuck, now=now), note=why)
    whole = WHOLE_TABLE_UP_TO if whole_up_to is None else whole_up_to
    count = int(table.get("ItemCount", 0))
    if count <= whole:  # small, or counted before it grew (the count lags): one page says which
        page, more = _first_page(target, whole)
        if not more:
            return Reading([j for j in page if _selected(j, failed, stuck, now, target.stuck_after)])
    ledger = Ledger(target.client("dynamodb"), target.transfers_table, target.parts_table or "")
    with aws_errors(f"reading the transfers table {target.transfers_table} through its {ATTENTION_INDEX} index "
                    f"({target.where})"):
        jobs: list[Job] = []
        if not failed:  # unfinished ones (a stuck job is one of them, idle since its creation at least)
            before = int(now - target.stuck_after) if stuck else None
            jobs += ledger.unfinished_jobs(created_before=before, consistent=False)
        if not stuck:
            jobs += ledger.failed_jobs(consistent=False)
    estimate = None if failed or stuck else max(0, count - len(jobs))
    return Reading([j for j in jobs if _selected(j, failed, stuck, now, target.stuck_after)], estimate, "index")


def _describe(target: Target) -> dict[str, Any]:
    ddb = target.client("dynamodb")
    with aws_errors(f"reading the transfers table {target.transfers_table} ({target.where})"):
        try:
            return ddb.describe_table(TableName=target.transfers_table)["Table"]
        except ddb.exceptions.ResourceNotFoundException:
            raise _missing_table(target) from None


def _first_page(target: Target, limit: int) -> tuple[list[Job], bool]:
    """Up to `limit` jobs, and whether the table holds more."""
    ddb = target.client("dynamodb")
    with aws_errors(f"reading the transfers table {target.transfers_table} ({target.where})"):
        try:
            resp = ddb.scan(TableName=target.transfers_table, Limit=max(1, limit))
        except ddb.exceptions.ResourceNotFoundException:
            raise _missing_table(target) from None
    return [Job.from_item(from_image(raw)) for raw in resp.get("Items", [])], "LastEvaluatedKey" in resp


def _missing_table(target: Target) -> UserError:
    return UserError(f"transfers table {target.transfers_table} does not exist ({target.where}): is the system "
                     "running there? (see --stack, --table, --endpoint-url)")


def do_reindex(target: Target) -> dict[str, int]:
    """`status --reindex`: Ledger.reindex on the target's table (the upgrade step that fills the Attention index)."""
    ledger = Ledger(target.client("dynamodb"), target.transfers_table, target.parts_table or "")
    with aws_errors(f"reindexing the transfers table {target.transfers_table} ({target.where})"):
        try:
            return ledger.reindex()
        except target.client("dynamodb").exceptions.ResourceNotFoundException:
            raise _missing_table(target) from None


def iter_jobs(target: Target, *, failed: bool = False, stuck: bool = False, now: float | None = None,
              everything: bool = False) -> Iterator[Job]:
    """Every selected job (read_jobs: through the index when the table is large, unless `everything`)."""
    yield from read_jobs(target, failed=failed, stuck=stuck, now=now, everything=everything).jobs


def _scan(target: Target, *, failed: bool, stuck: bool, now: float) -> Iterator[Job]:
    """Every selected job, one scan page at a time (a filter expression does the selecting server-side)."""
    from boto3.dynamodb.types import TypeSerializer

    ser = TypeSerializer()
    ddb = target.client("dynamodb")
    kwargs: dict[str, Any] = {"TableName": target.transfers_table}
    filters: list[str] = []
    values: dict[str, str | int] = {}
    if failed:
        filters.append("#s = :failed")
        values[":failed"] = Status.FAILED
    if stuck:
        filters.append("NOT #s IN (:done, :failed) AND updated_at <= :idle_since")
        values.update({":done": Status.DONE, ":failed": Status.FAILED, ":idle_since": int(now - target.stuck_after)})
    if filters:
        kwargs.update(FilterExpression=" AND ".join(f"({f})" for f in filters),
                      ExpressionAttributeNames={"#s": "status"},
                      ExpressionAttributeValues={k: ser.serialize(v) for k, v in values.items()})
    while True:
        with aws_errors(f"reading the transfers table {target.transfers_table} ({target.where})"):
            try:
                resp = ddb.scan(**kwargs)
            except ddb.exceptions.ResourceNotFoundException:
                raise _missing_table(target) from None
        for raw in resp.get("Items", []):
            yield Job.from_item(from_image(raw))
        if "LastEvaluatedKey" not in resp:
            return
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


def queue_depths(target: Target) -> dict[str, int]:
    """Visible and in-flight part messages, and the dead-letter queue's depth (when the queues are known)."""
    out: dict[str, int] = {}
    if not (target.queue_url or target.dlq_url):
        return out
    sqs = target.client("sqs")
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    with aws_errors(f"reading the queues ({target.where})"):
        if target.queue_url:
            a = sqs.get_queue_attributes(QueueUrl=target.queue_url, AttributeNames=names)["Attributes"]
            out["visible"], out["in_flight"] = int(a[names[0]]), int(a[names[1]])
        if target.dlq_url:
            a = sqs.get_queue_attributes(QueueUrl=target.dlq_url, AttributeNames=names[:1])["Attributes"]
            out["dead_letter"] = int(a[names[0]])
    return out


def collect(target: Target, *, failed: bool = False, stuck: bool = False, limit: int = 50,
            now: float | None = None, everything: bool = False, whole_up_to: int | None = None) -> StatusReport:
    now = time.time() if now is None else now
    totals = Totals()
    seq = iter(range(1 << 62))
    reading = read_jobs(target, failed=failed, stuck=stuck, now=now, everything=everything, whole_up_to=whole_up_to)
    totals.read = reading.read

    def views() -> Iterator[tuple[tuple[int, int, int], JobView]]:
        for job in reading.jobs:
            view = JobView.of(job, now, target.stuck_after)
            totals.add(view)
            yield (_PRIORITY.get(job.status, 0), job.updated_at, next(seq)), view

    if limit > 0:
        kept = heapq.nlargest(limit, views(), key=lambda kv: kv[0])
    else:
        kept = sorted(views(), key=lambda kv: kv[0], reverse=True)
    rows = [v for _k, v in kept]
    if reading.done_estimate is not None:
        totals.estimate_done(reading.done_estimate)
    return StatusReport(target.where, rows, totals, len(rows), queue_depths(target), now, reading.note)


# --- text -------------------------------------------------------------------------------------------------------------
def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


#: Optional columns, most useful first: each is shown only when it fits the terminal with those before it.
#: "object" stands for the object column at its full width (up to 48): once that does not fit, nothing after it
#: is added (a wider table would fold the keys).
_OPTIONAL = ("parts", "object", "ETA", "progress", "rate", "detail", "idle", "job")
_CELL_PAD = 3  # a column's padding (one space each side) and its border
_OBJECT_MIN, _OBJECT_MAX = 16, 48


def _cells(v: JobView) -> dict[str, str]:
    """Each column's text for one job (the progress column's width is what its bar takes)."""
    j = v.job
    done_bytes = j.size if j.status == Status.DONE else j.done_bytes
    return {
        "object": j.source_key,
        "status": j.status + (" stuck" if v.stuck else ""),
        "bytes": f"{human_bytes(done_bytes)}/{human_bytes(j.size)}",
        "parts": f"{j.total if j.status == Status.DONE else j.done}/{j.total}",
        "ETA": human_seconds(v.eta) if j.status not in Status.FINAL else "-",
        "progress": "#" * 12,
        "rate": f"{human_bytes(v.rate)}/s" if v.rate else "-",
        "detail": j.error or "",
        "idle": human_seconds(v.idle) if j.status not in Status.FINAL else "-",
        "job": j.job_id[:12],
    }


def choose_columns(rows: list[JobView], width: int) -> list[str]:
    """The columns that fit `width` without wrapping a row: object, status and bytes always; then the optional
    ones in priority order (`_OPTIONAL`) while they fit. The object column takes at least 16 (longer keys fold);
    failed jobs' reasons get a column only when the longest fits whole, else they are printed under the table."""
    cells = [_cells(v) for v in rows]

    def need(col: str) -> int:
        return max([len(col), *(len(c[col]) for c in cells)])

    widths = {col: need(col) for col in ("status", "bytes", *_OPTIONAL)}
    widths["object"] = min(_OBJECT_MAX, widths["object"])
    has_detail = any(c["detail"] for c in cells)
    chosen = ["object", "status", "bytes"]
    object_width = min(_OBJECT_MIN, widths["object"])
    used = 1 + _CELL_PAD * 3 + object_width + widths["status"] + widths["bytes"]
    for col in _OPTIONAL:
        if col == "object":
            if used - object_width + widths["object"] > width:
                break
            used += widths["object"] - object_width
            continue
        if col == "detail" and not has_detail:
            continue
        if used + widths[col] + _CELL_PAD <= width:
            chosen.append(col)
            used += widths[col] + _CELL_PAD
    return chosen


def render(report: StatusReport, console: Any, *, failed: bool = False, stuck: bool = False) -> None:
    """The table, fitted to the console's width (columns dropped by priority, never a wrapped row), and totals.
    An empty selection (`failed` / `stuck`: what was asked for) is a sentence, not an empty table."""
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    t = report.totals
    if not report.rows:
        what = {(True, False): "failed", (False, True): "stuck", (True, True): "failed or stuck"}.get(
            (failed, stuck), "")
        console.print(f"no {what + ' ' if what else ''}transfers ({report.where})"
                      + ("" if what else ": nothing was uploaded to the source bucket yet"), highlight=False,
                      soft_wrap=True)
        _print_queue(report, console)
        return
    columns = choose_columns(report.rows, console.width)
    table = Table(title=f"s3sync transfers ({report.where})", title_justify="left")
    right: dict[str, Any] = {"justify": "right", "no_wrap": True}
    spec: dict[str, dict[str, Any]] = {
        "object": {"overflow": "fold", "min_width": _OBJECT_MIN, "max_width": _OBJECT_MAX},
        "status": {"no_wrap": True}, "bytes": right, "parts": right, "ETA": right,
        "progress": {"min_width": 12, "no_wrap": True}, "rate": right,
        "detail": {"overflow": "fold"}, "idle": right,
        "job": {"no_wrap": True}}
    for name in columns:
        table.add_column(name, **spec[name])
    styles = {Status.DONE: "green", Status.FAILED: "red", Status.COPYING: "cyan", Status.PLANNED: "yellow",
              Status.COMPLETING: "blue"}
    for v in report.rows:
        j = v.job
        cells: dict[str, Any] = _cells(v)
        cells["status"] = f"[{styles.get(j.status, '')}]{j.status}[/]" + (" [bold red]stuck[/]" if v.stuck else "")
        cells["progress"] = ProgressBar(total=100.0, completed=100.0 * _fraction(j), width=12,
                                        complete_style="red" if j.status == Status.FAILED else "green")
        table.add_row(*(cells[name] for name in columns))
    console.print(table)
    if "detail" not in columns:
        for v in report.rows:
            if v.job.error:
                console.print(f"{v.job.source_key}: {v.job.error}", markup=False, highlight=False)
    counts = ", ".join(f"{'about ' if s == Status.DONE and t.done_estimated else ''}{n} {s.lower()}"
                       for s, n in t.by_status.items() if n)
    read = t.jobs - (t.by_status.get(Status.DONE, 0) if t.done_estimated else 0)
    hidden = f" (showing {report.shown}; --limit 0 for all)" if report.shown < read else ""
    console.print(f"{t.jobs} job(s){hidden}: {counts or 'none'}"
                  + (f"; [bold red]{t.stuck} stuck[/]" if t.stuck else ""), highlight=False)
    scope = "unfinished and failed: " if t.done_estimated else ""
    console.print(f"{scope}parts {t.parts_done}/{t.parts}, bytes {human_bytes(t.bytes_done)}/{human_bytes(t.size)}"
                  + (f", {human_bytes(t.rate)}/s, ETA {human_seconds(t.eta)}" if t.rate else ""))
    if t.done_estimated:
        console.print("(DONE jobs are not read: their number is DynamoDB's item count of the table, refreshed about "
                      "every six hours, less the unfinished and failed; --all reads every job)", highlight=False)
    if report.note:
        console.print(f"note: {report.note}", highlight=False)
    _print_queue(report, console)


def _print_queue(report: StatusReport, console: Any) -> None:
    if report.queue:
        q = report.queue
        console.print(f"queue: {q.get('visible', 0)} visible, {q.get('in_flight', 0)} in flight; "
                      f"dead-letter queue: {q.get('dead_letter', 0)}")
