"""A raw-socket HTTP server that breaks HTTP the way real servers do, for black-box pull tests.

Not aiohttp's server: every byte on the wire is written here, so a response can be chunked and
cut before its last chunk, close-delimited (HTTP/1.0, no Content-Length), trickled, silent,
lying about its Content-Range or Content-Length, or carry a 1 MB header.

One *behaviour* per server: a function ``(request, data) -> Reply`` that turns each request into
a list of wire steps (send bytes, trickle bytes, fall silent). The server runs the steps on the
connection's own thread, then closes the connection (every reply says ``Connection: close`` or
is HTTP/1.0, so the client never reuses a socket). Every request is recorded with its method,
Range header, arrival time, status and how many body bytes the kernel accepted for it, so a test
can assert e.g. "exactly one GET delivered the body".

Every wait is bounded: a silent reply waits at most until the server stops, and ``stop()``
(called by the fixture at teardown) closes the listening socket and every open connection, then
joins every thread with a timeout.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

HEADER_LIMIT = 64 * 1024  # a request head larger than this is dropped
BLOCK = 64 * 1024  # body bytes per send: the granularity of `Request.body_sent`


@dataclass
class Request:
    """One request as the server saw it (header names lower-cased)."""

    method: str
    target: str
    version: str
    headers: dict[str, str]
    at: float  # time.monotonic() when its head had arrived
    status: int | None = None
    body_sent: int = 0  # body bytes the kernel accepted before the reply ended or broke
    finished: bool = False  # every step of the reply went out

    @property
    def range(self) -> str | None:
        return self.headers.get("range")

    def span(self, size: int) -> tuple[int, int] | None:
        """The single range ``bytes=a-b`` asked, as [start, end) clipped to ``size``; None when
        no Range header or not one simple range."""
        return parse_range(self.range, size)


# ---- wire steps -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Send:
    """Send bytes at once; ``body`` counts them into Request.body_sent."""

    data: bytes
    body: bool = False


@dataclass(frozen=True)
class Trickle:
    """Send bytes ``per_step`` at a time, one step every ``interval`` seconds."""

    data: bytes
    interval: float = 1.0
    per_step: int = 1
    body: bool = False


@dataclass(frozen=True)
class Silence:
    """Send nothing more, keeping the connection open, until the server stops (or ``seconds``)."""

    seconds: float | None = None


Step = Send | Trickle | Silence


@dataclass(frozen=True)
class Reply:
    status: int
    steps: list[Step]


Behaviour = Callable[[Request, bytes], Reply]


# ---- helpers for behaviours -------------------------------------------------------------------

_REASONS = {200: "OK", 206: "Partial Content", 404: "Not Found",
            416: "Range Not Satisfiable", 500: "Internal Server Error"}


def head(status: int, headers: list[tuple[str, str]], version: str = "HTTP/1.1") -> bytes:
    lines = [f"{version} {status} {_REASONS.get(status, 'Whatever')}"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` as [start, end) within ``size``; None for no
    header, several ranges, or an unsatisfiable one."""
    if not value:
        return None
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", value)
    if not m or (not m.group(1) and not m.group(2)):
        return None
    if not m.group(1):
        n = int(m.group(2))
        return (max(size - n, 0), size) if n else None
    start = int(m.group(1))
    end = min(int(m.group(2)) + 1, size) if m.group(2) else size
    if start >= size or end <= start:
        return None
    return start, end


def whole(data: bytes, *, version: str = "HTTP/1.1", length: int | None = None,
          extra: list[tuple[str, str]] | None = None) -> Reply:
    """A plain 200 of the whole object (Content-Length ``length``, default the true size)."""
    hdrs = [("Content-Type", "application/octet-stream"),
            ("Content-Length", str(len(data) if length is None else length)),
            ("Connection", "close"), *(extra or [])]
    return Reply(200, [Send(head(200, hdrs, version)), Send(data, body=True)])


