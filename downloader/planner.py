"""Chunk planning: which byte ranges of which files are still to fetch. Pure.

Work is ordered file by file, offset by offset, so that each file's hash frontier advances and
files finish (and are finalised) one after another while later files are still downloading.
"""

from __future__ import annotations

from dataclasses import dataclass

from weightlift.downloader.ranges import RangeSet

MiB = 1 << 20
# Measured (bench/README.md): on a 25 MB/s-per-connection store 32 connections fetched 2 GiB in
# 2.75-2.88 s against 5.02-5.06 s with 16; on plain loopback 16, 32 and 48 were equal within noise.
DEFAULT_CONNECTIONS = 32
DEFAULT_CHUNK_SIZE = 16 * MiB
MIN_AUTO_CHUNK = 2 * MiB
# S3 guidance: keep at least four ranges per connection so the tail does not wait on one range.
RANGES_PER_CONNECTION = 4


@dataclass(frozen=True)
class Chunk:
    """Bytes [start, end) of one file. ``whole`` means a plain GET without a Range header."""

    rel: str
    start: int
    end: int
    whole: bool = False

    @property
    def length(self) -> int:
        return self.end - self.start


def auto_chunk_size(total_bytes: int, connections: int) -> int:
    """The default range size: 16 MiB, smaller when that would leave connections idle."""
    per_range = total_bytes // max(1, connections * RANGES_PER_CONNECTION)
    return max(MIN_AUTO_CHUNK, min(DEFAULT_CHUNK_SIZE, per_range))


def plan_file(
    rel: str, size: int, done: RangeSet, chunk_size: int, *, ranged: bool = True
) -> list[Chunk]:
    """The chunks of one file still missing from ``done``.

    A file no larger than one chunk (or on a server without Range support) is one whole GET;
    a partially done file is only ever completed with ranges.
    """
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    if size == 0:
        return []  # an empty file needs no request: it is created when finalised
    if not ranged:
        return [] if done.covers(0, size) else [Chunk(rel, 0, size, whole=True)]
    if size <= chunk_size and done.total == 0:
        return [Chunk(rel, 0, size, whole=True)]
    chunks: list[Chunk] = []
    for gap_start, gap_end in done.gaps(0, size):
        offset = gap_start
        while offset < gap_end:
            end = min(gap_end, offset + chunk_size)
            # Fold a small remainder into this chunk rather than issuing a tiny request.
            if gap_end - end < chunk_size // 4:
                end = gap_end
            chunks.append(Chunk(rel, offset, end))
            offset = end
    return chunks
