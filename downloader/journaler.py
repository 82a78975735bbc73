"""Journaling: sync the data, then write journals that claim only what was synced."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from weightlift.downloader.errors import write_failed
from weightlift.downloader.failpoints import failpoint
from weightlift.downloader.journal import write_atomic
from weightlift.downloader.lifecycle_events import Phase
from weightlift.downloader.safe_files import unlink_quietly
from weightlift.downloader.slot import FileSlot
from weightlift.downloader.workarea import WorkArea

log = logging.getLogger(__name__)


class Journaler:
    """Writes each open file's journal once enough bytes are unclaimed (``budget`` across
    files), at most every ``spacing`` s and at least every ``interval`` s."""

    def __init__(self, work: WorkArea, open_slots: Callable[[], Iterable[FileSlot]], *,
                 durable: bool, interval: float, spacing: float) -> None:
        self.work = work
        self._open_slots = open_slots
        self.durable = durable
        self.interval = interval
        self.spacing = spacing
        self.budget = 4 << 20
        self.unjournaled = 0  # bytes written, not yet claimed by a journal, across files
        self.lock = asyncio.Lock()  # one writer at a time, in generation order
        self._wakeup = asyncio.Event()
        self._threads: set[asyncio.Future[None]] = set()

    def note(self, slot: FileSlot, n: int) -> None:
        """``n`` bytes of ``slot`` were written (called per block, on the loop)."""
        slot.unjournaled += n
        self.unjournaled += n
        if self.unjournaled >= self.budget:
            self._wakeup.set()

    async def run(self) -> None:
        while True:
            await _wait_event(self._wakeup, self.interval)
            self._wakeup.clear()
            started = time.monotonic()
            await self.write(min_bytes=1)
            # Each round syncs data: no more than one per spacing, however fast bytes come.
            await asyncio.sleep(max(0.0, self.spacing - (time.monotonic() - started)))

    async def write(self, *, min_bytes: int) -> None:
        batch: list[tuple[FileSlot, int, bytes]] = []
        for slot in self._open_slots():  # not every file each second: 50,000 files
            st = slot.state
            if slot.unjournaled >= min_bytes and st.phase is not Phase.DONE and slot.fd >= 0:
                # Snapshot before syncing: every byte claimed was pwritten before this point.
                batch.append((slot, st.generation, st.journal.to_json()))
                slot.unjournaled = 0
                slot.journal_on_disk = True
        # What is left unclaimed belongs to files landed or closed: nothing to journal there.
        self.unjournaled = 0
        if not batch:
            return

        def flush() -> None:
            for slot, generation, data in batch:
                if slot.state.generation != generation or slot.fd < 0:
                    continue  # restarted (old object) or finalised meanwhile: nothing to claim
                if self.durable:
                    try:
                        os.fdatasync(slot.fd)
                    except OSError:
                        continue
                failpoint("journal.before_write")
                try:
                    write_atomic(self.work.journal_path(slot.rel), data, durable=False)
                except OSError as exc:  # the old journal stands: it claims less, never more
                    raise write_failed(exc, self.work.out_dir, "the journal") from None

        async with self.lock:
            await self._in_thread(flush)

    async def _in_thread(self, work: Callable[[], None]) -> None:
        """Run ``work`` in a thread that the way out waits for: a cancelled await does not stop
        the thread, whose older journal would otherwise land after the final one."""
        fut = asyncio.ensure_future(asyncio.to_thread(work))
        self._threads.add(fut)
        fut.add_done_callback(self._threads.discard)
        await asyncio.shield(fut)

    async def settle(self) -> None:
        """Wait for journal writes still running in threads (on the way out)."""
        if self._threads:
            await asyncio.wait(set(self._threads))

    async def restarted(self, slot: FileSlot) -> None:
        """A restarted file's fresh journal replaces the old one before any new byte lands:
        the old one claims ranges the new object's bytes will overwrite."""
        slot.journal_on_disk = True
        data = slot.state.journal.to_json()
        async with self.lock:
            try:
                await self._in_thread(lambda: write_atomic(self.work.journal_path(slot.rel), data,
                                                           durable=False))
            except OSError as exc:
                raise write_failed(exc, self.work.out_dir, "the journal") from None

    def save_on_exit(self, slots: Iterable[FileSlot]) -> None:
        """On the way out (done, failed, cancelled): journal what is on disk, close files."""
        for slot in slots:
            if slot.frontier is not None:
                slot.frontier.cancel()
            st = slot.state
            landed = slot.result is not None and slot.result.status == "downloaded"
            # Nothing fetched and no journal yet (a pull stopped up front): nothing to save.
            blank = not st.journal.done.total and not slot.journal_on_disk
            if (slot.fd >= 0 or slot.sealed) and not landed and not blank:
                try:
                    if self.durable and slot.fd >= 0:
                        os.fdatasync(slot.fd)
                    write_atomic(self.work.journal_path(slot.rel), st.journal.to_json(),
                                 durable=self.durable)
                except OSError as exc:
                    log.warning("%s: could not save the journal: %s", slot.rel, exc.strerror)
            if slot.fd >= 0:
                os.close(slot.fd)
                slot.fd = -1


def sweep_temps(folder: Path, names: set[str] | None) -> None:
    """Remove journal temp files that a kill left between their write and their rename
    (write_atomic); the folder's lock says no other pull can own one. Trimmed from ``names``."""
    for name in [n for n in names or () if ".journal." in n and n.endswith(".tmp")]:
        unlink_quietly(folder / name)
        assert names is not None
        names.discard(name)


async def _wait_event(event: asyncio.Event, timeout: float) -> None:
    """Wait for ``event`` at most ``timeout`` seconds (without asyncio.wait_for, which can
    swallow a cancellation on Python <= 3.11)."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()
