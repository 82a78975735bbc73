"""ApiSession against small aiohttp apps of our own: auth and error answers, retries with
Retry-After, malformed answers, and where the key goes across redirects."""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import BaseModel, TypeAdapter

from weightlift.downloader.errors import EXIT_PLATFORM, EXIT_USAGE, PlatformError, UsageError
from weightlift.downloader.retry import RetryPolicy
from weightlift.downloader.sources.api_session import (
    ApiNotFound,
    ApiSession,
    ApiUnavailable,
    check_api_base,
)

KEY = "axom_live_s3cr3tKEY123"
T0 = datetime(2026, 11, 24, 12, 0, 0, tzinfo=timezone.utc)
Serve = Callable[[web.Application], Awaitable[TestServer]]


class Thing(BaseModel):
    status: str


THING = TypeAdapter(Thing)


class Recorder:
    """Counts requests and keeps each one's headers; answers from a scripted list."""

    def __init__(self, answers: list[Callable[[web.Request], web.StreamResponse]]) -> None:
        self.answers = answers
        self.seen: list[dict[str, str]] = []
        self.paths: list[str] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(dict(request.headers))
        self.paths.append(request.path_qs)
        answer = self.answers[min(len(self.seen) - 1, len(self.answers) - 1)]
        return answer(request)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self.handle)
        return app


def ok(body: Any = None) -> Callable[[web.Request], web.StreamResponse]:
    return lambda r: web.json_response({"status": "running"} if body is None else body)


def status(code: int, body: Any = None, headers: dict[str, str] | None = None,
           ) -> Callable[[web.Request], web.StreamResponse]:
    def answer(r: web.Request) -> web.StreamResponse:
        if isinstance(body, bytes):
            return web.Response(status=code, body=body, headers=headers)
        return web.json_response(body if body is not None else {"detail": "nope"},
                                 status=code, headers=headers)
    return answer


def raw(text: bytes, code: int = 200) -> Callable[[web.Request], web.StreamResponse]:
    return lambda r: web.Response(status=code, body=text, content_type="application/json")


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def open_api(sleeps: Sleeps) -> Callable[..., Any]:
    """`async with open_api(base_url) as s:` an Axom-style session with recorded sleeps."""

    def make(base: str, **kw: Any) -> ApiSession:
        kw.setdefault("sleep", sleeps)
        kw.setdefault("now", lambda: T0)
        kw.setdefault("rng", random.Random(1))
        return ApiSession("Axom", base, KEY, key_env="AXOM_KEY", base_env="AXOM_API_BASE",
                          key_example="axom_live_…", **kw)

    return make


async def serve(aiohttp_server: Serve, rec: Recorder) -> str:
    server = await aiohttp_server(rec.app())
    return f"http://{server.host}:{server.port}/api"


async def call(session_factory: Callable[..., ApiSession], base: str, path: str = "/jobs/1",
               **kw: Any) -> Thing:
    async with session_factory(base, **kw) as s:
        return await s.get(path, THING, what="job 1")


def assert_one_clean_line(err: PlatformError | UsageError) -> str:
    line = err.one_line()
    assert "\n" not in line
    assert KEY not in line
    assert "s3cr3t" not in line
    return line


async def test_ok_sends_bearer_key_and_validates(aiohttp_server: Serve, open_api: Any) -> None:
    rec = Recorder([ok()])
    base = await serve(aiohttp_server, rec)
    thing = await call(open_api, base)
    assert thing.status == "running"
    assert rec.seen[0]["Authorization"] == f"Bearer {KEY}"
    assert rec.paths == ["/api/jobs/1"]


async def test_query_params_are_encoded(aiohttp_server: Serve, open_api: Any) -> None:
    rec = Recorder([ok()])
    base = await serve(aiohttp_server, rec)
    async with open_api(base) as s:
        await s.get("/jobs/1/metrics", THING, what="job 1",
                    params={"since_step": 40, "includeLogs": True})
    assert rec.paths == ["/api/jobs/1/metrics?since_step=40&includeLogs=true"]


