"""The vocabulary of a file's lifecycle: its limits, requests, events (what happened) and
actions (what the I/O shell must do). Plain frozen values; ``lifecycle.FileState`` steps on
them."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from weightlift.downloader.errors import TransferFailed, WeightliftError
from weightlift.downloader.response_check import Decision
from weightlift.downloader.retry import Decision as RetryDecision
from weightlift.downloader.storage_errors import StorageErrorKind


@dataclass(frozen=True)
class Limits:
    """Every budget of a file's lifecycle, in one place."""

    max_restarts: int = 3  # the file started over (object changed, hash differed, no Range)
    max_bad_responses: int = 8  # 200/206 answers that did not match what was asked
    max_expired_streak: int = 5  # expired-URL answers in a row, each followed by a refresh
    no_range_retries: int = 2  # 200s to a Range request retried before fetching it whole
    bad_response_backoff_cap: int = 4  # backoff step a bad answer waits at most
    # A failed request resets its attempt count only when it left at least this many bytes on
    # disk for good: "headers, 100 bytes, silence" must not buy a fresh budget every time.
    progress_reset_bytes: int = 1 << 20


class Phase(enum.Enum):
    FETCHING = "fetching"
    FINALISING = "finalising"  # every byte landed: hashing, then the commit
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class Request:
    """One GET: bytes [start, end) (``end`` None: to the end of an object of unknown size).
    ``whole`` sends no Range header; ``may_be_whole`` accepts a 200 (the whole object) to a
    Range request, for a file's first request while Range support is not yet proven."""

    id: int
    start: int
    end: int | None
    whole: bool
    attempt: int = 0
    delay: float = 0.0
    may_be_whole: bool = False


@dataclass
class Live:
    """A request in flight (or failed and waiting for its retry decision)."""

    request: Request
    landed: int = 0  # bytes it wrote
    whole: bool = False  # its answer is the whole object from byte 0


# ---- events --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Landed:
    """``n`` bytes of request ``req`` were written at ``offset`` (after ``is_current``)."""

    req: int
    offset: int
    n: int


@dataclass(frozen=True)
class Answered:
    """The response to ``req`` was judged WRITE (its body follows)."""

    req: int
    decision: Decision
    storage_sha: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class Rejected:
    """The response to ``req`` was judged not to be written (see ``response_check``)."""

    req: int
    decision: Decision


@dataclass(frozen=True)
class StatusFailed:
    """A non-2xx answer, classified by ``storage_errors``; ``status`` is the policy's say on
    it (None: retried like a network error)."""

    req: int
    kind: StorageErrorKind
    reason: str
    status: int | None = None
    retry_after: str | None = None
    can_refresh: bool = True
    where: str = ""


@dataclass(frozen=True)
class NetFailed:
    """The connection failed, stalled, went too slow, or the body ended early."""

    req: int
    reason: str


@dataclass(frozen=True)
class Ended:
    """Request ``req``'s body ended normally (all asked for, or the end of an unknown-length
    object)."""

    req: int


@dataclass(frozen=True)
class LocalFailed:
    """Request ``req`` met an error retrying cannot fix (a bad redirect, a local disk)."""

    req: int
    error: WeightliftError


@dataclass(frozen=True)
class RetryDecided:
    req: int
    decision: RetryDecision


@dataclass(frozen=True)
class Refreshed:
    """The manifest was refreshed after ``req`` met an expired URL."""

    req: int


@dataclass(frozen=True)
class HeaderJudged:
    generation: int
    needed: int  # 0: judged good (or not a known format); else bytes it needs first
    error: str | None = None


@dataclass(frozen=True)
class Digested:
    generation: int
    digest: str


@dataclass(frozen=True)
class Committed:
    generation: int
    error: WeightliftError | None = None


Event = (Landed | Answered | Rejected | StatusFailed | NetFailed | LocalFailed | Ended
         | RetryDecided | Refreshed | HeaderJudged | Digested | Committed)


# ---- actions -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Fetch:
    request: Request


@dataclass(frozen=True)
class AskRetry:
    """Ask the retry policy about failed request ``req``; answer with ``RetryDecided``."""

    req: int
    attempt: int
    reason: str
    status: int | None = None
    retry_after: str | None = None


@dataclass(frozen=True)
class Refresh:
    """Refresh the manifest (the URL ``req`` used expired); answer with ``Refreshed``."""

    req: int


@dataclass(frozen=True)
class Restart:
    """The file's bytes were thrown away: new hash, new journal (the state is reset already)."""

    reason: str
    lost: int


@dataclass(frozen=True)
class ResetHash:
    """A whole-object GET starts over from byte 0: the hash starts over too."""


@dataclass(frozen=True)
class HashTo:
    offset: int


@dataclass(frozen=True)
class CheckHeader:
    generation: int
    need: int  # bytes of the prefix to read for the check (0: none yet)


@dataclass(frozen=True)
class Finalise:
    """Every byte is in: hash to ``size`` and answer with ``Digested``."""

    generation: int
    size: int


@dataclass(frozen=True)
class Commit:
    """The digest agrees: seal, log and rename; answer with ``Committed``."""

    generation: int
    digest: str


@dataclass(frozen=True)
class Fail:
    error: WeightliftError
    digest: str | None = None


Action = (Fetch | AskRetry | Refresh | Restart | ResetHash | HashTo | CheckHeader | Finalise
          | Commit | Fail)


# ---- failure lines shared by the lifecycle and the size probe ---------------------------------

def url_expired(rel: str, reason: str) -> TransferFailed:
    return TransferFailed(f"{rel}: the URL has expired ({reason})",
                          "get a fresh manifest and run again: finished bytes are kept")


def refused(rel: str, reason: str, where: str) -> TransferFailed:
    return TransferFailed(f"{rel}: storage refused it: {reason}" + (f" ({where})" if where else ""))


def gave_up(rel: str, attempts: int, reason: str) -> TransferFailed:
    return TransferFailed(f"{rel}: gave up after {attempts} tries: {reason}",
                          "run the same command again to resume; finished bytes are kept")
