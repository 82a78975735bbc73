"""Retry policy as one immutable value that answers "again? after how long?" (pure).

The engine asks; it never decides on its own. Time and randomness are passed in, so the policy
is tested without sleeping.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

__all__ = [
    "DEFAULT_RETRY_STATUSES",
    "Decision",
    "GiveUp",
    "Retry",
    "RetryPolicy",
    "WaitTooLong",
    "human_wait",
    "parse_retry_after",
]

DEFAULT_RETRY_STATUSES: frozenset[int] = frozenset({408, 425, 429, 500, 502, 503, 504})

# RFC 9110 delta-seconds is 1*DIGIT; a decimal fraction is tolerated since some servers send one.
_DELTA_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")
# 2**attempt beyond this is already far above any sane cap; keeps the float finite.
_MAX_EXPONENT = 512


def parse_retry_after(value: str, now: datetime) -> float | None:
    """Seconds a ``Retry-After`` value asks to wait, from ``now`` (aware): delta-seconds or an
    HTTP-date; a date in the past gives 0.0; garbage (incl. negative numbers) gives None.
    The result is not capped (a huge value may be very large, even inf); the policy caps it."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    text = value.strip()
    if not text:
        return None
    if _DELTA_SECONDS.fullmatch(text):
        return float(text)  # float() of an enormous digit string is inf, never an error
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # HTTP-dates are GMT; "-0000" parses as naive
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - now).total_seconds())


def human_wait(seconds: float) -> str:
    """'45 s', '3 min', '2 h', '1 day', 'forever': how long a Retry-After asked for, for people."""
    if not math.isfinite(seconds) or seconds >= 100 * 365 * 86400:
        return "forever"
    if seconds < 60:
        return f"{seconds:.0f} s"
    seconds = round(seconds / 60) * 60  # a date-form value lands a moment short of it
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            n = round(seconds / size)
            return f"{n} {unit}{'s' if unit == 'day' and n != 1 else ''}"
    return f"{seconds:.0f} s"  # pragma: no cover - the loop always returns


@dataclass(frozen=True)
class Retry:
    """Try again after ``delay`` seconds."""

    delay: float


@dataclass(frozen=True)
class GiveUp:
    """Stop: the attempts are used up, or the status is not worth another try."""

    attempts: int  # tries made, the failed one included


@dataclass(frozen=True)
class WaitTooLong:
    """The server asks (Retry-After) for longer than the policy waits: fail now, say how long."""

    asked: float  # seconds the server asked for (may be inf)

    @property
    def human(self) -> str:
        return human_wait(self.asked)


Decision = Retry | GiveUp | WaitTooLong


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a failed request.

    ``attempt`` counts from 0: ``delay(0, ...)`` is asked after the first try failed, and with
    ``max_attempts=8`` the eighth failure (``attempt=7``) gives up.
    """

    max_attempts: int = 8
    backoff_base: float = 0.25
    backoff_cap: float = 30.0
    retry_after_cap: float = 60.0
    retry_statuses: frozenset[int] = DEFAULT_RETRY_STATUSES

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts}")
        for name in ("backoff_base", "backoff_cap", "retry_after_cap"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, not {v!r}")

    def is_retryable_status(self, status: int) -> bool:
        """True when an HTTP answer with this status is worth another try."""
        return status in self.retry_statuses

    def decide(self, attempt: int, *, status: int | None = None, retry_after: str | None = None,
               now: datetime, rng: random.Random) -> Decision:
        """Again, and after how long? The one answer the engine and the API session ask for.

        A ``Retry-After`` beyond ``retry_after_cap`` is ``WaitTooLong`` at once: sleeping the cap
        and asking again would be rude and still fail. Otherwise as ``delay``.
        """
        if retry_after is not None:
            asked = parse_retry_after(retry_after, now)
            if asked is not None and asked > self.retry_after_cap:
                return WaitTooLong(asked)
        delay = self.delay(attempt, status=status, retry_after=retry_after, now=now, rng=rng)
        return GiveUp(attempt + 1) if delay is None else Retry(delay)

    def delay(self, attempt: int, *, status: int | None = None, retry_after: str | None = None,
              now: datetime, rng: random.Random) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None to give up.

        ``status=None`` means a connection error or timeout (retryable). A parseable
        ``Retry-After`` is honoured up to ``retry_after_cap``; otherwise capped exponential
        backoff with full jitter: ``uniform(0, min(cap, base * 2**attempt))``.
        """
        if attempt < 0:
            raise ValueError(f"attempt counts from 0, not {attempt}")
        if attempt + 1 >= self.max_attempts:
            return None
        if status is not None and not self.is_retryable_status(status):
            return None
        if retry_after is not None:
            asked = parse_retry_after(retry_after, now)
            if asked is not None:
                return min(asked, self.retry_after_cap)
        ceiling = min(self.backoff_cap, self.backoff_base * 2.0 ** min(attempt, _MAX_EXPONENT))
        return rng.uniform(0.0, ceiling)
