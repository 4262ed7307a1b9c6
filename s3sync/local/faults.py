"""A fault-injecting HTTP proxy to put in front of a local S3 server (moto, `rclone serve s3`).

    with RcloneS3Server() as s3, FaultProxy(s3.endpoint_url, fault_rate=0.2, seed=7) as proxy:
        client = boto3.client("s3", endpoint_url=proxy.endpoint_url, ...)   # same keys as for the server
        ...
        print(proxy.figures())   # requests, faults by kind, retries seen

What it does to a request, decided by a seeded random draw (`fault_rate`, then one of `kinds`):

- "slowdown": 503 with S3's `SlowDown` XML error body (what S3 answers when throttling);
- "internal": 500 with S3's `InternalError` XML error body;
- "reset": the connection is reset (TCP RST) before the request reaches the server;
- "reset_mid_body": the request is forwarded, the server acts on it, and the connection is reset after the status
  line, the headers and half of the response body. For a response without a body (UploadPart, HEAD, DELETE, ...)
  this is "the server did it but the answer was lost": counted as "reset_after_upstream".

Anything else is forwarded verbatim (method, path, query, headers including Host, body): SigV4 signatures stay valid
because the client signed for the proxy's host, which the server sees in the Host header. botocore's retries (503,
500 and connection errors are retried in its standard mode) show up here as the same request coming again: the proxy
counts them (`retries_seen`). A streamed body cut short (GetObject) is not retried by botocore: the caller sees it.

`bandwidth` (bytes per second per response, optional) slows every response body down, to make a part take long
enough to be interrupted (e.g. killing a worker mid-part).

Bounded and local by construction: it binds 127.0.0.1 only, forwards only to a loopback upstream, serves at most
`max_connections` client connections at a time, refuses request bodies over `max_body` bytes (413), and every socket
has a timeout. A context manager: the listening socket and every handler thread end with it.
"""

from __future__ import annotations

import http.client
import ipaddress
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

__all__ = ["FAULT_KINDS", "FaultProxy"]

FAULT_KINDS: tuple[str, ...] = ("slowdown", "internal", "reset", "reset_mid_body")

LOOPBACK = "127.0.0.1"
CHUNK = 64 * 1024
# Headers that belong to one hop (RFC 9110 7.6.1), plus Expect: the proxy answers 100-continue itself and sends the
# body at once (botocore never signs Expect).
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
               "expect"}

