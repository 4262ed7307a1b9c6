"""B3: the splitter's write path: a 10,000-part plan written to the ledger and enqueued, in seconds.

`Splitter.split` against the control plane `s3sync local` uses (moto's server, in this process, over HTTP): HEAD,
plan, CreateMultipartUpload, the job's conditional put, 1,000 SendMessageBatch calls of 10 messages, PLANNED ->
COPYING. The two S3 calls go to an in-memory stand-in (they are one call each and not the write path being
measured), so the figure is the ledger and the queue. Every run gets a fresh queue and fresh tables.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench.common import RUN_FLAGS, CpuMeter, cpu_line, describe_machine, machine, median, save, say, wait_quiet

MiB = 1024 * 1024


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("B3 (the splitter's write path)")
    g.add_argument("--b3-parts", type=int, default=10_000, help="parts in the plan (default 10000, the maximum)")
    g.add_argument("--b3-runs", type=int, default=3, help="runs (default 3)")


class _FakeS3:
    """HEAD and CreateMultipartUpload answered from memory: an object of `size` bytes."""

    def __init__(self, size: int) -> None:
        self.size = size

    def head_object(self, **_: Any) -> dict[str, Any]:
        return {"ETag": '"0123456789abcdef0123456789abcdef"', "ContentLength": self.size,
                "ContentType": "application/octet-stream", "Metadata": {}}

    def create_multipart_upload(self, **_: Any) -> dict[str, Any]:
        return {"UploadId": "bench-upload"}

    def abort_multipart_upload(self, **_: Any) -> dict[str, Any]:
        return {}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import boto3  # noqa: PLC0415
    from botocore.config import Config  # noqa: PLC0415

    from s3sync.contract import PARTS_HASH_KEY, PARTS_RANGE_KEY, Status  # noqa: PLC0415
    from s3sync.local.servers import MotoServer  # noqa: PLC0415
    from s3sync.transfer.events import ObjectRef  # noqa: PLC0415
    from s3sync.transfer.ledger import Ledger, transfers_table_keys  # noqa: PLC0415
    from s3sync.transfer.plan import plan  # noqa: PLC0415
    from s3sync.transfer.settings import Settings  # noqa: PLC0415
    from s3sync.transfer.splitter import Splitter  # noqa: PLC0415

    part_size = 8 * MiB
    size = args.b3_parts * part_size
    the_plan = plan(size, part_size)
    info = machine()
    say(f"B3: splitter write path, a {the_plan.parts}-part plan ({size / 2**30:.1f} GiB in {part_size // MiB} MiB "
        f"parts) to moto's DynamoDB and SQS")
    say(f"    machine: {describe_machine(info)}")
    runs: list[dict[str, Any]] = []
    with MotoServer(patched=RUN_FLAGS["moto_patches"]) as moto:
        cfg = Config(retries={"mode": "standard", "max_attempts": 8}, max_pool_connections=32)
        kw = {"endpoint_url": moto.endpoint_url, "region_name": "us-east-1", "aws_access_key_id": "testing",
              "aws_secret_access_key": "testing", "config": cfg}
        sqs, ddb = boto3.client("sqs", **kw), boto3.client("dynamodb", **kw)
        fake = _FakeS3(size)
        for r in range(args.b3_runs):
            n = f"b3r{r}-{int(time.time())}"
            queue_url = sqs.create_queue(QueueName=f"{n}-parts", Attributes={"VisibilityTimeout": "300"})["QueueUrl"]
            ddb.create_table(TableName=f"{n}-transfers", BillingMode="PAY_PER_REQUEST", **transfers_table_keys(),
                             StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"})
            ddb.create_table(TableName=f"{n}-parts", BillingMode="PAY_PER_REQUEST",
                             AttributeDefinitions=[{"AttributeName": PARTS_HASH_KEY, "AttributeType": "S"},
                                                   {"AttributeName": PARTS_RANGE_KEY, "AttributeType": "N"}],
                             KeySchema=[{"AttributeName": PARTS_HASH_KEY, "KeyType": "HASH"},
                                        {"AttributeName": PARTS_RANGE_KEY, "KeyType": "RANGE"}])
            ledger = Ledger(ddb, f"{n}-transfers", f"{n}-parts")
            settings = Settings(queue_url=queue_url, transfers_table=f"{n}-transfers", parts_table=f"{n}-parts",
                                dest_bucket="dst", part_size=part_size)
            splitter = Splitter(source=fake, dest=fake, sqs=sqs, ledger=ledger, settings=settings)
            quiet = wait_quiet(args.quiet_wait)
            meter = CpuMeter({})
            started = time.monotonic()
            result = splitter.split(ObjectRef(bucket="src", key="huge.bin"))
            seconds = time.monotonic() - started
            cpu = meter.stop()
            attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])
            queued = int(attrs["Attributes"]["ApproximateNumberOfMessages"])
            job = ledger.get_job(result.job_id)
            ok = (result.outcome == "planned" and result.parts == the_plan.parts and queued == the_plan.parts
                  and job is not None and job.status == Status.COPYING)
            runs.append({"round": r, "quiet": quiet, "seconds": seconds, "parts": result.parts, "queued": queued,
                         "ok": ok, "cpu": cpu, "parts_per_s": the_plan.parts / seconds})
            say(f"B3 run {r + 1}/{args.b3_runs}  {seconds:7.2f} s  {the_plan.parts / seconds:8.0f} parts/s  "
                f"{queued} messages queued  (CPU s: {cpu_line(cpu)}){'' if ok else '  FAILED'}")
            sqs.delete_queue(QueueUrl=queue_url)
            ddb.delete_table(TableName=f"{n}-transfers")
            ddb.delete_table(TableName=f"{n}-parts")
    med = median([e["seconds"] for e in runs if e["ok"]])
    summary = {"median_seconds": round(med, 2), "parts": the_plan.parts, "all_ok": all(e["ok"] for e in runs)}
    say(f"B3 summary: median {med:.2f} s for {the_plan.parts} parts (goal < 20 s for 10,000)")
    payload = {"benchmark": "B3", "machine": info, "args": {"b3_parts": args.b3_parts, "b3_runs": args.b3_runs},
               "runs": runs, "summary": summary}
    say(f"    results: {save('b3', payload)}")
    return payload