@pytest.mark.parametrize(
    ("code", "body", "says"),
    [
        (401, {"detail": "Invalid or missing API key"},
         "Axom rejected the API key (401: Invalid or missing API key)"),
        (403, {"detail": "API key lacks the required scope: models"},
         "Axom rejected the API key (403: API key lacks the required scope: models)"),
        (401, {"error": "UNAUTHORIZED", "message": "Invalid API key", "code": 401},
         "(401: UNAUTHORIZED: Invalid API key)"),
    ],
)
async def test_auth_refusals(aiohttp_server: Serve, open_api: Any, sleeps: Sleeps,
                             code: int, body: Any, says: str) -> None:
    rec = Recorder([status(code, body)])
    base = await serve(aiohttp_server, rec)
    with pytest.raises(PlatformError) as info:
        await call(open_api, base)
    err = info.value
    assert err.exit_code == EXIT_PLATFORM
    line = assert_one_clean_line(err)
    assert says in line
    assert "check AXOM_KEY" in line
    assert len(rec.seen) == 1
    assert not sleeps.calls


async def test_404_names_what_was_not_found(aiohttp_server: Serve, open_api: Any) -> None:
    rec = Recorder([status(404, {"detail": "Job not found: 1"})])
    base = await serve(aiohttp_server, rec)
    with pytest.raises(ApiNotFound) as info:
        await call(open_api, base)
    assert info.value.exit_code == EXIT_PLATFORM
    assert info.value.message == "job 1 not found on Axom"
    assert info.value.detail == "Job not found: 1"


async def test_404_with_other_detail_shows_it(aiohttp_server: Serve, open_api: Any) -> None:
    rec = Recorder([status(404, {"detail": "Result not available: job 1 is running"})])
    base = await serve(aiohttp_server, rec)
    with pytest.raises(ApiNotFound) as info:
        await call(open_api, base)
    assert "(Result not available: job 1 is running)" in info.value.message


async def test_422_list_detail_is_one_line(aiohttp_server: Serve, open_api: Any) -> None:
    body = {"detail": [{"loc": ["query", "since_step"], "msg": "not a valid\ninteger",
                        "type": "type_error"}]}
    rec = Recorder([status(422, body)])
    base = await serve(aiohttp_server, rec)
    with pytest.raises(PlatformError) as info:
        await call(open_api, base)
    line = assert_one_clean_line(info.value)
    assert "Axom refused GET /jobs/1 (422: query.since_step: not a valid integer)" in line


async def test_details_are_scrubbed(aiohttp_server: Serve, open_api: Any) -> None:
    detail = f"bad key {KEY}; see https://s3.example/b/k?X-Amz-Signature=abc"
    rec = Recorder([status(400, {"detail": detail})])
    base = await serve(aiohttp_server, rec)
    with pytest.raises(PlatformError) as info:
        await call(open_api, base)
    line = assert_one_clean_line(info.value)
    assert "X-Amz-Signature" not in line
    assert "https://s3.example/b/k?…" in line


@pytest.mark.parametrize("retry_after", ["seconds", "date"])
async def test_429_honours_retry_after(aiohttp_server: Serve, open_api: Any, sleeps: Sleeps,
                                       retry_after: str) -> None:
    value = "7" if retry_after == "seconds" else format_datetime(T0 + timedelta(seconds=7),
                                                                 usegmt=True)
    rec = Recorder([status(429, {"detail": "slow down"}, {"Retry-After": value}), ok()])
    base = await serve(aiohttp_server, rec)
    async with open_api(base) as s:
        assert (await s.get("/jobs/1", THING, what="job 1")).status == "running"
        assert s.throttled == 1
        assert s.min_interval() == 7.0  # a follower paces itself after a 429
    assert sleeps.calls == [7.0]
    assert len(rec.seen) == 2


async def test_429_asking_for_too_long_fails_at_once(aiohttp_server: Serve, open_api: Any,
                                                     sleeps: Sleeps) -> None:
    rec = Recorder([status(429, {"error": "RATE_LIMIT_EXCEEDED", "message": "Rate limit"},
                           {"Retry-After": "2460"})])
    base = await serve(aiohttp_server, rec)
    with pytest.raises(ApiUnavailable) as info:
        await call(open_api, base)
    line = assert_one_clean_line(info.value)
    assert "Axom rate limit exceeded: it asks to wait 41 min (until 12:41 UTC)" in line
    assert not sleeps.calls
    assert info.value.exit_code == EXIT_PLATFORM


