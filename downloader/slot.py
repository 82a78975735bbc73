"""One file of a pull as the I/O shell holds it: its lifecycle state plus its part file."""

from __future__ import annotations

from dataclasses import dataclass

from weightlift.downloader.config import FileResult
from weightlift.downloader.hashing import HashFrontier
from weightlift.downloader.lifecycle import FileState


@dataclass(slots=True, eq=False)  # one per file: 50,000 files
class FileSlot:
    state: FileState
    fd: int = -1
    frontier: HashFrontier | None = None
    unjournaled: int = 0  # bytes written since its journal was last written
    journal_on_disk: bool = False  # a journal file may exist for it (unlink when finished)
    stale_part: bool = False  # a part on disk its journal does not vouch for: emptied on open
    part_owned: int = 0  # bytes of disk a part left by an earlier run holds (free-space check)
    sealed: bool = False  # whole and synced, but the finished log could not take it
    result: FileResult | None = None
    hash_inline: bool = False  # small: in-order blocks hashed from memory as they land
    ended: bool = False  # counted as landed by the scheduler

    @property
    def rel(self) -> str:
        return self.state.rel

    def reset_hash(self) -> None:
        """The hash starts over from byte 0 (the bytes were thrown away)."""
        if self.frontier is not None:
            self.frontier.cancel()
        self.frontier = HashFrontier(self.fd) if self.fd >= 0 else None