def partial(data: bytes, start: int, end: int, *, content_range: str | None = None,
            length: int | None = None, extra: list[tuple[str, str]] | None = None) -> Reply:
    """A 206 of [start, end) (headers may lie through ``content_range``/``length``)."""
    body = data[start:end]
    cr = content_range if content_range is not None else f"bytes {start}-{end - 1}/{len(data)}"
    hdrs = [("Content-Type", "application/octet-stream"), ("Content-Range", cr),
            ("Content-Length", str(len(body) if length is None else length)),
            ("Connection", "close"), *(extra or [])]
    return Reply(206, [Send(head(206, hdrs)), Send(body, body=True)])


def chunked_body(data: bytes, chunk: int = 256 * 1024, *, last: bool = True) -> bytes:
    out = bytearray()
    for i in range(0, len(data), chunk):
        piece = data[i:i + chunk]
        out += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    if last:
        out += b"0\r\n\r\n"
    return bytes(out)


# ---- the server -------------------------------------------------------------------------------

@dataclass
class HostileServer:
    """Serve ``data`` at every path with ``behaviour`` on 127.0.0.1 (a free port) from threads.

    ``with HostileServer(data, behaviour) as srv: srv.url("x.bin")``; ``srv.requests`` lists what
    arrived. ``sndbuf`` shrinks each accepted socket's send buffer so that ``body_sent`` of a
    request the client abandoned stays close to what the client really read.
    """

    data: bytes
    behaviour: Behaviour
    sndbuf: int | None = 64 * 1024
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self._accepter = threading.Thread(target=self._accept_loop, name="hostile-accept",
                                          daemon=True)

    # -- lifecycle --
    def __enter__(self) -> HostileServer:
        self._accepter.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Close everything and join every thread (bounded)."""
        self._stop.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept() on Linux
        except OSError:
            pass
        self._sock.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._accepter.join(timeout=5)
        for t in list(self._threads):
            t.join(timeout=5)

    def url(self, name: str = "model.bin") -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    # -- what was seen --
    def gets(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.method == "GET"]

    def body_fetches(self, threshold: int) -> list[Request]:
        """GETs that delivered more than ``threshold`` body bytes (more than sockets buffer
        while a client reads nothing)."""
        return [r for r in self.gets() if r.body_sent > threshold]

    def total_body_sent(self) -> int:
        with self._lock:
            return sum(r.body_sent for r in self.requests)

    # -- internals --
    def _accept_loop(self) -> None:
        self._sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.sndbuf:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.sndbuf)
            with self._lock:
                self._conns.add(conn)
            t = threading.Thread(target=self._serve, args=(conn,), name="hostile-conn",
                                 daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            req = self._read_head(conn)
            if req is None:
                return
            with self._lock:
                self.requests.append(req)
            reply = self.behaviour(req, self.data)
            req.status = reply.status
            for step in reply.steps:
                if not self._run(conn, req, step):
                    return
            req.finished = True
        except OSError:
            pass  # the client went away: that is its right
        finally:
            with self._lock:
                self._conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    def _read_head(self, conn: socket.socket) -> Request | None:
        conn.settimeout(10)
        buf = b""
        while b"\r\n\r\n" not in buf:
            if self._stop.is_set() or len(buf) > HEADER_LIMIT:
                return None
            try:
                got = conn.recv(4096)
            except (TimeoutError, OSError):
                return None
            if not got:
                return None
            buf += got
        head_text = buf.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        first, *lines = head_text.split("\r\n")
        parts = first.split(" ")
        if len(parts) != 3:
            return None
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        conn.settimeout(30)  # a send to a client that stopped reading ends within this
        return Request(parts[0], parts[1], parts[2], headers, time.monotonic())

    def _run(self, conn: socket.socket, req: Request, step: Step) -> bool:
        """Carry out one step; False when the connection is over (client gone or stopping)."""
        if isinstance(step, Silence):
            self._stop.wait(step.seconds)
            return not self._stop.is_set()
        if isinstance(step, Send):
            view = memoryview(step.data)
            for i in range(0, len(view), BLOCK):
                if self._stop.is_set():
                    return False
                conn.sendall(view[i:i + BLOCK])
                if step.body:
                    req.body_sent += len(view[i:i + BLOCK])
            return True
        for i in range(0, len(step.data), step.per_step):
            if self._stop.wait(step.interval if i else 0):
                return False
            piece = step.data[i:i + step.per_step]
            conn.sendall(piece)
            if step.body:
                req.body_sent += len(piece)
        return True
