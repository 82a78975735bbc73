"""Read the expiry instant a presigned storage URL carries in its query string (pure).

Forms understood (parameter names compared case-insensitively, values percent-decoded):

- S3 SigV4: ``X-Amz-Date`` (``YYYYMMDDTHHMMSSZ``) + ``X-Amz-Expires`` (seconds)
- GCS V4: ``X-Goog-Date`` + ``X-Goog-Expires``
- S3 SigV2, CloudFront canned policy, GCS V2, plain ``expires``: an epoch (int or float seconds)
- Azure SAS: ``se`` (ISO-8601, e.g. ``2026-11-24T20:00:00Z``, or date-only ``2026-11-24``)

Anything unknown or malformed gives None; these functions never raise on a bad URL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qsl, urlsplit

__all__ = ["earliest_expiry", "expiry_of", "seconds_left"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_COMPACT_DATE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})T([0-9]{2})([0-9]{2})([0-9]{2})Z")
_SECONDS = re.compile(r"[0-9]{1,12}")
_EPOCH_VALUE = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")
_ISO = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,9}))?)?"
    r"(Z|[+-][0-9]{2}:?[0-9]{2})?)?"
)


def expiry_of(url: str) -> datetime | None:
    """The instant (aware, UTC) after which ``url`` stops working, or None if it does not say.

    When a URL carries several recognised forms, the earliest instant wins.
    """
    try:
        params = _query_params(url)
        if params is None:
            return None
        candidates = [
            _signed_window(params, "x-amz-date", "x-amz-expires"),
            _signed_window(params, "x-goog-date", "x-goog-expires"),
            _epoch(params.get("expires")),
            _iso_instant(params.get("se")),
        ]
    except (ValueError, OverflowError, TypeError):  # defensive: the contract is "never raise"
        return None
    found = [c for c in candidates if c is not None]
    return min(found) if found else None


def earliest_expiry(urls: Iterable[str]) -> datetime | None:
    """The earliest expiry among ``urls``; None when none of them carries one."""
    found = [e for e in (expiry_of(u) for u in urls) if e is not None]
    return min(found) if found else None


def seconds_left(url: str, now: datetime) -> float | None:
    """Seconds from ``now`` (timezone-aware) until ``url`` expires; negative once past, None if
    the URL carries no expiry. A naive ``now`` is a programming error (ValueError)."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    exp = expiry_of(url)
    return None if exp is None else (exp - now).total_seconds()


def _query_params(url: str) -> dict[str, str] | None:
    """Lower-cased name → decoded value; a name given twice with different values is dropped
    (ambiguous, so it is not trusted)."""
    query = urlsplit(url).query
    if not query:
        return None
    params: dict[str, str] = {}
    conflicted: set[str] = set()
    for name, value in parse_qsl(query, keep_blank_values=True):
        key = name.strip().lower()
        value = value.strip()
        if key in params and params[key] != value:
            conflicted.add(key)
        params.setdefault(key, value)
    for key in conflicted:
        del params[key]
    return params


def _signed_window(params: dict[str, str], date_key: str, expires_key: str) -> datetime | None:
    date, expires = params.get(date_key), params.get(expires_key)
    if date is None or expires is None or not _SECONDS.fullmatch(expires):
        return None
    m = _COMPACT_DATE.fullmatch(date)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups())
    start = datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
    return start + timedelta(seconds=int(expires))


def _epoch(value: str | None) -> datetime | None:
    if value is None or not _EPOCH_VALUE.fullmatch(value):
        return None
    return _EPOCH + timedelta(seconds=float(value))


def _iso_instant(value: str | None) -> datetime | None:
    if value is None:
        return None
    # An unencoded "+01:00" offset arrives from form-decoding as " 01:00".
    m = _ISO.fullmatch(value.replace(" ", "+") if "T" in value else value)
    if m is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = m.groups()
    micro = int((fraction or "0").ljust(6, "0")[:6])
    tz = timezone.utc
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    # Date-only (Azure accepts it): midnight UTC, the earliest reading of that day.
    instant = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0),
                       int(second or 0), micro, tzinfo=tz)
    return instant.astimezone(timezone.utc)
