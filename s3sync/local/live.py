"""What a person sees of a local run on a terminal (`s3sync demo`, and `s3sync local` unless `--log-format json`):
one live view (a bar of the bytes copied, with speed and time left; with `object_bars`, a bar per object), short
readable lines above it when an object finishes or the worker service is scaled, and every log line of the run in a
file instead of on the screen (`log_to`). rich draws it; it honours NO_COLOR, and on a non-terminal it prints the
lines without redrawing.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from s3sync.contract import Env, Status

RUNNER_LOG = "runner.log"  # in the state directory: the run's own log lines (the workers' are in logs/)


def human_size(n: float) -> str:
    """Binary units: B, KiB, MiB, GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


class BinarySpeedColumn(ProgressColumn):
    """Transfer speed in binary units (MiB/s), as the rest of the tool (rich's own column counts in MB/s)."""

    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        return Text("?" if speed is None else f"{human_size(speed)}/s", style="progress.data.speed")


def event_line(job: Any) -> str:
    """One short line above the bars when an object finishes (the JSON logs go to the log file only)."""
    if job.status == Status.DONE:
        how = "copied by the splitter" if job.inline else f"{job.total} part(s)"
        return f"done     {job.source_key} ({human_size(job.size)}, {how})"
    return f"{job.status.lower():<8} {job.source_key}: {job.error or 'no reason recorded'}"


def scaling_line(tasks: int) -> str:
    return f"scaling  the worker service to {tasks} task(s)"


class LiveView:
    """Bars and event lines for a runner's ticks: `with LiveView(console) as view: runner.run(on_tick=view.tick)`.

    `total`: the bytes the run will copy when known (the demo's sample set); else the bar's total grows with the
    objects the run has seen. `object_bars`: a bar for each of the first that many objects. `warnings`: this
    process's warnings and errors (the runner's, the functions') as lines too, not only in the log file."""

    def __init__(self, console: Console, *, total: int | None = None, object_bars: int = 0,
                 warnings: bool = False, every: float = 0.5) -> None:
        self.console = console
        self.warnings = _Warnings(self.say) if warnings else None
        self.total = total
        self.object_bars = object_bars
        self.every = every
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
                                 BinarySpeedColumn(), TimeRemainingColumn(), console=console, transient=False)
        self._overall: TaskID | None = None
        self._per_key: dict[str, TaskID] = {}
        self._seen: dict[str, str] = {}  # the final status each object was last shown in
        self._tasks = 0  # the worker service's desired count, as last shown
        self._last = 0.0

    def __enter__(self) -> LiveView:
        self.progress.__enter__()
        self._overall = self.progress.add_task("[bold]all objects", total=self.total)
        if self.warnings:
            logging.getLogger().addHandler(self.warnings)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.warnings:
            logging.getLogger().removeHandler(self.warnings)
        self.progress.__exit__(kind, exc, tb)

    def say(self, line: str) -> None:
        """A line above the bars (not markup: keys may hold brackets)."""
        self.progress.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def tick(self, runner: Any) -> None:
        """The runner's on_tick: redrawn at most every `every` seconds."""
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self.update(runner.jobs(), runner.desired_counts)

    def update(self, jobs: list[Any], desired_counts: list[int]) -> None:
        done = seen = 0
        finished = 0
        for job in jobs:
            seen += job.size
            final = job.status in Status.FINAL
            moved = job.size if final else job.done_bytes
            done += moved
            finished += final
            if job.source_key not in self._per_key and len(self._per_key) < self.object_bars:
                self._per_key[job.source_key] = self.progress.add_task(job.source_key[-40:], total=job.size)
            if job.source_key in self._per_key:
                self.progress.update(self._per_key[job.source_key], completed=moved)
            if final and self._seen.get(job.source_key) != job.status:
                self._seen[job.source_key] = job.status
                self.say(event_line(job))
        if self._overall is not None:
            if self.total is None:
                self.progress.update(self._overall, total=seen or None, completed=done,
                                     description=f"[bold]{finished}/{len(jobs)} objects")
            else:
                self.progress.update(self._overall, completed=done)
        if desired_counts and desired_counts[-1] != self._tasks:
            self._tasks = desired_counts[-1]
            self.say(scaling_line(self._tasks))


class _Warnings(logging.Handler):
    """WARNING and above as one short line each: the level, the message, and the reason when the record gives one."""

    def __init__(self, say: Callable[[str], None]) -> None:
        super().__init__(logging.WARNING)
        self.say = say

    def emit(self, record: logging.LogRecord) -> None:
        reason = getattr(record, "reason", None)
        self.say(f"{record.levelname.lower():<8} {record.getMessage()}" + (f": {reason}" if reason else ""))


def log_to(path: Path) -> IO[str]:
    """Every log line of the run into `path`, none on the screen: the JSON logs, and the functions' metric lines
    (EMF), whose logger each function sets up again on its own stream (stderr), so they are diverted here. Returns
    the open file (for the process's life: the run's)."""
    from s3sync.transfer import logs  # noqa: PLC0415
    from s3sync.transfer.metrics import LOGGER_NAME  # noqa: PLC0415

    path.parent.mkdir(parents=True, exist_ok=True)
    stream = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the run
    logs.setup(os.environ.get(Env.LOG_LEVEL, "INFO"), stream=stream)
    metrics = logging.getLogger(LOGGER_NAME)
    metrics.filters[:] = [f for f in metrics.filters if not isinstance(f, _Divert)]
    metrics.addFilter(_Divert(stream.write, stream.flush))
    return stream


class _Divert(logging.Filter):
    """Writes a record's line to a stream instead of the logger's own handlers (which it then skips)."""

    def __init__(self, write: Callable[[str], Any], flush: Callable[[], Any]) -> None:
        super().__init__()
        self.write = write
        self.flush = flush

    def filter(self, record: logging.LogRecord) -> bool:
        self.write(f"{record.msg}\n")
        self.flush()
        return False
