"""The hash frontier: sha256 of a file computed in order while the rest still downloads.

As contiguous bytes from the frontier land in the part file, they are read back (from the page
cache) and hashed in a worker thread; hashlib releases the GIL, so hashing overlaps the network
and the event loop never blocks on it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

BLOCK = 4 << 20  # read-back block; large enough that per-call overhead vanishes
# The first bytes of a file are hashed on the loop: reading and hashing 64 KiB from the page
# cache costs about what a thread hop does, and a pull of 50,000 tiny files then needs no
# task and no thread per file for hashing.
INLINE_BYTES = 64 << 10
# Read-back buffer of the frontier, one per hashing thread (not per file: 64 files in flight
# held 64 buffers of up to 4 MiB, and a child pulling 64 x 1 MiB peaked at 135-208 MB RSS).
SPAN_BUFFER = 1 << 20
_local = threading.local()


def _span_buffer() -> memoryview:
    buf: memoryview | None = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = memoryview(bytearray(SPAN_BUFFER))
    return buf


class HashFrontier:
    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._sha = hashlib.sha256()
        self.offset = 0  # bytes [0, offset) are hashed
        self._target = 0
        self._task: asyncio.Task[None] | None = None

    def advance(self, upto: int) -> None:
        """Ask for the frontier to reach ``upto`` (bytes before it are on disk)."""
        if upto <= self._target:
            return
        self._target = upto
        if self._task is None and upto <= INLINE_BYTES:
            want = upto - self.offset
            try:
                data = os.pread(self._fd, want, self.offset)
            except OSError:
                data = b""  # the task below meets it again, and finish() raises it
            if len(data) == want:
                self._sha.update(data)
                self.offset = upto
                return
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    def feed(self, offset: int, data: bytes | memoryview) -> None:
        """Hash a block that was just written at ``offset`` from memory, when it is exactly
        where the frontier stands and nothing is queued for reading back; otherwise the block
        is left to ``advance`` (read back later)."""
        if offset == self.offset and self._target <= offset and (
                self._task is None or self._task.done()):
            self._sha.update(data)
            self.offset = self._target = offset + len(data)

    async def _run(self) -> None:
        while self.offset < self._target:
            end = min(self._target, self.offset + 16 * BLOCK)
            await asyncio.to_thread(self._hash_span, self.offset, end)
            self.offset = end

    def _hash_span(self, start: int, end: int) -> None:
        view = _span_buffer()  # this thread's
        pos = start
        while pos < end:
            want = min(len(view), end - pos)
            got = os.preadv(self._fd, [view[:want]], pos)
            if got <= 0:
                raise OSError(f"part file shorter than expected at offset {pos}")
            self._sha.update(view[:got])
            pos += got

    async def finish(self, size: int) -> str:
        """Hash through ``size`` and return the hex digest."""
        self.advance(size)
        while self._task is not None and not self._task.done():
            await self._task
        if self._task is not None and self._task.exception() is not None:
            raise self._task.exception()  # type: ignore[misc]
        if self.offset < size:
            await asyncio.to_thread(self._hash_span, self.offset, size)
            self.offset = size
        return self._sha.hexdigest()

    def cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()


def sha256_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    """sha256 of a whole file, read in large blocks into one reused buffer (hashlib releases
    the GIL, so several threads hash in parallel). ``on_bytes`` is told each block's size."""
    h = hashlib.sha256()
    view = memoryview(bytearray(BLOCK))
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(view):
            h.update(view[:n])
            if on_bytes is not None:
                on_bytes(n)
    return h.hexdigest()
