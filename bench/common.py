"""Shared pieces of the benchmarks: servers, test data, process probes, the local pipeline, results.

Every benchmark starts its own servers and stops them (context managers): two `rclone serve s3` on loopback (the
global and the China side) and, for the pipeline, the control plane of `s3sync local` (moto, in this process).
Nothing here talks to AWS.

Units: MB = 10^6 bytes, MiB = 2^20 bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from s3sync.local.servers import RcloneS3Server, find_rclone, free_port
from s3sync.transfer.endpoints import Endpoint, s3_client

MiB = 1024 * 1024
MB = 1_000_000
RESULTS_DIR = Path(__file__).resolve().parent / "results"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- the machine ------------------------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    rclone = ""
    with contextlib.suppress(Exception):
        rclone = subprocess.run([find_rclone(), "version"], capture_output=True, text=True,
                                timeout=10).stdout.splitlines()[0]
    import boto3  # noqa: PLC0415
    import botocore  # noqa: PLC0415

    return {"nproc": os.cpu_count(), "cpu": model, "memory": mem, "python": platform.python_version(),
            "kernel": platform.release(), "rclone": rclone, "boto3": boto3.__version__,
            "botocore": botocore.__version__, "loadavg_at_start": os.getloadavg()}


def describe_machine(m: dict[str, Any]) -> str:
    return (f"{m['nproc']} cores ({m['cpu']}), {m['memory']}, Python {m['python']}, {m['rclone']}, "
            f"load average at start {m['loadavg_at_start'][0]:.2f}")


# --- test data --------------------------------------------------------------------------------------------------------
def write_random_file(path: Path, size: int, seed: str, block: int = 8 * MiB) -> Path:
    """Deterministic, incompressible bytes, written in blocks (never the whole object in memory)."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        left = size
        while left > 0:
            n = min(block, left)
            out.write(rng.randbytes(n))
            left -= n
    return path


def place(data: Path, root: Path, bucket: str, key: str) -> Path:
    """Put a file into a server's root as bucket/key (a hard link: no copy; a copy across file systems)."""
    target = root / bucket / key
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(data, target)
    except OSError:
        shutil.copyfile(data, target)
    return target


# --- servers ----------------------------------------------------------------------------------------------------------
class Rclone(RcloneS3Server):
    """`rclone serve s3` with its remote-control API on, so that files placed in its root behind its back can be
    made visible at once (`refresh`) instead of after its directory cache expires (5 min)."""

    def __init__(self, root: Path, **kw: Any) -> None:
        self.rc_port = free_port()
        extra = ["--rc", "--rc-addr", f"127.0.0.1:{self.rc_port}", "--rc-no-auth", *kw.pop("extra_args", ())]
        super().__init__(root, extra_args=extra, **kw)

    def rc(self, command: str, **params: Any) -> Any:
        req = urllib.request.Request(f"http://127.0.0.1:{self.rc_port}/{command}", data=json.dumps(params).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"{}")

    def refresh(self, bucket: str) -> None:
        self.rc("vfs/refresh", dir=bucket)

    def endpoint(self) -> Endpoint:
        return Endpoint("us-east-1", self.endpoint_url, self.access_key_id, self.secret_access_key)

    def client(self, pool: int = 16) -> Any:
        return s3_client(self.endpoint(), max_pool_connections=pool)

    def rclone_env(self, name: str) -> dict[str, str]:
        """An rclone remote `name` (type s3, provider Other) pointing at this server, as environment variables."""
        p = f"RCLONE_CONFIG_{name.upper()}_"
        return {p + "TYPE": "s3", p + "PROVIDER": "Other", p + "ENDPOINT": self.endpoint_url,
                p + "ACCESS_KEY_ID": self.access_key_id, p + "SECRET_ACCESS_KEY": self.secret_access_key,
                p + "REGION": "us-east-1", p + "FORCE_PATH_STYLE": "true"}


@contextlib.contextmanager
def workdir(keep: bool = False) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="s3sync-bench-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def two_servers(base: Path) -> Iterator[tuple[Rclone, Rclone]]:
    """Source and destination `rclone serve s3`, each over its own root under `base`; both stopped on exit."""
    with Rclone(base / "src-root") as src, Rclone(base / "dst-root") as dst:
        yield src, dst


