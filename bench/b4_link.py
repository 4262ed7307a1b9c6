"""B4: across the border. The same objects through an emulated global -> China link (s3sync.local.link), four ways,
in alternating order, per link profile:

- pipeline: `s3sync local` at the product's defaults (s3sync.contract: threads per worker, part size, visibility
  timeout; botocore timeouts and retries of s3sync.transfer.endpoints) with MaxTasks worker processes;
- pipeline-tuned: the same with the best threads and part size found here (`--tuned-threads`, `--tuned-part-mib`);
- rclone: `rclone copy` at its defaults;
- rclone-tuned: `rclone copy` with the best flags found here (`--rclone-tuned-flags`);
- ceiling: the engine's copy step alone, in one process: every part of every object (the defaults' part size) on
  `--b4-ceiling-threads` threads (default MaxTasks x the default threads) calling `s3sync.transfer.copier.copy_part`
  (ranged GET, MD5, UploadPart with Content-MD5), then CompleteMultipartUpload; no queue, ledger or functions. What
  the link and the destination server deliver on this machine to a client with that many parts in flight: the
  figure the pipeline is compared with beside the link's nominal aggregate.

Every byte to the destination (UploadPart, PutObject, and the splitter's and completion's calls) crosses the link;
the source side is in-region (plain loopback), as ECS workers next to the source bucket are. The link counts every
part upload: how often each part crossed it (the issue's "no part copied more than twice"). Each run copies the
whole set to a fresh destination prefix, and every object is then compared with the source (MD5 of the files).

The link profiles are the path's own figures, scaled down (`--max-aggregate-mb`) so that this machine's CPU carries
the aggregate: bandwidths shrink, round trips, stalls and the number of flows it takes to fill the aggregate stay.
The destination `rclone serve s3` runs without its out-of-order part buffer limit (S3 has none; with it, parts more
than 256 MiB ahead of the lowest unfinished one block, which would measure the local server, not the link).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import shlex
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import (
    MB,
    CpuMeter,
    MiB,
    Rclone,
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
    system_busy,
    wait_quiet,
    workdir,
    write_random_file,
)
from s3sync import contract
from s3sync.local.link import PROFILES, LinkProcess, LinkProfile

MODES = ["pipeline", "pipeline-tuned", "rclone", "rclone-tuned", "ceiling"]
DEFAULT_RCLONE_TUNED = ("--transfers 16 --checkers 16 --s3-upload-concurrency 16 --s3-chunk-size 16M "
                        "--s3-upload-cutoff 16M --multi-thread-streams 16 --multi-thread-cutoff 64M "
                        "--multi-thread-chunk-size 16M --s3-use-unsigned-payload true")
# what `rclone serve s3` needs to stand in for S3 here (see the module's docstring)
DEST_SERVER_ARGS = ("--multipart-streaming-buffer-limit", "0", "--multipart-streaming-buffer-total", "0",
                    "--local-hashes", "none")


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("B4 (across the border: an emulated long, thin, lossy link)")
    g.add_argument("--b4-profiles", default=",".join(PROFILES), help="comma-separated link profiles "
                   f"({', '.join(PROFILES)})")
    g.add_argument("--b4-modes", default=",".join(MODES), help="comma-separated subset of " + ",".join(MODES))
    g.add_argument("--b4-runs", type=int, default=3, help="runs of each mode per profile (default 3)")
    g.add_argument("--b4-big-mib", type=int, default=1024, help="the large object (default 1024 MiB)")
    g.add_argument("--b4-small-count", type=int, default=8, help="the set of smaller objects: how many (8)")
    g.add_argument("--b4-small-mib", type=int, default=64, help="... and their size (default 64 MiB)")
    g.add_argument("--max-aggregate-mb", type=float, default=40.0,
                   help="scale each profile's bandwidths down so that its aggregate is at most this many MB/s "
                        "(default 40: what 2 shared cores carry through two rclone servers; 0: the path's own)")
    g.add_argument("--b4-workers", type=int, default=contract.DEFAULT_MAX_TASKS,
                   help=f"pipeline worker processes (default MaxTasks, {contract.DEFAULT_MAX_TASKS})")
    g.add_argument("--tuned-threads", type=int, default=32, help="pipeline-tuned: copy threads per worker (32)")
    g.add_argument("--tuned-part-mib", type=int, default=5, help="pipeline-tuned: part size (5 MiB)")
    g.add_argument("--b4-ceiling-threads", type=int, default=0,
                   help="ceiling: copy threads (default b4-workers x the default threads per worker)")
    g.add_argument("--rclone-tuned-flags", default=DEFAULT_RCLONE_TUNED,
                   help=f"rclone-tuned: rclone copy flags ({DEFAULT_RCLONE_TUNED})")
    g.add_argument("--b4-timeout", type=float, default=1800.0, help="a run slower than this has failed (s)")
    g.add_argument("--b4-seed", type=int, default=16, help="the link's seed (stalls and hangs)")


def _objects(args: argparse.Namespace) -> list[tuple[str, int]]:
    out = [("big.bin", args.b4_big_mib * MiB)] if args.b4_big_mib else []
    out += [(f"set/obj-{i:03d}.bin", args.b4_small_mib * MiB) for i in range(args.b4_small_count)]
    return out


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while chunk := fh.read(8 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def run(args: argparse.Namespace) -> dict[str, Any]:
    modes = [m.strip() for m in args.b4_modes.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            raise SystemExit(f"unknown B4 mode {m!r}; choose from {MODES}")
    names = [n.strip() for n in args.b4_profiles.split(",") if n.strip()]
    for n in names:
        if n not in PROFILES:
            raise SystemExit(f"unknown link profile {n!r}; choose from {list(PROFILES)}")
    cap = args.max_aggregate_mb * MB if args.max_aggregate_mb else None
    profiles = [PROFILES[n].fitted(cap) for n in names]
    objects = _objects(args)
    total = sum(size for _, size in objects)
    tuned_flags = shlex.split(args.rclone_tuned_flags)
    defaults = {"threads": contract.DEFAULT_WORKER_THREADS, "part_mib": contract.DEFAULT_PART_SIZE_MIB,
                "visibility_timeout": contract.DEFAULT_VISIBILITY_TIMEOUT}
    tuned = {"threads": args.tuned_threads, "part_mib": args.tuned_part_mib,
             "visibility_timeout": contract.DEFAULT_VISIBILITY_TIMEOUT}
    info = machine()
    say(f"B4: {len(objects)} objects, {total / MiB:.0f} MiB ({args.b4_big_mib} MiB + {args.b4_small_count} x "
        f"{args.b4_small_mib} MiB) through an emulated link; {args.b4_workers} workers; pipeline defaults "
        f"{defaults['threads']} threads x {defaults['part_mib']} MiB parts, tuned {tuned['threads']} x "
        f"{tuned['part_mib']} MiB; rclone-tuned {args.rclone_tuned_flags}")
    say(f"    machine: {describe_machine(info)}")
    for prof in profiles:
        say(f"    link {prof.describe()}; {prof.flows_to_fill:.0f} flows fill it")
    runs: list[dict[str, Any]] = []
    with workdir(args.keep) as base:
        src_root, dst_root = base / "src-root", base / "dst-root"
        data: dict[str, Path] = {}
        sums: dict[str, str] = {}
        for key, size in objects:
            data[key] = write_random_file(base / "data" / key, size, seed=f"b4-{key}")
            sums[key] = _md5(data[key])
            place(data[key], src_root, "b4src", key)
        (dst_root / "dst").mkdir(parents=True, exist_ok=True)
        with Rclone(src_root) as src, Rclone(dst_root, extra_args=DEST_SERVER_ARGS) as dst:
            src.client().list_objects_v2(Bucket="b4src")  # rclone hashes them once, here, before any timing
            for prof in profiles:
                with LinkProcess(dst.endpoint_url, prof, seed=args.b4_seed) as link:
                    for r, mode in rotations(modes, args.b4_runs):
                        entry = _one_run(args, prof, link, mode, r, src, dst, src_root, dst_root, data, sums,
                                         total, defaults, tuned, tuned_flags, base)
                        runs.append(entry)
                        _say_run(entry, args.b4_runs)
    summary = _summarize(runs, profiles, modes)
    payload = {"benchmark": "B4", "machine": info, "objects": [[k, s] for k, s in objects],
               "profiles": [p.as_dict() for p in profiles],
               "pipeline_defaults": defaults, "pipeline_tuned": tuned, "rclone_tuned_flags": tuned_flags,
               "args": {k: v for k, v in vars(args).items() if k.startswith(("b4", "tuned", "rclone_tuned", "max_"))},
               "runs": runs, "summary": summary}
    say(f"    results: {save('b4', payload)}")
    return payload


def _one_run(args: argparse.Namespace, prof: LinkProfile, link: LinkProcess, mode: str, r: int, src: Rclone,
             dst: Rclone, src_root: Path, dst_root: Path, data: dict[str, Path], sums: dict[str, str], total: int,
             defaults: dict[str, int], tuned: dict[str, int], tuned_flags: list[str], base: Path) -> dict[str, Any]:
    quiet = wait_quiet(args.quiet_wait, own_pids=(src.pid or 0, dst.pid or 0))
    prefix = f"{prof.name}-{mode}-{r}"
    entry: dict[str, Any] = {"profile": prof.name, "mode": mode, "round": r, "bytes": total, "quiet": quiet,
                             "load_before": os.getloadavg()[0]}
    link.reset()
    busy0, wall0 = system_busy(), time.monotonic()
    if mode.startswith("pipeline"):
        settings = defaults if mode == "pipeline" else tuned
        bucket = prefix.replace("_", "-")

        def make_present() -> int:
            for key, path in data.items():
                place(path, src_root, bucket, key)
            src.refresh(bucket)
            # S3 knows an object's ETag when its event fires; rclone computes it on the first listing
            return len(src.client().list_objects_v2(Bucket=bucket).get("Contents", []))

        pr = run_pipeline(src=src, dst=dst, dest_url=link.endpoint_url, source_bucket=bucket, dest_bucket="dst",
                          make_present=make_present, name=f"b4{r}{int(time.time()) % 100000}",
                          part_size_mib=settings["part_mib"], workers=args.b4_workers, threads=settings["threads"],
                          state_dir=base / "state" / prefix, timeout=args.b4_timeout,
                          extra_options={"dest_prefix": f"{prefix}/",
                                         "visibility_timeout": settings["visibility_timeout"]},
                          extra_pids={"link": link.pid or 0})
        entry.update(seconds=pr.seconds, ok=pr.ok, detail=pr.detail, cpu=pr.cpu, phases=pr.phases,
                     failed_jobs=pr.failed_jobs, worker_stats=pr.worker_stats, workers=pr.workers,
                     peak_rss_mib=round(pr.peak_rss_mib, 1), settings=settings,
                     control_plane_calls=pr.control_plane.get("total_calls"))
    elif mode == "ceiling":
        threads = args.b4_ceiling_threads or args.b4_workers * defaults["threads"]
        meter = CpuMeter({"rclone_source": src.pid or 0, "rclone_dest": dst.pid or 0, "link": link.pid or 0})
        try:
            entry.update(seconds=_ceiling(src, dst, link, data, prefix, defaults["part_mib"] * MiB, threads),
                         ok=True, detail="")
        except Exception as exc:  # noqa: BLE001 - a failed run is reported, not fatal
            entry.update(seconds=float("nan"), ok=False, detail=str(exc)[-500:])
        entry.update(cpu=meter.stop(), threads=threads)
    else:
        flags = [] if mode == "rclone" else tuned_flags
        env = {**src.rclone_env("src"), **dst.rclone_env("dst")}
        env["RCLONE_CONFIG_DST_ENDPOINT"] = link.endpoint_url  # the destination across the link
        meter = CpuMeter({"rclone_source": src.pid or 0, "rclone_dest": dst.pid or 0, "link": link.pid or 0})
        try:
            seconds = run_rclone(["copy", "src:b4src", f"dst:dst/{prefix}", *flags], env, timeout=args.b4_timeout)
            entry.update(seconds=seconds, ok=True, detail="")
        except Exception as exc:  # noqa: BLE001 - a failed peer run is reported, not fatal
            entry.update(seconds=float("nan"), ok=False, detail=str(exc)[-500:])
        entry.update(cpu=meter.stop(), flags=flags)
    wall = time.monotonic() - wall0
    entry["busy_cores"] = round((system_busy() - busy0) / wall, 2) if wall else float("nan")
    entry["load_after"] = os.getloadavg()[0]
    entry["link"] = link.figures()
    # byte-identical? the destination server's files against the source's MD5s
    wrong = [key for key in data if not _same(dst_root / "dst" / prefix / key, sums[key])]
    if wrong:
        entry["ok"] = False
        entry["detail"] = (entry.get("detail") or "") + f" {len(wrong)} object(s) missing or different: {wrong[:3]}"
    entry["identical"] = len(data) - len(wrong)
    shutil.rmtree(dst_root / "dst" / prefix, ignore_errors=True)
    seconds = entry["seconds"]
    entry["mb_s"] = total / seconds / MB if seconds == seconds and seconds > 0 else float("nan")
    entry["of_aggregate"] = entry["mb_s"] * MB / prof.aggregate if prof.aggregate else float("nan")
    return entry


def _ceiling(src: Rclone, dst: Rclone, link: LinkProcess, data: dict[str, Path], prefix: str, part_size: int,
             threads: int) -> float:
    """Seconds to copy every object with the engine's copy step alone (see the module's docstring), each object's
    ETag checked against the multipart ETag of its parts' MD5s."""
    from s3sync.transfer.checksums import multipart_etag, strip_etag  # noqa: PLC0415
    from s3sync.transfer.copier import copy_part  # noqa: PLC0415
    from s3sync.transfer.endpoints import s3_client  # noqa: PLC0415
    from s3sync.transfer.message import PartMessage  # noqa: PLC0415
    from s3sync.transfer.plan import plan  # noqa: PLC0415

    s3_src = src.client(pool=threads)
    s3_dst = s3_client(dataclasses.replace(dst.endpoint(), endpoint_url=link.endpoint_url),
                       max_pool_connections=threads)
    started = time.monotonic()
    msgs: list[PartMessage] = []
    for key, path in data.items():
        size, dest_key = path.stat().st_size, f"{prefix}/{key}"
        the_plan = plan(size, part_size)
        etag = s3_src.head_object(Bucket="b4src", Key=key)["ETag"]
        upload = s3_dst.create_multipart_upload(Bucket="dst", Key=dest_key)["UploadId"]
        msgs += [PartMessage(job_id="ceiling", source_bucket="b4src", source_key=key, source_etag=etag,
                             dest_bucket="dst", dest_key=dest_key, part_number=n, total_parts=the_plan.parts,
                             start=the_plan.byte_range(n)[0], end=the_plan.byte_range(n)[1], upload_id=upload)
                 for n in range(1, the_plan.parts + 1)]
    with ThreadPoolExecutor(threads) as pool:
        copied = list(pool.map(lambda m: (m, copy_part(s3_src, s3_dst, m)), msgs))
    for key in data:
        parts = sorted(((m, c) for m, c in copied if m.source_key == key), key=lambda mc: mc[1].part)
        resp = s3_dst.complete_multipart_upload(
            Bucket="dst", Key=parts[0][0].dest_key, UploadId=parts[0][0].upload_id or "",
            MultipartUpload={"Parts": [{"PartNumber": c.part, "ETag": c.etag} for _, c in parts]})
        expected = multipart_etag([c.md5 for _, c in parts])
        if strip_etag(resp["ETag"]) != expected:
            raise RuntimeError(f"ceiling: {key}: destination ETag {resp['ETag']} != {expected}")
    return time.monotonic() - started


