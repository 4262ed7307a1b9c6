"""B5: the ledger at scale: what a sweep and `s3sync status` cost with 10,000 and with 100,000 jobs in the ledger.

The transfers table holds N jobs as the engine leaves them: a fixed set of unfinished ones (fresh and stale, in every
state the sweeper drives), a fixed set of FAILED ones, and DONE ones for the rest. Both are measured on the control
plane `s3sync local` uses (moto's server, in this process, with its patches), through their own code:
- sweep: `Sweeper.sweep()` as scale_in runs it (the Attention index, each candidate read again, the stale ones
  driven on: parts re-sent, completions re-triggered), stale_after 900 s;
- status: `s3sync status`'s `collect()` (a first Scan page, then the index; DONE jobs counted, not read).
Each is counted by its requests (by operation, from botocore's after-call events), the items DynamoDB read for it
(ScannedCount of a Scan or Query, the items a BatchGetItem or GetItem returned) and its seconds. The goal (issue 15):
independent of the number of DONE jobs. Beside them, "before": what the same reads cost as they were before the
index (the sweeper's Scan of the table with a filter, `status --all`'s Scan of every page), once per size.

Every run starts from the same state: the unfinished and failed jobs and their part items are written again, and the
sweep gets a fresh, empty part queue. The table is filled with BatchWriteItem (25 items a request), not timed.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import time
from collections import Counter
from typing import Any

from bench.common import RUN_FLAGS, CpuMeter, cpu_line, describe_machine, machine, median, save, say, wait_quiet

STALE_AFTER = 900  # the deployed sweeper's threshold (contract.DEFAULT_STUCK_AFTER_SECONDS)
PART = 8 * 1024 * 1024


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("B5 (the ledger at scale: sweep and status)")
    g.add_argument("--b5-jobs", default="10000,100000",
                   help="jobs in the ledger, comma-separated sizes (default 10000,100000)")
    g.add_argument("--b5-unfinished", type=int, default=100, help="unfinished jobs among them (default 100)")
    g.add_argument("--b5-failed", type=int, default=50, help="FAILED jobs among them (default 50)")
    g.add_argument("--b5-runs", type=int, default=3, help="measured runs of each per size (default 3)")
    g.add_argument("--b5-before", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure the reads as they were before the index, once per size (default on)")


class Calls:
    """Requests by operation and items read, from the after-call events of the clients it is attached to."""

    def __init__(self) -> None:
        self.ops: Counter[str] = Counter()
        self.items = 0

    def attach(self, client: Any) -> Any:
        client.meta.events.register("after-call", self._after)
        return client

    def _after(self, model: Any, parsed: dict[str, Any], **_: Any) -> None:
        self.ops[model.name] += 1
        if model.name in ("Scan", "Query"):
            self.items += int(parsed.get("ScannedCount", parsed.get("Count", 0)))
        elif model.name == "BatchGetItem":
            self.items += sum(len(v) for v in parsed.get("Responses", {}).values())
        elif model.name == "GetItem":
            self.items += 1 if "Item" in parsed else 0

    def reset(self) -> None:
        self.ops.clear()
        self.items = 0

    def snapshot(self) -> dict[str, Any]:
        return {"requests": sum(self.ops.values()), "by_operation": dict(self.ops.most_common()),
                "items_read": self.items}


def _job_id(n: int) -> str:
    return hashlib.sha256(f"b5-{n}".encode()).hexdigest()[:32]


class Ledger5:
    """The benchmark's tables: N jobs, the unfinished and failed ones always the same."""

    def __init__(self, ddb: Any, name: str, jobs: int, unfinished: int, failed: int) -> None:
        from boto3.dynamodb.types import TypeSerializer  # noqa: PLC0415

        self.ddb, self.name, self.n = ddb, name, jobs
        self.transfers, self.parts = f"{name}-transfers", f"{name}-parts"
        self.unfinished, self.failed = unfinished, failed
        self._ser = TypeSerializer()

    def create(self) -> None:
        from s3sync.contract import PARTS_HASH_KEY, PARTS_RANGE_KEY, TRANSFERS_STREAM_VIEW  # noqa: PLC0415
        from s3sync.transfer.ledger import transfers_table_keys  # noqa: PLC0415

        self.ddb.create_table(TableName=self.transfers, BillingMode="PAY_PER_REQUEST", **transfers_table_keys(),
                              StreamSpecification={"StreamEnabled": True, "StreamViewType": TRANSFERS_STREAM_VIEW})
        self.ddb.create_table(TableName=self.parts, BillingMode="PAY_PER_REQUEST",
                              AttributeDefinitions=[{"AttributeName": PARTS_HASH_KEY, "AttributeType": "S"},
                                                    {"AttributeName": PARTS_RANGE_KEY, "AttributeType": "N"}],
                              KeySchema=[{"AttributeName": PARTS_HASH_KEY, "KeyType": "HASH"},
                                         {"AttributeName": PARTS_RANGE_KEY, "KeyType": "RANGE"}])

    def drop(self) -> None:
        for table in (self.transfers, self.parts):
            self.ddb.delete_table(TableName=table)

    def _item(self, values: dict[str, Any]) -> dict[str, Any]:
        return {k: self._ser.serialize(v) for k, v in values.items() if v is not None}

    def _job(self, n: int, status: str, now: int, *, age: int, total: int = 1, done: int | None = None,
             error: str | None = None) -> dict[str, Any]:
        """A job item as the engine leaves it in `status` (`done` parts counted), with its index attribute."""
        from s3sync.contract import ATTENTION_ATTR, Status  # noqa: PLC0415
        from s3sync.transfer.ledger import Attention  # noqa: PLC0415

        job_id = _job_id(n)
        counted = total if status == Status.DONE else (done or 0)
        size = total * PART if total > 1 else 64 * 1024
        return self._item({
            "job_id": job_id, "status": status, "source_bucket": "src", "source_key": f"data/{n:07d}.bin",
            "source_etag": '"' + job_id + '"', "dest_bucket": "dst", "dest_key": f"data/{n:07d}.bin", "size": size,
            "part_size": PART, "total": total, "remaining": total - counted, "done": counted,
            "done_bytes": min(size, counted * PART), "upload_id": f"up-{n}" if total > 1 else "-",
            "created_at": now - age - 60, "updated_at": now - age, "attempt": f"a-{n}", "rev": counted + 3,
            "lease": "lease" if status == Status.COMPLETING else None,
            "dest_etag": '"copy"' if status == Status.DONE else None, "error": error,
            ATTENTION_ATTR: Attention.of(job_id, status)})

    def open_items(self, now: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The unfinished and failed jobs (the first ones by number), and the part items of the unfinished ones:
        a fifth each fresh COPYING, stale COPYING with parts missing, stale PLANNED, stale COMPLETING, and stale
        COPYING with every part counted (its completion never ran)."""
        from s3sync.contract import Status  # noqa: PLC0415

        jobs, parts = [], []
        kinds = [(Status.COPYING, 0, 2), (Status.COPYING, 2 * STALE_AFTER, 2), (Status.PLANNED, 2 * STALE_AFTER, 0),
                 (Status.COMPLETING, 2 * STALE_AFTER, 4), (Status.COPYING, 2 * STALE_AFTER, 4)]
        for n in range(self.unfinished):
            status, age, done = kinds[n % len(kinds)]
            jobs.append(self._job(n, status, now, age=age, total=4, done=done))
            for p in range(1, done + 1):
                parts.append(self._item({"job_id": _job_id(n), "part": p, "etag": "e", "md5": "e", "size": PART,
                                         "attempt": f"a-{n}", "upload_id": f"up-{n}", "recorded_at": now}))
        for n in range(self.unfinished, self.unfinished + self.failed):
            jobs.append(self._job(n, Status.FAILED, now, age=3600, total=2,
                                  error="source changed: its ETag no longer matches the planned one"))
        return jobs, parts

    def _write(self, table: str, items: list[dict[str, Any]]) -> None:
        for i in range(0, len(items), 25):
            request = {table: [{"PutRequest": {"Item": item}} for item in items[i:i + 25]]}
            while request:
                request = self.ddb.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}

    def fill(self) -> float:
        """Every job; returns the seconds it took (not part of any measurement)."""
        from s3sync.contract import Status  # noqa: PLC0415

        started, now = time.monotonic(), int(time.time())
        self.reset_open()
        first = self.unfinished + self.failed
        batch: list[dict[str, Any]] = []
        for n in range(first, self.n):
            batch.append(self._job(n, Status.DONE, now, age=STALE_AFTER + n % 86_400))
            if len(batch) == 2500:
                self._write(self.transfers, batch)
                batch = []
        self._write(self.transfers, batch)
        return time.monotonic() - started

    def reset_open(self) -> None:
        """The unfinished and failed jobs (and their part items) back as they were: each run sees the same."""
        jobs, parts = self.open_items(int(time.time()))
        self._write(self.transfers, jobs)
        self._write(self.parts, parts)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import boto3  # noqa: PLC0415
    from botocore.config import Config  # noqa: PLC0415

    from s3sync.local.servers import MotoServer  # noqa: PLC0415
    from s3sync.ops.context import Target  # noqa: PLC0415
    from s3sync.ops.status import collect  # noqa: PLC0415
    from s3sync.transfer.ledger import Ledger  # noqa: PLC0415
    from s3sync.transfer.settings import Settings  # noqa: PLC0415
    from s3sync.transfer.splitter import Splitter  # noqa: PLC0415
    from s3sync.transfer.sweeper import Sweeper  # noqa: PLC0415

    logging.getLogger("s3sync").setLevel(logging.ERROR)  # the sweep's warnings (jobs driven on) are expected here
    sizes = [int(s) for s in str(args.b5_jobs).split(",") if s.strip()]
    info = machine()
    say(f"B5: the ledger at scale: a sweep and `s3sync status` with {', '.join(f'{n:,}' for n in sizes)} jobs "
        f"({args.b5_unfinished} unfinished, {args.b5_failed} failed, the rest DONE), moto's DynamoDB and SQS")
    say(f"    machine: {describe_machine(info)}")
    runs: list[dict[str, Any]] = []
    before: list[dict[str, Any]] = []
    calls = Calls()
    with MotoServer(patched=RUN_FLAGS["moto_patches"]) as moto:
        cfg = Config(retries={"mode": "standard", "max_attempts": 8}, max_pool_connections=32)
        kw = {"endpoint_url": moto.endpoint_url, "region_name": "us-east-1", "aws_access_key_id": "testing",
              "aws_secret_access_key": "testing", "config": cfg}
        ddb, sqs = calls.attach(boto3.client("dynamodb", **kw)), calls.attach(boto3.client("sqs", **kw))

        class CountedTarget(Target):
            def client(self, service: str) -> Any:  # the ops commands make a client per call: count each
                return calls.attach(super().client(service))

        for size in sizes:
            name = f"b5-{size}-{int(time.time())}"
            tables = Ledger5(ddb, name, size, args.b5_unfinished, args.b5_failed)
            tables.create()
            filled = tables.fill()
            say(f"B5 {size:,} jobs written in {filled:.1f} s (BatchWriteItem, not measured)")
            ledger = Ledger(ddb, tables.transfers, tables.parts)
            target = CountedTarget(moto.endpoint_url, "us-east-1", tables.transfers, tables.parts,
                                   stuck_after=STALE_AFTER, local=True, where=f"bench {name}")
            for r in range(args.b5_runs):
                tables.reset_open()
                queue_url = sqs.create_queue(QueueName=f"{name}-r{r}")["QueueUrl"]
                settings = Settings(queue_url=queue_url, transfers_table=tables.transfers, parts_table=tables.parts,
                                    dest_bucket="dst", part_size=PART)
                names = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                         "ApproximateNumberOfMessagesDelayed")

                def busy(url: str = queue_url, names: tuple[str, ...] = names) -> bool:  # as Runtime.queue_busy
                    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(names))["Attributes"]
                    return any(int(attrs.get(n, 0)) for n in names)

                sweeper = Sweeper(ledger=ledger, splitter=Splitter(source=None, dest=None, sqs=sqs, ledger=ledger,
                                                                   settings=settings),
                                  stale_after=STALE_AFTER, queue_busy=busy)
                quiet = wait_quiet(args.quiet_wait)
                entry: dict[str, Any] = {"jobs": size, "round": r, "quiet": quiet}
                for what, action in (("sweep", sweeper.sweep),
                                     ("status", lambda target=target: collect(target, limit=50))):
                    calls.reset()
                    meter = CpuMeter({})
                    started = time.perf_counter()
                    result = action()
                    seconds = time.perf_counter() - started
                    entry[what] = {"seconds": round(seconds, 4), **calls.snapshot(), "cpu": meter.stop()}
                    if what == "sweep":
                        entry[what]["acted"] = {k: len(v) for k, v in result.as_dict().items()}
                    else:
                        t = result.totals
                        entry[what]["read"] = t.read
                        entry[what]["shown"] = {"rows": result.shown, "jobs": t.jobs,
                                                "by_status": {k: v for k, v in t.by_status.items() if v}}
                sw, st = entry["sweep"], entry["status"]
                acted = sw["acted"]
                ok = (acted["resumed"] + acted["redriven"] + acted["retriggered"] == args.b5_unfinished * 4 // 5
                      and st["shown"]["jobs"] == size)
                entry["ok"] = ok
                runs.append(entry)
                say(f"B5 {size:>7,} jobs run {r + 1}/{args.b5_runs}  sweep {sw['seconds']:6.3f} s "
                    f"{sw['requests']:4d} requests {sw['items_read']:6,} items read (acted on "
                    f"{sum(acted.values())})  |  status {st['seconds']:6.3f} s {st['requests']:4d} requests "
                    f"{st['items_read']:6,} items read ({st['read']})  (CPU s: {cpu_line(sw['cpu'])})"
                    f"{'' if ok else '  FAILED'}")
                sqs.delete_queue(QueueUrl=queue_url)
            if args.b5_before:
                tables.reset_open()
                entry = {"jobs": size}
                for what, action in (("sweep_scan", lambda ledger=ledger: ledger.scan_jobs(only_unfinished=True)),
                                     ("status_all", lambda target=target: collect(target, limit=50,
                                                                                  everything=True))):
                    calls.reset()
                    started = time.perf_counter()
                    action()
                    entry[what] = {"seconds": round(time.perf_counter() - started, 3), **calls.snapshot()}
                before.append(entry)
                say(f"B5 {size:>7,} jobs before the index: the sweeper's Scan {entry['sweep_scan']['seconds']:.2f} s "
                    f"{entry['sweep_scan']['requests']} requests {entry['sweep_scan']['items_read']:,} items read  |  "
                    f"status --all {entry['status_all']['seconds']:.2f} s {entry['status_all']['requests']} requests "
                    f"{entry['status_all']['items_read']:,} items read")
            tables.drop()
    summary: dict[str, Any] = {"all_ok": all(e["ok"] for e in runs), "sizes": {}}
    for size in sizes:
        mine = [e for e in runs if e["jobs"] == size and e["ok"]]
        summary["sizes"][size] = {what: {"median_seconds": round(median([e[what]["seconds"] for e in mine]), 4),
                                         "requests": median([e[what]["requests"] for e in mine]),
                                         "items_read": median([e[what]["items_read"] for e in mine])}
                                  for what in ("sweep", "status")}
    if len(sizes) > 1:
        small, large = summary["sizes"][sizes[0]], summary["sizes"][sizes[-1]]
        summary["ratio_largest_to_smallest"] = {
            what: {k: round(large[what][k] / small[what][k], 2) if small[what][k] else None
                   for k in ("median_seconds", "requests", "items_read")} for what in ("sweep", "status")}
    for size, s in summary["sizes"].items():
        say(f"B5 summary {size:>7,} jobs: sweep median {s['sweep']['median_seconds']:.3f} s, "
            f"{s['sweep']['requests']:.0f} requests, {s['sweep']['items_read']:,.0f} items read; status median "
            f"{s['status']['median_seconds']:.3f} s, {s['status']['requests']:.0f} requests, "
            f"{s['status']['items_read']:,.0f} items read")
    if "ratio_largest_to_smallest" in summary:
        ratio = summary["ratio_largest_to_smallest"]
        say(f"B5 {sizes[-1]:,} vs {sizes[0]:,} jobs: sweep x{ratio['sweep']['median_seconds']} seconds, "
            f"x{ratio['sweep']['items_read']} items read; status x{ratio['status']['median_seconds']} seconds, "
            f"x{ratio['status']['items_read']} items read (goal: x1, independent of the DONE jobs)")
    payload = {"benchmark": "B5", "machine": info,
               "args": {k: getattr(args, k) for k in ("b5_jobs", "b5_unfinished", "b5_failed", "b5_runs")},
               "runs": runs, "before": before, "summary": summary}
    say(f"    results: {save('b5', payload)}")
    return payload
