"""A userspace link emulator: a loopback TCP proxy that makes the way to a local S3 server look like the long, thin,
lossy cross-border path (global region -> China) that s3sync exists for.

    with RcloneS3Server() as s3, Link(s3.endpoint_url, PROFILES["cn-good"]) as link:
        client = boto3.client("s3", endpoint_url=link.endpoint_url, ...)   # same keys as for the server
        ...
        print(link.figures())   # bytes, connections, requests, stalls, parts sent (and sent again)

What it does, per connection and per direction (full duplex, like a TCP path):

- delay: every byte reaches the other side half a round trip (`rtt / 2`) after it was sent, and a new connection
  carries nothing for `handshake_rtts` round trips (TCP's handshake and TLS 1.3's: 2 by default; the local servers
  speak plain HTTP, S3 in China speaks HTTPS);
- per-connection cap: a connection moves at most `per_connection` bytes/s each way (what one TCP flow gets on a
  long, lossy path);
- aggregate cap: all connections together move at most `aggregate` bytes/s each way, shared first come, first
  served in chunks of at most 64 KiB (the path's, or the NAT gateway's, capacity);
- stalls: a request stalls with probability `stall_chance`: at a random byte of its body (at its end for a request
  without a body) its connection stops in both directions for `stall_seconds` (a lost packet's recovery on a long
  path: retransmission timeouts), then goes on;
- hangs: with probability `hang_chance` a request's connection goes silent for good, at the same random point (a
  black-holed flow); only the client's own timeout ends it.

Nothing is dropped or reordered: TCP repairs losses; the emulator shows what they cost (time). Backpressure is kept:
a connection that is paced or stalled stops reading, so the sender's socket fills and its `send` blocks, as it would
on the real path. (The sender's own socket buffer still takes up to a few MiB ahead of the link, as Linux's send
buffer auto-tuning allows on loopback; on the real path it holds about two bandwidth-delay products.)

The client -> server direction is read as HTTP/1.1 (request line, headers, Content-Length bodies) to count requests
by method and every part upload by (key, upload id, part number): how often each part crossed the link. A stream it
cannot frame (chunked bodies) is forwarded untouched and no longer counted.

Bounded and local, like `s3sync.local.faults.FaultProxy`: it binds 127.0.0.1 only, forwards only to a loopback
upstream, serves at most `max_connections` connections at a time, and runs on one asyncio loop in one thread. A
context manager: the listening socket, every connection and the thread end with it. No kernel netem needed (none is
available on these machines).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import socket
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from s3sync.local.faults import LOOPBACK, is_loopback

__all__ = ["Link", "LinkProcess", "LinkProfile", "PROFILES", "MB"]

MB = 1_000_000
MiB = 1024 * 1024
CHUNK = 64 * 1024
MAX_HEADER = 64 * 1024
SLACK = 0.05  # seconds of credit a paced connection keeps when it wakes late (timers on a busy machine)
HANG = float("inf")
CLOSE_GRACE = 30.0  # seconds one direction may go on after the other closed


@dataclass(frozen=True)
class LinkProfile:
    """What a path looks like. Bandwidths in bytes per second, each direction; times in seconds."""

    name: str = "loopback"
    rtt: float = 0.0
    per_connection: float | None = None  # one TCP flow's throughput on this path; None: no cap
    aggregate: float | None = None  # all flows together; None: no cap
    stall_chance: float = 0.0  # probability that a request stalls
    stall_seconds: float = 0.0  # how long its connection then stops
    hang_chance: float = 0.0  # probability that a request's connection goes silent for good
    handshake_rtts: float = 2.0  # round trips before a new connection carries data (TCP + TLS 1.3)
    scale: float = 1.0  # the bandwidths are this fraction of the path's (see `fitted`)

    def __post_init__(self) -> None:
        for name in ("rtt", "stall_seconds", "handshake_rtts"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("per_connection", "aggregate"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0 (None: no cap)")
        for name in ("stall_chance", "hang_chance"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within 0..1")

    def scaled(self, factor: float) -> LinkProfile:
        """The same path with every bandwidth multiplied by `factor`; delays, stalls and the number of flows it
        takes to fill the aggregate (aggregate / per_connection) unchanged."""
        if factor <= 0:
            raise ValueError("factor must be > 0")
        return replace(self, per_connection=None if self.per_connection is None else self.per_connection * factor,
                       aggregate=None if self.aggregate is None else self.aggregate * factor,
                       scale=self.scale * factor)

    def fitted(self, max_aggregate: float | None) -> LinkProfile:
        """Scaled down (never up) so that the aggregate is at most `max_aggregate` bytes/s: what a machine can carry
        through its local servers without its CPU becoming the bottleneck instead of the emulated link."""
        if max_aggregate is None or self.aggregate is None or self.aggregate <= max_aggregate:
            return self
        return self.scaled(max_aggregate / self.aggregate)

    @property
    def flows_to_fill(self) -> float:
        """Connections needed to reach the aggregate at the per-connection cap (inf when only one cap is set)."""
        if self.per_connection is None or self.aggregate is None:
            return float("inf")
        return self.aggregate / self.per_connection

    def describe(self) -> str:
        def rate(v: float | None) -> str:
            return "uncapped" if v is None else f"{v / MB:g} MB/s"

        text = (f"{self.name}: RTT {self.rtt * 1000:g} ms, {rate(self.per_connection)} per connection, "
                f"{rate(self.aggregate)} aggregate")
        if self.stall_chance:
            text += f", {self.stall_chance:.1%} of requests stall {self.stall_seconds:g} s"
        if self.hang_chance:
            text += f", {self.hang_chance:.2%} hang"
        if self.scale != 1.0:
            text += f" (bandwidths x{self.scale:.3g} of the path's)"
        return text

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


#: The paths benchmark B4 measures (figures of the path itself; `fitted` scales them to what a machine carries).
#: cn-good: a daytime global -> China path (issue 16: RTT 150 ms, 4 MB/s per flow, 200 MB/s in all).
#: cn-evening: the busy hours: longer RTT, a quarter of the per-flow rate, half the aggregate, and 1% of requests
#: stalling 5 s (retransmission timeouts on a long path).
PROFILES: dict[str, LinkProfile] = {
    "cn-good": LinkProfile("cn-good", rtt=0.150, per_connection=4 * MB, aggregate=200 * MB),
    "cn-evening": LinkProfile("cn-evening", rtt=0.250, per_connection=1 * MB, aggregate=100 * MB,
                              stall_chance=0.01, stall_seconds=5.0),
}


class _Pacer:
    """A rate as a virtual clock: `next` is when the bytes reserved so far have left. A waker that is late by up to
    SLACK keeps its credit, so timer jitter does not lower the rate; idle time beyond that earns nothing."""

    __slots__ = ("rate", "next")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.next = 0.0


def _schedule(pacers: list[_Pacer], size: int, now: float) -> float:
    """Reserve `size` bytes on every pacer (the connection's and the aggregate's); returns when they have left."""
    if not pacers:
        return now
    start = max(max(p.next, now - SLACK) for p in pacers)
    done = start
    for p in pacers:
        p.next = start + size / p.rate
        done = max(done, p.next)
    return done


class _RequestReader:
    """Frames the client's byte stream into HTTP/1.1 requests: yields, for each request, where its body starts and
    how long it is. Gives up (opaque) on what it cannot frame."""

    def __init__(self) -> None:
        self.pos = 0  # bytes of the stream seen
        self._head = bytearray()
        self._body_left = 0
        self.opaque = False

    def feed(self, data: bytes) -> list[tuple[int, str, str, int]]:
        """Requests whose headers end in `data`: (stream position where the body starts, method, target, body
        length)."""
        found: list[tuple[int, str, str, int]] = []
        i, n = 0, len(data)
        while i < n and not self.opaque:
            if self._body_left:
                take = min(self._body_left, n - i)
                self._body_left -= take
                i += take
                continue
            before = len(self._head)
            self._head += data[i:]
            end = self._head.find(b"\r\n\r\n", max(0, before - 3))
            if end < 0:
                if len(self._head) > MAX_HEADER:
                    self.opaque = True
                i = n
                break
            taken = end + 4 - before  # bytes of data[i:] that belong to this request's head
            parsed = self._parse(bytes(self._head[:end + 4]))
            self._head.clear()
            i += taken
            if parsed is None:
                self.opaque = True
                break
            method, target, length = parsed
            self._body_left = length
            found.append((self.pos + i, method, target, length))
        self.pos += n
        return found

    def _parse(self, head: bytes) -> tuple[str, str, int] | None:
        head = head.lstrip(b"\r\n")
        lines = head.split(b"\r\n")
        try:
            method, target, _version = lines[0].decode("latin-1").split(" ", 2)
        except ValueError:
            return None
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    return None
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                return None
        return method, target, length


def _part_of(method: str, target: str) -> tuple[str, str, int] | None:
    """(key path, upload id, part number) of an UploadPart request; None for anything else."""
    if method != "PUT" or "?" not in target:
        return None
    path, query = target.split("?", 1)
    q = parse_qs(query)
    if "partNumber" not in q or "uploadId" not in q:
        return None
    try:
        return unquote(path), q["uploadId"][0], int(q["partNumber"][0])
    except ValueError:
        return None


def _object_put(method: str, target: str) -> str | None:
    """The key path of a PutObject request (no sub-resource in the query but the SDKs' `x-id`); None otherwise."""
    if method != "PUT":
        return None
    path, _, query = target.partition("?")
    if set(parse_qs(query, keep_blank_values=True)) - {"x-id"}:
        return None
    return unquote(path)


class _Conn:
    """One client connection and its upstream connection: two directions, each read, paced and delivered late."""

    def __init__(self, link: Link, cid: int, client: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self.link, self.id = link, cid
        self.c_reader, self.c_writer = client
        self.u_reader: asyncio.StreamReader | None = None
        self.u_writer: asyncio.StreamWriter | None = None
        p = link.profile
        self.ready_at = link._now() + p.handshake_rtts * p.rtt
        self.stalled_until = 0.0
        self.pacers = {d: [_Pacer(p.per_connection)] if p.per_connection else [] for d in ("up", "down")}
        self.requests = _RequestReader()
        self.stall_at: list[tuple[int, float]] = []  # (stream position, seconds or HANG) pending in the up stream
        self.up_pos = 0  # bytes of the up stream passed on
        self.part_ends: list[tuple[int, tuple[str, str, int], float]] = []  # (end of body, part, headers seen at)

    async def run(self) -> None:
        link = self.link
        try:
            self.u_reader, self.u_writer = await asyncio.open_connection(link.upstream_host, link.upstream_port,
                                                                         limit=CHUNK)
        except OSError:
            link._note("upstream_errors")
            self._close()
            return
        tasks = [asyncio.ensure_future(self._direction("up", self.c_reader, self.u_writer)),
                 asyncio.ensure_future(self._direction("down", self.u_reader, self.c_writer))]
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            failed = any(t.exception() is not None for t in done)
            if pending and not failed and self.stalled_until != HANG:
                # one side closed (its end was passed on): give the other a while to finish its answer
                _, pending = await asyncio.wait(pending, timeout=CLOSE_GRACE)
            for t in pending:
                t.cancel()
            for result in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(result, Exception):
                    link._note(f"ended by {type(result).__name__}")
        except asyncio.CancelledError:
            for t in tasks:
                t.cancel()
            raise
        finally:
            self._close()

    def _close(self) -> None:
        for w in (self.c_writer, self.u_writer):
            if w is not None:
                try:
                    w.close()
                except Exception:  # noqa: BLE001 - already gone
                    pass

    async def _direction(self, d: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read from one side, pace, and hand each chunk to the delivery task, which writes it half a round trip
        later. Stops reading while paced, stalled or while the delay line is full (backpressure)."""
        link, loop = self.link, asyncio.get_running_loop()
        line: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        window = link.window
        state = {"queued": 0}
        room = asyncio.Event()
        room.set()
        deliver = asyncio.ensure_future(self._deliver(line, writer, state, room))
        try:
            while True:
                if not await self._through_stall(loop, reader):
                    return
                data = await reader.read(link.chunk)
                if not data:
                    break
                if d == "up":
                    self._look_at_requests(data)
                for piece, stall in self._split_at_stalls(d, data):
                    if not await self._through_stall(loop, reader):  # the other direction stalled meanwhile
                        return
                    now = loop.time()
                    if now < self.ready_at:
                        await asyncio.sleep(self.ready_at - now)
                        now = loop.time()
                    left = _schedule(self.pacers[d] + link._aggregate[d], len(piece), now)
                    if left > now:
                        await asyncio.sleep(left - now)
                    while state["queued"] >= window and not deliver.done():
                        room.clear()
                        await room.wait()
                    if deliver.done():
                        deliver.result()  # the receiving side went away: raise its error
                        return
                    state["queued"] += len(piece)
                    sent = max(left, now)  # the credit a late waker keeps is for the rate, not the delay
                    link._count_bytes(d, len(piece), sent)
                    line.put_nowait((sent + link.one_way, piece))
                    if d == "up":
                        self.up_pos += len(piece)
                        while self.part_ends and self.part_ends[0][0] <= self.up_pos:
                            _, part, seen = self.part_ends.pop(0)
                            link._part_sent(part, sent + link.one_way - seen)
                    if stall:
                        self._stall(loop, stall)
            line.put_nowait(None)
            await deliver
        finally:
            if not deliver.done():
                deliver.cancel()

    async def _through_stall(self, loop: asyncio.AbstractEventLoop, reader: asyncio.StreamReader) -> bool:
        """Wait out a stall; on a hung connection swallow what arrives until this side closes and say False."""
        while self.stalled_until != HANG and self.stalled_until > loop.time():
            await asyncio.sleep(self.stalled_until - loop.time())
        if self.stalled_until == HANG:
            while await reader.read(CHUNK):
                pass
            return False
        return True

    async def _deliver(self, line: asyncio.Queue[tuple[float, bytes] | None], writer: asyncio.StreamWriter,
                       state: dict[str, int], room: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                item = await line.get()
                if item is None:
                    if writer.can_write_eof():
                        try:
                            writer.write_eof()
                        except OSError:
                            pass
                    return
                at, data = item
                wait = at - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                state["queued"] -= len(data)
                room.set()
                await writer.drain()
        finally:
            room.set()  # a reader waiting for room learns that nothing will be delivered any more

    def _stall(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        if seconds == HANG:
            self.stalled_until = HANG
            self.link._note("hangs")
        else:
            self.stalled_until = max(self.stalled_until, loop.time() + seconds)
            self.link._note("stalls")

    def _look_at_requests(self, data: bytes) -> None:
        link = self.link
        was_opaque = self.requests.opaque
        for body_at, method, target, length in self.requests.feed(data):
            link._count_request(method, target)
            part = _part_of(method, target)
            if part is not None:
                self.part_ends.append((body_at + length, part, asyncio.get_running_loop().time()))
            seconds = link._draw_stall()
            if seconds:
                self.stall_at.append((body_at + (link._rng_int(length) if length else 0), seconds))
        if self.requests.opaque and not was_opaque:
            link._note("opaque_connections")

    def _split_at_stalls(self, d: str, data: bytes) -> list[tuple[bytes, float]]:
        """The chunk cut where a pending stall falls: [(piece, stall after it or 0)]."""
        if d != "up" or not self.stall_at:
            return [(data, 0.0)]
        end = self.requests.pos
        start = end - len(data)
        out: list[tuple[bytes, float]] = []
        cut = 0
        for at, seconds in sorted(self.stall_at):
            if at > end:
                break
            i = max(cut, at - start)
            out.append((data[cut:i], seconds))
            cut = i
        self.stall_at = [(at, s) for at, s in self.stall_at if at > end]
        out.append((data[cut:], 0.0))
        return [(piece, s) for piece, s in out if piece or s]


class Link:
    """A loopback TCP proxy in front of one loopback `upstream` (an S3 server's endpoint URL) that behaves like
    the path `profile` describes. `seed` makes the sequence of stall and hang decisions repeatable (the n-th
    request gets the n-th draw). Change `profile` only between runs (`set_profile`); `reset()` zeroes the counters.
    """

    def __init__(self, upstream: str, profile: LinkProfile = LinkProfile(), *, seed: int = 0, host: str = LOOPBACK,
                 port: int = 0, max_connections: int = 512, recv_buffer: int = 64 * 1024) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, got {upstream!r}")
        if not is_loopback(parts.hostname):
            raise ValueError(f"upstream {upstream!r} is not a loopback address: this link only serves tests")
        if not is_loopback(host):
            raise ValueError(f"the link binds loopback addresses only, not {host!r}")
        self.upstream = upstream.rstrip("/")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.host, self.port = host, port
        self.max_connections = max_connections
        self.recv_buffer = recv_buffer
        self.seed = seed
        self.endpoint_url = ""
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._conns: dict[int, asyncio.Task[None]] = {}
        self._next_id = 0
        self.set_profile(profile)
        self.reset()

    # --- settings and counters --------------------------------------------------------------------------------------
    def set_profile(self, profile: LinkProfile) -> None:
        """Use `profile` for connections opened from now on (and the aggregate cap at once)."""
        self.profile = profile
        self.one_way = profile.rtt / 2
        self._aggregate = {d: [_Pacer(profile.aggregate)] if profile.aggregate else [] for d in ("up", "down")}
        rate = min(r for r in (profile.per_connection, profile.aggregate, float("inf")) if r is not None)
        # the delay line holds what is in flight (rate x one-way delay), with room for timer jitter
        self.window = int(max(256 * 1024, 2 * rate * max(self.one_way, SLACK))) if rate != float("inf") \
            else 8 * MiB
        # smaller reads on thin connections keep their pacing smooth (one chunk ~ 50 ms of the connection's rate)
        per = profile.per_connection or profile.aggregate
        self.chunk = CHUNK if per is None else int(min(CHUNK, max(8 * 1024, per * SLACK)))
        self._rng = random.Random(self.seed)  # one draw per request: stall, hang or neither
        self._rng_at = random.Random(self.seed + 1)  # where in the request it strikes

    def reset(self) -> None:
        """Zero the counters (between benchmark runs)."""
        with self._lock:
            self.connections = 0
            self.open_connections = 0
            self.peak_connections = 0
            self.bytes = {"up": 0, "down": 0}
            self.first_byte: dict[str, float | None] = {"up": None, "down": None}
            self.last_byte: dict[str, float | None] = {"up": None, "down": None}
            self.requests: Counter[str] = Counter()
            self.parts: Counter[tuple[str, str, int]] = Counter()  # UploadPart requests per (key, upload, part)
            self.puts: Counter[str] = Counter()  # PutObject requests per key
            self.other: Counter[str] = Counter()  # stalls, hangs, refused, upstream_errors, opaque_connections
            # seconds from a part upload's headers reaching the link to its last byte reaching the server
            self.part_seconds: list[tuple[float, tuple[str, str, int]]] = []
            self.up_per_second: Counter[int] = Counter()  # bytes sent up in each second of the loop's clock

    def _now(self) -> float:
        return self._loop.time() if self._loop is not None else time.monotonic()

    def _note(self, what: str) -> None:
        with self._lock:
            self.other[what] += 1

    def _count_bytes(self, d: str, n: int, at: float) -> None:
        with self._lock:
            self.bytes[d] += n
            if self.first_byte[d] is None:
                self.first_byte[d] = at
            self.last_byte[d] = at
            if d == "up":
                self.up_per_second[int(time.time())] += n  # wall clock: comparable with logs

    def _count_request(self, method: str, target: str) -> None:
        part = _part_of(method, target)
        with self._lock:
            self.requests[method] += 1
            if part is not None:
                self.parts[part] += 1
            else:
                put = _object_put(method, target)
                if put is not None:
                    self.puts[put] += 1

    def _part_sent(self, part: tuple[str, str, int], seconds: float) -> None:
        with self._lock:
            self.part_seconds.append((seconds, part))

    def _draw_stall(self) -> float:
        p = self.profile
        with self._lock:
            roll = self._rng.random()
        if roll < p.hang_chance:
            return HANG
        if roll < p.hang_chance + p.stall_chance:
            return p.stall_seconds
        return 0.0

    def _rng_int(self, upper: int) -> int:
        with self._lock:
            return self._rng_at.randrange(upper)

    def part_copies(self) -> dict[str, Any]:
        """How many times each part (UploadPart) and each whole object (PutObject) crossed the link."""
        with self._lock:
            sends = list(self.parts.values()) + list(self.puts.values())
        return {
            "distinct": len(sends),
            "sent": sum(sends),
            "max_per_part": max(sends, default=0),
            "sent_twice": sum(1 for s in sends if s == 2),
            "sent_more_than_twice": sum(1 for s in sends if s > 2),
        }

    def figures(self) -> dict[str, Any]:
        """The counters as one plain dict, with the busy interval's rate each way (first to last byte)."""
        with self._lock:
            out: dict[str, Any] = {
                "profile": self.profile.describe(),
                "connections": self.connections,
                "peak_connections": self.peak_connections,
                "bytes": dict(self.bytes),
                "requests": dict(sorted(self.requests.items())),
                **{k: v for k, v in sorted(self.other.items()) if v},
            }
            for d in ("up", "down"):
                first, last = self.first_byte[d], self.last_byte[d]
                if first is not None and last is not None and last > first:
                    out[f"busy_mb_s_{d}"] = round(self.bytes[d] / (last - first) / MB, 2)
        out["part_copies"] = self.part_copies()
        with self._lock:
            took = sorted(self.part_seconds)
            seconds = sorted(self.up_per_second)
            if seconds:  # MB sent up in each second (of the wall clock) from the first to the last
                out["up_mb_per_second"] = [round(self.up_per_second.get(t, 0) / MB, 1)
                                           for t in range(seconds[0], seconds[-1] + 1)]
                out["up_first_second"] = seconds[0]
        if took:
            out["part_seconds"] = {"n": len(took), "min": round(took[0][0], 2),
                                   "median": round(took[len(took) // 2][0], 2),
                                   "p90": round(took[int(len(took) * 0.9)][0], 2), "max": round(took[-1][0], 2),
                                   "slowest": f"{took[-1][1][0]} part {took[-1][1][2]}"}
        return out

    # --- serving ----------------------------------------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            if self.open_connections >= self.max_connections:
                self.other["refused"] += 1
                refuse = True
            else:
                refuse = False
                self.connections += 1
                self.open_connections += 1
                self.peak_connections = max(self.peak_connections, self.open_connections)
                self._next_id += 1
                cid = self._next_id
        if refuse:
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._conns[cid] = task
        try:
            await _Conn(self, cid, (reader, writer)).run()
        except asyncio.CancelledError:
            pass
        except (OSError, ConnectionError):
            pass
        finally:
            self._conns.pop(cid, None)
            with self._lock:
                self.open_connections -= 1

    async def _start_server(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # a small receive buffer (inherited by accepted sockets): what the sender has written but the link has not
        # taken stays in the sender's socket, as on a real path, instead of piling up unseen in ours
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.recv_buffer)
        sock.bind((self.host, self.port))
        sock.listen(256)
        sock.setblocking(False)
        self._server = await asyncio.start_server(self._accept, sock=sock, limit=CHUNK)

    def start(self) -> Link:
        if self._loop is not None:
            return self
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=serve, name="link", daemon=True)
        self._thread.start()
        ready.wait(10)
        self._loop = loop
        asyncio.run_coroutine_threadsafe(self._start_server(), loop).result(10)
        assert self._server is not None
        self.port = int(self._server.sockets[0].getsockname()[1])
        self.endpoint_url = f"http://{self.host}:{self.port}"
        return self

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._conns.values()):
                task.cancel()
            await asyncio.sleep(0)

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=10)
                self._thread = None
            loop.close()
            self._server = None

    def __enter__(self) -> Link:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class LinkProcess:
    """The same link served by a child process of its own (`Link`'s interface, as far as a benchmark needs it).

    A benchmark's own process is busy (moto, the local runner, log tailing): a link in a thread there waits for the
    GIL at every step of its event loop, paces late and measures itself instead of the path (seen in B4: 55% of the
    aggregate reached in-process). Commands go over a pipe; the child ends with `stop()`, or when this process ends
    (the pipe closes).
    """

    def __init__(self, upstream: str, profile: LinkProfile = LinkProfile(), *, seed: int = 0,
                 host: str = LOOPBACK) -> None:
        Link(upstream, profile, seed=seed, host=host)  # validates the arguments (nothing is started)
        self.upstream, self.profile, self.seed, self.host = upstream, profile, seed, host
        self.port = 0
        self.endpoint_url = ""
        self._lock = threading.Lock()
        self._conn: Any = None
        self._proc: Any = None

    def _call(self, command: str, *args: Any) -> Any:
        with self._lock:
            self._conn.send((command, *args))
            ok, value = self._conn.recv()
        if not ok:
            raise RuntimeError(f"link process: {command}: {value}")
        return value

    def start(self) -> LinkProcess:
        if self._proc is not None:
            return self
        ctx = multiprocessing.get_context("spawn")  # never fork a process full of threads
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve_link, args=(child, self.upstream, self.profile, self.seed, self.host),
                                 name="link", daemon=True)
        self._proc.start()
        child.close()
        self.port = int(self._call("port"))
        self.endpoint_url = f"http://{self.host}:{self.port}"
        return self

    @property
    def pid(self) -> int | None:
        """The child's process id (for CPU accounting), None when not running."""
        return self._proc.pid if self._proc is not None else None

    def set_profile(self, profile: LinkProfile) -> None:
        self._call("set_profile", profile)
        self.profile = profile

    def reset(self) -> None:
        self._call("reset")

    def figures(self) -> dict[str, Any]:
        return dict(self._call("figures"))

    def part_copies(self) -> dict[str, Any]:
        return dict(self._call("part_copies"))

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            self._call("stop")
        except (OSError, EOFError, RuntimeError):
            pass
        proc.join(timeout=10)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)
        self._conn.close()

    def __enter__(self) -> LinkProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _serve_link(conn: Any, upstream: str, profile: LinkProfile, seed: int, host: str) -> None:
    """The child of LinkProcess: a Link, driven by commands from the pipe until "stop" or the pipe closes."""
    link = Link(upstream, profile, seed=seed, host=host).start()
    try:
        while True:
            try:
                command, *args = conn.recv()
            except (EOFError, OSError):
                return
            try:
                value: Any = None
                if command == "port":
                    value = link.port
                elif command == "figures":
                    value = link.figures()
                elif command == "part_copies":
                    value = link.part_copies()
                elif command == "reset":
                    link.reset()
                elif command == "set_profile":
                    link.set_profile(args[0])
                elif command != "stop":
                    raise ValueError(f"unknown command {command!r}")
                conn.send((True, value))
            except Exception as exc:  # noqa: BLE001 - reported to the caller
                conn.send((False, repr(exc)))
            if command == "stop":
                return
    finally:
        link.stop()
