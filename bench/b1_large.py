"""B1: one large object (default 1 GiB) from one `rclone serve s3` to another, three ways, in alternating order:

- pipeline: `s3sync local --until-idle` (LocalRunner in this process: moto control plane, splitter, queue, ledger,
  worker processes, completion), timed from the object being present in the source bucket (visible, its ETag
  known) to its job DONE;
- ceiling: the engine's raw part-copy loop, threads calling `s3sync.transfer.copier.copy_part` over the plan, no
  queue, no ledger (CreateMultipartUpload and CompleteMultipartUpload included);
- rclone: `rclone copyto` between the same two servers (remotes of type s3, provider Other, from the environment).
"""

from __future__ import annotations

import argparse
import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import (
    MB,
    CpuMeter,
    MiB,
    PipelineRun,
    describe_machine,
    machine,
    median,
    place,
    ratio,
    rotations,
    run_pipeline,
    run_rclone,
    save,
    say,
    two_servers,
    wait_quiet,
    workdir,
    write_random_file,
)
from bench.common import (
    cpu_line as _cpu_line,
)

MODES = ["pipeline", "ceiling", "rclone"]
# Chosen by measurement on the benchmark machine (docs/benchmarks.md): 4 streams of 16 MiB chunks.
DEFAULT_RCLONE_FLAGS = ("--multi-thread-streams 4 --multi-thread-chunk-size 16M --s3-chunk-size 16M "
                        "--s3-upload-concurrency 4 --s3-use-unsigned-payload true")


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("B1 (one large object)")
    g.add_argument("--b1-size-mib", type=int, default=1024, help="object size (default 1024 MiB)")
    g.add_argument("--b1-runs", type=int, default=3, help="runs of each mode (default 3)")
    g.add_argument("--b1-modes", default=",".join(MODES), help="comma-separated subset of " + ",".join(MODES))
    g.add_argument("--part-size-mib", type=int, default=16, help="target part size, pipeline and ceiling (16)")
    g.add_argument("--workers", type=int, default=1, help="pipeline worker processes (default 1)")
    g.add_argument("--threads", type=int, default=4, help="copy threads per worker process (default 4)")
    g.add_argument("--ceiling-threads", type=int, default=0,
                   help="threads of the raw loop (default: workers x threads)")
    g.add_argument("--rclone-flags", default=DEFAULT_RCLONE_FLAGS, help=f"rclone copyto flags ({DEFAULT_RCLONE_FLAGS})")


