"""One HTTP session per platform API: the key stays on the API's origin, answers become values
or one-line `PlatformError`s, transient failures are retried with the shared `RetryPolicy`.

aiohttp's own redirect handling is off: it would carry the Authorization header to whatever
host a redirect names. Redirects are followed here, and the key is attached per hop only when
the hop's origin is the API base's origin. Sleep and clock are injectable, so retry and pacing
behaviour is tested without waiting.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
from pydantic import TypeAdapter, ValidationError
from yarl import URL

from weightlift.downloader.errors import PlatformError, UsageError
from weightlift.downloader.redact import redact_text, redact_url, register_secret
from weightlift.downloader.retry import GiveUp, RetryPolicy, WaitTooLong, parse_retry_after

__all__ = [
    "API_RETRY_POLICY",
    "ApiNotFound",
    "ApiSession",
    "ApiUnavailable",
    "RateLimit",
    "check_api_base",
    "error_detail",
    "pacing_delay",
    "parse_rate_limit",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_REDIRECTS = 5
MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_DETAIL_CHARS = 300
# Once a 429 was seen, polls keep at least its Retry-After apart, up to this many seconds.
THROTTLED_POLL_CAP = 60.0
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# An epoch below this cannot be "unix seconds" (it is 2001-09-09): such a Reset value is read as
# seconds-from-now, the other convention some APIs use.
_EPOCH_FLOOR = 1_000_000_000

# API calls are small and a person is waiting: fewer and shorter waits than for storage ranges.
API_RETRY_POLICY = RetryPolicy(max_attempts=6, backoff_base=0.5, backoff_cap=15.0,
                               retry_after_cap=120.0)


class ApiNotFound(PlatformError):
    """404 from the platform. `detail` is the platform's own text (Axom's /result 404s until
    the run has completed, so callers may catch this one)."""

    def __init__(self, message: str, hint: str | None = None, *, detail: str = "") -> None:
        super().__init__(message, hint)
        self.detail = detail


class ApiUnavailable(PlatformError):
    """The API could not be reached or kept failing (network, 5xx, 429) after retries: worth
    trying again later, unlike a refusal."""


# ---------------------------------------------------------------------------------------------
# Pure helpers


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_api_base(base: str, env_name: str) -> URL:
    """The API base as a URL; UsageError unless it is https:// (or http:// on loopback) with a
    host and no query, fragment or credentials."""
    shown = redact_url(base)
    try:
        url = URL(base.strip())
    except (ValueError, TypeError):
        raise UsageError(f"{env_name} is not a URL: {shown}") from None
    scheme = url.scheme.lower()
    if scheme not in ("http", "https") or not url.host:
        raise UsageError(f"{env_name} must be an https:// URL, not {shown}",
                         f"unset {env_name} to use the platform's default")
    if url.query_string or url.fragment or url.user or url.password:
        raise UsageError(f"{env_name} must not carry a query, fragment or credentials: {shown}")
    if scheme == "http" and not _is_loopback(url.host):
        raise UsageError(
            f"{env_name} is plain http:// on a non-loopback host: {shown}",
            "the API key would cross the network in clear text; use https://",
        )
    return url


def _origin(url: URL) -> tuple[str, str, int | None]:
    return url.scheme.lower(), (url.host or "").lower().rstrip("."), url.port


def _show_origin(url: URL) -> str:
    port = f":{url.explicit_port}" if url.explicit_port else ""
    return f"{url.scheme}://{url.host}{port}"


def _one_line(text: str, secrets: tuple[str, ...] = ()) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "…")
    text = " ".join(redact_text(text).split())
    if len(text) > MAX_DETAIL_CHARS:
        text = text[: MAX_DETAIL_CHARS - 1] + "…"
    return text


def _detail_list(items: list[Any]) -> str:
    """FastAPI's 422 shape: [{"loc": [...], "msg": ..., "type": ...}, ...]."""
    parts = []
    for item in items[:5]:
        if isinstance(item, dict):
            loc = item.get("loc")
            where = ".".join(str(x) for x in loc) if isinstance(loc, list) else ""
            msg = str(item.get("msg", "")) or json.dumps(item)[:80]
            parts.append(f"{where}: {msg}" if where else msg)
        else:
            parts.append(str(item))
    return "; ".join(parts)


