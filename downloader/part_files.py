"""The part files of a pull: judge each against its journal, open them (at most about
MAX_OPEN_PARTS at once), preallocate."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

from weightlift.downloader.finalize import open_part, preallocate
from weightlift.downloader.hashing import HashFrontier
from weightlift.downloader.journal import JournalState, load_journal
from weightlift.downloader.slot import FileSlot
from weightlift.downloader.workarea import WorkArea


def resume(slot: FileSlot, work: WorkArea, listing: set[str] | None) -> JournalState:
    """Judge the file's journal against its part on disk (a stat, no descriptor kept): the
    journal to go on from (a fresh one when the part is not vouched for)."""
    st_ = slot.state
    part = work.part_path(st_.rel)
    journal_path = work.journal_path(st_.rel)
    # One listing of the work area instead of a failed open per file (1,000 small files).
    slot.journal_on_disk = listing is None or journal_path.name in listing
    st = None
    if listing is None or part.name in listing:
        try:
            st = os.stat(part, follow_symlinks=False)
        except FileNotFoundError:
            pass
    # Anything but a plain file there is refused by open_part when the part is opened.
    regular = st is not None and stat.S_ISREG(st.st_mode)
    disk_size = st.st_size if st is not None and regular else 0
    slot.part_owned = st.st_blocks * 512 if st is not None and regular else 0
    prior = load_journal(journal_path, st_.rel, st_.size) if slot.journal_on_disk else None
    if prior is not None and prior.done.total and max(e for _, e in prior.done) <= disk_size:
        return prior
    slot.stale_part = st is not None
    if slot.stale_part:
        slot.part_owned = 0
    return JournalState(rel=st_.rel, size=st_.size or 0, ranged=st_.journal.ranged)


# Files up to this size hash their in-order blocks from memory, on the loop (a 100 KiB file
# costs about 0.1 ms of hashing, less than a thread hop and a read-back); larger ones are read
# back and hashed in threads, in parallel with the loop.
HASH_INLINE_FILE = 1 << 20


class PartFiles:
    """Opens parts; with about ``max_open`` open, waits while finished files are being sealed
    and closed (``sealing``: finalisers whose part is open need nothing else to get there,
    so this cannot deadlock): downloads never outrun the fsyncs by more than that many files."""

    def __init__(self, work: WorkArea, max_open: int) -> None:
        self.work = work
        self.max_open = max_open
        self.opened: dict[str, FileSlot] = {}
        self.sealing = 0
        self._room = asyncio.Event()

    def open(self, slot: FileSlot) -> None:
        """Open the part file (its journal judged by ``resume``)."""
        slot.fd = open_part(self.work.part_path(slot.rel), self.work.out_dir)
        self.opened[slot.rel] = slot
        if slot.stale_part:
            os.ftruncate(slot.fd, 0)
            slot.stale_part = False
        slot.frontier = HashFrontier(slot.fd)
        size = slot.state.size
        slot.hash_inline = size is not None and size <= HASH_INLINE_FILE
        done = slot.state.done.prefix_end()
        if done:
            slot.frontier.advance(done)

    async def ensure_open(self, slot: FileSlot) -> None:
        """Open a part not opened up front, now that its turn has come; a full disk shows in
        the preallocation here (DiskFull)."""
        while slot.fd < 0 and len(self.opened) >= self.max_open and self.sealing:
            self._room.clear()
            await self._room.wait()
        if slot.fd >= 0 or slot.state.terminal:
            return
        self.open(slot)
        if slot.state.size:
            preallocate(slot.fd, slot.state.size, self.work.out_dir)

    def closed(self, slot: FileSlot) -> None:
        """The part's fd was closed by its commit (or on the way out)."""
        slot.fd = -1
        self.opened.pop(slot.rel, None)

    def room(self) -> None:
        self._room.set()


def listing(folder: Path) -> set[str] | None:
    """The names in ``folder``; None when it cannot be listed (then every file is probed)."""
    try:
        return {entry.name for entry in os.scandir(folder)}
    except OSError:
        return None