def _same(path: Path, md5: str) -> bool:
    try:
        return _md5(path) == md5
    except OSError:
        return False


def _say_run(e: dict[str, Any], runs: int) -> None:
    pc = e["link"]["part_copies"]
    extra = ""
    if e["mode"].startswith("pipeline"):
        ws = e.get("worker_stats", {})
        extra = f"; worker retries {ws.get('retries', 0)}, FAILED jobs {e.get('failed_jobs', 0)}"
    stalls = e["link"].get("stalls", 0)
    say(f"B4 {e['profile']:<10} round {e['round'] + 1}/{runs}  {e['mode']:<14} {e['seconds']:7.1f} s "
        f"{e['mb_s']:6.1f} MB/s  {e['of_aggregate']:.2f} of the aggregate  parts sent {pc['sent']} for "
        f"{pc['distinct']} (max {pc['max_per_part']}/part, {pc['sent_twice']} twice); {stalls} stalls; "
        f"peak {e['link']['peak_connections']} connections; {e['identical']} identical; "
        f"busy {e['busy_cores']:.2f} cores, load {e['load_before']:.2f}->{e['load_after']:.2f} "
        f"(CPU s: {cpu_line(e['cpu'])}){extra}"
        f"{'' if e['ok'] else '  FAILED ' + str(e.get('detail', ''))}")