def error_detail(body: bytes, secrets: tuple[str, ...] = ()) -> str:
    """The platform's own explanation from an error body, as one scrubbed line ("" if none).

    Axom: ``{"detail": str | [ {loc, msg} ]}``; TensorOne: ``{"error", "message", ...}``.
    Anything else: the first line of a short plain-text body; HTML pages say nothing useful.
    """
    text = body[:65536].decode("utf-8", "replace").strip()
    if not text:
        return ""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict):
        detail = data.get("detail")
        if isinstance(detail, str):
            return _one_line(detail, secrets)
        if isinstance(detail, list):
            return _one_line(_detail_list(detail), secrets)
        message, code = data.get("message"), data.get("error")
        if isinstance(message, str) and isinstance(code, str):
            return _one_line(f"{code}: {message}", secrets)
        for value in (message, code):
            if isinstance(value, str):
                return _one_line(value, secrets)
        return ""
    if data is not None or text.startswith("<"):
        return ""
    return _one_line(text.splitlines()[0], secrets)


@dataclass(frozen=True)
class RateLimit:
    """The last X-RateLimit-* headers seen. `reset_at` in unix seconds; None when absent."""

    limit: int | None
    remaining: int | None
    reset_at: float | None
    window: float | None
    seen_at: float


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        n = float(value.strip())
    except ValueError:
        return None
    return n if math.isfinite(n) and n >= 0 else None


def parse_rate_limit(headers: Mapping[str, str], now: float) -> RateLimit | None:
    """Read X-RateLimit-Limit/-Remaining/-Reset/-Window (None when none is present). A Reset
    too small to be a unix time is taken as seconds from now."""
    limit = _number(headers.get("X-RateLimit-Limit"))
    remaining = _number(headers.get("X-RateLimit-Remaining"))
    reset = _number(headers.get("X-RateLimit-Reset"))
    window = _number(headers.get("X-RateLimit-Window"))
    if limit is None and remaining is None and reset is None:
        return None
    if reset is not None and reset < _EPOCH_FLOOR:
        reset = now + reset
    return RateLimit(
        limit=None if limit is None else int(limit),
        remaining=None if remaining is None else int(remaining),
        reset_at=reset,
        window=window,
        seen_at=now,
    )


def pacing_delay(rate: RateLimit, now: float, *, cost: int = 1, reserve: int = 5) -> float:
    """Seconds between polls (each costing ``cost`` requests) so that the requests left last
    until the window resets, keeping ``reserve`` for the pull that follows. 0 when unknown."""
    if rate.remaining is None:
        return 0.0
    if rate.reset_at is not None:
        until_reset = max(0.0, rate.reset_at - now)
    elif rate.window is not None:
        until_reset = rate.window  # no reset time: assume a whole window is still ahead
    else:
        return 0.0
    if until_reset == 0.0:
        return 0.0
    usable = rate.remaining - reserve
    if usable < cost:
        return until_reset + 1.0  # nothing to spare: wait the window out
    return until_reset * cost / usable


# ---------------------------------------------------------------------------------------------
# The session


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class _Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes
    url: URL  # where the answer finally came from (after redirects)


class _Transient(Exception):
    """A network-level failure worth another try (message is one safe line)."""


