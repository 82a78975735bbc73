"""Following a run: poll, yield each snapshot, stop after the first terminal one.

Pacing is pure (`next_delay`, `changed`): the delay grows ×1.5 while nothing changes, snaps back
when something does, and never drops below the follower's rate-limit floor. A brief outage
(the API unreachable even after the session's own retries) does not end a long watch: it is
waited out a few times before the error is raised.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from weightlift.downloader.sources.api_session import ApiUnavailable
from weightlift.downloader.sources.run_status import RunSnapshot

__all__ = ["BACKOFF_FACTOR", "RunFollower", "changed", "follow", "next_delay"]

log = logging.getLogger(__name__)

BACKOFF_FACTOR = 1.5
MAX_OUTAGES = 5  # consecutive polls lost to an unreachable API before giving up


class RunFollower(Protocol):
    """One platform run, polled. `poll` returns only what is new since the previous poll."""

    platform: str
    job_id: str
    default_interval: float

    async def poll(self) -> RunSnapshot: ...

    def min_delay(self) -> float: ...


def changed(previous: RunSnapshot | None, current: RunSnapshot) -> bool:
    """Whether a poll brought anything a person would see."""
    if previous is None or current.new_metrics or current.new_logs:
        return True
    return (previous.status, previous.step, previous.retries, previous.error) != (
        current.status, current.step, current.retries, current.error)


def next_delay(current: float, *, base: float, ceiling: float, was_changed: bool) -> float:
    """The next wait between polls: ``base`` after a change, else ×1.5 up to ``ceiling``."""
    if was_changed:
        return base
    return min(max(current, base) * BACKOFF_FACTOR, ceiling)


async def follow(
    follower: RunFollower,
    *,
    interval: float | None = None,
    max_interval: float = 60.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    max_outages: int = MAX_OUTAGES,
) -> AsyncIterator[RunSnapshot]:
    """Yield every snapshot of ``follower``'s run; end right after the first terminal one."""
    base = follower.default_interval if interval is None else interval
    if not base > 0:
        raise ValueError(f"interval must be positive, not {base}")
    ceiling = max(base, max_interval)
    delay = base
    previous: RunSnapshot | None = None
    outages = 0
    while True:
        try:
            snap = await follower.poll()
        except ApiUnavailable as exc:
            outages += 1
            if outages > max_outages:
                raise
            wait = max(ceiling, follower.min_delay())
            log.warning("%s (polling again in %.0fs)", exc.one_line(), wait)
            await sleep(wait)
            continue
        outages = 0
        yield snap
        if snap.terminal:
            return
        delay = next_delay(delay, base=base, ceiling=ceiling,
                           was_changed=changed(previous, snap))
        previous = snap
        await sleep(max(delay, follower.min_delay()))
