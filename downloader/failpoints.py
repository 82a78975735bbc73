"""Failpoints: a test seam for crash testing. Not a user feature; nothing documents it to users.

The crash loop (tests/chaos/test_crash_loop.py) must kill a pull at exact moments that a timer
cannot hit reliably: between a data write and the journal that claims it, between the finished-log
append and the rename, between two renames of a batch, and so on. As in fail-rs and FoundationDB's
buggify, the code names those moments with ``failpoint("name")`` and the environment arms them::

    WEIGHTLIFT_FAILPOINTS="finalize.before_rename=1,journal.before_write=3"

makes the process SIGKILL itself (no cleanup, no ``finally``, no atexit: exactly kill -9) on the
1st arrival at ``failpoint("finalize.before_rename")``, or on the 3rd arrival at
``failpoint("journal.before_write")``, whichever comes first. ``name`` alone means ``name=1``.
Before dying it writes one line, ``weightlift failpoint NAME: SIGKILL at arrival N``, to stderr
(fd 2, unbuffered), so a test can tell its kill from a crash.

The variable is read once, at import. When it is unset (every real run), ``failpoint()`` returns
after one module-level bool check. A malformed value or an unknown name raises ValueError at
import: a test that believes it armed a failpoint must never pass because of a typo.

Arrivals are counted per name across threads (finalisation and journal writes run in worker
threads), under a lock taken only when armed.
"""

from __future__ import annotations

import os
import signal
import threading

ENV = "WEIGHTLIFT_FAILPOINTS"

# Every failpoint in the code, and where it sits (tests check each is placed exactly once).
NAMES: dict[str, str] = {
    "fetch.after_write":
        "fetch.fetch_range: a block was pwritten to the part file, not yet counted or journaled",
    "journal.before_write":
        "engine._write_journals: the data was fdatasynced, its journal not yet written",
    "journal.before_rename":
        "journal.write_atomic: the journal's temp file is written, not yet renamed over it",
    "finalize.before_log":
        "finalize.commit_batch: parts sealed (size checked, fsynced), finished log not appended",
    "finalize.before_rename":
        "finalize.commit_batch: finished log appended and synced, no part renamed yet",
    "finalize.between_renames":
        "finalize.commit_batch: before each rename of a batch but the first",
    "finalize.before_dir_sync":
        "finalize.commit_batch: every part of the batch renamed, folders not yet fsynced",
    "finalize.before_journal_unlink":
        "engine._finalize: the file is final and logged, its journal not yet removed",
    "receipt.before_write":
        "receipt.write_receipt: every file final, the receipt not yet written",
    "receipt.before_rename":
        "receipt.write_receipt: the receipt's temp file is written and synced, not renamed",
}


def parse(spec: str) -> dict[str, int]:
    """``"a=3, b"`` -> ``{"a": 3, "b": 1}``; ValueError on anything else or an unknown name."""
    armed: dict[str, int] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, count = item.partition("=")
        name = name.strip()
        if name not in NAMES:
            raise ValueError(f"{ENV}: unknown failpoint {name!r} (known: {', '.join(NAMES)})")
        if name in armed:
            raise ValueError(f"{ENV}: failpoint {name!r} named twice")
        try:
            n = int(count.strip()) if sep else 1
        except ValueError:
            raise ValueError(f"{ENV}: {item!r}: the arrival count must be an integer") from None
        if n < 1:
            raise ValueError(f"{ENV}: {item!r}: the arrival count must be at least 1")
        armed[name] = n
    return armed


_armed: dict[str, int] = parse(os.environ.get(ENV, ""))
_ENABLED = bool(_armed)
_arrivals: dict[str, int] = {}
_lock = threading.Lock()


def failpoint(name: str) -> None:
    """A named moment; kills the process here when the environment armed it (see module)."""
    if not _ENABLED:
        return
    _arrive(name)


def _arrive(name: str) -> None:
    with _lock:
        n = _arrivals[name] = _arrivals.get(name, 0) + 1
        if _armed.get(name) != n:
            return
        try:
            os.write(2, f"weightlift failpoint {name}: SIGKILL at arrival {n}\n".encode())
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGKILL)
