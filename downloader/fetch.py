"""Fetch one byte range of one object into the part file at its offset.

The only module that touches aiohttp's request/response types (with engine.py's session setup);
every aiohttp and socket error is translated here into ``NetworkError``, whose message carries
no URL query string.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from weightlift.downloader.errors import (
    LazyRedactedUrl,
    TransferFailed,
    redact_url,
    write_failed,
)
from weightlift.downloader.failpoints import failpoint
from weightlift.downloader.response_check import (
    Asked,
    Decision,
    Verdict,
    decide,
    parse_content_range,
)

if TYPE_CHECKING:
    from weightlift.downloader.byte_source import Sink

log = logging.getLogger(__name__)

ERROR_BODY_LIMIT = 64 * 1024


class NetworkError(Exception):
    """Connection refused/reset/dropped, stalled, or a body cut short: retryable."""

    def __init__(self, reason: str, *, progressed: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.progressed = progressed


class StatusError(Exception):
    """A non-200/206 answer, with the start of its body for classification."""

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.headers = headers
        self.body = body


class Rejected(Exception):
    """A 200/206 whose headers do not match what we asked: nothing was written."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.reason)
        self.decision = decision


class Abandon(Exception):
    """The file was restarted or failed while this request ran; drop the rest silently."""


@dataclass(frozen=True)
class Answer:
    """What a successful request told us about the object."""

    total: int | None
    etag: str | None
    last_modified: str | None
    headers: Mapping[str, str]
    written: int


# on_bytes(offset, length) -> False to abandon (file restarted meanwhile)
OnBytes = Callable[[int, int], bool]


async def fetch_range(
    session: aiohttp.ClientSession,
    url: str,
    asked: Asked,
    fd: int,
    on_bytes: OnBytes,
    *,
    read_size: int = 1 << 20,
    same_object: Callable[[str | None], bool] = lambda etag: True,
    where: str = "the output folder's disk",
    sink: Sink | None = None,
) -> Answer:
    """GET bytes [asked.start, asked.end) and pwrite them at their offsets in ``fd``.

    Writes only after the status and headers have been judged right; stops at the first byte
    beyond what was asked. ``same_object`` is asked about the response's ETag before writing.
    Raises NetworkError (retry), StatusError (classify), Rejected
    (restart/retry), Abandon, or DiskFull/TransferFailed for local disk errors (naming
    ``where``, the output folder). With a ``sink``, blocks go to ``sink.write`` instead of
    ``fd`` and ``on_bytes`` (a ``byte_source.ByteSource``).
    """
    headers = {"Accept-Encoding": "identity"}
    if asked.ranged:
        headers["Range"] = f"bytes={asked.start}-{asked.end - 1}"
        if asked.validator and not asked.validator.startswith("W/"):
            # If-Match, not If-Range: a replaced object then answers a tiny 412 instead of
            # sending its whole new body to every request in flight, only to be thrown away.
            headers["If-Match"] = asked.validator
    offset = asked.start
    written = 0
    target = URL(url, encoded=True)
    proxy, proxy_auth = env_proxy(target.scheme, target.host)
    with _mapped_errors(url, lambda: written > 0):
        async with session.get(target, headers=headers, proxy=proxy,
                               proxy_auth=proxy_auth) as resp:
            resp_headers = {k: v for k, v in resp.headers.items()}
            decision = decide(resp.status, resp_headers, asked)
            log.debug("GET %s (%s) -> %d%s%s", LazyRedactedUrl(url), headers.get("Range", "whole"),
                      resp.status, _said(resp_headers.get("Content-Range")),
                      "" if decision.verdict is Verdict.WRITE else
                      f" [{decision.verdict.name.lower()}]")
            if decision.verdict is Verdict.ERROR_STATUS:
                body = await _read_error_body(resp)
                raise StatusError(resp.status, resp_headers, body)
            if decision.verdict is not Verdict.WRITE:
                raise Rejected(decision)
            if not same_object(decision.etag):
                # Requests sent before the first answer carried no If-Match: compare now.
                raise Rejected(Decision(Verdict.OBJECT_CHANGED, "the object's ETag changed"))
            limit = asked.end if asked.size is not None or asked.ranged else None
            async for block in resp.content.iter_chunked(read_size):
                if limit is not None and offset + len(block) > limit:
                    raise Rejected(Decision(Verdict.BAD_RESPONSE, "body longer than asked"))
                if sink is not None:
                    if not sink.write(offset, block):
                        raise Abandon()
                else:
                    _pwrite_all(fd, block, offset, where)
                    failpoint("fetch.after_write")
                    if not on_bytes(offset, len(block)):
                        raise Abandon()
                offset += len(block)
                written += len(block)
            if limit is not None and offset < limit:
                raise NetworkError(
                    f"body ended {limit - offset} bytes early", progressed=written > 0
                )
            return Answer(
                total=decision.total,
                etag=decision.etag,
                last_modified=resp_headers.get("Last-Modified"),
                headers=resp_headers,
                written=written,
            )


