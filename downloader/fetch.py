"""One HTTP request for one byte range of one object, written through a fenced sink.

The only module that touches aiohttp's request/response types (with ``session.py``'s session
setup); every aiohttp and socket error is translated here into ``errors.NetworkError``, whose
message carries no URL query string. ``byte_source.HttpByteSource`` wraps ``fetch_range``.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from weightlift.downloader.errors import (
    Abandon,
    LazyRedactedUrl,
    NetworkError,
    Rejected,
    StatusError,
    TransferFailed,
    redact_url,
)
from weightlift.downloader.failpoints import failpoint
from weightlift.downloader.response_check import (
    Asked,
    Decision,
    Probed,
    Verdict,
    decide,
    judge_probe,
)
from weightlift.downloader.sink import Answer, Sink
from weightlift.downloader.throughput import SpeedFloor

__all__ = ["Abandon", "Answer", "NetworkError", "Pace", "Rejected", "StatusError", "Throttle",
           "env_proxy", "fetch_range", "probe"]

log = logging.getLogger(__name__)

ERROR_BODY_LIMIT = 64 * 1024


@dataclass(frozen=True)
class Pace:
    """The time limits of one request (see ``EngineConfig``)."""

    header_timeout: float = 30.0  # for the status line and all headers, however trickled
    min_speed: float = 0.0  # bytes/s a body must keep over ``min_speed_window`` (0: off)
    min_speed_window: float = 30.0
    read_size: int = 1 << 20


# Awaited per block received when a rate cap is set (the shared token bucket).
Throttle = Callable[[int], Awaitable[None]]


async def fetch_range(session: aiohttp.ClientSession, url: str, asked: Asked, sink: Sink,
                      pace: Pace = Pace(), throttle: Throttle | None = None) -> Answer:
    """GET bytes [asked.start, asked.end) and write them through ``sink`` at their offsets.

    Writes only after the status and headers were judged right (``response_check.decide``);
    stops at the first byte beyond what was asked, and as soon as the sink says the request
    was superseded (Abandon). Raises NetworkError (retry: also for a header read beyond
    ``pace.header_timeout``, a body slower than ``pace.min_speed``, or one cut short),
    StatusError (classify), Rejected, Abandon, or a WeightliftError for local disk errors.
    """
    headers = {"Accept-Encoding": "identity"}
    if asked.ranged:
        headers["Range"] = f"bytes={asked.start}-{asked.end - 1}"
        if asked.validator and not asked.validator.startswith("W/"):
            # If-Match, not If-Range: a replaced object then answers a tiny 412 instead of
            # sending its whole new body to every request in flight, only to be thrown away.
            headers["If-Match"] = asked.validator
    target = URL(url, encoded=True)
    proxy, proxy_auth = env_proxy(target.scheme, target.host)
    with _mapped_errors(url):
        async with _headers_within(pace.header_timeout, session.get(
                target, headers=headers, proxy=proxy, proxy_auth=proxy_auth)) as resp:
            resp_headers = dict(resp.headers.items())
            decision = decide(resp.status, resp_headers, asked)
            log.debug("GET %s (%s) -> %d%s%s", LazyRedactedUrl(url), headers.get("Range", "whole"),
                      resp.status, _said(resp_headers.get("Content-Range")),
                      "" if decision.verdict is Verdict.WRITE else
                      f" [{decision.verdict.name.lower()}]")
            if decision.verdict is Verdict.ERROR_STATUS:
                raise StatusError(resp.status, resp_headers, await _read_error_body(resp))
            if decision.verdict is not Verdict.WRITE:
                raise Rejected(decision)
            sink.answered(decision, resp_headers)  # raises Abandon when superseded meanwhile
            written = await _stream(resp, asked, decision, sink, pace, throttle)
            return Answer(decision.total, decision.etag, resp_headers.get("Last-Modified"),
                          resp_headers, written, decision)


async def _stream(resp: aiohttp.ClientResponse, asked: Asked, decision: Decision, sink: Sink,
                  pace: Pace, throttle: Throttle | None) -> int:
    """Copy the body through the sink; returns the bytes written."""
    offset = asked.start if asked.ranged and not decision.whole else 0
    if decision.whole or not asked.ranged:
        limit = asked.size  # the whole object: as long as the manifest says, if it says
    else:
        limit = asked.end
    start = offset
    watch = _SpeedWatch(resp, pace) if pace.min_speed > 0 else None
    content = resp.content
    size = pace.read_size
    try:
        while block := await content.read(size):
            if limit is not None and offset + len(block) > limit:
                raise Rejected(Decision(Verdict.BAD_RESPONSE, "body longer than asked"))
            if watch is not None:
                watch.floor.count(len(block))
            if throttle is not None:
                # Before the write: a block counts as received when it is due (a throttle
                # after it would let a file's last block land at once).
                await throttle(len(block))
            if not sink.write(offset, block):
                raise Abandon()
            failpoint("fetch.after_write")
            offset += len(block)
    except (aiohttp.ClientError, ConnectionError, asyncio.TimeoutError):
        if watch is not None and watch.tripped:
            raise NetworkError(f"slower than {pace.min_speed:g} bytes/s over "
                               f"{pace.min_speed_window:g} s") from None
        raise
    finally:
        if watch is not None:
            watch.cancel()
    if limit is not None and offset < limit:
        raise NetworkError(f"body ended {limit - offset} bytes early")
    return offset - start


class _SpeedWatch:
    """Checks the body's speed once per window (a timer, not a check per block) and closes
    the response when it fell below the floor: the pending read then fails."""

    def __init__(self, resp: aiohttp.ClientResponse, pace: Pace) -> None:
        self._resp = resp
        self._loop = asyncio.get_running_loop()
        self.floor = SpeedFloor(pace.min_speed, pace.min_speed_window, self._loop.time())
        self.tripped = False
        self._handle = self._loop.call_at(self.floor.deadline(), self._check)

    def _check(self) -> None:
        if self.floor.check(self._loop.time()):
            self._handle = self._loop.call_at(self.floor.deadline(), self._check)
            return
        self.tripped = True
        self._resp.close()

    def cancel(self) -> None:
        self._handle.cancel()


class _headers_within:  # noqa: N801 - used like a function in ``async with``
    """Enter ``request`` (status line and headers read) within ``timeout`` seconds in all,
    however slowly they trickle (aiohttp's sock_read restarts at every byte)."""

    def __init__(self, timeout: float, request: Any) -> None:
        self._timeout = timeout
        self._request = request

    async def __aenter__(self) -> aiohttp.ClientResponse:
        # asyncio.wait, not wait_for (which can swallow a cancellation on Python <= 3.11).
        task = asyncio.ensure_future(self._request.__aenter__())
        try:
            done, _ = await asyncio.wait({task}, timeout=self._timeout)
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        if not done:
            if not task.cancelled() and task.exception() is None:
                await self._request.__aexit__(None, None, None)
            raise NetworkError(f"no complete response headers within {self._timeout:g} s")
        resp: aiohttp.ClientResponse = task.result()
        return resp

    async def __aexit__(self, *exc: Any) -> None:
        await self._request.__aexit__(*exc)


async def probe(session: aiohttp.ClientSession, url: str, pace: Pace = Pace()) -> Probed:
    """The object's size (None if the server will not say) and whether it answers Range
    requests, from one 1-byte request. Raises StatusError or NetworkError like fetch_range."""
    headers = {"Range": "bytes=0-0", "Accept-Encoding": "identity"}
    target = URL(url, encoded=True)
    proxy, proxy_auth = env_proxy(target.scheme, target.host)
    with _mapped_errors(url):
        async with _headers_within(pace.header_timeout, session.get(
                target, headers=headers, proxy=proxy, proxy_auth=proxy_auth)) as resp:
            resp_headers = dict(resp.headers.items())
            log.debug("GET %s (probe, bytes=0-0) -> %d%s", LazyRedactedUrl(url), resp.status,
                      _said(resp_headers.get("Content-Range")))
            judged = judge_probe(resp.status, resp_headers)
            if isinstance(judged, str):
                raise StatusError(resp.status, resp_headers, await _read_error_body(resp))
            return judged


@functools.lru_cache(maxsize=64)
def env_proxy(scheme: str, host: str | None) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    """The proxy the environment names for this scheme and host (HTTP(S)_PROXY, NO_PROXY), as
    aiohttp's ``trust_env`` would pick it, looked up once per host.

    The session itself runs with ``trust_env`` off: with it on, aiohttp would also read
    ~/.netrc and send its credentials to the storage host (we promise none ever reach
    storage), and it spends two thread hops per request on these lookups (1,000 small files,
    2,000 hops)."""
    if host is None or _is_loopback(host):
        # A proxy elsewhere cannot reach this machine's loopback (a local mirror, the Hub
        # relay, a test server): such a request always goes direct, whatever HTTP_PROXY says.
        return None, None
    try:
        return get_env_proxy_for_url(URL.build(scheme=scheme, host=host))
    except LookupError:
        return None, None


def _is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@contextmanager
def _mapped_errors(url: str) -> Iterator[None]:
    """Translate aiohttp and socket errors into ours, in this one place; messages carry no
    URL query string."""
    try:
        yield
    except (StatusError, Rejected, Abandon, TransferFailed, NetworkError):
        raise
    except asyncio.TimeoutError:
        raise NetworkError("no data for too long (stalled)") from None
    except aiohttp.ClientPayloadError:
        raise NetworkError("connection dropped mid-body") from None
    except aiohttp.ClientConnectorError as exc:
        raise NetworkError(f"cannot connect to {exc.host}:{exc.port}") from None
    except aiohttp.ServerDisconnectedError:
        raise NetworkError("server closed the connection") from None
    except aiohttp.TooManyRedirects:
        raise TransferFailed(f"too many redirects for {redact_url(url)}",
                             "storage is redirecting in a loop") from None
    except aiohttp.RedirectClientError:
        # A Location that is not http(s) (file:, ftp:, javascript:) or not a URL at all: not
        # followed, and not worth a retry. Before InvalidURL, which one of them also is.
        raise TransferFailed(f"storage redirected {redact_url(url)} to a non-http(s) or "
                             "invalid URL; refusing to follow it") from None
    except aiohttp.InvalidURL:
        raise TransferFailed(f"invalid URL {redact_url(url)}") from None
    except aiohttp.ClientResponseError as exc:
        if _headers_too_large(exc):
            # aiohttp's limit (8 KiB a line) does not move between tries: say so, once.
            raise TransferFailed(f"the response headers from {redact_url(url)} were too large",
                                 "the server sends headers beyond 8 KiB a line; "
                                 "ask its operator") from None
        raise NetworkError("malformed HTTP response "
                           f"({' '.join(str(exc.message).split())[:80]})") from None
    except aiohttp.ClientError as exc:
        raise NetworkError(type(exc).__name__) from None
    except ConnectionError as exc:
        raise NetworkError(exc.strerror or type(exc).__name__) from None


def _headers_too_large(exc: aiohttp.ClientResponseError) -> bool:
    """aiohttp reports a response head it would not read as a 400-ish error of its own
    ("Got more than 8190 bytes when reading ..."): the server's headers were too large."""
    text = str(exc.message).lower()
    return "got more than" in text or "too long" in text or "too large" in text


def _said(content_range: str | None) -> str:
    return f" {content_range}" if content_range else ""


async def _read_error_body(resp: aiohttp.ClientResponse) -> bytes:
    # No asyncio.wait_for here: on Python <= 3.11 it can swallow a cancellation that races
    # with the read finishing. The session's sock_read timeout already bounds a stalled body.
    try:
        return await resp.content.read(ERROR_BODY_LIMIT)
    except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError):
        return b""
