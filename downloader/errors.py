"""One exception hierarchy for weightlift; each class maps to a documented exit code.

Every error carries a one-line message (what happened) and an optional hint (what to do next);
the CLI prints both on one line and exits with ``exit_code``. Messages never contain a presigned
URL's query string or an API key: build them with ``redact_url``; as a safety net, every
message and hint is passed through ``redact.redact_text`` when the error is made.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from typing import TYPE_CHECKING

# Redaction lives in redact.py; redact_url and LazyRedactedUrl are re-exported from here for
# the modules that import them from errors.
from weightlift.downloader.redact import LazyRedactedUrl as LazyRedactedUrl
from weightlift.downloader.redact import redact_text
from weightlift.downloader.redact import redact_url as redact_url

if TYPE_CHECKING:
    from weightlift.downloader.response_check import Decision

__all__ = [
    "DISK_FULL_HINT", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_PLATFORM", "EXIT_TRANSFER_FAILED",
    "EXIT_USAGE", "EXIT_VERIFY_FAILED", "Abandon", "BadManifest", "DiskFull",
    "LazyRedactedUrl", "NetworkError", "PlatformError", "Rejected", "SizeMismatch",
    "StatusError", "TransferFailed", "UsageError", "VerificationFailed", "WeightliftError",
    "disk_full", "is_disk_full", "redact_url", "write_failed",
]

EXIT_OK = 0
EXIT_VERIFY_FAILED = 1
EXIT_USAGE = 2
EXIT_TRANSFER_FAILED = 3
EXIT_PLATFORM = 4
EXIT_INTERRUPTED = 130


class WeightliftError(Exception):
    """Root of every error weightlift raises on purpose."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, hint: str | None = None) -> None:
        # Text we did not write (a library's message, a platform's body) may be in here.
        message = redact_text(message)
        super().__init__(message)
        self.message = message
        self.hint = redact_text(hint) if hint else hint

    def one_line(self) -> str:
        """The message and the hint as one line, for a terminal or a log."""
        text = " ".join(self.message.split())
        if self.hint:
            text += f" ({' '.join(self.hint.split())})"
        return text


class UsageError(WeightliftError):
    """Bad arguments on the command line."""

    exit_code = EXIT_USAGE


class BadManifest(WeightliftError):
    """A manifest that is malformed or hostile; nothing has been written."""

    exit_code = EXIT_USAGE


class TransferFailed(WeightliftError):
    """Bytes could not be fetched after retries; partial state is kept for a resume."""

    exit_code = EXIT_TRANSFER_FAILED


class DiskFull(TransferFailed):
    """Not enough space for the download (up front or mid-pull); state is kept."""


DISK_FULL_HINT = "free some space, then run the same command to resume"


def is_disk_full(exc: OSError) -> bool:
    """The one test of "the disk (or the user's quota) is full" every write site asks."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full(where: object, detail: str | None = None) -> DiskFull:
    """The one DiskFull every write site raises: "no space left on <the output folder>"."""
    return DiskFull(f"no space left on {where}" + (f": {detail}" if detail else ""),
                    DISK_FULL_HINT)


def write_failed(exc: OSError, where: object, what: str) -> TransferFailed:
    """A local write (``what``: "the part file", "the journal", ...) that failed: DiskFull
    when the disk or quota is full, else TransferFailed with the system's reason."""
    if is_disk_full(exc):
        return disk_full(where, f"cannot write {what}")
    return TransferFailed(f"cannot write {what} in {where}: {exc.strerror or exc}",
                          "fix the output folder, then run the same command to resume")


class VerificationFailed(WeightliftError):
    """Integrity, format or parameter-count check failed."""

    exit_code = EXIT_VERIFY_FAILED


class SizeMismatch(VerificationFailed):
    """The manifest's size and the stored object's disagree: a re-run cannot fix it."""


class PlatformError(WeightliftError):
    """The training platform refused or failed (auth, not found, job failed or unfinished)."""

    exit_code = EXIT_PLATFORM


# ---- a request's outcomes inside downloader/ (never shown to users as such) ------------------
# fetch.py translates every aiohttp and socket error into these; no aiohttp type leaks out.

class NetworkError(Exception):
    """Connection refused/reset/dropped, stalled, too slow, or a body cut short: retryable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StatusError(Exception):
    """A non-200/206 answer, with the start of its body for classification."""

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.headers = headers
        self.body = body


class Rejected(Exception):
    """A 200/206 whose headers (or body length) do not match what was asked: not written."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.reason)
        self.decision = decision


class Abandon(Exception):
    """The request was superseded (its file restarted or ended): drop the rest silently."""
