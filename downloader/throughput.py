"""Bandwidth arithmetic with an injected clock (pure): the rate cap and the speed floor.

``TokenBucket`` is the ``--max-rate`` cap shared by all connections of a pull; ``SpeedFloor``
is the lowest speed a body may keep over a window before the request counts as failed (curl's
``--speed-limit``/``--speed-time``, aria2's ``--lowest-speed-limit``).
"""

from __future__ import annotations

__all__ = ["SpeedFloor", "TokenBucket"]


class TokenBucket:
    """``rate`` bytes/s on average, bursts of up to ``burst`` bytes. ``take`` never sleeps: it
    says how long the caller must wait before the bytes it took are due."""

    def __init__(self, rate: float, now: float, burst: float | None = None) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0 bytes/s, not {rate!r}")
        self.rate = float(rate)
        # One block at full speed, at least 64 KiB: smaller bursts only cost wake-ups.
        self.burst = float(burst) if burst is not None else max(64 << 10, self.rate / 10)
        self._tokens = self.burst
        self._at = now

    def take(self, n: int, now: float) -> float:
        """Charge ``n`` bytes at ``now``; returns the seconds to wait (0.0: go on)."""
        if now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
        self._tokens -= n
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class SpeedFloor:
    """Fails a body that brings fewer than ``limit`` bytes/s over a ``window`` of seconds."""

    def __init__(self, limit: float, window: float, now: float) -> None:
        self.limit = limit
        self.window = window
        self._since = now
        self._bytes = 0

    def count(self, n: int) -> None:
        """``n`` bytes arrived (called per block: an addition, no clock)."""
        self._bytes += n

    def check(self, now: float) -> bool:
        """At the end of a window: was it fast enough? Starts the next window."""
        ok = self._bytes >= self.limit * (now - self._since)
        self._since, self._bytes = now, 0
        return ok

    def deadline(self) -> float:
        """When the current window ends."""
        return self._since + self.window