def _summarize(runs: list[dict[str, Any]], profiles: list[LinkProfile], modes: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"all_ok": all(e["ok"] for e in runs)}
    for prof in profiles:
        mine = [e for e in runs if e["profile"] == prof.name]
        med = {m: median([e["mb_s"] for e in mine if e["mode"] == m and e["ok"]]) for m in modes}
        frac = {m: v * MB / prof.aggregate if prof.aggregate else float("nan") for m, v in med.items()}
        most = max((e["link"]["part_copies"]["max_per_part"] for e in mine), default=0)
        s = {
            "link": prof.describe(),
            "median_mb_s": {m: round(v, 2) for m, v in med.items()},
            "of_aggregate": {m: round(v, 3) for m, v in frac.items()},
            "pipeline_over_rclone": round(ratio(med.get("pipeline", 0), med.get("rclone", 0)), 2),
            "tuned_over_rclone_tuned": round(ratio(med.get("pipeline-tuned", 0), med.get("rclone-tuned", 0)), 2),
            "pipeline_over_ceiling": round(ratio(med.get("pipeline", 0), med.get("ceiling", 0)), 2),
            "max_sends_per_part": most,
            "by_mode_max_sends_per_part": {m: max((e["link"]["part_copies"]["max_per_part"] for e in mine
                                                   if e["mode"] == m), default=0) for m in modes},
            "pipeline_failed_jobs": sum(e.get("failed_jobs", 0) for e in mine),
            "all_ok": all(e["ok"] for e in mine),
            "busy_cores_median": round(median([e["busy_cores"] for e in mine]), 2),
        }
        out[prof.name] = s
        say(f"B4 summary {prof.name}: medians MB/s " + ", ".join(f"{m} {v:.1f} ({frac[m]:.2f})" for m, v in med.items())
            + f"; pipeline/rclone {s['pipeline_over_rclone']:.2f}, pipeline/ceiling {s['pipeline_over_ceiling']:.2f}, "
            "tuned/rclone-tuned "
            f"{s['tuned_over_rclone_tuned']:.2f}; at most {most} sends of a part; "
            f"{s['pipeline_failed_jobs']} FAILED jobs; median busy {s['busy_cores_median']:.2f} cores")
    return out
