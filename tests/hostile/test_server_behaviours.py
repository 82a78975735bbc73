"""The hostile server does what each behaviour claims, read with the stdlib's http.client (not
the product's code): otherwise a pull test could pass against a server that never misbehaved.
In-process and fast."""

from __future__ import annotations

import http.client
import socket
import time

import behaviours as b
import pytest
from hostile_run import data_of

pytestmark = pytest.mark.hostile

DATA = data_of(300_000, 51)


_conns: list[http.client.HTTPConnection] = []


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while _conns:
        _conns.pop().close()


def _get(srv, rng: str | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    _conns.append(conn)
    conn.request("GET", "/x.bin", headers={"Range": rng} if rng else {})
    return conn.getresponse()


def test_honest_and_ignoring_range(serve):
    honest = serve(DATA, b.honest())
    resp = _get(honest, "bytes=10-19")
    assert (resp.status, resp.getheader("Content-Range"), resp.read()) == (
        206, f"bytes 10-19/{len(DATA)}", DATA[10:20])
    ignoring = serve(DATA, b.ignores_range())
    resp = _get(ignoring, "bytes=10-19")
    assert (resp.status, resp.read()) == (200, DATA)
    assert [(r.method, r.range, r.status, r.body_sent) for r in ignoring.requests] == [
        ("GET", "bytes=10-19", 200, len(DATA))]


def test_size_never_stated(serve):
    resp = _get(serve(DATA, b.close_delimited()))
    assert resp.version == 10
    assert resp.getheader("Content-Length") is None
    assert resp.read() == DATA
    resp = _get(serve(DATA, b.chunked()))
    assert resp.getheader("Transfer-Encoding") == "chunked"
    assert resp.read() == DATA
    resp = _get(serve(DATA, b.unknown_total()), "bytes=0-9")
    assert (resp.status, resp.getheader("Content-Range"), resp.read()) == (
        206, "bytes 0-9/*", DATA[:10])
    resp = _get(serve(DATA, b.multipart()), "bytes=5-9")
    body = resp.read()
    assert resp.status == 206
    assert resp.getheader("Content-Type").startswith("multipart/byteranges")
    assert resp.getheader("Content-Range") is None
    assert DATA[5:10] in body


@pytest.mark.parametrize("cut", ["terminator", "mid-body"])
def test_a_cut_chunked_body_is_incomplete(serve, cut):
    resp = _get(serve(DATA, b.chunked(cut=cut)))
    with pytest.raises(http.client.IncompleteRead):
        resp.read()


def test_416_and_drops(serve):
    resp = _get(serve(DATA, b.status_416("bytes */1000000")), "bytes=0-0")
    assert (resp.status, resp.getheader("Content-Range")) == (416, "bytes */1000000")
    resp = _get(serve(DATA, b.status_416(None)), "bytes=0-0")
    assert (resp.status, resp.getheader("Content-Range")) == (416, None)
    resp = _get(serve(DATA, b.drops_mid_body(0.5)))
    with pytest.raises(http.client.IncompleteRead) as cut:
        resp.read()
    assert len(cut.value.partial) == len(DATA) // 2


def test_lies(serve):
    resp = _get(serve(DATA, b.lying_content_range(100)), "bytes=0-9")
    assert (resp.getheader("Content-Range"), resp.read()) == (
        f"bytes 100-109/{len(DATA)}", DATA[100:110])
    resp = _get(serve(DATA, b.wrong_content_length(+5)), "bytes=0-9")
    with pytest.raises(http.client.IncompleteRead):
        resp.read()
    resp = _get(serve(DATA, b.wrong_content_length(-5)), "bytes=0-9")
    assert resp.read() == DATA[:5]
    with pytest.raises(http.client.LineTooLong):  # http.client's own limit is 64 KiB
        _get(serve(DATA, b.huge_header(1 << 20)), "bytes=0-9")


def test_trickle_and_silence(serve):
    srv = serve(DATA, b.trickle_headers(0.01))
    t0 = time.monotonic()
    resp = _get(srv, "bytes=0-9")
    assert time.monotonic() - t0 > 1  # about 140 header bytes at 100 per second
    assert resp.read() == DATA[:10]
    srv = serve(DATA, b.silent_after(100))
    resp = _get(srv, "bytes=0-999")
    assert resp.read(100) == DATA[:100]
    resp.fp.raw._sock.settimeout(0.5)  # type: ignore[attr-defined]
    with pytest.raises(socket.timeout):
        resp.read(1)


def test_stop_ends_silent_connections(serve):
    srv = serve(DATA, b.silent_after(10))
    resp = _get(srv, "bytes=0-999")
    assert resp.read(10) == DATA[:10]
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 2
    with pytest.raises(http.client.IncompleteRead):  # the server closed it
        resp.read()


def test_an_abandoned_answer_counts_few_body_bytes(serve):
    """What test_ignores_range counts on: a client that reads the headers and hangs up leaves
    body_sent far below 4 MiB of a 32 MiB body."""
    srv = serve(bytes(32 << 20), b.ignores_range())
    resp = _get(srv)
    assert resp.read(10) == bytes(10)
    resp.close()
    _conns.pop().close()
    deadline = time.monotonic() + 10
    seen = -1
    while srv.requests[0].body_sent != seen and time.monotonic() < deadline:
        seen = srv.requests[0].body_sent
        time.sleep(0.3)
    assert not srv.requests[0].finished
    assert 0 < srv.requests[0].body_sent < 4 << 20, srv.requests[0].body_sent
