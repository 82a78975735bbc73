"""The cluster's chunk plan and per-node output folders. Pure.

Every node plans its part files with the same chunk size as the driver (``planner.plan_file`` on
an empty file), so on a fresh pull a node asks for exactly the cluster's chunks; after a resume it
may ask for any sub-range, which ``ChunkPlan.pieces`` splits along the cluster's chunks.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from weightlift.downloader.errors import UsageError
from weightlift.downloader.manifest import Manifest
from weightlift.downloader.planner import auto_chunk_size, plan_file
from weightlift.downloader.ranges import RangeSet

NODE_PLACEHOLDER = "{node}"


@dataclass(frozen=True)
class ClusterChunk:
    """Bytes [start, end) of file ``rel``, fetched from origin by exactly one node."""

    index: int
    rel: str
    start: int
    end: int
    whole: bool  # a plain GET (no Range): the file fits in one chunk

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class ChunkPlan:
    chunk_size: int
    chunks: tuple[ClusterChunk, ...]

    @property
    def total_bytes(self) -> int:
        return sum(c.length for c in self.chunks)

    def pieces(self, rel: str, start: int, end: int) -> list[tuple[ClusterChunk, int, int]]:
        """The cluster chunks that bytes [start, end) of ``rel`` fall in, each with the part of
        the range inside it, in order. Empty when ``rel`` has no such bytes planned."""
        starts = self._starts().get(rel)
        if starts is None:
            return []
        firsts, chunks = starts
        out: list[tuple[ClusterChunk, int, int]] = []
        i = max(0, bisect.bisect_right(firsts, start) - 1)
        while i < len(chunks) and chunks[i].start < end:
            c = chunks[i]
            lo, hi = max(start, c.start), min(end, c.end)
            if lo < hi:
                out.append((c, lo, hi))
            i += 1
        return out

    def _starts(self) -> dict[str, tuple[list[int], list[ClusterChunk]]]:
        cache: dict[str, tuple[list[int], list[ClusterChunk]]] | None = \
            self.__dict__.get("_by_rel")
        if cache is None:
            cache = {}
            for c in self.chunks:
                firsts, chunks = cache.setdefault(c.rel, ([], []))
                firsts.append(c.start)
                chunks.append(c)
            object.__setattr__(self, "_by_rel", cache)
        return cache


def plan_cluster(manifest: Manifest, chunk_size: int | None, connections: int) -> ChunkPlan:
    """One plan for every node: the chunks a fresh single-machine pull of ``manifest`` with
    this chunk size would request. Every file's size must be known."""
    sizes = [f.size for f in manifest.files]
    if any(s is None for s in sizes):
        raise ValueError("plan_cluster needs every file's size")
    size = chunk_size or auto_chunk_size(sum(s or 0 for s in sizes), connections)
    chunks: list[ClusterChunk] = []
    for f in manifest.files:
        for c in plan_file(f.rel, f.size or 0, RangeSet(), size):
            chunks.append(ClusterChunk(len(chunks), c.rel, c.start, c.end, c.whole))
    return ChunkPlan(size, tuple(chunks))


def node_dir(template: str, node: str) -> str:
    """The output folder of ``node``: ``template`` with every ``{node}`` replaced by it."""
    return template.replace(NODE_PLACEHOLDER, node)


def check_template(template: str) -> None:
    """Refuse other ``{...}`` fields (a typo would become a literal folder name on every node)."""
    rest = template.replace(NODE_PLACEHOLDER, "")
    if "{" in rest or "}" in rest:
        raise UsageError(f"-o {template!r}: the only placeholder is {NODE_PLACEHOLDER}",
                         "write {node} for the node's id, or no braces at all")