class ApiSession:
    """A platform API session (async context manager); `get` returns validated values.

    ``platform`` is the display name ("Axom"); ``key_env`` names the key's environment
    variable for advice; ``base_env`` the base URL's.
    """

    def __init__(
        self,
        platform: str,
        base_url: str,
        key: str,
        *,
        key_env: str,
        base_env: str,
        key_example: str = "…",
        retry: RetryPolicy = API_RETRY_POLICY,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[], datetime] = _utcnow,
        rng: random.Random | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
        user_agent: str = "weightlift",
    ) -> None:
        self.platform = platform
        self.key_env = key_env
        self.base_env = base_env
        self._base = check_api_base(base_url, base_env)
        self._base_str = str(self._base).rstrip("/")
        key = key.strip()
        if not key:
            raise PlatformError(f"{key_env} is not set", f"export {key_env}={key_example}")
        if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in key):
            raise PlatformError(f"{key_env} contains whitespace or control characters",
                                f"set it to the bare key, e.g. {key_example}")
        self._key = key
        register_secret(key)  # masked in every log line and message from now on
        self._key_example = key_example
        self._retry = retry
        self._sleep = sleep
        self._now = now
        self._rng = rng or random.Random()
        self._timeout = timeout or aiohttp.ClientTimeout(total=60, sock_connect=15, sock_read=30)
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self.rate_limit: RateLimit | None = None
        self.throttled = 0  # 429 answers seen
        self.last_retry_after: float | None = None  # seconds the last 429 asked for
        self._throttled_until = 0.0  # unix time the last 429 asked us to wait until
        self.requests = 0  # HTTP requests sent (each redirect hop and retry counts)

    @property
    def base_url(self) -> str:
        return self._base_str

    async def __aenter__(self) -> ApiSession:
        # trust_env: HTTPS_PROXY & co. are honoured. No cookie jar: nothing a server sets is
        # replayed to another host.
        self._session = aiohttp.ClientSession(
            trust_env=True, timeout=self._timeout, cookie_jar=aiohttp.DummyCookieJar(),
            headers={"User-Agent": self._user_agent},
        )
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- public -------------------------------------------------------------------------------

    async def get(self, path: str, shape: TypeAdapter[T], *, what: str,
                  params: Mapping[str, str | int | bool] | None = None) -> T:
        """GET ``path`` (below the base URL) and validate the JSON answer against ``shape``.
        ``what`` names the thing asked for, for a 404 ("job 1234")."""
        data = await self.get_json(path, what=what, params=params)
        try:
            return shape.validate_python(data)
        except ValidationError as exc:
            raise self._unexpected(path, _first_error(exc)) from None

    async def get_json(self, path: str, *, what: str,
                       params: Mapping[str, str | int | bool] | None = None) -> Any:
        """GET ``path`` and return the parsed JSON answer (raises PlatformError otherwise)."""
        answer = await self._request(path, params, what)
        try:
            return json.loads(answer.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise self._unexpected(path, "the body is not JSON") from None

    def min_interval(self, *, cost: int = 1, reserve: int = 5) -> float:
        """A floor for the time between polls costing ``cost`` requests: from the rate-limit
        headers when the API sends them; after a 429, until its Retry-After has passed, and
        then never faster than that Retry-After (capped at a minute)."""
        now = self._now().timestamp()
        floor = 0.0
        if self.rate_limit is not None:
            floor = pacing_delay(self.rate_limit, now, cost=cost, reserve=reserve)
        if self.throttled and self.last_retry_after is not None:
            floor = max(floor, self._throttled_until - now,
                        min(self.last_retry_after, THROTTLED_POLL_CAP))
        return floor

    # -- internals ----------------------------------------------------------------------------

    def _url(self, path: str, params: Mapping[str, str | int | bool] | None) -> URL:
        url = URL(self._base_str + path)
        if params:
            url = url.with_query({k: _query_value(v) for k, v in params.items()})
        return url

    def _unexpected(self, path: str, why: str) -> PlatformError:
        return PlatformError(
            f"unexpected answer from {self.platform} (GET {path}): {why}",
            f"is {self.base_env} the {self.platform} API? otherwise the API changed; "
            "please report it",
        )

    async def _request(self, path: str, params: Mapping[str, str | int | bool] | None,
                       what: str) -> _Answer:
        url = self._url(path, params)
        attempt = 0
        while True:
            try:
                answer = await self._send(url, path)
            except _Transient as exc:
                delay = self._retry.delay(attempt, status=None, now=self._now(), rng=self._rng)
                if delay is None:
                    raise ApiUnavailable(
                        f"cannot reach the {self.platform} API at {_show_origin(self._base)}: "
                        f"{exc} (after {attempt + 1} attempts)",
                        f"check the network, a proxy, or {self.base_env}",
                    ) from None
                log.info("%s API: %s; retrying in %.1fs", self.platform, exc, delay)
                await self._sleep(delay)
                attempt += 1
                continue
            if 200 <= answer.status < 300:
                return answer
            if self._retry.is_retryable_status(answer.status):
                delay = self._retry_delay(answer, attempt, path)
                log.info("%s API: %s for GET %s; retrying in %.1fs", self.platform,
                         answer.status, path, delay)
                await self._sleep(delay)
                attempt += 1
                continue
            raise self._refusal(answer, path, what)

    def _retry_delay(self, answer: _Answer, attempt: int, path: str) -> float:
        """Seconds to wait before retrying a retryable status, or raise when giving up."""
        retry_after = answer.headers.get("Retry-After")
        now = self._now()
        decision = self._retry.decide(attempt, status=answer.status, retry_after=retry_after,
                                      now=now, rng=self._rng)
        if answer.status == 429:
            asked = parse_retry_after(retry_after, now) if retry_after is not None else None
            self.throttled += 1
            self.last_retry_after = asked
            if asked is not None:
                self._throttled_until = now.timestamp() + min(asked, 1e9)
        if isinstance(decision, WaitTooLong):
            until = datetime.fromtimestamp(now.timestamp() + min(decision.asked, 1e9),
                                           timezone.utc)
            raise ApiUnavailable(
                f"{self.platform} rate limit exceeded: it asks to wait {decision.human} "
                f"(until {until:%H:%M} UTC)" if answer.status == 429 else
                f"{self.platform} API asks to wait {decision.human} (GET {path}: "
                f"{answer.status}, until {until:%H:%M} UTC)",
                "try again then, or use a plan with a higher limit" if answer.status == 429
                else "the platform may be having trouble; try again then",
            )
        if isinstance(decision, GiveUp):
            detail = error_detail(answer.body, (self._key,))
            said = f": {detail}" if detail else ""
            if answer.status == 429:
                raise ApiUnavailable(
                    f"{self.platform} rate limit exceeded after {decision.attempts} "
                    f"attempts{said}",
                    "wait a while and try again",
                )
            raise ApiUnavailable(
                f"{self.platform} API kept failing (GET {path}: {answer.status}{said}) after "
                f"{decision.attempts} attempts",
                "the platform may be having trouble; try again later",
            )
        return decision.delay

    def _refusal(self, answer: _Answer, path: str, what: str) -> PlatformError:
        status = answer.status
        detail = error_detail(answer.body, (self._key,))
        said = f": {detail}" if detail else ""
        if _origin(answer.url) != _origin(self._base):
            # The key was not sent there, so this is not about the key.
            return PlatformError(
                f"the {self.platform} API redirected GET {path} to "
                f"{_show_origin(answer.url)}, which answered {status}{said}",
                f"check {self.base_env}",
            )
        if status in (401, 403):
            why = "lacks a permission (scope) needed here; " if status == 403 else ""
            return PlatformError(
                f"{self.platform} rejected the API key ({status}{said})",
                f"check {self.key_env}: the key {why}should look like {self._key_example}",
            )
        if status == 404:
            text = f"{what} not found on {self.platform}"
            if detail and "not found" not in detail.lower():
                text += f" ({detail})"
            return ApiNotFound(text, "check the id", detail=detail)
        return PlatformError(f"{self.platform} refused GET {path} ({status}{said})")

    async def _send(self, url: URL, path: str) -> _Answer:
        """One request, following up to MAX_REDIRECTS redirects by hand; the key goes only to
        hops on the base URL's origin."""
        session = self._session
        if session is None:
            raise RuntimeError("ApiSession used outside `async with`")
        for _hop in range(MAX_REDIRECTS + 1):
            headers = {"Accept": "application/json"}
            if _origin(url) == _origin(self._base):
                headers["Authorization"] = f"Bearer {self._key}"
            self.requests += 1
            try:
                async with session.get(url, headers=headers, allow_redirects=False) as resp:
                    resp_headers = {k: v for k, v in resp.headers.items()}
                    if _origin(url) == _origin(self._base):
                        self._note_rate_limit(resp_headers)
                    log.debug("%s API: GET %s -> %d", self.platform, redact_url(str(url)),
                              resp.status)
                    if resp.status in _REDIRECT_STATUSES:
                        url = self._next_hop(url, resp_headers.get("Location"), path)
                        log.debug("%s API: redirected to %s (%s the key)", self.platform,
                                  redact_url(str(url)), "with" if _origin(url) ==
                                  _origin(self._base) else "without")
                        continue
                    body = await _read_capped(resp, lambda: self._unexpected(
                        path, f"the answer is larger than {MAX_BODY_BYTES} bytes"))
                    return _Answer(resp.status, resp_headers, body, url)
            except aiohttp.ClientSSLError as exc:
                raise PlatformError(
                    f"TLS failed with {_show_origin(url)}: {_one_line(str(exc))}",
                    f"check {self.base_env} and the system's CA certificates",
                ) from None
            except aiohttp.InvalidURL:
                raise self._unexpected(path, "a redirect to an invalid URL") from None
            except asyncio.TimeoutError:
                raise _Transient("no answer in time") from None
            except aiohttp.ClientConnectorError as exc:
                raise _Transient(f"cannot connect to {exc.host}:{exc.port}") from None
            except aiohttp.ServerDisconnectedError:
                raise _Transient("the server closed the connection") from None
            except aiohttp.ClientPayloadError:
                raise _Transient("the connection dropped mid-answer") from None
            except aiohttp.ClientResponseError as exc:
                raise _Transient(f"bad HTTP response ({exc.status})") from None
            except aiohttp.ClientError as exc:
                raise _Transient(type(exc).__name__) from None
            except ConnectionError as exc:
                raise _Transient(exc.strerror or type(exc).__name__) from None
        raise PlatformError(f"the {self.platform} API redirected GET {path} more than "
                            f"{MAX_REDIRECTS} times", f"check {self.base_env}")

    def _next_hop(self, url: URL, location: str | None, path: str) -> URL:
        if not location:
            raise self._unexpected(path, "a redirect without a Location")
        try:
            target = url.join(URL(location))
        except (ValueError, TypeError):
            raise self._unexpected(path, "a redirect to an invalid URL") from None
        if target.scheme.lower() not in ("http", "https") or not target.host:
            raise self._unexpected(path, f"a redirect to {redact_url(str(target))}")
        return target

    def _note_rate_limit(self, headers: Mapping[str, str]) -> None:
        rate = parse_rate_limit(headers, self._now().timestamp())
        if rate is not None:
            self.rate_limit = rate


async def _read_capped(resp: aiohttp.ClientResponse,
                       too_big: Callable[[], PlatformError]) -> bytes:
    if resp.content_length is not None and resp.content_length > MAX_BODY_BYTES:
        raise too_big()
    chunks: list[bytes] = []
    total = 0
    async for block in resp.content.iter_chunked(1 << 16):
        total += len(block)
        if total > MAX_BODY_BYTES:
            raise too_big()
        chunks.append(block)
    return b"".join(chunks)


def _query_value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    msg = str(err.get("msg", "invalid"))
    return f"{where}: {msg}" if where else msg