def run(args: argparse.Namespace) -> dict[str, Any]:
    size = args.b1_size_mib * MiB
    modes = [m.strip() for m in args.b1_modes.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            raise SystemExit(f"unknown B1 mode {m!r}; choose from {MODES}")
    ceiling_threads = args.ceiling_threads or args.workers * args.threads
    rclone_flags = shlex.split(args.rclone_flags)
    info = machine()
    say(f"B1: one {args.b1_size_mib} MiB object; pipeline {args.workers} worker(s) x {args.threads} threads, "
        f"ceiling {ceiling_threads} threads, parts of {args.part_size_mib} MiB; rclone copyto {args.rclone_flags}")
    say(f"    machine: {describe_machine(info)}")
    runs: list[dict[str, Any]] = []
    with workdir(args.keep) as base:
        data = write_random_file(base / "data" / "big.bin", size, seed="b1")
        src_root, dst_root = base / "src-root", base / "dst-root"
        place(data, src_root, "src", "big.bin")
        for r in range(args.b1_runs):
            (src_root / f"p{r}").mkdir(parents=True, exist_ok=True)
        (dst_root / "dst").mkdir(parents=True, exist_ok=True)
        with two_servers(base) as (src, dst):
            s3_src, s3_dst = src.client(), dst.client()
            etag = s3_src.head_object(Bucket="src", Key="big.bin")["ETag"]  # rclone hashes it once, here
            env = {**src.rclone_env("src"), **dst.rclone_env("dst")}
            for r, mode in rotations(modes, args.b1_runs):
                entry: dict[str, Any] = {"mode": mode, "round": r, "bytes": size,
                                         "quiet": wait_quiet(args.quiet_wait, own_pids=(src.pid or 0, dst.pid or 0))}
                meter = CpuMeter({"rclone_source": src.pid or 0, "rclone_dest": dst.pid or 0})
                if mode == "pipeline":
                    pr = _pipeline(args, src, dst, data, src_root, r, base)
                    entry.update(seconds=pr.seconds, ok=pr.ok, peak_rss_mib=round(pr.peak_rss_mib, 1),
                                 workers=pr.workers, cpu=pr.cpu, phases=pr.phases, control_plane=pr.control_plane,
                                 detail=pr.detail)
                else:
                    key = f"{mode}-{r}.bin"
                    if mode == "ceiling":
                        seconds, dest_etag = _ceiling(s3_src, s3_dst, etag, key, size, args.part_size_mib * MiB,
                                                      ceiling_threads)
                        entry["dest_etag"] = dest_etag
                    else:
                        seconds = run_rclone(["copyto", "src:src/big.bin", f"dst:dst/{key}", *rclone_flags], env)
                    got = int(s3_dst.head_object(Bucket="dst", Key=key)["ContentLength"])
                    entry.update(seconds=seconds, ok=got == size)
                    entry["cpu"] = meter.stop()
                    s3_dst.delete_object(Bucket="dst", Key=key)
                entry["mb_s"] = size / entry["seconds"] / MB if entry["seconds"] == entry["seconds"] else float("nan")
                runs.append(entry)
                extra = ""
                if mode == "pipeline":
                    extra = (f"  worker peak RSS {entry['peak_rss_mib']:.0f} MiB; "
                             f"{entry['control_plane'].get('total_calls', 0)} control-plane calls")
                say(f"B1 round {r + 1}/{args.b1_runs}  {mode:<8}  {entry['seconds']:7.2f} s  {entry['mb_s']:7.1f} MB/s"
                    f"  (CPU s: {_cpu_line(entry['cpu'])}){extra}"
                    f"{'' if entry['ok'] else '  FAILED ' + entry.get('detail', '')}")
    med = {m: median([e["mb_s"] for e in runs if e["mode"] == m and e["ok"]]) for m in modes}
    rss = max((e.get("peak_rss_mib", 0.0) for e in runs if e["mode"] == "pipeline"), default=0.0)
    rss_budget = args.threads * args.part_size_mib + 150
    summary = {
        "median_mb_s": {m: round(v, 1) for m, v in med.items()},
        "pipeline_over_rclone": round(ratio(med.get("pipeline", 0), med.get("rclone", 0)), 3),
        "pipeline_over_ceiling": round(ratio(med.get("pipeline", 0), med.get("ceiling", 0)), 3),
        "worker_peak_rss_mib": round(rss, 1),
        "worker_rss_budget_mib": rss_budget,
        "all_ok": all(e["ok"] for e in runs),
    }
    say("B1 summary: medians MB/s " + ", ".join(f"{m} {v:.1f}" for m, v in med.items())
        + f"; pipeline/rclone {summary['pipeline_over_rclone']:.2f} (goal >= 1.30)"
        + f", pipeline/ceiling {summary['pipeline_over_ceiling']:.2f} (goal >= 0.95)"
        + f"; worker peak RSS {rss:.0f} MiB (budget {rss_budget} MiB)")
    payload = {"benchmark": "B1", "machine": info, "args": {k: v for k, v in vars(args).items()
                                                             if k.startswith(("b1", "part", "workers", "threads",
                                                                              "ceiling", "rclone"))},
               "runs": runs, "summary": summary}
    say(f"    results: {save('b1', payload)}")
    return payload


def _pipeline(args: argparse.Namespace, src: Any, dst: Any, data: Path, src_root: Path, r: int,
              base: Path) -> PipelineRun:
    bucket = f"p{r}"

    def make_present() -> int:
        place(data, src_root, bucket, "big.bin")
        src.refresh(bucket)
        # S3 knows an object's ETag when its event fires; rclone computes it on the first listing: do that here,
        # before the clock starts (the runner may be listing at the same moment: it then waits for the same hash).
        src.client().list_objects_v2(Bucket=bucket)
        return 1

    result = run_pipeline(src=src, dst=dst, source_bucket=bucket, dest_bucket="dst", make_present=make_present,
                          name=f"b1r{r}-{int(time.time())}", part_size_mib=args.part_size_mib,
                          workers=args.workers, threads=args.threads, state_dir=base / "state" / f"b1-{r}",
                          timeout=max(180.0, args.b1_size_mib / 5),  # a run slower than 5 MiB/s has failed
                          extra_options={"dest_prefix": f"pipeline-{r}/"})
    client = dst.client()
    try:
        client.delete_object(Bucket="dst", Key=f"pipeline-{r}/big.bin")
    except Exception:  # noqa: BLE001 - a failed run may have left nothing
        pass
    return result


def _ceiling(s3_src: Any, s3_dst: Any, etag: str, key: str, size: int, part_size: int,
             threads: int) -> tuple[float, str]:
    from s3sync.transfer.checksums import multipart_etag, strip_etag  # noqa: PLC0415
    from s3sync.transfer.copier import copy_part  # noqa: PLC0415
    from s3sync.transfer.message import PartMessage  # noqa: PLC0415
    from s3sync.transfer.plan import plan  # noqa: PLC0415

    started = time.monotonic()
    the_plan = plan(size, part_size)
    upload = s3_dst.create_multipart_upload(Bucket="dst", Key=key)["UploadId"]
    msgs = [PartMessage(job_id="bench", source_bucket="src", source_key="big.bin", source_etag=etag,
                        dest_bucket="dst", dest_key=key, part_number=n, total_parts=the_plan.parts,
                        start=the_plan.byte_range(n)[0], end=the_plan.byte_range(n)[1], upload_id=upload)
            for n in range(1, the_plan.parts + 1)]
    with ThreadPoolExecutor(threads) as pool:
        copied = list(pool.map(lambda m: copy_part(s3_src, s3_dst, m), msgs))
    resp = s3_dst.complete_multipart_upload(
        Bucket="dst", Key=key, UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": c.part, "ETag": c.etag} for c in copied]})
    elapsed = time.monotonic() - started
    expected = multipart_etag([c.md5 for c in copied])
    if strip_etag(resp["ETag"]) != expected:
        raise RuntimeError(f"ceiling: destination ETag {resp['ETag']} != {expected}")
    return elapsed, expected
