"""One exception hierarchy for weightlift; each class maps to a documented exit code.

Every error carries a one-line message (what happened) and an optional hint (what to do next);
the CLI prints both on one line and exits with ``exit_code``. Messages never contain a presigned
URL's query string or an API key: build them with ``redact_url``.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_URL_QUERY = re.compile(r"(https?://[^\s?#\"'<>]+)\?[^\s\"'<>]*", re.IGNORECASE)

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
        super().__init__(message)
        self.message = message
        self.hint = hint

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


class VerificationFailed(WeightliftError):
    """Integrity, format or parameter-count check failed."""

    exit_code = EXIT_VERIFY_FAILED


class PlatformError(WeightliftError):
    """The training platform refused or failed (auth, not found, job failed or unfinished)."""

    exit_code = EXIT_PLATFORM


def redact_url(url: str) -> str:
    """The URL without its query string and fragment: presigned signatures never leave us."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    query = "…" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def scrub(text: str) -> str:
    """Remove the query string of every URL in free text (for messages we did not write)."""
    return _URL_QUERY.sub(lambda m: m.group(1) + "?…", text)
