import dataclasses
import math
import random
from datetime import datetime, timezone

import pytest

from weightlift.downloader.retry import DEFAULT_RETRY_STATUSES, RetryPolicy, parse_retry_after

NOW = datetime(2026, 11, 24, 20, 0, 0, tzinfo=timezone.utc)
P = RetryPolicy()


@pytest.mark.parametrize(("value", "expected"), [
    pytest.param("0", 0.0, id="zero"),
    pytest.param("120", 120.0, id="delta-seconds"),
    pytest.param("  7 ", 7.0, id="whitespace"),
    pytest.param("1.5", 1.5, id="decimal-tolerated"),
    pytest.param("86400000", 86400000.0, id="huge-uncapped-here"),
    pytest.param("Tue, 24 Nov 2026 20:00:30 GMT", 30.0, id="http-date-future"),
    pytest.param("Tuesday, 24-Nov-26 20:01:00 GMT", 60.0, id="rfc850-date-future"),
    pytest.param("Tue Nov 24 20:00:05 2026", 5.0, id="asctime-date"),
    pytest.param("Tue, 24 Nov 2026 21:00:10 +0100", 10.0, id="date-with-offset"),
    pytest.param("Tue, 24 Nov 2026 19:59:00 GMT", 0.0, id="http-date-past"),
    pytest.param("Thu, 01 Jan 1970 00:00:00 GMT", 0.0, id="http-date-epoch"),
    pytest.param("-5", None, id="negative"),
    pytest.param("", None, id="empty"),
    pytest.param("soon", None, id="garbage-word"),
    pytest.param("1e3", None, id="exponent"),
    pytest.param("inf", None, id="inf-word"),
    pytest.param("Tue, 32 Nov 2026 20:00:00 GMT", None, id="date-day-32"),
    pytest.param("Tue, 24 Nov 99999 20:00:00 GMT", None, id="date-year-overflow"),
])
def test_parse_retry_after(value: str, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_parse_retry_after_enormous_number_does_not_raise() -> None:
    assert parse_retry_after("9" * 5000, NOW) == math.inf


def test_parse_retry_after_wants_an_aware_clock() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_retry_after("5", datetime(2026, 11, 24))


@pytest.mark.parametrize(("retry_after", "expected"), [
    pytest.param("3", 3.0, id="seconds-honoured"),
    pytest.param("0", 0.0, id="zero-honoured"),
    pytest.param("Tue, 24 Nov 2026 20:00:45 GMT", 45.0, id="future-date-honoured"),
    pytest.param("Tue, 24 Nov 2026 19:00:00 GMT", 0.0, id="past-date-is-now"),
    pytest.param("3600", 60.0, id="huge-capped"),
    pytest.param("9" * 5000, 60.0, id="absurd-capped"),
    pytest.param("Fri, 31 Dec 9999 23:59:59 GMT", 60.0, id="far-future-date-capped"),
])
def test_delay_honours_capped_retry_after(retry_after: str, expected: float) -> None:
    rng = random.Random(1)
    got = P.delay(0, status=503, retry_after=retry_after, now=NOW, rng=rng)
    assert got == expected


@pytest.mark.parametrize("retry_after", ["-5", "garbage", "", "1e3"])
def test_delay_ignores_garbage_retry_after_and_backs_off(retry_after: str) -> None:
    got = P.delay(2, status=429, retry_after=retry_after, now=NOW, rng=random.Random(7))
    expected = random.Random(7).uniform(0, 0.25 * 4)
    assert got == expected


def test_full_jitter_bounds_and_cap() -> None:
    policy = RetryPolicy(max_attempts=40, backoff_base=0.5, backoff_cap=10.0)
    rng = random.Random(1234)
    for attempt in range(39):
        ceiling = min(10.0, 0.5 * 2**attempt)
        samples = [policy.delay(attempt, now=NOW, rng=rng) for _ in range(200)]
        assert all(s is not None and 0.0 <= s <= ceiling for s in samples)
        # Full jitter: the draws spread over the whole window, not bunched near the top.
        numbers = [s for s in samples if s is not None]
        assert min(numbers) < ceiling * 0.1
        assert max(numbers) > ceiling * 0.9


def test_same_seed_same_delays() -> None:
    a = [P.delay(i, now=NOW, rng=random.Random(5)) for i in range(7)]
    b = [P.delay(i, now=NOW, rng=random.Random(5)) for i in range(7)]
    assert a == b
    assert len(set(a)) == 7


def test_huge_attempt_number_stays_finite() -> None:
    policy = RetryPolicy(max_attempts=10**6, backoff_base=1e300, backoff_cap=30.0)
    got = policy.delay(10**6 - 2, now=NOW, rng=random.Random(0))
    assert got is not None
    assert 0.0 <= got <= 30.0


@pytest.mark.parametrize(("max_attempts", "last_retry"), [(1, -1), (3, 1), (8, 6)])
def test_gives_up_after_max_attempts(max_attempts: int, last_retry: int) -> None:
    policy = RetryPolicy(max_attempts=max_attempts)
    rng = random.Random(0)
    for attempt in range(last_retry + 1):
        assert policy.delay(attempt, now=NOW, rng=rng) is not None
    assert policy.delay(last_retry + 1, now=NOW, rng=rng) is None
    assert policy.delay(last_retry + 1, status=503, retry_after="1", now=NOW, rng=rng) is None


@pytest.mark.parametrize(("status", "retryable"), [
    (408, True), (425, True), (429, True), (500, True), (502, True), (503, True), (504, True),
    (400, False), (403, False), (404, False), (416, False), (501, False), (505, False),
])
def test_status_decides(status: int, retryable: bool) -> None:
    assert P.is_retryable_status(status) is retryable
    got = P.delay(0, status=status, retry_after="2", now=NOW, rng=random.Random(0))
    assert (got == 2.0) if retryable else (got is None)


def test_connection_error_is_retryable() -> None:
    assert P.delay(0, status=None, now=NOW, rng=random.Random(0)) is not None


def test_custom_statuses() -> None:
    policy = RetryPolicy(retry_statuses=frozenset({418}))
    assert policy.is_retryable_status(418)
    assert not policy.is_retryable_status(503)
    assert DEFAULT_RETRY_STATUSES == frozenset({408, 425, 429, 500, 502, 503, 504})


def test_policy_is_an_immutable_value() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        P.max_attempts = 3  # type: ignore[misc]
    assert RetryPolicy() == RetryPolicy()
    assert hash(RetryPolicy()) == hash(RetryPolicy())


@pytest.mark.parametrize("kwargs", [
    {"max_attempts": 0}, {"backoff_base": -1.0}, {"backoff_cap": math.inf},
    {"retry_after_cap": math.nan},
])
def test_rejects_nonsense_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_negative_attempt_is_a_bug() -> None:
    with pytest.raises(ValueError, match="counts from 0"):
        P.delay(-1, now=NOW, rng=random.Random(0))


def test_retry_after_cap_zero_means_retry_now() -> None:
    policy = RetryPolicy(retry_after_cap=0.0)
    delay = policy.delay(0, status=429, retry_after="30", now=NOW, rng=random.Random(0))
    assert delay == 0.0


# ---- decide: the one answer the engine and the API session ask for ----------------------

from weightlift.downloader.retry import GiveUp, Retry, WaitTooLong, human_wait  # noqa: E402

_NOW = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("attempt", "status", "retry_after", "expected"),
    [
        (0, None, None, Retry),            # a dropped connection: again
        (0, 503, "5", Retry(5.0)),         # Retry-After within the cap is honoured as asked
        (0, 429, "86400", WaitTooLong(86400.0)),  # a day: fail now, say how long
        (0, 503, "Wed, 09 Dec 2026 12:00:00 GMT", WaitTooLong(7 * 86400.0)),
        (0, 404, None, GiveUp(1)),         # not worth another try
        (7, 503, None, GiveUp(8)),         # the eighth failure gives up
        (7, 429, "86400", WaitTooLong(86400.0)),  # the longer wait is the truer reason
    ],
)
def test_decide_table(attempt: int, status: int | None, retry_after: str | None,
                      expected: object) -> None:
    got = RetryPolicy().decide(attempt, status=status, retry_after=retry_after, now=_NOW,
                               rng=random.Random(1))
    if isinstance(expected, type):
        assert isinstance(got, expected)
    else:
        assert got == expected


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(5, "5 s"), (59.4, "59 s"), (179, "3 min"), (7200, "2 h"), (86400, "1 day"),
     (86400 * 7 - 2, "7 days"), (float("inf"), "forever"), (1e30, "forever")],
)
def test_human_wait(seconds: float, text: str) -> None:
    assert human_wait(seconds) == text
