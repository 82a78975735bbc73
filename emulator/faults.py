"""Fault injection for the storage emulator: what goes wrong (`Fault`) and when (`FaultPlan`).

A fault is armed per key with a count: `plan.arm(key, Fault.drop_after(1000), times=2)` applies
to the next two matching requests. A fault only matches requests it can affect (below); among
armed faults, the first armed that matches wins, one fault per request.

- status / expire / replace_object / throttle / stall / drop_after / short_body / gzip: any
  request of an armed method (GET by default) for the key; status and expire preempt the answer.
- ignore_range / wrong_content_range: only requests that would be answered 206.
- flip_byte: only responses whose body covers that object offset.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

FaultKind = Literal[
    "drop_after", "short_body", "status", "stall", "ignore_range", "wrong_content_range",
    "flip_byte", "replace_object", "gzip", "expire", "throttle",
]
ANY_KEY = "*"


@dataclass(frozen=True)
class Fault:
    """One misbehaviour; build it with the classmethods, e.g. `Fault.drop_after(1000)`."""

    kind: FaultKind
    n_bytes: int = 0  # drop_after: bytes sent; short_body: bytes withheld; stall: bytes first
    offset: int = 0  # flip_byte: object offset corrupted
    seconds: float = 0.0  # stall
    code: int = 0  # status
    retry_after: str | None = None  # status
    body: bytes | None = None  # status: None means an S3-style XML error body
    new_content: bytes | Path | None = None  # replace_object
    rate: float = 0.0  # throttle: bytes per second

    @classmethod
    def drop_after(cls, n_bytes: int) -> Fault:
        """Send the headers and `n_bytes` of body, then abort the connection (reset)."""
        return cls("drop_after", n_bytes=_non_negative(n_bytes))

    @classmethod
    def short_body(cls, n_bytes: int) -> Fault:
        """Promise the full Content-Length, send all but the last `n_bytes`, close cleanly (FIN)."""
        return cls("short_body", n_bytes=_non_negative(n_bytes))

    @classmethod
    def status(cls, code: int, retry_after: str | None = None, body: bytes | None = None) -> Fault:
        """Answer `code` (500, 503, 429, 408, ...) with an optional Retry-After."""
        if not 100 <= code <= 599:
            raise ValueError(f"not an HTTP status: {code}")
        return cls("status", code=code, retry_after=retry_after, body=body)

    @classmethod
    def stall(cls, seconds: float, after_bytes: int = 0) -> Fault:
        """Send `after_bytes` of body, go silent for `seconds`, then send the rest."""
        return cls("stall", seconds=seconds, n_bytes=_non_negative(after_bytes))

    @classmethod
    def ignore_range(cls) -> Fault:
        """Answer a Range request with 200 and the whole object."""
        return cls("ignore_range")

    @classmethod
    def wrong_content_range(cls) -> Fault:
        """Answer 206 for a different range than asked (same length where possible)."""
        return cls("wrong_content_range")

    @classmethod
    def flip_byte(cls, offset: int) -> Fault:
        """Corrupt the object byte at `offset` (XOR 0xFF) in the response body."""
        return cls("flip_byte", offset=_non_negative(offset))

    @classmethod
    def replace_object(cls, new_content: bytes | Path) -> Fault:
        """Overwrite the object while this request is served: this response still carries the
        old version (as S3 does for a GET in flight); every later request sees the new one."""
        return cls("replace_object", new_content=new_content)

    @classmethod
    def gzip(cls) -> Fault:
        """Send the body gzip-compressed with `Content-Encoding: gzip`, whatever was asked."""
        return cls("gzip")

    @classmethod
    def expire(cls) -> Fault:
        """Answer 403 AccessDenied "Request has expired" although the URL is still valid."""
        return cls("expire")

    @classmethod
    def throttle(cls, bytes_per_second: float) -> Fault:
        """Send the body no faster than `bytes_per_second` (for kill-mid-download tests)."""
        if bytes_per_second <= 0:
            raise ValueError("bytes_per_second must be positive")
        return cls("throttle", rate=float(bytes_per_second))

    @property
    def preempts(self) -> bool:
        """True when the fault replaces the answer (no object bytes are served)."""
        return self.kind in ("status", "expire")


def _non_negative(n: int) -> int:
    if n < 0:
        raise ValueError("must be >= 0")
    return n


@dataclass(frozen=True)
class Exchange:
    """What the emulator is about to answer, for matching faults against it."""

    key: str
    method: str
    start: int  # the first object byte asked for (0 without Range; size if unsatisfiable)
    body: tuple[int, int] | None  # [start, end) of the object the body would carry
    partial: bool  # would be answered 206


@dataclass
class Armed:
    fault: Fault
    key: str
    remaining: int
    from_offset: int
    methods: frozenset[str]

    def matches(self, ex: Exchange) -> bool:
        if self.key not in (ex.key, ANY_KEY) or ex.method not in self.methods:
            return False
        if ex.start < self.from_offset:
            return False
        kind = self.fault.kind
        if self.fault.preempts or kind == "replace_object":
            return True
        if ex.body is None:
            return False
        if kind in ("ignore_range", "wrong_content_range"):
            return ex.partial
        if kind == "flip_byte":
            return ex.body[0] <= self.fault.offset < ex.body[1]
        return True


@dataclass
class FaultPlan:
    """Armed faults in the order they were armed; thread-safe (tests arm from another thread)."""

    _armed: list[Armed] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def arm(
        self, key: str, fault: Fault, *, times: int = 1, from_offset: int = 0,
        methods: Iterable[str] = ("GET",),
    ) -> None:
        if times < 1:
            raise ValueError("times must be >= 1")
        entry = Armed(fault, key, times, from_offset, frozenset(m.upper() for m in methods))
        with self._lock:
            self._armed.append(entry)

    def take(self, ex: Exchange) -> Fault | None:
        """The fault to apply to this exchange, if any, counting it as used."""
        with self._lock:
            for entry in self._armed:
                if entry.matches(ex):
                    entry.remaining -= 1
                    if entry.remaining == 0:
                        self._armed.remove(entry)
                    return entry.fault
        return None

    def pending(self, key: str | None = None) -> int:
        """How many applications are still armed (for `key`, or all)."""
        with self._lock:
            return sum(a.remaining for a in self._armed if key is None or a.key == key)

    def clear(self, key: str | None = None) -> None:
        with self._lock:
            self._armed = [a for a in self._armed if key is not None and a.key != key]
