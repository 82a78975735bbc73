"""The loopback relay for Hub-served files: the token goes to the Hub's origin only (also across
redirects), answers come back as the Hub sent them (status, validators, compressed bytes), and it
relays nothing but the files it was given, to nobody without the pull's key."""

from __future__ import annotations

import gzip
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from weightlift.downloader.sources.hf_relay import HubRelay

TOKEN = "hf_relaytesttoken123456"
BODY = bytes(range(256)) * 4


async def _serve(aiohttp_server: Callable[[web.Application], Awaitable[Any]],
                 handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> str:
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handler)
    server = await aiohttp_server(app)
    return f"http://{server.host}:{server.port}"


async def test_token_stays_on_the_hub_origin(
        aiohttp_server: Callable[[web.Application], Awaitable[Any]]) -> None:
    seen: list[tuple[str, str | None, str | None]] = []

    async def cdn(request: web.Request) -> web.StreamResponse:
        seen.append(("cdn", request.headers.get("Authorization"), request.headers.get("Range")))
        return web.Response(status=206, body=BODY[4:8], headers={
            "Content-Range": f"bytes 4-7/{len(BODY)}", "ETag": '"blob-1"'})

    cdn_base = await _serve(aiohttp_server, cdn)

    async def hub(request: web.Request) -> web.StreamResponse:
        seen.append((request.path, request.headers.get("Authorization"), None))
        if request.path.startswith("/org/m/resolve/"):  # same host, then another host
            return web.Response(status=307, headers={"Location": "/api/resolve-cache/x"})
        return web.Response(status=302, headers={"Location": f"{cdn_base}/blob?sig=abc"})

    hub_base = await _serve(aiohttp_server, hub)
    relay = HubRelay(hub_base, TOKEN)
    await relay.start()
    try:
        url = relay.url_for(f"{hub_base}/org/m/resolve/abc123/config.json")
        assert url.startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession(auto_decompress=False) as session, \
                session.get(URL(url, encoded=True), headers={"Range": "bytes=4-7"}) as resp:
            assert resp.status == 206
            assert resp.headers["Content-Range"] == f"bytes 4-7/{len(BODY)}"
            assert resp.headers["ETag"] == '"blob-1"'
            assert await resp.read() == BODY[4:8]
    finally:
        await relay.close()
    assert seen == [("/org/m/resolve/abc123/config.json", f"Bearer {TOKEN}", None),
                    ("/api/resolve-cache/x", f"Bearer {TOKEN}", None),
                    ("cdn", None, "bytes=4-7")]


async def test_answers_pass_through_and_strangers_get_nothing(
        aiohttp_server: Callable[[web.Application], Awaitable[Any]]) -> None:
    packed = gzip.compress(BODY)

    async def hub(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/gone.json"):
            return web.Response(status=503, headers={"Retry-After": "7"})
        return web.Response(body=packed, headers={"Content-Encoding": "gzip", "ETag": '"g"'})

    hub_base = await _serve(aiohttp_server, hub)
    relay = HubRelay(hub_base, TOKEN)
    await relay.start()
    try:
        packed_url = relay.url_for(f"{hub_base}/org/m/resolve/c/packed.json")
        gone_url = relay.url_for(f"{hub_base}/org/m/resolve/c/gone.json")
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            async with session.get(URL(packed_url, encoded=True)) as resp:
                # Compressed bytes stay compressed: the engine must see what the Hub sent.
                assert resp.headers["Content-Encoding"] == "gzip"
                assert await resp.read() == packed
            async with session.get(URL(gone_url, encoded=True)) as resp:
                assert resp.status == 503
                assert resp.headers["Retry-After"] == "7"
            for stranger in (packed_url.split("?")[0], packed_url[:-3] + "xyz",
                             packed_url.replace("packed.json", "other.json")):
                async with session.get(URL(stranger, encoded=True)) as resp:
                    assert resp.status == 404
        with pytest.raises(ValueError, match="not a URL of this Hub"):
            relay.url_for("http://elsewhere.example/org/m/resolve/c/x")
    finally:
        await relay.close()


@pytest.mark.parametrize("env", [
    {},
    {"HTTP_PROXY": "http://10.0.0.1:3128"},
    {"HTTP_PROXY": "http://10.0.0.1:3128", "NO_PROXY": "localhost,127.0.0.1"},
])
async def test_the_relay_is_never_reached_through_a_proxy(
        monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """The engine honours HTTP_PROXY, but a proxy cannot reach our loopback relay: requests to
    loopback always go direct, so a private repository's pull works behind a proxy too."""
    from types import SimpleNamespace

    from weightlift.downloader.fetch import env_proxy
    from weightlift.downloader.sources.hf import HubManifest
    from weightlift.downloader.sources.hf_uri import HfRef

    for name in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    env_proxy.cache_clear()
    try:
        for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
            assert env_proxy("http", host) == (None, None), host
        if env:  # the proxy still serves everything else
            assert env_proxy("http", "hub.example")[0] is not None
        client = SimpleNamespace(ref=HfRef("model", "org/m"), endpoint="https://hub.example",
                                 token=TOKEN)
        builder = HubManifest(client, "c" * 40, [], needs_token=True)  # type: ignore[arg-type]
        try:
            url = await builder._relayed("https://hub.example/org/m/resolve/c/config.json")
            assert url.startswith("http://127.0.0.1:")
        finally:
            await builder.close()
    finally:
        env_proxy.cache_clear()
