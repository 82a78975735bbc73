"""Values from the command line and the environment, parsed in one place. Pure.

Every bad value raises ``UsageError`` (exit 2) with one line that names the option or the
variable, never an internal error and never a silent fallback to the default.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TypeVar

from weightlift.downloader.errors import UsageError
from weightlift.downloader.planner import DEFAULT_CONNECTIONS

T = TypeVar("T")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
MAX_CONNECTIONS = 1024

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """'8M', '16MiB', '1g', '1.5G', '4096' → bytes (binary units, as aria2c and curl). Raises
    ValueError with the reason."""
    t = text.strip().lower().replace("_", "")
    t = t.removesuffix("ib").removesuffix("b")
    suffix = t[-1:] if t[-1:] in _UNITS and t[-1:] else ""
    number = t[: len(t) - len(suffix)].strip()
    try:
        value = int(Decimal(number) * _UNITS[suffix])
    except (InvalidOperation, ValueError):
        raise ValueError(f"not a size: {text!r} (try 8M or 16MiB)") from None
    if value <= 0:
        raise ValueError(f"must be positive: {text!r}")
    return value


def parse_rate(text: str) -> float:
    """'20M', '20M/s', '500K', '1048576' → bytes per second (binary units)."""
    t = text.strip()
    if t.lower().endswith("/s"):
        t = t[:-2]
    try:
        return float(parse_size(t))
    except ValueError:
        raise ValueError(f"not a rate: {text!r} (try 20M for 20 MiB/s)") from None


def parse_count(text: str) -> int:
    """A parameter count: '2360000000', '2_360_000_000', '2,360,000,000', '2.36e9', '2.36B'.
    Refuses fractions and negatives (a count is whole)."""
    t = text.strip().replace("_", "").replace(",", "")
    scale = {"k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}.get(t[-1:].lower(), 1)
    if scale != 1:
        t = t[:-1]
    try:
        value = Decimal(t) * scale
    except InvalidOperation:
        raise ValueError(f"not a whole number: {text!r} (e.g. 2360000000, 2_360_000_000 or "
                         "2.36e9)") from None
    if not value.is_finite() or value != value.to_integral_value():
        raise ValueError(f"not a whole number: {text!r}")
    if value < 0:
        raise ValueError(f"must not be negative: {text!r}")
    return int(value)


def parse_connections(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_CONNECTIONS:
        raise ValueError(f"must be between 1 and {MAX_CONNECTIONS}: {text!r}")
    return value


def _seconds(text: str, *, allow_zero: bool) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"not a number of seconds: {text!r}") from None
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value < 86_400):
        bound = "0 (included)" if allow_zero else "0"
        raise ValueError(f"must be between {bound} and 86400 seconds: {text!r}")
    return value


def _bytes_per_second(text: str) -> float:
    """A speed floor: bytes/s as a plain number or a size (1K, 1M); 0 turns it off."""
    if text.strip() in ("0", "0.0"):
        return 0.0
    return parse_rate(text)


@dataclass(frozen=True)
class EnvSettings:
    """The WEIGHTLIFT_* environment, checked. None: the variable is unset (or empty)."""

    connections: int | None = None
    output_root: str | None = None
    stall_timeout: float = 30.0
    retry_base: float = 0.25
    log_level: str | None = None
    header_timeout: float = 30.0
    low_speed: float = 1024.0  # bytes/s; 0: no speed floor
    low_speed_time: float = 30.0


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def env_settings(env: Mapping[str, str]) -> EnvSettings:
    """Read WEIGHTLIFT_CONNECTIONS, WEIGHTLIFT_OUTPUT_ROOT, WEIGHTLIFT_STALL_TIMEOUT,
    WEIGHTLIFT_RETRY_BASE, WEIGHTLIFT_LOG, WEIGHTLIFT_HEADER_TIMEOUT, WEIGHTLIFT_LOW_SPEED and
    WEIGHTLIFT_LOW_SPEED_TIME; a bad value raises UsageError naming it."""

    def level(raw: str) -> str:
        if raw.upper() not in LOG_LEVELS:
            raise ValueError(f"not a log level (use one of {', '.join(LOG_LEVELS)})")
        return raw.upper()

    stall = _parsed(env, "WEIGHTLIFT_STALL_TIMEOUT", lambda t: _seconds(t, allow_zero=False))
    base = _parsed(env, "WEIGHTLIFT_RETRY_BASE", lambda t: _seconds(t, allow_zero=True))
    header = _parsed(env, "WEIGHTLIFT_HEADER_TIMEOUT", lambda t: _seconds(t, allow_zero=False))
    low_speed = _parsed(env, "WEIGHTLIFT_LOW_SPEED", _bytes_per_second)
    low_time = _parsed(env, "WEIGHTLIFT_LOW_SPEED_TIME", lambda t: _seconds(t, allow_zero=False))
    return EnvSettings(
        header_timeout=30.0 if header is None else header,
        low_speed=1024.0 if low_speed is None else low_speed,
        low_speed_time=30.0 if low_time is None else low_time,
        connections=_parsed(env, "WEIGHTLIFT_CONNECTIONS", parse_connections),
        output_root=_get(env, "WEIGHTLIFT_OUTPUT_ROOT"),
        stall_timeout=30.0 if stall is None else stall,
        retry_base=0.25 if base is None else base,
        log_level=_parsed(env, "WEIGHTLIFT_LOG", level),
    )


def _parsed(env: Mapping[str, str], name: str, parse: Callable[[str], T]) -> T | None:
    raw = _get(env, name)
    if raw is None:
        return None
    try:
        return parse(raw)
    except ValueError as exc:
        raise UsageError(f"{name}={raw!r}: {exc}", f"fix or unset {name}") from None


def default_connections(settings: EnvSettings) -> int:
    return settings.connections or DEFAULT_CONNECTIONS


_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]+")


def folder_name(model_id: str | None, sources: list[str]) -> str:
    """A single safe folder name for a pull under WEIGHTLIFT_OUTPUT_ROOT: the model (or
    checkpoint) id when the source has one, else the source's last path segment."""
    raw = model_id or ""
    if not raw and sources:
        first = sources[0].split("?", 1)[0].rstrip("/")
        raw = first.rsplit("/", 1)[-1]
        for ext in (".json",):
            raw = raw.removesuffix(ext)
    name = _UNSAFE.sub("-", raw).strip(".-")[:128]
    return name or "model"
