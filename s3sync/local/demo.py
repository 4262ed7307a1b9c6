"""`s3sync demo`: the whole pipeline on embedded local servers, then a byte-for-byte check of every object.

Two `rclone serve s3` servers stand in for the global and the China bucket, moto's server for the control plane.
A sample set (small and multipart objects, awkward keys, user metadata) is uploaded, `s3sync local` moves it, and
every destination object is compared with its source: bytes (SHA-256), size, Content-Type, user metadata, and the
multipart ETag recomputed from the source bytes.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import os
import random
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from s3sync.contract import Status
from s3sync.errors import UserError
from s3sync.local.runner import BucketSpec, LocalOptions, LocalRunner, Summary, bucket_client
from s3sync.local.servers import RcloneS3Server
from s3sync.transfer.checksums import multipart_etag, strip_etag
from s3sync.transfer.plan import MiB
from s3sync.transfer.splitter import marker_of, source_metadata

log = logging.getLogger("s3sync.demo")


@dataclass(frozen=True)
class Sample:
    key: str
    size: int
    content_type: str
    metadata: dict[str, str]


def sample_set(scale_mib: int = 256) -> list[Sample]:
    """Edge sizes around the 5 MiB multipart threshold, odd-sized multipart objects, awkward keys."""
    fixed = [
        Sample("empty.txt", 0, "text/plain", {"kind": "empty"}),
        Sample("docs/readme one.txt", 1234, "text/plain", {"kind": "small", "owner": "ops"}),
        Sample("docs/ünïcödé/数据.json", 4096 + 7, "application/json", {"kind": "unicode"}),
        Sample("odd/a+b%20c (1).bin", 5 * MiB - 1, "application/octet-stream", {"kind": "just-under"}),
        Sample("edge/exactly-5MiB.bin", 5 * MiB, "application/octet-stream", {"kind": "exact"}),
        Sample("edge/5MiB-plus-1.bin", 5 * MiB + 1, "application/octet-stream", {"kind": "just-over"}),
    ]
    rng = random.Random(7)
    big: list[Sample] = []
    budget = max(0, scale_mib * MiB - sum(s.size for s in fixed))
    i = 0
    while budget > 6 * MiB:
        size = min(budget, rng.randint(20 * MiB, 70 * MiB) + rng.randint(1, MiB - 1))
        big.append(Sample(f"big/nested/level {i}/part-{i:02d}.dat", size, "application/x-demo",
                          {"kind": "multipart", "index": str(i)}))
        budget -= size
        i += 1
    return fixed + big


def _blocks(seed: str, size: int, block: int = 4 * MiB) -> Iterator[bytes]:
    """Deterministic pseudo-random bytes (not compressible, not all zeros)."""
    rng = random.Random(seed)
    left = size
    while left > 0:
        n = min(block, left)
        yield rng.randbytes(n)
        left -= n


def upload(s3: Any, bucket: str, samples: list[Sample], source_dir: Path | None) -> None:
    for s in samples:
        body_path = (source_dir / s.key) if source_dir else None
        extra = {"ContentType": s.content_type, "Metadata": s.metadata}
        if body_path:
            with open(body_path, "rb") as fh:
                s3.put_object(Bucket=bucket, Key=s.key, Body=fh, **extra)
        else:
            s3.put_object(Bucket=bucket, Key=s.key, Body=b"".join(_blocks(s.key, s.size)), **extra)


def samples_from_dir(directory: Path) -> list[Sample]:
    if not directory.is_dir():
        raise UserError(f"--from {directory}: not a directory")
    out = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        key = path.relative_to(directory).as_posix()
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        out.append(Sample(key, path.stat().st_size, ctype, {"origin": "demo-from-dir"}))
    if not out:
        raise UserError(f"--from {directory}: no files in it")
    return out


@dataclass
class Check:
    key: str
    size: int
    status: str
    parts: int
    ok: bool
    detail: str


def _sha256(s3: Any, bucket: str, key: str) -> tuple[str, list[bytes]]:
    """SHA-256 of an object, and the MD5 digests of each 1 MiB block (to rebuild any part size's ETag)."""
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    h = hashlib.sha256()
    blocks: list[bytes] = []
    while chunk := body.read(MiB):
        h.update(chunk)
        blocks.append(chunk)
    return h.hexdigest(), blocks


def verify(runner: LocalRunner, samples: list[Sample], summary: Summary) -> list[Check]:
    jobs = {j.source_key: j for j in summary.jobs}
    checks = []
    for s in samples:
        job = jobs.get(s.key)
        if job is None:
            checks.append(Check(s.key, s.size, "-", 0, False, "no job was created"))
            continue
        if job.status != Status.DONE:
            checks.append(Check(s.key, s.size, job.status, job.total, False, job.error or "not finished"))
            continue
        problems = []
        src_hash, src_blocks = _sha256(runner.source_s3, runner.o.source.name, s.key)
        dst_hash, _ = _sha256(runner.dest_s3, runner.o.dest.name, job.dest_key)
        if src_hash != dst_hash:
            problems.append("bytes differ")
        head = runner.dest_s3.head_object(Bucket=runner.o.dest.name, Key=job.dest_key)
        if int(head["ContentLength"]) != s.size:
            problems.append(f"size {head['ContentLength']}")
        if head.get("ContentType") != s.content_type:
            problems.append(f"Content-Type {head.get('ContentType')}")
        if source_metadata(head.get("Metadata")) != s.metadata:  # keys are case-blind; the job's marker aside
            problems.append(f"metadata {head.get('Metadata')}")
        if not marker_of(head.get("Metadata")):
            problems.append("no s3sync-job marker")
        data = b"".join(src_blocks)
        if job.multipart:
            md5s = [hashlib.md5(data[i:i + job.part_size]).hexdigest() for i in range(0, len(data), job.part_size)]
            expected = multipart_etag(md5s)
        else:
            expected = hashlib.md5(data).hexdigest()
        if strip_etag(job.dest_etag or "") != expected:
            problems.append(f"ETag {job.dest_etag} != {expected}")
        checks.append(Check(s.key, s.size, job.status, job.total, not problems,
                            "; ".join(problems) or f"ETag {expected}"))
    return checks


def do_demo(*, scale_mib: int = 256, from_dir: Path | None = None, workers: int = 2, worker_threads: int = 4,
            part_size_mib: int = 8, console: Console | None = None, keep_dir: Path | None = None) -> int:
    """Run the demo; returns the exit status (0 only if every object arrived identical)."""
    console = console or Console()
    samples = samples_from_dir(from_dir) if from_dir else sample_set(scale_mib)
    total_bytes = sum(s.size for s in samples)
    console.print(f"[bold]s3sync demo[/]: {len(samples)} objects, {total_bytes / MiB:.1f} MiB, "
                  f"global bucket -> China bucket on local servers")
    with ExitStack() as stack:
        src = stack.enter_context(RcloneS3Server())
        dst = stack.enter_context(RcloneS3Server())
        state = keep_dir or Path(stack.enter_context(_tempdir()))
        log_file = state / "runner.log"
        _log_to(log_file)
        options = LocalOptions(
            source=BucketSpec("global-bucket", src.endpoint_url, src.access_key_id, src.secret_access_key),
            dest=BucketSpec("china-bucket", dst.endpoint_url, dst.access_key_id, dst.secret_access_key,
                            region="cn-north-1"),
            part_size_mib=part_size_mib, worker_threads=worker_threads, min_tasks=1, max_tasks=workers,
            scale_out_threshold=8, until_idle=True, idle_grace=1.0, timeout=1800, state_dir=state,
        )
        runner = LocalRunner(options)
        source_s3 = bucket_client(options.source, "")
        source_s3.create_bucket(Bucket=options.source.name)
        console.print(f"uploading the sample set to {src.endpoint_url} …")
        upload(source_s3, options.source.name, samples, from_dir)
        started = time.monotonic()
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      TimeRemainingColumn(), console=console, transient=False) as progress:
            overall = progress.add_task("[bold]all objects", total=total_bytes)
            per_key: dict[str, int] = {}

            def tick(r: LocalRunner) -> None:
                done = 0
                for job in r.jobs():
                    if job.source_key not in per_key and len(per_key) < 40:
                        per_key[job.source_key] = progress.add_task(job.source_key[-40:], total=job.size)
                    moved = job.size if job.status in Status.FINAL else job.done_bytes
                    done += moved
                    if job.source_key in per_key:
                        progress.update(per_key[job.source_key], completed=moved)
                progress.update(overall, completed=done)

            summary = runner.run(on_tick=_throttle(tick, 0.5))
            progress.update(overall, completed=sum(j.done_bytes if j.status != Status.DONE else j.size
                                                   for j in summary.jobs))
        elapsed = time.monotonic() - started
        checks = verify(runner, samples, summary)
        _print_summary(console, checks, summary, elapsed, total_bytes, state if keep_dir else None)
        return 0 if summary.ok and all(c.ok for c in checks) else 1


