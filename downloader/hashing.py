"""The hash frontier: sha256 of a file computed in order while the rest still downloads.

As contiguous bytes from the frontier land in the part file, they are read back (from the page
cache) and hashed in a worker thread; hashlib releases the GIL, so hashing overlaps the network
and the event loop never blocks on it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

BLOCK = 4 << 20  # read-back block; large enough that per-call overhead vanishes


class HashFrontier:
    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._sha = hashlib.sha256()
        self.offset = 0  # bytes [0, offset) are hashed
        self._target = 0
        self._task: asyncio.Task[None] | None = None
        # Allocated on first use, no larger than needed: a pull of 1,000 small files must not
        # hold (or zero) a 4 MiB buffer per file.
        self._buf: bytearray | None = None

    def advance(self, upto: int) -> None:
        """Ask for the frontier to reach ``upto`` (bytes before it are on disk)."""
        if upto <= self._target:
            return
        self._target = upto
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while self.offset < self._target:
            end = min(self._target, self.offset + 16 * BLOCK)
            await asyncio.to_thread(self._hash_span, self.offset, end)
            self.offset = end

    def _hash_span(self, start: int, end: int) -> None:
        if self._buf is None or len(self._buf) < min(BLOCK, end - start):
            self._buf = bytearray(min(BLOCK, max(end - start, 64 << 10)))
        view = memoryview(self._buf)
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
        self._buf = None
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
