"""The cluster's one coordinator, run as a Ray actor (async: waits cost no thread).

It wraps the ``Ledger`` (chunk claims, published refs, the object-store budget), makes askers
wait until the chunk they need is published, relays expiring-URL refreshes to the driver one at a
time for the whole cluster (single-flight), and gathers per-node progress for the cluster's bar.
Nothing here touches the network or a disk.
"""

from __future__ import annotations

import asyncio
from typing import Any

from weightlift.downloader.fanout.ledger import Claim, Kind, Ledger
from weightlift.downloader.manifest import Manifest

# How long askers may all wait on a full budget before one claim is let past it. Nodes resuming
# from different points can hold the budget with chunks others will not ask for until they
# finish; without this way out they would wait on each other for ever.
STALL_GRACE = 2.0


class Coordinator:
    def __init__(self, sizes: list[int], nodes: list[str], budget: int, manifest: Manifest,
                 *, stall_grace: float = STALL_GRACE) -> None:
        self._ledger = Ledger(sizes, nodes, budget)
        self._stall_grace = stall_grace
        self._tick = asyncio.Event()  # replaced (and set) on every change
        self._manifest = manifest
        self._generation = 0
        self._refresh_wanted = False
        self._refresh_error: tuple[str, int] | None = None
        self._progress: dict[str, dict[str, int]] = {}
        self._pids: dict[str, int] = {}

    async def _notify(self) -> None:
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()

    async def _wait(self, timeout: float) -> bool:
        """Wait for the next change; False when ``timeout`` passed without one."""
        waiter = asyncio.ensure_future(self._tick.wait())
        try:
            done, _ = await asyncio.wait({waiter}, timeout=timeout)
        finally:
            waiter.cancel()
        return bool(done)

    # ---- chunks -----------------------------------------------------------------------------

    async def claim(self, index: int, node: str) -> tuple[str, list[Any] | None, Any, int]:
        """Wait until ``node`` can get chunk ``index``: ("own" | "ready" | "origin", [ref] when
        ready, the owner's answer metadata, the publication's version)."""
        force = False
        while True:
            claim: Claim = self._ledger.claim(index, node, force=force)
            if claim.kind in (Kind.OWN, Kind.READY, Kind.ORIGIN):
                if claim.kind is Kind.OWN:
                    await self._notify()
                refs = [claim.ref] if claim.kind is Kind.READY else None
                return claim.kind.value, refs, claim.meta, claim.version
            changed = await self._wait(self._stall_grace)
            force = not changed and claim.kind is Kind.WAIT_BUDGET

    async def publish(self, index: int, node: str, refs: list[Any], meta: Any) -> None:
        self._ledger.publish(index, node, refs[0], meta)
        await self._notify()

    async def abandon(self, index: int, node: str) -> None:
        self._ledger.abandon(index, node)
        await self._notify()

    async def lost(self, index: int, version: int) -> None:
        self._ledger.lost(index, version)
        await self._notify()

    async def written(self, index: int, node: str) -> None:
        self._ledger.written(index, node)
        await self._notify()

    async def leave(self, node: str) -> None:
        self._ledger.leave(node)
        await self._notify()

    # ---- URL refresh (single-flight for the cluster; the driver does it) ---------------------

    async def refresh(self, generation: int) -> tuple[int, Manifest]:
        """A manifest newer than ``generation``: the one another node's refresh already brought,
        or a new one the driver is asked for (one request however many nodes ask)."""
        while self._generation <= generation:
            if self._refresh_error is not None and not self._refresh_wanted:
                message, _ = self._refresh_error
                raise RuntimeError(message)
            if not self._refresh_wanted:
                self._refresh_wanted = True
                self._refresh_error = None
                await self._notify()
            await self._wait(5.0)
        return self._generation, self._manifest

    async def next_refresh_request(self, timeout: float) -> bool:
        """For the driver: True when a node wants fresh URLs (waits up to ``timeout``)."""
        if not self._refresh_wanted:
            await self._wait(timeout)
        return self._refresh_wanted

    async def refreshed(self, manifest: Manifest | None, error: tuple[str, int] | None) -> None:
        if manifest is not None:
            self._manifest = manifest
            self._generation += 1
        self._refresh_error = error
        self._refresh_wanted = False
        await self._notify()

    # ---- progress ---------------------------------------------------------------------------

    def hello(self, node: str, pid: int) -> None:
        self._pids[node] = pid

    def progress(self, node: str, counters: dict[str, int]) -> None:
        self._progress[node] = counters

    def stats(self) -> dict[str, Any]:
        return {"ledger": self._ledger.stats(), "nodes": dict(self._progress),
                "pids": dict(self._pids), "refreshes": self._generation}