def _print_summary(console: Console, checks: list[Check], summary: Summary, elapsed: float, total: int,
                   state: Path | None) -> None:
    table = Table(title="destination check", show_lines=False)
    for col in ("object", "size", "status", "parts", "check"):
        table.add_column(col, overflow="fold")
    for c in checks:
        mark = "[green]OK[/]" if c.ok else f"[red]FAIL[/] {c.detail}"
        table.add_row(c.key, f"{c.size:,}", c.status, str(c.parts), mark if not c.ok else f"{mark} {c.detail}")
    console.print(table)
    good = sum(c.ok for c in checks)
    done_notes = sum(1 for n in summary.notifications if n.get("status") == Status.DONE)
    console.print(
        f"{good}/{len(checks)} objects identical; {total / MiB:.1f} MiB in {elapsed:.1f} s "
        f"({total / MiB / max(elapsed, 1e-9):.1f} MiB/s); workers up to {summary.max_workers} "
        f"(desired counts {summary.desired_counts}); {done_notes} completion notifications; "
        f"dead-letter queue: {summary.dlq_messages}. "
        + (f"Logs: {state}" if state else "Keep the logs with --keep DIR.")
    )


def _throttle(fn: Any, every: float) -> Any:
    last = [0.0]

    def wrapped(r: LocalRunner) -> None:
        now = time.monotonic()
        if now - last[0] >= every:
            last[0] = now
            fn(r)
    return wrapped


def _log_to(path: Path) -> None:
    from s3sync.transfer import logs  # noqa: PLC0415
    path.parent.mkdir(parents=True, exist_ok=True)
    logs.setup(os.environ.get("S3SYNC_LOG_LEVEL", "INFO"), stream=open(path, "a", encoding="utf-8"))


def _tempdir() -> Any:
    import tempfile  # noqa: PLC0415
    return tempfile.TemporaryDirectory(prefix="s3sync-demo-")