async def test_5xx_then_success(aiohttp_server: Serve, open_api: Any, sleeps: Sleeps) -> None:
    rec = Recorder([status(503, b"<html>down</html>"), status(502, b""), ok()])
    base = await serve(aiohttp_server, rec)
    assert (await call(open_api, base)).status == "running"
    assert len(sleeps.calls) == 2
    assert all(0 <= d <= 15 for d in sleeps.calls)


async def test_5xx_forever_gives_up_with_one_line(aiohttp_server: Serve, open_api: Any,
                                                  sleeps: Sleeps) -> None:
    rec = Recorder([status(500, {"detail": "Internal Server Error"})])
    base = await serve(aiohttp_server, rec)
    policy = RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_cap=0.01)
    with pytest.raises(ApiUnavailable) as info:
        await call(open_api, base, retry=policy)
    line = assert_one_clean_line(info.value)
    assert ("Axom API kept failing (GET /jobs/1: 500: Internal Server Error) after 3 attempts"
            in line)
    assert len(rec.seen) == 3
    assert len(sleeps.calls) == 2


async def test_connection_refused_is_retried_then_fails(open_api: Any, sleeps: Sleeps,
                                                        unused_tcp_port: int) -> None:
    policy = RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_cap=0.01)
    with pytest.raises(ApiUnavailable) as info:
        await call(open_api, f"http://127.0.0.1:{unused_tcp_port}/api", retry=policy)
    line = assert_one_clean_line(info.value)
    assert f"cannot reach the Axom API at http://127.0.0.1:{unused_tcp_port}" in line
    assert "check the network, a proxy, or AXOM_API_BASE" in line
    assert len(sleeps.calls) == 1


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (raw(b'{"status": "runn'), "the body is not JSON"),
        (raw(b"\xff\xfe"), "the body is not JSON"),
        (ok({"state": "running"}), "status: Field required"),
        (ok([1, 2]), "Input should be a valid dictionary"),
    ],
)
async def test_malformed_or_wrong_shape(aiohttp_server: Serve, open_api: Any,
                                        answer: Any, says: str) -> None:
    rec = Recorder([answer])
    base = await serve(aiohttp_server, rec)
    with pytest.raises(PlatformError) as info:
        await call(open_api, base)
    line = assert_one_clean_line(info.value)
    assert line.startswith(f"unexpected answer from Axom (GET /jobs/1): {says}")
    assert info.value.exit_code == EXIT_PLATFORM


async def test_redirect_to_another_host_does_not_carry_the_key(
        aiohttp_server: Serve, open_api: Any) -> None:
    other = Recorder([ok()])
    other_base = await serve(aiohttp_server, other)  # another port: another origin
    api = Recorder([status(307, b"", {"Location": other_base + "/jobs/1"})])
    base = await serve(aiohttp_server, api)
    assert (await call(open_api, base)).status == "running"
    assert api.seen[0]["Authorization"] == f"Bearer {KEY}"
    assert len(other.seen) == 1
    assert "Authorization" not in other.seen[0]
    assert KEY not in json.dumps(other.seen)


async def test_refusal_after_foreign_redirect_is_not_blamed_on_the_key(
        aiohttp_server: Serve, open_api: Any) -> None:
    other = Recorder([status(401, {"detail": "who are you"})])
    other_base = await serve(aiohttp_server, other)
    api = Recorder([status(302, b"", {"Location": other_base + "/x?sig=abc"})])
    base = await serve(aiohttp_server, api)
    with pytest.raises(PlatformError) as info:
        await call(open_api, base)
    line = assert_one_clean_line(info.value)
    assert "redirected GET /jobs/1 to http://127.0.0.1:" in line
    assert "which answered 401: who are you" in line
    assert "sig=abc" not in line
    assert "AXOM_KEY" not in line


async def test_same_origin_redirect_keeps_the_key(aiohttp_server: Serve,
                                                  open_api: Any) -> None:
    def first(r: web.Request) -> web.StreamResponse:
        if r.path == "/api/jobs/1":
            return web.Response(status=301, headers={"Location": "/api/v2/jobs/1"})
        return web.json_response({"status": "queued"})

    rec = Recorder([first, first])
    base = await serve(aiohttp_server, rec)
    assert (await call(open_api, base)).status == "queued"
    assert rec.paths == ["/api/jobs/1", "/api/v2/jobs/1"]
    assert all(h["Authorization"] == f"Bearer {KEY}" for h in rec.seen)


