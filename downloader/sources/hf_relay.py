"""A loopback relay for files the Hub serves itself, so the engine never holds a token.

A private or gated repository's regular files (config, tokenizer) come from the Hub's own
origin and need `Authorization`. The engine sends no credentials to anything, by design. The
relay listens on 127.0.0.1 for the length of one pull, and for each file the manifest names
it forwards the engine's request (Range, If-Range) to the Hub with the token, following
redirects itself: the token goes to the Hub's origin only, never to another host. Status,
validators and body come back unchanged (no decompression), so the engine's checks see the
Hub's answer.

Only the files it was given are relayed, and only to a caller that presents the per-pull key
in the query string (which every log and report redacts): another local user cannot borrow
the token through it.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp import web
from yarl import URL

log = logging.getLogger(__name__)

KEY_PARAM = "token"  # a name every redaction masks
MAX_REDIRECTS = 5
_FORWARD = ("Range", "If-Range", "Accept-Encoding")
_BACK = ("Content-Length", "Content-Range", "Content-Type", "Content-Encoding", "ETag",
         "Last-Modified", "Accept-Ranges", "Retry-After", "X-Repo-Commit")


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port: what "the same origin" compares."""
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


class HubRelay:
    """Serve ``endpoint``'s files on loopback with ``token`` added (see the module docstring)."""

    def __init__(self, endpoint: str, token: str) -> None:
        self._endpoint = endpoint.rstrip("/")
        self._token = token
        self._key = secrets.token_urlsafe(24)
        self._paths: set[str] = set()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._base = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self._base = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self._session = aiohttp.ClientSession(auto_decompress=False,
                                              timeout=aiohttp.ClientTimeout(sock_connect=30,
                                                                            sock_read=60))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def url_for(self, hub_url: str) -> str:
        """The relay URL for a Hub URL (``endpoint`` + path) of a file to fetch."""
        if not hub_url.startswith(self._endpoint + "/"):
            raise ValueError("not a URL of this Hub")
        path = hub_url[len(self._endpoint):]
        self._paths.add(path)
        return f"{self._base}{path}?{KEY_PARAM}={self._key}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.raw_path.split("?", 1)[0]
        key = request.query.get(KEY_PARAM, "")
        if not hmac.compare_digest(key.encode(), self._key.encode()) or path not in self._paths:
            return web.Response(status=404, text="not relayed here")
        assert self._session is not None
        headers = {h: request.headers[h] for h in _FORWARD if h in request.headers}
        url = self._endpoint + path
        try:
            for _ in range(MAX_REDIRECTS + 1):
                send = dict(headers)
                if origin(url) == origin(self._endpoint):
                    send["Authorization"] = f"Bearer {self._token}"
                resp = await self._session.get(URL(url, encoded=True), headers=send,
                                               allow_redirects=False)
                location = resp.headers.get("Location")
                if resp.status in (301, 302, 303, 307, 308) and location:
                    resp.release()
                    url = urljoin(url, location)
                    continue
                return await self._pass_back(request, resp)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.debug("relay: the Hub did not answer: %s", type(exc).__name__)
            return web.Response(status=502, text="the Hub did not answer")
        return web.Response(status=502, text="too many redirects")

    async def _pass_back(self, request: web.Request,
                         resp: aiohttp.ClientResponse) -> web.StreamResponse:
        async with resp:
            out = web.StreamResponse(
                status=resp.status, headers={h: resp.headers[h] for h in _BACK
                                             if h in resp.headers})
            await out.prepare(request)
            try:
                async for block in resp.content.iter_chunked(1 << 16):
                    await out.write(block)
                await out.write_eof()
            except (ConnectionResetError, aiohttp.ClientError) as exc:
                # The engine hung up (it owns retries), or the Hub did mid-body: the engine
                # sees a short body and retries the range.
                log.debug("relay: transfer cut: %s", type(exc).__name__)
            return out
