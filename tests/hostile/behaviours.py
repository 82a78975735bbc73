"""Declarative misbehaviours for HostileServer: each function returns a Behaviour,
``(request, data) -> Reply``. A request "is ranged" when it carries one simple ``Range:
bytes=a-b``; unless said otherwise, an unranged GET gets the whole object with a true length.
"""

from __future__ import annotations

from hostile_server import (
    Behaviour,
    Reply,
    Request,
    Send,
    Silence,
    Trickle,
    chunked_body,
    head,
    partial,
    whole,
)

OCTETS = ("Content-Type", "application/octet-stream")
CLOSE = ("Connection", "close")


def honest() -> Behaviour:
    """A correct server: 206 for a range, 200 otherwise (the control case)."""

    def reply(req: Request, data: bytes) -> Reply:
        span = req.span(len(data))
        return partial(data, *span) if span else whole(data)

    return reply


def ignores_range() -> Behaviour:
    """Always a plain 200 of the whole object, with its true Content-Length."""
    return lambda req, data: whole(data)


def close_delimited() -> Behaviour:
    """HTTP/1.0 200, no Content-Length: the body ends when the connection closes."""

    def reply(req: Request, data: bytes) -> Reply:
        return Reply(200, [Send(head(200, [OCTETS], "HTTP/1.0")), Send(data, body=True)])

    return reply


def chunked(*, cut: str | None = None) -> Behaviour:
    """200 with Transfer-Encoding: chunked, Range ignored. ``cut="terminator"`` sends every data
    chunk but not the last (zero-size) chunk; ``cut="mid-body"`` also leaves out the last data
    chunk; then the connection closes."""

    def reply(req: Request, data: bytes) -> Reply:
        hdrs = [OCTETS, ("Transfer-Encoding", "chunked"), CLOSE]
        if cut == "mid-body":
            body = chunked_body(data[:len(data) // 2], last=False)
        else:
            body = chunked_body(data, last=cut is None)
        return Reply(200, [Send(head(200, hdrs)), Send(body, body=True)])

    return reply


def unknown_total() -> Behaviour:
    """A range gets ``206 Content-Range: bytes a-b/*`` (total not stated); a whole GET gets a
    chunked 200: the size is never stated."""
    plain = chunked()

    def reply(req: Request, data: bytes) -> Reply:
        span = req.span(len(data))
        if span is None:
            return plain(req, data)
        start, end = span
        return partial(data, start, end, content_range=f"bytes {start}-{end - 1}/*")

    return reply


BOUNDARY = "THIS_STRING_SEPARATES"


def multipart() -> Behaviour:
    """A range gets a 206 multipart/byteranges with one part (no top-level Content-Range, no
    Content-Length); a whole GET gets a chunked 200: the size is never stated at top level."""
    plain = chunked()

    def reply(req: Request, data: bytes) -> Reply:
        span = req.span(len(data))
        if span is None:
            return plain(req, data)
        start, end = span
        body = (f"--{BOUNDARY}\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Range: bytes {start}-{end - 1}/{len(data)}\r\n\r\n").encode()
        body += data[start:end] + f"\r\n--{BOUNDARY}--\r\n".encode()
        hdrs = [("Content-Type", f"multipart/byteranges; boundary={BOUNDARY}"), CLOSE]
        return Reply(206, [Send(head(206, hdrs)), Send(body, body=True)])

    return reply


def status_416(content_range: str | None) -> Behaviour:
    """Every ranged request gets 416 (with this Content-Range, or none); a whole GET gets the
    object."""

    def reply(req: Request, data: bytes) -> Reply:
        if req.range is None:
            return whole(data)
        hdrs = [("Content-Length", "0"), CLOSE]
        if content_range is not None:
            hdrs.insert(0, ("Content-Range", content_range))
        return Reply(416, [Send(head(416, hdrs))])

    return reply


def drops_mid_body(fraction: float = 0.5) -> Behaviour:
    """A plain 200 (Range ignored) with the true Content-Length that always closes the
    connection after ``fraction`` of the body."""

    def reply(req: Request, data: bytes) -> Reply:
        hdrs = [OCTETS, ("Content-Length", str(len(data))), CLOSE]
        return Reply(200, [Send(head(200, hdrs)), Send(data[:int(len(data) * fraction)],
                                                       body=True)])

    return reply


def _answer_head(req: Request, data: bytes) -> tuple[int, bytes, bytes]:
    """(status, head, body) of an honest answer, for the trickling behaviours."""
    span = req.span(len(data))
    if span is None:
        hdrs = [OCTETS, ("Content-Length", str(len(data))), CLOSE]
        return 200, head(200, hdrs), data
    start, end = span
    hdrs = [OCTETS, ("Content-Range", f"bytes {start}-{end - 1}/{len(data)}"),
            ("Content-Length", str(end - start)), CLOSE]
    return 206, head(206, hdrs), data[start:end]


def trickle_headers(interval: float = 1.0) -> Behaviour:
    """Honest answers whose status line and headers come one byte every ``interval`` s."""

    def reply(req: Request, data: bytes) -> Reply:
        status, hd, body = _answer_head(req, data)
        return Reply(status, [Trickle(hd, interval), Send(body, body=True)])

    return reply


def trickle_body(interval: float = 1.0) -> Behaviour:
    """Honest headers at once, then the body one byte every ``interval`` s."""

    def reply(req: Request, data: bytes) -> Reply:
        status, hd, body = _answer_head(req, data)
        return Reply(status, [Send(hd), Trickle(body, interval, body=True)])

    return reply


def silent_after(n: int) -> Behaviour:
    """Honest headers and the first ``n`` body bytes, then silence with the connection open."""

    def reply(req: Request, data: bytes) -> Reply:
        status, hd, body = _answer_head(req, data)
        return Reply(status, [Send(hd), Send(body[:n], body=True), Silence()])

    return reply


def huge_header(nbytes: int = 1 << 20) -> Behaviour:
    """Honest answers (206 for a range) carrying one ``nbytes``-long header."""

    def reply(req: Request, data: bytes) -> Reply:
        pad = [("X-Padding", "a" * nbytes)]
        span = req.span(len(data))
        return partial(data, *span, extra=pad) if span else whole(data, extra=pad)

    return reply


def lying_content_range(shift: int) -> Behaviour:
    """A range a-b gets a 206 for the bytes ``shift`` further on (Content-Range saying so,
    honestly about its body, not about what was asked); a whole GET gets the object."""

    def reply(req: Request, data: bytes) -> Reply:
        span = req.span(len(data))
        if span is None:
            return whole(data)
        start, end = span
        start = min(max(start + shift, 0), len(data) - 1)
        end = min(max(end + shift, start + 1), len(data))
        return partial(data, start, end)

    return reply


def wrong_content_length(delta: int) -> Behaviour:
    """Honest status and Content-Range, but Content-Length off by ``delta`` from the body sent
    (the whole body is sent, then the connection closes)."""

    def reply(req: Request, data: bytes) -> Reply:
        span = req.span(len(data))
        if span is None:
            return whole(data, length=len(data) + delta)
        start, end = span
        return partial(data, start, end, length=end - start + delta)

    return reply


def fixed_status(status: int, body: bytes, content_type: str = "application/xml") -> Behaviour:
    """Every request gets this status and body (e.g. a 403 saying the URL has expired)."""

    def reply(req: Request, data: bytes) -> Reply:
        hdrs = [("Content-Type", content_type), ("Content-Length", str(len(body))), CLOSE]
        return Reply(status, [Send(head(status, hdrs)), Send(body)])

    return reply