async def test_redirect_loop_stops(aiohttp_server: Serve, open_api: Any) -> None:
    rec = Recorder([lambda r: web.Response(status=302, headers={"Location": r.path})])
    base = await serve(aiohttp_server, rec)
    with pytest.raises(PlatformError) as info:
        await call(open_api, base)
    assert "redirected GET /jobs/1 more than 5 times" in info.value.message
    assert len(rec.seen) == 6


async def test_redirect_to_another_scheme_is_refused(aiohttp_server: Serve,
                                                     open_api: Any) -> None:
    rec = Recorder([status(302, b"", {"Location": "file:///etc/passwd"})])
    base = await serve(aiohttp_server, rec)
    with pytest.raises(PlatformError, match="a redirect to file:///etc/passwd"):
        await call(open_api, base)


async def test_rate_limit_headers_are_recorded(aiohttp_server: Serve, open_api: Any) -> None:
    reset = int(T0.timestamp()) + 3600
    headers = {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "95",
               "X-RateLimit-Reset": str(reset), "X-RateLimit-Window": "3600"}
    rec = Recorder([lambda r: web.json_response({"status": "running"}, headers=headers)])
    base = await serve(aiohttp_server, rec)
    async with open_api(base) as s:
        assert s.rate_limit is None
        await s.get("/jobs/1", THING, what="job 1")
        assert s.rate_limit is not None
        assert (s.rate_limit.limit, s.rate_limit.remaining) == (100, 95)
        assert s.rate_limit.reset_at == reset
        assert s.min_interval(cost=1) == pytest.approx(3600 / 90)


def test_base_url_rules() -> None:
    assert str(check_api_base("https://console.axomlabs.ai/api", "AXOM_API_BASE")).endswith(
        "/api")
    for loopback in ("http://127.0.0.1:8700/api", "http://localhost:1/v2", "http://[::1]:5/x"):
        check_api_base(loopback, "AXOM_API_BASE")
    for bad, says in [
        ("http://console.axomlabs.ai/api", "plain http:// on a non-loopback host"),
        ("ftp://x/api", "must be an https:// URL"),
        ("console.axomlabs.ai/api", "must be an https:// URL"),
        ("https://user:pw@x/api", "must not carry a query, fragment or credentials"),
        ("https://x/api?k=v", "must not carry"),
    ]:
        with pytest.raises(UsageError) as info:
            check_api_base(bad, "AXOM_API_BASE")
        assert info.value.exit_code == EXIT_USAGE
        assert says in info.value.message
        assert "pw" not in info.value.one_line()


def test_session_refuses_missing_or_odd_keys() -> None:
    for key, says in [("", "AXOM_KEY is not set"), ("  ", "AXOM_KEY is not set"),
                      ("axom_live_a\r\nX-Evil: 1", "whitespace or control characters")]:
        with pytest.raises(PlatformError) as info:
            ApiSession("Axom", "https://x/api", key, key_env="AXOM_KEY",
                       base_env="AXOM_API_BASE")
        assert says in info.value.message
        assert "Evil" not in info.value.one_line()


async def test_body_too_large_is_refused(aiohttp_server: Serve, open_api: Any,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from weightlift.downloader.sources import api_session

    monkeypatch.setattr(api_session, "MAX_BODY_BYTES", 100)
    rec = Recorder([ok({"status": "x" * 500})])
    base = await serve(aiohttp_server, rec)
    with pytest.raises(PlatformError, match="larger than 100 bytes"):
        await call(open_api, base)


async def test_a_long_retry_after_paces_polls_until_it_has_passed(
        aiohttp_server: Serve, open_api: Any, sleeps: Sleeps) -> None:
    rec = Recorder([status(429, {"detail": "slow"}, {"Retry-After": "3600"})])
    base = await serve(aiohttp_server, rec)
    clock = [T0]
    async with open_api(base, now=lambda: clock[0]) as s:
        with pytest.raises(ApiUnavailable):
            await s.get("/jobs/1", THING, what="job 1")
        assert s.min_interval() == 3600.0
        clock[0] = T0 + timedelta(seconds=3000)
        assert s.min_interval() == pytest.approx(600.0)
        clock[0] = T0 + timedelta(seconds=4000)
        assert s.min_interval() == 60.0  # past it: polite, not stuck at an hour
