"""What a pull is told (``EngineConfig``) and what it answers (``PullResult``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from weightlift.downloader.byte_source import ByteSource
from weightlift.downloader.lifecycle_events import Limits
from weightlift.downloader.planner import DEFAULT_CONNECTIONS
from weightlift.downloader.retry import RetryPolicy

__all__ = ["MAX_OPEN_PARTS", "EngineConfig", "FileResult", "HeaderCheck", "PullResult"]

# A header check for files whose format we know: (rel, prefix, file size) -> bytes still needed
# before it can judge, or 0 when it has judged (raising VerificationFailed when bad).
HeaderCheck = Callable[[str, bytes, int], int]

# Part files open at once, about: the first this many are opened (and preallocated) up front;
# later ones when their turn comes, once earlier ones are sealed and closed. A pull of 50,000
# tiny files would otherwise hold 50,000 descriptors (EMFILE past the usual 1,024 or 20,000).
MAX_OPEN_PARTS = 512


def _env_float(name: str, default: float) -> float:
    """A number from the environment (for tests and unusual links); the default otherwise."""
    try:
        value = float(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if value >= 0 else default


@dataclass(frozen=True)
class EngineConfig:
    connections: int = DEFAULT_CONNECTIONS
    chunk_size: int | None = None  # None: chosen from the total size and connections
    read_size: int = 1 << 20
    stall_timeout: float = 30.0  # no byte at all for this long: the request failed
    connect_timeout: float = 30.0
    # The status line and headers must be in within this many seconds, however they trickle
    # (WEIGHTLIFT_HEADER_TIMEOUT).
    header_timeout: float = field(
        default_factory=lambda: _env_float("WEIGHTLIFT_HEADER_TIMEOUT", 30.0))
    # A body must bring at least min_speed bytes/s over every min_speed_window seconds, like
    # curl's --speed-limit/--speed-time (WEIGHTLIFT_LOW_SPEED, WEIGHTLIFT_LOW_SPEED_TIME;
    # 0 turns it off).
    min_speed: float = field(default_factory=lambda: _env_float("WEIGHTLIFT_LOW_SPEED", 1024.0))
    min_speed_window: float = field(
        default_factory=lambda: _env_float("WEIGHTLIFT_LOW_SPEED_TIME", 30.0))
    max_rate: float | None = None  # a cap in bytes/s for the whole pull (None: none)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    durable: bool = True  # fsync data before the journal that claims it, and before rename
    # Journal when this much (or 1/400 of the model, if less) is unjournaled across files, at
    # most every journal_spacing s and at least every journal_interval s: a kill -9 then costs
    # about max(1/400 of the model, 256 KiB, what 50 ms bring) plus the blocks in flight.
    journal_bytes: int = 4 << 20
    journal_interval: float = 1.0
    journal_spacing: float = 0.05
    max_file_restarts: int = 3
    max_bad_responses: int = 8
    max_expired_streak: int = 5
    check_free_space: bool = True
    header_check: HeaderCheck | None = None
    seed: int | None = None
    byte_source: ByteSource | None = None  # where bytes come from (None: HTTP)

    def limits(self) -> Limits:
        return Limits(max_restarts=self.max_file_restarts,
                      max_bad_responses=self.max_bad_responses,
                      max_expired_streak=self.max_expired_streak)


@dataclass
class FileResult:
    rel: str
    size: int
    sha256: str | None
    status: str  # downloaded | already-complete | failed
    bytes_fetched: int = 0
    error: str | None = None
    exit_code: int = 0
    etag: str | None = None
    source: str = ""  # redacted URL (no query string)


@dataclass
class PullResult:
    files: list[FileResult]
    bytes_fetched: int
    seconds: float
    refreshes: int
    retries: int
    restarts: int

    @property
    def ok(self) -> bool:
        return all(f.status != "failed" for f in self.files)
