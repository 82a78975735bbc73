"""Per-file journals (finished byte ranges + validator) and the finished-files log.

The engine writes a journal only after the bytes it claims have been written to the part file
(and, when durable, synced), always by write-temp-then-rename: a journal on disk never claims a
byte that is not in the part file. A resume trusts nothing else.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from weightlift.downloader.failpoints import failpoint
from weightlift.downloader.ranges import RangeSet
from weightlift.downloader.redact import redact_text
from weightlift.downloader.safe_files import create_fresh, read_plain, unlink_quietly

JOURNAL_VERSION = 1
# A journal is a few ranges; anything this large was not written by us.
MAX_JOURNAL_BYTES = 64 << 20
# One line per finished file: 100,000 files make ~25 MB.
MAX_FINISHED_LOG_BYTES = 256 << 20


@dataclass
class JournalState:
    rel: str
    size: int
    etag: str | None = None
    last_modified: str | None = None
    ranged: bool = True
    done: RangeSet = field(default_factory=RangeSet)

    def to_json(self) -> bytes:
        return json.dumps({
            "version": JOURNAL_VERSION,
            "rel": self.rel,
            "size": self.size,
            "etag": self.etag,
            "last_modified": self.last_modified,
            "ranged": self.ranged,
            "done": [[s, e] for s, e in self.done],
        }).encode()


def load_journal(path: Path, rel: str, size: int | None) -> JournalState | None:
    """The journal at ``path`` if it is readable and describes this rel (and size); else None.
    A symlink, FIFO or oversized file planted there is not read (None: the file starts over,
    and the next journal write replaces it)."""
    try:
        data = json.loads(read_plain(path, MAX_JOURNAL_BYTES))
    except (OSError, ValueError):
        return None
    try:
        if data.get("version") != JOURNAL_VERSION or data.get("rel") != rel:
            return None
        jsize = int(data["size"])
        if size is not None and jsize != size:
            return None
        done = RangeSet()
        for start, end in data.get("done", []):
            start, end = int(start), int(end)
            if 0 <= start <= end <= jsize:
                done.add(start, end)
        return JournalState(
            rel=rel, size=jsize, etag=data.get("etag"), last_modified=data.get("last_modified"),
            ranged=bool(data.get("ranged", True)), done=done,
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def write_atomic(path: Path, data: bytes, *, durable: bool) -> None:
    """Replace ``path`` with ``data``: temp file, optional fsync, rename. On an error (a full
    disk) the old file stays as it was and the temp file is removed: a short write never
    replaces a whole journal with a torn one."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = create_fresh(tmp)
    try:
        try:
            view = memoryview(data)
            while view:  # a write cut short by a full disk says so on the next one
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        unlink_quietly(tmp)
        raise
    failpoint("journal.before_rename")
    os.replace(tmp, path)


@dataclass(frozen=True)
class FinishedEntry:
    rel: str
    size: int
    sha256: str
    etag: str | None
    source: str
    mtime_ns: int

    def __post_init__(self) -> None:
        # A safety net: the engine records a redacted URL already; no signature reaches disk.
        object.__setattr__(self, "source", redact_text(self.source))


def append_finished(path: Path, entries: FinishedEntry | Sequence[FinishedEntry], *,
                    durable: bool) -> None:
    """Append one line per entry to the finished log: one open, one write loop, one sync for
    the whole group (a group commit of many small files shares the sync)."""
    group = [entries] if isinstance(entries, FinishedEntry) else list(entries)
    data = "".join(json.dumps(e.__dict__) + "\n" for e in group).encode()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644)
    try:
        start = os.fstat(fd).st_size
        if start and os.pread(fd, 1, start - 1) != b"\n":
            # kill -9 mid-write of a large group (a fatal signal stops a write between pages)
            # left a torn last line: start on a new line, or the first entry is glued to it.
            data = b"\n" + data
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
        except OSError:
            # A full disk cut the group short: drop its torn tail, or the next append would be
            # glued to it and that line lost too.
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass
            raise
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def load_finished(path: Path) -> dict[str, FinishedEntry]:
    """The finished log; a torn last line (kill -9 mid-append) is ignored."""
    out: dict[str, FinishedEntry] = {}
    try:
        text = read_plain(path, MAX_FINISHED_LOG_BYTES).decode("utf-8", errors="replace")
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        try:
            d = json.loads(line)
            entry = FinishedEntry(
                rel=str(d["rel"]), size=int(d["size"]), sha256=str(d["sha256"]),
                etag=d.get("etag"), source=str(d.get("source", "")),
                mtime_ns=int(d.get("mtime_ns", 0)),
            )
        except (ValueError, KeyError, TypeError):
            continue
        out[entry.rel] = entry
    return out
