"""Who fetches which chunk from origin, which published chunks each node still needs, and how
many bytes the cluster holds in its object store. Pure: the coordinator actor wraps it.

A chunk goes: free -> claimed by one node (fetching from origin) -> published (its bytes in the
object store, ``ref``) -> released (every node that needs it has written it; the ref dropped).
Claims reserve their bytes against ``budget`` (published-but-unreleased bytes, plus those being
fetched), so the object store never holds more than the budget (see ``force`` for the one
exception). A node that fails or dies gives back its claims; nodes still waiting then claim.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Kind(enum.Enum):
    OWN = "own"  # fetch it from origin, then publish it
    READY = "ready"  # published: read it from the object store (``ref``)
    ORIGIN = "origin"  # released before this node asked (a late resume): fetch it, don't publish
    WAIT_PEER = "wait-peer"  # another node is fetching it
    WAIT_BUDGET = "wait-budget"  # nobody has it, and the budget is full


@dataclass(frozen=True)
class Claim:
    kind: Kind
    ref: Any = None
    meta: Any = None
    version: int = 0  # which publication ``ref`` is (``lost`` names it)


@dataclass
class _Chunk:
    size: int
    owner: str | None = None
    ref: Any = None
    meta: Any = None
    pending: set[str] = field(default_factory=set)  # nodes that still need it
    released: bool = False
    version: int = 0
    held: bool = False  # its bytes count against the budget


class Ledger:
    def __init__(self, sizes: list[int], nodes: list[str], budget: int) -> None:
        self.budget = budget
        self.held = 0
        self.peak_held = 0
        self.forced = 0
        self._active = set(nodes)
        self._chunks = [_Chunk(size, pending=set(nodes)) for size in sizes]

    def claim(self, index: int, node: str, *, force: bool = False) -> Claim:
        """What ``node`` should do to get chunk ``index``. ``force`` lets a claim past a full
        budget (the coordinator's way out when waiting nodes would otherwise wait forever)."""
        c = self._chunks[index]
        if c.ref is not None:
            return Claim(Kind.READY, c.ref, c.meta, c.version)
        if c.released or node not in self._active:
            return Claim(Kind.ORIGIN)
        if c.owner == node:
            return Claim(Kind.OWN)
        if c.owner is not None:
            return Claim(Kind.WAIT_PEER)
        if self.held and self.held + c.size > self.budget and not force:
            return Claim(Kind.WAIT_BUDGET)
        if self.held and self.held + c.size > self.budget:
            self.forced += 1
        c.owner = node
        self._hold(c)
        return Claim(Kind.OWN)

    def publish(self, index: int, node: str, ref: Any, meta: Any) -> list[Any]:
        """``node`` fetched chunk ``index`` and put it in the object store (and wrote it itself).
        Returns refs no longer needed (to drop)."""
        c = self._chunks[index]
        if c.ref is not None or c.released:
            return [ref]  # published already (a reassigned chunk fetched twice): keep the first
        c.owner = node
        c.ref, c.meta = ref, meta
        c.version += 1
        self._hold(c)
        return self.written(index, node)

    def abandon(self, index: int, node: str) -> None:
        """``node``'s origin fetch of chunk ``index`` failed: the next asker claims it."""
        c = self._chunks[index]
        if c.owner == node and c.ref is None:
            c.owner = None
            self._unhold(c)

    def lost(self, index: int, version: int) -> list[Any]:
        """Publication ``version`` of chunk ``index`` could not be read (its node died): the
        next asker fetches it from origin again."""
        c = self._chunks[index]
        if c.ref is None or c.version != version:
            return []
        dropped = [c.ref]
        c.ref = c.meta = c.owner = None
        self._unhold(c)
        return dropped

    def written(self, index: int, node: str) -> list[Any]:
        """``node`` has chunk ``index`` on disk; release it once no active node needs it."""
        c = self._chunks[index]
        c.pending.discard(node)
        return self._maybe_release(c)

    def leave(self, node: str) -> list[Any]:
        """``node`` finished, failed or died: it needs nothing more, and what it was fetching
        (not yet published) is free for others to claim."""
        self._active.discard(node)
        dropped: list[Any] = []
        for c in self._chunks:
            c.pending.discard(node)
            if c.owner == node and c.ref is None:
                c.owner = None
                self._unhold(c)
            dropped += self._maybe_release(c)
        return dropped

    def stats(self) -> dict[str, int]:
        return {"held": self.held, "peak_held": self.peak_held, "budget": self.budget,
                "forced": self.forced,
                "released": sum(1 for c in self._chunks if c.released),
                "chunks": len(self._chunks)}

    def _maybe_release(self, c: _Chunk) -> list[Any]:
        if c.released or c.ref is None or c.pending & self._active:
            return []
        dropped = [c.ref]
        c.ref = c.meta = None
        c.released = True
        self._unhold(c)
        return dropped

    def _hold(self, c: _Chunk) -> None:
        if not c.held:
            c.held = True
            self.held += c.size
            self.peak_held = max(self.peak_held, self.held)

    def _unhold(self, c: _Chunk) -> None:
        if c.held:
            c.held = False
            self.held -= c.size