# --- processes --------------------------------------------------------------------------------------------------------
def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process (0 if gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def children_cpu() -> float:
    """CPU seconds of reaped child processes (the rclone client once it has exited)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def system_busy() -> float:
    """CPU seconds all cores spent not idle since boot (from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLK_TCK


def wait_quiet(max_wait: float, threshold: float = 0.25, own_pids: tuple[int, ...] = ()) -> dict[str, float]:
    """Wait (up to `max_wait` s) until the other processes on the machine use less than `threshold` cores over two
    consecutive half-seconds: the cores are shared, and a run measured while others' tests run says little. Returns
    how long it waited and the load it saw last (the run goes ahead anyway after `max_wait`; 0: no wait)."""
    if max_wait <= 0:
        return {"waited_s": 0.0, "other_cores": float("nan")}
    started = time.monotonic()
    calm = 0
    load = 0.0
    while True:
        ours0 = self_cpu() + sum(proc_cpu(p) for p in own_pids)
        busy0 = system_busy()
        time.sleep(0.5)
        ours1 = self_cpu() + sum(proc_cpu(p) for p in own_pids)
        load = max(0.0, (system_busy() - busy0) - (ours1 - ours0)) / 0.5
        calm = calm + 1 if load < threshold else 0
        waited = time.monotonic() - started
        if calm >= 2 or waited >= max_wait:
            return {"waited_s": round(waited, 1), "other_cores": round(load, 2)}


class CpuMeter:
    """CPU seconds used by each of our processes over an interval, and by everything else on the machine (the
    other engineers' tests share these cores: a run with much `other` CPU is a noisy run)."""

    def __init__(self, pids: dict[str, int], workers: Callable[[], dict[int, float]] | None = None) -> None:
        self.pids, self.workers = pids, workers
        self.t0 = self._snap()

    def _snap(self) -> dict[str, float]:
        snap = {name: proc_cpu(pid) for name, pid in self.pids.items()}
        snap["this_process"] = self_cpu()
        snap["reaped_children"] = children_cpu()
        snap["workers"] = sum((self.workers() if self.workers else {}).values())
        snap["_system"] = system_busy()
        snap["_wall"] = time.monotonic()
        return snap

    def stop(self) -> dict[str, float]:
        t1 = self._snap()
        out = {k: round(t1[k] - self.t0[k], 2) for k in self.t0 if not k.startswith("_")}
        ours = sum(out.values())
        out["other_processes"] = round(max(0.0, t1["_system"] - self.t0["_system"] - ours), 2)
        out["wall"] = round(t1["_wall"] - self.t0["_wall"], 2)
        return out


def vm_hwm_mib(pid: int) -> float:
    """Peak resident set size (VmHWM) of a live process, MiB (0 if gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def worker_pids(parent: int | None = None) -> list[int]:
    """Live `python -m container.worker` processes started by this process."""
    parent = parent or os.getpid()
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            if b"container.worker" in (entry / "cmdline").read_bytes():
                out.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


class WorkerProbe:
    """Polls the worker processes of the local runner: peak RSS (VmHWM, a high-water mark, so sampling it before
    a worker exits is enough) and CPU. Cheap: /proc is scanned for new workers every `scan_every` seconds, and
    only the known workers are read in between."""

    def __init__(self, interval: float = 0.5, scan_every: float = 2.0) -> None:
        self.interval, self.scan_every = interval, scan_every
        self.hwm: dict[int, float] = {}
        self.cpu: dict[int, float] = {}
        self._pids: set[int] = set()
        self._scanned = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="worker-probe", daemon=True)

    def start(self) -> WorkerProbe:
        self._thread.start()
        return self

    def sample(self, rescan: bool = False) -> None:
        if rescan or time.monotonic() - self._scanned >= self.scan_every:
            self._pids |= set(worker_pids())
            self._scanned = time.monotonic()
        for pid in list(self._pids):
            hwm, cpu = vm_hwm_mib(pid), proc_cpu(pid)
            if not hwm:
                self._pids.discard(pid)  # gone
                continue
            self.hwm[pid] = max(self.hwm.get(pid, 0.0), hwm)
            self.cpu[pid] = max(self.cpu.get(pid, 0.0), cpu)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample(rescan=True)

    @property
    def peak_rss_mib(self) -> float:
        return max(self.hwm.values(), default=0.0)


def cpu_line(cpu: dict[str, float]) -> str:
    short = {"this_process": "bench", "rclone_source": "src", "rclone_dest": "dst", "reaped_children": "rclone-cli",
             "workers": "workers", "link": "link", "other_processes": "OTHERS"}
    return " ".join(f"{short[k]} {v:.1f}" for k, v in cpu.items() if k in short and (v or k == "other_processes"))


#: SQS calls are told apart by queue ("SQS.ReceiveMessage@notifications"): the runner's notifications queue stands in
#: for the completion topic's e-mail (no queue request in AWS); the event queue is the stacks' (bench/cost.py)
LOCAL_QUEUES = {"notifications": "notifications", "events": "s3-events", "intake": "intake"}


class MotoCalls:
    """Counts the control-plane requests moto (in this process) serves, by service and action, with the CPU time
    spent in the action (request parsing, the backend, response serialization; not the HTTP server around it)."""

    _installed: MotoCalls | None = None

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.cpu: dict[str, float] = {}
        self.active = False
        self._lock = threading.Lock()

    @classmethod
    def get(cls) -> MotoCalls:
        if cls._installed is None:
            from moto.core.responses import BaseResponse  # noqa: PLC0415

            counter = cls()
            original = BaseResponse.call_action

            def call_action(self: Any) -> Any:
                if not counter.active:
                    return original(self)
                started = time.thread_time()
                try:
                    return original(self)
                finally:
                    try:
                        name = f"{type(self).__name__.replace('Response', '').replace('Handler', '')}." \
                               f"{self._get_action()}"
                        if name.startswith("SQS."):  # which queue: the runner's own ones are not the product's
                            queue = str(self._get_param("QueueUrl") or "").rsplit("/", 1)[-1]
                            name += f"@{LOCAL_QUEUES.get(queue.rsplit('-', 1)[-1], 'queue')}" if queue else ""
                    except Exception:  # noqa: BLE001
                        name = type(self).__name__
                    with counter._lock:
                        counter.counts[name] = counter.counts.get(name, 0) + 1
                        counter.cpu[name] = counter.cpu.get(name, 0.0) + time.thread_time() - started

            BaseResponse.call_action = call_action
            cls._installed = counter
        return cls._installed

    def start(self) -> None:
        with self._lock:
            self.counts.clear()
            self.cpu.clear()
            self.active = True

    def stop(self) -> dict[str, Any]:
        with self._lock:
            self.active = False
            return {"calls": dict(sorted(self.counts.items(), key=lambda kv: -kv[1])),
                    "action_cpu_s": {k: round(v, 3) for k, v in sorted(self.cpu.items(), key=lambda kv: -kv[1])},
                    "total_calls": sum(self.counts.values()),
                    "total_action_cpu_s": round(sum(self.cpu.values()), 3)}


# --- rclone as the peer -----------------------------------------------------------------------------------------------
def run_rclone(args: list[str], env: dict[str, str], timeout: float | None = None) -> float:
    """Run an rclone client command (no config file: remotes come from the environment); returns seconds."""
    cmd = [find_rclone(), *args, "--config", os.devnull]
    started = time.monotonic()
    proc = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return elapsed


# --- the local pipeline -----------------------------------------------------------------------------------------------
DONE_LINES = ("done", "copied")  # a job DONE: by completion, or a small object by the splitter


@dataclass
class PipelineRun:
    """One `s3sync local --until-idle` run driven in this process."""

    seconds: float  # from objects present (visible, with their ETags) to the last job DONE
    jobs_done: int
    jobs: int
    peak_rss_mib: float
    workers: int
    cpu: dict[str, float]
    phases: dict[str, float] = field(default_factory=dict)
    control_plane: dict[str, Any] = field(default_factory=dict)
    ok: bool = True
    detail: str = ""
    failed_jobs: int = 0
    worker_stats: dict[str, int] = field(default_factory=dict)  # summed over the workers' "worker stopped" lines


def _json_lines(path: Path) -> Iterator[dict[str, Any]]:
    with contextlib.suppress(OSError):
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                line = line.strip()
                if line.startswith("{"):
                    with contextlib.suppress(ValueError):
                        yield json.loads(line)


class LogTail:
    """Reads the JSON lines appended to a log file since the last call."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.partial = path, 0, b""

    def new(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except OSError:
            return []
        self.offset += len(data)
        data, self.partial = (self.partial + data).rsplit(b"\n", 1) if b"\n" in data else (b"", self.partial + data)
        out = []
        for line in data.splitlines():
            line = line.strip()
            if line.startswith(b"{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out


def _ts(record: dict[str, Any]) -> float:
    return datetime.strptime(record["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def run_pipeline(*, src: Rclone, dst: Rclone, source_bucket: str, dest_bucket: str, make_present: Callable[[], int],
                 name: str, part_size_mib: int, workers: int, threads: int, state_dir: Path,
                 timeout: float = 900.0, extra_options: dict[str, Any] | None = None,
                 dest_url: str | None = None, extra_pids: dict[str, int] | None = None) -> PipelineRun:
    """Start `s3sync local` (LocalRunner in a thread; moto in this process; `workers` worker processes), wait until
    every worker serves the queue, call `make_present()` (which makes the objects visible in the source bucket and
    returns how many there are), and time until each has its job DONE (from the completion's own "done" log lines, and
    the splitter's "copied" lines for the small objects it copies itself),
    then stop the runner. (`--until-idle` would stop it at once, before the objects appear: the bench stops it
    itself when the last job is DONE, which is what `--until-idle` waits for, minus its idle grace.) `dest_url`
    reaches the destination server another way (B4: through an emulated link); `extra_pids` are other processes of
    the run whose CPU is measured with it.
    """
    from s3sync.contract import DEFAULT_STUCK_AFTER_SECONDS  # noqa: PLC0415
    from s3sync.local.runner import BucketSpec, LocalOptions, LocalRunner  # noqa: PLC0415
    from s3sync.transfer import logs  # noqa: PLC0415

    state_dir.mkdir(parents=True, exist_ok=True)
    runner_log = state_dir / "runner.log"
    reset_moto()  # moto keeps every backend in this process: start each run from an empty control plane
    options = LocalOptions(
        source=BucketSpec(source_bucket, src.endpoint_url, src.access_key_id, src.secret_access_key),
        dest=BucketSpec(dest_bucket, dest_url or dst.endpoint_url, dst.access_key_id, dst.secret_access_key,
                        region="cn-north-1"),
        part_size_mib=part_size_mib, worker_threads=threads, min_tasks=workers, max_tasks=workers,
        until_idle=False, timeout=timeout, state_dir=state_dir, name=name, moto_patches=RUN_FLAGS["moto_patches"],
        # the deployed sweeper's setting (s3sync local's 30 s suits tests): a queued job is not a stuck one
        stuck_after=DEFAULT_STUCK_AFTER_SECONDS, **(extra_options or {}),
    )
    runner = LocalRunner(options)
    listing_allowed = threading.Event()
    listing_allowed.set()
    list_source = runner._list_source

    def gated_list_source() -> list[dict[str, Any]]:
        listing_allowed.wait()
        return list_source()

    runner._list_source = gated_list_source  # type: ignore[method-assign]
    done_jobs: set[str] = set()
    result: dict[str, Any] = {}
    probe = WorkerProbe()
    calls = MotoCalls.get()

    with open(runner_log, "a", encoding="utf-8") as log_fh:
        # The handlers set up JSON logs on stderr (functions._common.runtime): keep them in the run's log file.
        logs.setup("INFO", stream=log_fh)
        with contextlib.redirect_stderr(log_fh):
            thread = threading.Thread(target=lambda: result.setdefault("summary", runner.run()), name="runner",
                                      daemon=True)
            thread.start()
            try:
                deadline = time.monotonic() + 120
                while not _workers_ready(state_dir, workers):
                    if not thread.is_alive() or time.monotonic() > deadline:
                        raise RuntimeError(f"the local runner did not start {workers} worker(s); see {state_dir}")
                    time.sleep(0.05)
                probe.sample(rescan=True)
                probe.start()
                # While the objects are made present (rclone computes their MD5 ETags on the first listing, which
                # S3 does at upload), the runner does not list: the clock starts when the ETags are known.
                listing_allowed.clear()
                try:
                    count = make_present()
                finally:
                    listing_allowed.set()
                t0 = time.time()
                invoked_before = runner.invocations.copy()
                calls.start()
                probe.sample()
                meter = CpuMeter({"rclone_source": src.pid or 0, "rclone_dest": dst.pid or 0, **(extra_pids or {})},
                                 workers=lambda: dict(probe.cpu))
                deadline = time.monotonic() + timeout
                tail = LogTail(runner_log)
                while len(done_jobs) < count and time.monotonic() < deadline and thread.is_alive():
                    time.sleep(0.1)
                    for rec in tail.new():
                        if rec.get("msg") in DONE_LINES and rec.get("job"):
                            done_jobs.add(rec["job"])
                probe.stop()
                cpu = meter.stop()
                control_plane = calls.stop()
                control_plane["invocations"] = dict(runner.invocations - invoked_before)
            finally:
                runner.stop()
                thread.join(timeout=120)
                logging_reset()
    records = list(_json_lines(runner_log))
    done_ts = [_ts(r) for r in records if r.get("msg") in DONE_LINES]
    planned_ts = [_ts(r) for r in records if r.get("msg") in ("planned", "copied")]
    t_end = max(done_ts) if len(done_ts) >= count else float("nan")
    worker_records = [r for p in sorted((state_dir / "logs").glob("worker-*.log")) for r in _json_lines(p)]
    copied_ts = [_ts(r) for r in worker_records if r.get("msg") == "part copied"]
    copying_ts = [_ts(r) for r in worker_records if r.get("msg") == "copying part"]
    phases = {
        "object_present_to_first_split": (min(planned_ts) - t0) if planned_ts else float("nan"),
        "object_present_to_last_split": (max(planned_ts) - t0) if planned_ts else float("nan"),
        "object_present_to_first_part_started": (min(copying_ts) - t0) if copying_ts else float("nan"),
        "first_part_started_to_last_part_recorded": (max(copied_ts) - min(copying_ts)) if copied_ts else float("nan"),
        "last_part_recorded_to_done": (t_end - max(copied_ts)) if copied_ts else float("nan"),
    }
    summary = result.get("summary")
    failed = sum(1 for j in summary.jobs if j.status == "FAILED") if summary is not None else 0
    ok = len(done_ts) >= count and failed == 0 and (summary is None or summary.dlq_messages == 0)
    stats: dict[str, int] = {}
    for r in worker_records:
        if r.get("msg") == "worker stopped":
            for k in ("copied", "duplicates", "skipped", "failed_jobs", "retries"):
                stats[k] = stats.get(k, 0) + int(r.get(k, 0) or 0)
    return PipelineRun(seconds=t_end - t0, jobs_done=len(set(done_jobs)), jobs=count,
                       peak_rss_mib=probe.peak_rss_mib, workers=len(probe.hwm), cpu=cpu,
                       phases={k: round(v, 3) for k, v in phases.items()}, control_plane=control_plane, ok=ok,
                       detail="" if ok else f"{len(done_ts)}/{count} done, {failed} FAILED; state in {state_dir}",
                       failed_jobs=failed, worker_stats=stats)


def reset_moto() -> None:
    """Forget every queue, table and stream moto holds in this process (what `/moto-api/reset` does)."""
    with contextlib.suppress(ImportError):
        from moto.moto_api._internal.models import moto_api_backend  # noqa: PLC0415

        moto_api_backend.reset()


def _workers_ready(state_dir: Path, workers: int) -> bool:
    ready = 0
    for path in (state_dir / "logs").glob("worker-*.log"):
        if any(r.get("msg") == "worker started" for r in _json_lines(path)):
            ready += 1
    return ready >= workers


def logging_reset() -> None:
    import logging  # noqa: PLC0415

    logging.getLogger("s3sync").handlers[:] = [logging.StreamHandler(sys.stderr)]
    logging.getLogger("s3sync").setLevel(logging.WARNING)


# --- statistics and results -------------------------------------------------------------------------------------------
def median(values: list[float]) -> float:
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else float("nan")


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def rotations(modes: list[str], rounds: int) -> Iterator[tuple[int, str]]:
    """Alternating order: round r runs the modes rotated by r (a b c, b c a, c a b, ...)."""
    for r in range(rounds):
        k = r % len(modes)
        for mode in modes[k:] + modes[:k]:
            yield r, mode


RUN_FLAGS: dict[str, Any] = {"moto_patches": True}  # set by __main__; recorded


def save(name: str, payload: dict[str, Any]) -> Path:
    payload = {**payload, **RUN_FLAGS, "command": " ".join(["python -m bench", *sys.argv[1:]])}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = RESULTS_DIR / f"{name}-{stamp}.json"
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def say(text: str) -> None:
    print(text, flush=True)