async def probe_size(session: aiohttp.ClientSession, url: str) -> tuple[int | None, bool]:
    """The object's size (None if the server will not say) and whether it answers Range
    requests, from one 1-byte request. Raises StatusError or NetworkError like fetch_range."""
    headers = {"Range": "bytes=0-0", "Accept-Encoding": "identity"}
    target = URL(url, encoded=True)
    proxy, proxy_auth = env_proxy(target.scheme, target.host)
    with _mapped_errors(url, lambda: False):
        async with session.get(target, headers=headers, proxy=proxy,
                               proxy_auth=proxy_auth) as resp:
            log.debug("GET %s (probe, bytes=0-0) -> %d%s", LazyRedactedUrl(url), resp.status,
                      _said(resp.headers.get("Content-Range")))
            if resp.status == 206:
                parsed = parse_content_range(resp.headers.get("Content-Range", ""))
                if parsed is not None and parsed[2] is not None:
                    return parsed[2], True
                return None, False
            if resp.status == 200:
                length = resp.headers.get("Content-Length", "")
                return (int(length) if length.isdigit() else None), False
            if resp.status == 416:  # nothing to range over: an empty object
                return 0, True
            raise StatusError(resp.status, dict(resp.headers), await _read_error_body(resp))


@functools.lru_cache(maxsize=64)
def env_proxy(scheme: str, host: str | None) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    """The proxy the environment names for this scheme and host (HTTP(S)_PROXY, NO_PROXY), as
    aiohttp's ``trust_env`` would pick it, looked up once per host.

    The session itself runs with ``trust_env`` off: with it on, aiohttp would also read
    ~/.netrc and send its credentials to the storage host (we promise none ever reach
    storage), and it spends two thread hops per request on these lookups (1,000 small files,
    2,000 hops)."""
    if host is None:
        return None, None
    try:
        return get_env_proxy_for_url(URL.build(scheme=scheme, host=host))
    except LookupError:
        return None, None


@contextmanager
def _mapped_errors(url: str, progressed: Callable[[], bool]) -> Iterator[None]:
    """Translate aiohttp and socket errors into ours, in this one place; messages carry no
    URL query string. ``progressed`` tells whether the request had written bytes."""
    try:
        yield
    except (StatusError, Rejected, Abandon, TransferFailed, NetworkError):
        raise
    except asyncio.TimeoutError:
        raise NetworkError("no data for too long (stalled)", progressed=progressed()) from None
    except aiohttp.ClientPayloadError:
        raise NetworkError("connection dropped mid-body", progressed=progressed()) from None
    except aiohttp.ClientConnectorError as exc:
        raise NetworkError(
            f"cannot connect to {exc.host}:{exc.port}", progressed=progressed()
        ) from None
    except aiohttp.ServerDisconnectedError:
        raise NetworkError("server closed the connection", progressed=progressed()) from None
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
        raise NetworkError(f"bad HTTP response ({exc.status})", progressed=progressed()) from None
    except aiohttp.ClientError as exc:
        raise NetworkError(type(exc).__name__, progressed=progressed()) from None
    except ConnectionError as exc:
        raise NetworkError(exc.strerror or type(exc).__name__, progressed=progressed()) from None


def _said(content_range: str | None) -> str:
    return f" {content_range}" if content_range else ""


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int, where: str) -> None:
    """Write all of ``data`` at ``offset`` (inline: a 1 MiB pwrite into the page cache is
    faster than a thread hop, as measured in DESIGN.md §4)."""
    view = memoryview(data)
    try:
        while view:
            n = os.pwrite(fd, view, offset)
            view = view[n:]
            offset += n
    except OSError as exc:
        raise write_failed(exc, where, "the part file") from None


async def _read_error_body(resp: aiohttp.ClientResponse) -> bytes:
    # No asyncio.wait_for here: on Python <= 3.11 it can swallow a cancellation that races
    # with the read finishing. The session's sock_read timeout already bounds a stalled body.
    try:
        return await resp.content.read(ERROR_BODY_LIMIT)
    except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError):
        return b""
