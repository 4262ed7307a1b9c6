"""B2: many small files (default 1,000 x 64 KiB): objects per second, `s3sync local` against `rclone copy`.

- pipeline: `s3sync local` (LocalRunner in this process, worker processes), timed from the files being present in
  the source bucket (visible, their ETags known) to the last job DONE. By default each file under 5 MiB is copied by
  the splitter itself (GET + PUT with Content-MD5, verified, the job written DONE in one put, notified).
- pipeline-workers (not run unless named in --b2-modes): the same with S3SYNC_INLINE_MAX_BYTES=0, as before issue
  15: each file is a job and a part message, copied whole by a worker and completed on its own.
- rclone: `rclone copy --transfers N` from the same source bucket to the same destination server.
Alternating order, fresh source bucket and destination prefix every run.
"""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path
from typing import Any

from bench.common import (
    CpuMeter,
    cpu_line,
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
from bench.cost import per_million_objects, priced_requests

MODES = ["pipeline", "rclone"]
PIPELINES = {"pipeline": {}, "pipeline-workers": {"inline_max_bytes": 0}}  # extra LocalOptions per mode
DEFAULT_RCLONE_FLAGS = "--transfers 16 --checkers 16 --s3-use-unsigned-payload true"


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("B2 (many small files)")
    g.add_argument("--b2-count", type=int, default=1000, help="number of files (default 1000)")
    g.add_argument("--b2-size-kib", type=int, default=64, help="size of each file (default 64 KiB)")
    g.add_argument("--b2-runs", type=int, default=3, help="runs of each mode (default 3)")
    g.add_argument("--b2-modes", default=",".join(MODES), help="comma-separated, of " + ",".join([*PIPELINES, "rclone"])
                   + " (default " + ",".join(MODES) + ")")
    g.add_argument("--b2-workers", type=int, default=2, help="pipeline worker processes (default 2)")
    g.add_argument("--b2-threads", type=int, default=8, help="copy threads per worker process (default 8)")
    g.add_argument("--transfers", type=int, default=0, help="shortcut: rclone copy --transfers N (replaces the "
                   "--transfers of --b2-rclone-flags)")
    g.add_argument("--b2-rclone-flags", default=DEFAULT_RCLONE_FLAGS,
                   help=f"rclone copy flags ({DEFAULT_RCLONE_FLAGS})")


def _keys(count: int) -> list[str]:
    return [f"small/{i // 100:03d}/file-{i:05d}.bin" for i in range(count)]


def run(args: argparse.Namespace) -> dict[str, Any]:
    count, size = args.b2_count, args.b2_size_kib * 1024
    modes = [m.strip() for m in args.b2_modes.split(",") if m.strip()]
    flags = shlex.split(args.b2_rclone_flags)
    if args.transfers:
        if "--transfers" in flags:
            i = flags.index("--transfers")
            del flags[i:i + 2]
        flags = ["--transfers", str(args.transfers), *flags]
    info = machine()
    say(f"B2: {count} files x {args.b2_size_kib} KiB; pipeline {args.b2_workers} worker(s) x {args.b2_threads} "
        f"threads; rclone copy {' '.join(flags)}")
    say(f"    machine: {describe_machine(info)}")
    runs: list[dict[str, Any]] = []
    with workdir(args.keep) as base:
        data_dir = base / "data"
        files = [write_random_file(data_dir / k, size, seed=k, block=size or 1) for k in _keys(count)]
        src_root, dst_root = base / "src-root", base / "dst-root"
        for f, k in zip(files, _keys(count), strict=True):
            place(f, src_root, "b2src", k)
        for r in range(args.b2_runs):
            for b in (f"s{r}", f"w{r}"):
                (src_root / b).mkdir(parents=True, exist_ok=True)
        (dst_root / "dst").mkdir(parents=True, exist_ok=True)
        with two_servers(base) as (src, dst):
            _list_all(src.client(), "b2src")  # rclone hashes every file once, here, before any timing
            env = {**src.rclone_env("src"), **dst.rclone_env("dst")}
            for r, mode in rotations(modes, args.b2_runs):
                entry: dict[str, Any] = {"mode": mode, "round": r, "objects": count, "bytes": count * size,
                                         "quiet": wait_quiet(args.quiet_wait, own_pids=(src.pid or 0, dst.pid or 0))}
                if mode in PIPELINES:
                    pr = _pipeline(args, src, dst, files, src_root, r, base, mode)
                    entry.update(seconds=pr.seconds, ok=pr.ok and pr.jobs_done == count,
                                 peak_rss_mib=round(pr.peak_rss_mib, 1), workers=pr.workers, cpu=pr.cpu,
                                 phases=pr.phases, control_plane=pr.control_plane, detail=pr.detail)
                    entry["aws"] = per_million_objects(priced_requests(pr.control_plane), count)
                else:
                    meter = CpuMeter({"rclone_source": src.pid or 0, "rclone_dest": dst.pid or 0})
                    seconds = run_rclone(["copy", "src:b2src", f"dst:dst/rclone-{r}", *flags], env)
                    entry["cpu"] = meter.stop()
                    got = len(_list_all(dst.client(), "dst", f"rclone-{r}/"))
                    entry.update(seconds=seconds, ok=got == count, detail=f"{got}/{count} arrived")
                prefix = f"{mode}-{r}/"
                _delete_all(dst.client(), "dst", prefix)  # keep the destination as small for every run
                entry["objects_s"] = count / entry["seconds"] if entry["seconds"] == entry["seconds"] else float("nan")
                runs.append(entry)
                aws = entry.get("aws")
                per = (f"; {aws['requests_per_object']} billable requests/object, ${aws['usd_per_million_objects']}"
                       f"/M objects" if aws else "")
                say(f"B2 round {r + 1}/{args.b2_runs}  {mode:<8}  {entry['seconds']:7.2f} s  "
                    f"{entry['objects_s']:7.1f} objects/s  (CPU s: {cpu_line(entry['cpu'])}{per})"
                    f"{'' if entry['ok'] else '  FAILED ' + entry.get('detail', '')}")
    med = {m: median([e["objects_s"] for e in runs if e["mode"] == m and e["ok"]]) for m in modes}
    aws = {m: {k: median([e["aws"][k] for e in runs if e["mode"] == m and e["ok"]])
               for k in ("requests_per_object", "usd_per_million_objects", "usd_email_per_million_objects")}
           for m in modes if m in PIPELINES}
    summary = {"median_objects_s": {m: round(v, 1) for m, v in med.items()}, "aws": aws,
               "pipeline_over_rclone": round(ratio(med.get("pipeline", 0), med.get("rclone", 0)), 3),
               "all_ok": all(e["ok"] for e in runs)}
    say("B2 summary: medians objects/s " + ", ".join(f"{m} {v:.1f}" for m, v in med.items())
        + f"; pipeline/rclone {summary['pipeline_over_rclone']:.2f} (goal >= 1.00)")
    for m, a in aws.items():
        say(f"    {m}: {a['requests_per_object']} billable control-plane requests per object (goal <= 3), "
            f"${a['usd_per_million_objects']} per million objects at us-east-1 prices (goal <= 0.50; bench/cost.py), "
            f"+ ${a['usd_email_per_million_objects']} per e-mail subscriber")
    payload = {"benchmark": "B2", "machine": info, "args": {k: v for k, v in vars(args).items()
                                                             if k.startswith(("b2", "transfers"))},
               "rclone_flags": flags, "runs": runs, "summary": summary}
    say(f"    results: {save('b2', payload)}")
    return payload


def _list_all(client: Any, bucket: str, prefix: str = "") -> list[str]:
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return keys


def _delete_all(client: Any, bucket: str, prefix: str) -> None:
    keys = _list_all(client, bucket, prefix)
    for i in range(0, len(keys), 1000):
        client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]],
                                                     "Quiet": True})


def _pipeline(args: argparse.Namespace, src: Any, dst: Any, files: list[Path], src_root: Path, r: int,
              base: Path, mode: str = "pipeline") -> Any:
    bucket = f"{'w' if mode == 'pipeline-workers' else 's'}{r}"  # a source bucket of its own per mode and round

    def make_present() -> int:
        for f, k in zip(files, _keys(args.b2_count), strict=True):
            place(f, src_root, bucket, k)
        src.refresh(bucket)
        return len(_list_all(src.client(), bucket))  # hashes them (as S3 has when its events fire)

    return run_pipeline(src=src, dst=dst, source_bucket=bucket, dest_bucket="dst", make_present=make_present,
                        name=f"b2r{r}-{int(time.time())}", part_size_mib=8, workers=args.b2_workers,
                        threads=args.b2_threads, state_dir=base / "state" / f"b2-{mode}-{r}",
                        timeout=max(600.0, args.b2_count * 2.0),
                        extra_options={"dest_prefix": f"{mode}-{r}/", **PIPELINES[mode]})