_ERROR_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Error><Code>{code}</Code><Message>{message}</Message><Resource>{resource}</Resource>"
    "<RequestId>{request_id}</RequestId><HostId>s3sync-fault-proxy</HostId></Error>"
)
_ERRORS = {
    "slowdown": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
    "internal": (500, "Internal Server Error", "InternalError",
                 "We encountered an internal error. Please try again."),
}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self._slots = threading.BoundedSemaphore(proxy.max_connections)
        super().__init__((proxy.host, proxy.port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Bounded: at most max_connections handler threads; a client beyond that waits in the accept queue.
        while not self._slots.acquire(timeout=0.5):
            if self.proxy._closing.is_set():
                self.shutdown_request(request)
                return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects
    server: _Server

    def setup(self) -> None:
        # idle keep-alive connections and slow clients end; socketserver reads self.timeout, so a value per
        # instance works (typeshed declares it a ClassVar)
        self.timeout = self.server.proxy.timeout  # type: ignore[misc]
        super().setup()
        self._upstream: http.client.HTTPConnection | None = None

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if self._upstream is not None:
                self._upstream.close()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: the counters tell the story
        pass

    # every method S3 uses goes through one path
    def do_GET(self) -> None:  # noqa: N802
        self._serve()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_OPTIONS = do_PATCH = do_GET  # noqa: N815

    # --- one request ------------------------------------------------------------------------------------------------
    def _serve(self) -> None:
        proxy = self.server.proxy
        try:
            body = self._read_body()
        except _TooLarge as exc:
            proxy._note("too_large")
            self._plain_error(413, f"request body over {exc.limit} bytes")
            self.close_connection = True
            return
        # a retry is the same method on the same target (and the same byte range: parts of one object differ by it)
        kind = proxy._draw(self.command, f"{self.path} {self.headers.get('Range', '')}")
        if kind in _ERRORS:
            self._s3_error(kind)
        elif kind == "reset":
            self._reset()
        else:
            self._forward(body, cut=kind == "reset_mid_body")

    def _read_body(self) -> bytes:
        limit = self.server.proxy.max_body
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(out)
                if len(out) + size > limit:
                    raise _TooLarge(limit)
                out += self.rfile.read(size)
                self.rfile.readline(16)
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit:
            raise _TooLarge(limit)
        return self.rfile.read(length) if length else b""

    def _s3_error(self, kind: str) -> None:
        status, reason, code, message = _ERRORS[kind]
        request_id = f"FAULT{self.server.proxy.requests:012d}"
        payload = _ERROR_XML.format(code=code, message=message, resource=self.path.split("?")[0],
                                    request_id=request_id).encode()
        self.send_response_only(status, reason)
        self.send_header("Content-Type", "application/xml")
        self.send_header("x-amz-request-id", request_id)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        self.wfile.flush()

    def _plain_error(self, status: int, text: str) -> None:
        payload = text.encode()
        self.send_response_only(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()

    def _reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0), as a crashing server or a middlebox would."""
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close_connection = True
        try:
            self.connection.close()
        except OSError:
            pass

    def _upstream_conn(self) -> http.client.HTTPConnection:
        proxy = self.server.proxy
        if self._upstream is None:
            self._upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port,
                                                        timeout=proxy.timeout)
        return self._upstream

    def _send_upstream(self, body: bytes) -> http.client.HTTPResponse:
        for attempt in (1, 2):  # a kept-alive upstream connection may have been closed by the server meanwhile
            conn = self._upstream_conn()
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        conn.putheader(name, value)
                if body or self.command in ("PUT", "POST", "PATCH"):
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body or None)
                return conn.getresponse()
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
                conn.close()
                self._upstream = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _forward(self, body: bytes, *, cut: bool) -> None:
        proxy = self.server.proxy
        try:
            resp = self._send_upstream(body)
            payload_iter = self._body_chunks(resp)
            headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP]
            bodiless = self.command == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
            if resp.getheader("Content-Length") is None and not bodiless:
                # chunked, or delimited by the upstream closing: re-sent with a length (bounded by max_body)
                data = b"".join(payload_iter)
                headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
                headers.append(("Content-Length", str(len(data))))
                payload_iter = iter([data])
            length = int(dict((k.lower(), v) for k, v in headers).get("content-length") or 0)
        except (OSError, http.client.HTTPException) as exc:
            if self._upstream is not None:
                self._upstream.close()
                self._upstream = None
            proxy._note("upstream_errors")
            self._plain_error(502, f"upstream {proxy.upstream}: {type(exc).__name__}")
            self.close_connection = True
            return
        has_body = not bodiless and length > 1
        if cut and not has_body:
            for _ in payload_iter:
                pass
            proxy._relabel("reset_mid_body", "reset_after_upstream")
            self._reset()
            return
        self.send_response_only(resp.status, resp.reason)
        for k, v in headers:
            self.send_header(k, v)
        if resp.getheader("Connection", "").lower() == "close":
            self.close_connection = True
        self.end_headers()
        budget = length // 2 if cut else None
        sent = 0
        started = time.monotonic()
        try:
            for chunk in payload_iter:
                if budget is not None and sent + len(chunk) >= budget:
                    self.wfile.write(chunk[: budget - sent])
                    self.wfile.flush()
                    for _ in payload_iter:  # drain upstream so its connection stays usable
                        pass
                    self._reset()
                    return
                self.wfile.write(chunk)
                sent += len(chunk)
                self._throttle(sent, started)
            self.wfile.flush()
        except OSError:  # the client went away
            self.close_connection = True

    def _body_chunks(self, resp: http.client.HTTPResponse) -> Any:
        limit = self.server.proxy.max_body
        total = 0
        while True:
            chunk = resp.read(CHUNK)  # b"" for HEAD and 204/304, which also frees the connection for the next request
            if not chunk:
                resp.close()
                return
            total += len(chunk)
            if total > limit:
                raise http.client.HTTPException(f"upstream response over {limit} bytes")
            yield chunk

    def _throttle(self, sent: int, started: float) -> None:
        bandwidth = self.server.proxy.bandwidth
        if bandwidth:
            ahead = sent / bandwidth - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(min(ahead, 5.0))


class _TooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


class FaultProxy:
    """A threaded HTTP proxy on 127.0.0.1 in front of one loopback `upstream` (e.g. an S3 server's endpoint URL).

    `fault_rate` is the probability that a request gets a fault, `kinds` the faults to choose from (uniformly), and
    `seed` makes the sequence of decisions repeatable (the n-th request gets the n-th draw). `only(method, path)`,
    if given, limits faults to the requests it accepts (path includes the query, e.g. "/b/k?uploadId=..."); at most
    `max_faults` are injected. Change `fault_rate` while it runs (e.g. 0 to read results back undisturbed).
    Counters: `requests`, `forwarded`, `faults` (a Counter by kind), `retries_seen` (requests identical in method,
    target and byte range to one that got a fault before), and `by_method`.
    """

    def __init__(
        self,
        upstream: str,
        *,
        fault_rate: float = 0.0,
        kinds: tuple[str, ...] | list[str] = FAULT_KINDS,
        seed: int = 0,
        bandwidth: int | None = None,
        host: str = LOOPBACK,
        port: int = 0,
        max_connections: int = 64,
        max_body: int = 256 * 1024 * 1024,
        timeout: float = 60.0,
        max_faults: int | None = None,
        only: Callable[[str, str], bool] | None = None,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, got {upstream!r}")
        if not is_loopback(parts.hostname):
            raise ValueError(f"upstream {upstream!r} is not a loopback address: this proxy only serves tests")
        if not is_loopback(host):
            raise ValueError(f"the proxy binds loopback addresses only, not {host!r}")
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown or not kinds:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; choose from {FAULT_KINDS}")
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError("fault_rate must be within 0..1")
        self.upstream = upstream.rstrip("/")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.fault_rate = fault_rate
        self.kinds = tuple(kinds)
        self.seed = seed
        self.bandwidth = bandwidth
        self.host = host
        self.port = port
        self.max_connections = max_connections
        self.max_body = max_body
        self.timeout = timeout
        self.max_faults = max_faults
        self.only = only
        self.endpoint_url = ""
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._faulted: set[tuple[str, str]] = set()
        self.requests = 0
        self.forwarded = 0
        self.retries_seen = 0
        self.faults: Counter[str] = Counter()
        self.by_method: Counter[str] = Counter()
        self.other: Counter[str] = Counter()  # upstream_errors, ...

    # --- decisions and counters (called from handler threads) ------------------------------------------------------
    def _count(self, method: str, target: str, kind: str | None) -> None:
        with self._lock:
            self.requests += 1
            self.by_method[method] += 1
            ident = (method, target)
            if ident in self._faulted:
                self.retries_seen += 1
            if kind:
                self.faults[kind] += 1
                self._faulted.add(ident)
            else:
                self.forwarded += 1

    def _draw(self, method: str, target: str) -> str | None:
        with self._lock:
            roll = self._rng.random()
            choice = self._rng.choice(self.kinds)
            capped = self.max_faults is not None and sum(self.faults.values()) >= self.max_faults
        eligible = self.only is None or self.only(method, target.split(" ", 1)[0])
        kind = choice if roll < self.fault_rate and eligible and not capped else None
        self._count(method, target, kind)
        if kind == "reset_mid_body":
            with self._lock:
                self.forwarded += 1  # it did reach the server
        return kind

    def _relabel(self, old: str, new: str) -> None:
        with self._lock:
            self.faults[old] -= 1
            self.faults[new] += 1

    def _note(self, what: str) -> None:
        with self._lock:
            self.other[what] += 1

    @property
    def faults_injected(self) -> int:
        with self._lock:
            return sum(self.faults.values())

    def figures(self) -> dict[str, Any]:
        """The counters as one plain dict (for test output and the reliability table of docs/testing.md)."""
        with self._lock:
            return {
                "requests": self.requests,
                "forwarded": self.forwarded,
                "faults": sum(self.faults.values()),
                "by_kind": {k: v for k, v in sorted(self.faults.items()) if v},
                "retries_seen": self.retries_seen,
                "by_method": dict(sorted(self.by_method.items())),
                **{k: v for k, v in self.other.items() if v},
            }

    # --- lifecycle --------------------------------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        if self._server is not None:
            return self
        self._closing.clear()
        self._server = _Server(self)
        self.port = int(self._server.server_address[1])
        self.endpoint_url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"fault-proxy-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._closing.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
