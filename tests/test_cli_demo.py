"""`s3sync demo` and `s3sync local` in a real terminal (a pty of 100 columns): Ctrl-C stops them within about two
seconds with a summary and exit status 130; a second Ctrl-C at once. `--from DIR`'s rules for links and names that
are not UTF-8, and binary units (issue 19 items 1, 4, 8, 10)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from s3sync.cli import cli
from s3sync.local.demo import SKIP_DANGLING, SKIP_LINK, SKIP_NOT_UTF8, sample_set, samples_from_dir
from s3sync.local.servers import RcloneS3Server
from s3sync.transfer.endpoints import Endpoint, s3_client

S3SYNC = str(Path(sys.executable).parent / "s3sync")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
MiB = 2**20


class Terminal:
    """A command in a pseudo-terminal of `columns` x `rows`; `ctrl_c()` types ^C, which the terminal turns into
    SIGINT for its whole foreground process group, as a person's Ctrl-C does."""

    def __init__(self, *args: str, columns: int = 100, rows: int = 40, env: dict[str, str] | None = None) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # pragma: no cover - the child
            os.environ.update({"COLUMNS": str(columns), "LINES": str(rows), "TERM": "xterm", **(env or {})})
            os.execv(S3SYNC, [S3SYNC, *args])
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.raw = b""
        self.status: int | None = None

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw.decode("utf-8", "replace"))

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready:
            try:
                self.raw += os.read(self.fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                pass

    def wait_for(self, pattern: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.poll() is None:
            if re.search(pattern, self.text):
                return True
            self._read(0.1)
        return bool(re.search(pattern, self.text))

    def poll(self) -> int | None:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                self._read(0.2)
        return self.status

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.poll() is None:
            self._read(0.05)
        return self.poll()

    def ctrl_c(self) -> float:
        os.write(self.fd, b"\x03")
        return time.monotonic()

    def close(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
        os.close(self.fd)


def clean(text: str) -> None:
    """No traceback, no log line, no click 'Aborted!' on the screen."""
    for bad in ("Traceback", "Aborted!", '"level"', "ERROR", "Exception"):
        assert bad not in text, text[-3000:]


@pytest.mark.system
def test_ctrl_c_stops_the_demo_within_seconds_with_a_summary_and_130() -> None:
    term = Terminal("demo", columns=100)
    try:
        time.sleep(3.0)
        assert term.poll() is None, term.text[-2000:]
        sent = term.ctrl_c()
        status = term.wait(10)
        took = time.monotonic() - sent
        assert status == 130, term.text[-3000:]
        assert took < 3.0, f"{took:.1f} s"
        text = term.text
        assert re.search(r"interrupted(: | while uploading: )", text), text[-3000:]
        assert re.search(r"\d+/12 done", text)
        clean(text)
        assert max(len(line) for line in text.splitlines()) <= 100
    finally:
        term.close()


@pytest.mark.system
def test_ctrl_c_during_the_copy_prints_where_each_object_was() -> None:
    term = Terminal("demo", "--scale-mib", "512", columns=100)
    try:
        assert term.wait_for(r"all objects", 120), term.text[-2000:]
        time.sleep(1.0)
        sent = term.ctrl_c()
        assert term.wait(10) == 130, term.text[-3000:]
        assert time.monotonic() - sent < 3.0
        text = term.text
        assert "interrupted: where each object was" in text and re.search(r"interrupted: \d+/\d+ done after", text)
        assert "big/nested/level 0/part-00.dat" in text.split("interrupted: where each object was")[1]
        clean(text)
    finally:
        term.close()


@pytest.mark.system
def test_a_second_ctrl_c_stops_at_once() -> None:
    term = Terminal("demo", "--scale-mib", "512", columns=100)
    try:
        assert term.wait_for(r"all objects", 120), term.text[-2000:]
        term.ctrl_c()
        time.sleep(0.2)
        sent = term.ctrl_c()
        assert term.wait(10) == 130, term.text[-3000:]
        assert time.monotonic() - sent < 2.0
        assert "Traceback" not in term.text and "Aborted!" not in term.text
    finally:
        term.close()


@pytest.mark.system
def test_ctrl_c_stops_local_with_its_summary_and_130(tmp_path: Path) -> None:
    term = Terminal("local", "--state-dir", str(tmp_path), env={"S3SYNC_LOG_LEVEL": "WARNING"})
    try:
        assert term.wait_for(r"watch: +s3sync status --endpoint-url http://127\.0\.0\.1:\d+", 60), term.text[-2000:]
        sent = term.ctrl_c()
        assert term.wait(10) == 130, term.text[-3000:]
        assert time.monotonic() - sent < 3.0
        assert "interrupted: 0/0 done; 0 done, 0 failed, 0 unfinished" in term.text
        clean(term.text)
    finally:
        term.close()


@pytest.mark.system
def test_local_on_a_terminal_shows_one_live_view_and_keeps_the_logs_in_a_file(tmp_path: Path) -> None:
    objects = {"a/one.bin": os.urandom(7 * MiB + 3), "small.txt": b"small"}
    with RcloneS3Server() as src:
        s3 = s3_client(Endpoint("us-east-1", src.endpoint_url, src.access_key_id, src.secret_access_key))
        s3.create_bucket(Bucket="from-here")
        for key, data in objects.items():
            s3.put_object(Bucket="from-here", Key=key, Body=data)
        term = Terminal("local", "--until-idle", "--timeout", "180", "--source-bucket", "from-here",
                        "--source-endpoint-url", src.endpoint_url, "--source-access-key-id", src.access_key_id,
                        "--source-secret-access-key", src.secret_access_key, "--part-size-mib", "5",
                        "--state-dir", str(tmp_path), columns=150)
        try:
            assert term.wait(180) == 0, term.text[-3000:]
        finally:
            term.close()
    text = term.text
    # a line per object above the bar, the totals, where the logs are; no JSON log line or metric document on screen
    assert re.search(r"done +a/one\.bin \(7\.0 MiB, 2 part\(s\)\)", text), text[-3000:]
    assert re.search(r"done +small\.txt \(5 B, copied by the splitter\)", text), text[-3000:]
    assert re.search(r"\d+/2 objects", text) and "2 done, 0 failed, 0 unfinished" in text
    assert f"logs:       {tmp_path / 'runner.log'}" in text
    clean(text)
    assert '"_aws"' not in text and '{"ts"' not in text
    # ... they are in the state directory's runner.log: the runner's and the functions' lines, the metrics too
    records = [json.loads(line) for line in (tmp_path / "runner.log").read_text().splitlines()
               if line.startswith("{")]
    assert {"control plane ready", "planned", "done"} <= {r.get("msg") for r in records}
    assert any("_aws" in r for r in records)


def test_ctrl_c_at_a_question_exits_130_not_1() -> None:
    """Any command: Ctrl-C is 130 (click's own handling printed "Aborted!" and exited 1)."""
    term = Terminal("deploy", "--bucket", "code-bucket", env={"S3SYNC_DEST_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE"})
    try:
        assert term.wait_for(r"China secret access key: ", 30), term.text
        term.ctrl_c()
        assert term.wait(10) == 130, term.text
        assert "interrupted" in term.text and "Aborted!" not in term.text and "Traceback" not in term.text
    finally:
        term.close()


# --- --from DIR -------------------------------------------------------------------------------------------------------
@pytest.fixture
def awkward_dir(tmp_path: Path) -> Path:
    """A file, a name that is not UTF-8, a dangling link, a link to a file and a folder holding only a link to a
    folder."""
    root = tmp_path / "from"
    (root / "real").mkdir(parents=True)
    (root / "real" / "a.txt").write_bytes(b"a" * 1000)
    with open(os.path.join(os.fsencode(root), b"caf\xe9.txt"), "wb") as fh:  # Latin-1, not UTF-8
        fh.write(b"latin-1 name")
    (root / "dangling").symlink_to(root / "nowhere")
    (root / "link-to-file.txt").symlink_to(root / "real" / "a.txt")
    (root / "only-links").mkdir()
    (root / "only-links" / "dir-link").symlink_to(root / "real", target_is_directory=True)
    return root


def test_from_dir_states_its_rules_and_counts_what_it_skips(awkward_dir: Path) -> None:
    plain = samples_from_dir(awkward_dir)
    assert [s.key for s in plain.samples] == ["real/a.txt"]
    assert plain.skipped == {SKIP_LINK: 3, SKIP_NOT_UTF8: 1}
    followed = samples_from_dir(awkward_dir, follow_links=True)
    assert [s.key for s in followed.samples] == ["link-to-file.txt", "only-links/dir-link/a.txt", "real/a.txt"]
    assert followed.skipped == {SKIP_DANGLING: 1, SKIP_NOT_UTF8: 1}
    assert followed.skipped_text() == f"skipped 2 (1 {SKIP_DANGLING}; 1 {SKIP_NOT_UTF8})"


def test_from_dir_with_nothing_to_upload_says_why(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "x").write_text("x")
    only = tmp_path / "only"
    only.mkdir()
    (only / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    result = CliRunner().invoke(cli, ["demo", "--from", str(only)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"--from {only}: no files to upload: skipped 1 (1 {SKIP_LINK})" in result.output


@pytest.mark.system
def test_demo_from_a_dir_with_a_name_that_is_not_utf8_copies_the_rest(awkward_dir: Path) -> None:
    """The whole demo on such a folder (with -L): no traceback, the skipped entries reported, binary units only."""
    done = subprocess.run([S3SYNC, "demo", "--from", str(awkward_dir), "-L"], capture_output=True, text=True,
                          timeout=240, env={**os.environ, "COLUMNS": "100"}, stdin=subprocess.DEVNULL)  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "3/3 objects identical" in out and f"skipped 2 (1 {SKIP_DANGLING}; 1 {SKIP_NOT_UTF8})" in out
    # one short line per finished object above the bars (issue 17), the logs in the log file only
    finished = re.findall(r"^done +(\S.*) \(\d+ B, copied by the splitter\)$", out, re.M)
    assert sorted(finished) == ["link-to-file.txt", "only-links/dir-link/a.txt", "real/a.txt"], out[-3000:]
    assert re.search(r"^scaling +the worker service to \d+ task\(s\)$", out, re.M), out[-3000:]
    clean(out)
    assert not re.search(r"\d ?[kMG]B\b", out), out  # KiB, MiB: never kB or MB
    assert re.search(r"\d (B|KiB|MiB|GiB)/s", out), out


def test_the_sample_set_is_exactly_the_size_asked_for() -> None:
    for scale in (16, 24, 100, 256):
        assert sum(s.size for s in sample_set(scale)) == scale * MiB
