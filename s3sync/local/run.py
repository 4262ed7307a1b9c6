"""`s3sync local` as a command: start the runner, print where to upload and how to watch, stop on Ctrl-C, print the
summary; and what a run must never leave behind (real destination keys in a control plane that outlives it)."""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import threading
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from s3sync.contract import (
    Env,
    Status,
)
from s3sync.local.live import RUNNER_LOG, LiveView, log_to
from s3sync.local.options import (
    CONTROL_KEY_ENV,
    CONTROL_KEY_FILE,
    DUMMY_KEY,
    LocalOptions,
    Summary,
    real_dest_keys,
)
from s3sync.local.runner import LocalRunner
from s3sync.transfer import logs

log = logging.getLogger("s3sync.local")


def do_local(options: LocalOptions, console: Any = None, *, log_format: str = "auto") -> int:
    """`s3sync local`: say where to upload and how to watch, run until interrupted (or idle), then print what
    happened on stdout. 0 when nothing failed, 1 when something did, 130 when Ctrl-C stopped it (a second Ctrl-C
    stops at once).

    On a terminal (log_format "auto"), one live view: a bar of the bytes copied, a line per object finished,
    scaling and warnings as short lines, and the JSON logs in `runner.log` in the state directory (a new one under
    the temporary directory, kept, when none is given). Else (log_format "json", or not a terminal) the JSON logs go
    to stderr as they are written."""
    from rich.console import Console  # noqa: PLC0415

    console = console or Console()
    live = log_format == "auto" and console.is_terminal
    if live:
        if options.state_dir is None:
            options = replace(options, state_dir=Path(tempfile.mkdtemp(prefix="s3sync-local-")))
        log_to(Path(options.state_dir or ".") / RUNNER_LOG)
    else:
        logs.setup(os.environ.get(Env.LOG_LEVEL, "INFO"))
    runner = LocalRunner(options)
    interrupted = threading.Event()

    def on_sigint(*_: Any) -> None:
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()
        runner.stop()

    with LiveView(console, warnings=True) if live else nullcontext() as view:
        said: list[bool] = []

        def on_tick(r: LocalRunner) -> None:
            if not said:
                said.append(True)
                for line in start_lines(r, live):
                    if view:
                        view.say(line)
                    else:
                        console.print(line, markup=False, highlight=False, soft_wrap=True)
            if view:
                view.tick(r)

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            summary = runner.run(on_tick=on_tick)
        finally:
            signal.signal(signal.SIGINT, previous)
        if view:
            view.update(summary.jobs, runner.desired_counts)
    _forget_dest_keys(runner, options)
    print_summary(console, summary, interrupted=interrupted.is_set())
    if interrupted.is_set():
        return 130
    return 0 if summary.ok else 1


def start_lines(runner: LocalRunner, live: bool = False) -> list[str]:
    """What a person needs once the system is up: where to upload, where the copies go, where the control plane
    is and how to watch it, and where the destination keys are kept."""
    o = runner.options
    src = o.source.endpoint_url or runner.endpoint_url
    dst = o.dest.endpoint_url or runner.endpoint_url
    where = "" if o.name == "s3sync" else f" --name-prefix {o.name}"
    key_file = runner.state_dir / CONTROL_KEY_FILE
    watch = f"{CONTROL_KEY_ENV}=$(cat {key_file}) " if runner.control_key != DUMMY_KEY else ""
    lines = [
        f"s3sync local is running (control plane {runner.endpoint_url}, state {runner.state_dir})",
        f"  upload to:  s3://{o.source.name}/ at {src}",
        f"  copies to:  s3://{o.dest.name}/{o.dest_prefix} at {dst}",
        f"  watch:      {watch}s3sync status --endpoint-url {runner.endpoint_url}{where}",
        "  stop:       Ctrl-C (a summary follows)" + ("; it also stops once idle" if o.until_idle else ""),
    ]
    if live:
        lines.append(f"  logs:       {runner.state_dir / RUNNER_LOG} (this run's), {runner.state_dir / 'logs'} (the "
                     "workers')")
    if watch:
        lines.append(f"  note:       the destination keys are in the control plane's secret store "
                     f"({o.name}-dest-credentials) while the run lasts; the control plane answers only requests "
                     f"made with the key in {key_file}")
    elif real_dest_keys(o):
        lines.append(f"  note:       the destination keys are in the control plane's secret store "
                     f"({o.name}-dest-credentials), which anyone who can reach {runner.endpoint_url} can read until "
                     f"the run ends; use keys that may write only s3://{o.dest.name}/{o.dest_prefix}")
    return lines


def _forget_dest_keys(runner: LocalRunner, options: LocalOptions) -> None:
    """A control plane that outlives the run (--endpoint-url) keeps no real destination key: the secret is
    deleted (without a recovery window) once the run is over. The embedded one ends with the run."""
    if not (options.endpoint_url and real_dest_keys(options) and runner.resources.secret_arn):
        return
    try:
        runner.client("secretsmanager").delete_secret(SecretId=runner.resources.secret_arn,
                                                      ForceDeleteWithoutRecovery=True)
    except (BotoCoreError, ClientError) as exc:
        log.warning("could not delete the destination keys from the control plane",
                    extra={"secret": runner.resources.secret_arn, "reason": str(exc)})


def print_summary(console: Any, summary: Summary, *, interrupted: bool = False) -> None:
    """The transfers table, refused calls, and one line of totals (stdout, as the demo's)."""
    from rich.table import Table  # noqa: PLC0415

    table = Table(title="transfers")
    for col in ("source key", "size", "parts", "status", "detail"):
        table.add_column(col, overflow="fold")
    for job in sorted(summary.jobs, key=lambda j: j.source_key):
        table.add_row(job.source_key, f"{job.size:,}", f"{job.done}/{job.total}", job.status,
                      job.error or job.dest_etag or "")
    console.print(table)
    for denial in summary.denied:
        console.print(denial.line(), style="bold red", markup=False)
    done = sum(j.status == Status.DONE for j in summary.jobs)
    head = f"interrupted: {done}/{len(summary.jobs)} done; " if interrupted else ""
    console.print(f"{head}{done} done, "
                  f"{sum(j.status == Status.FAILED for j in summary.jobs)} failed, "
                  f"{sum(j.status not in Status.FINAL for j in summary.jobs)} unfinished; "
                  f"dead-letter queue {summary.dlq_messages}; {summary.elapsed:.1f} s", highlight=False)
