"""Finishing files: hash to the end, then seal, log and rename in batches (group commits)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from weightlift.downloader.config import FileResult
from weightlift.downloader.errors import WeightliftError, redact_url
from weightlift.downloader.failpoints import failpoint
from weightlift.downloader.finalize import NotLogged, Sealed, commit_batch
from weightlift.downloader.journal import FinishedEntry
from weightlift.downloader.lifecycle_events import Action, Commit, Committed, Digested, Event
from weightlift.downloader.safe_files import unlink_quietly
from weightlift.downloader.slot import FileSlot
from weightlift.downloader.workarea import WorkArea

log = logging.getLogger(__name__)

# The shell's step: apply an event to a file, carry out what it can; returns the Commit (and
# Refresh) actions left for the caller.
Apply = Callable[[FileSlot, Event], list[Action]]


class Committer:
    """Seals, logs and renames finished parts, batched with any others finishing at the same
    time (one log sync and one folder sync per batch: 1,000 small files would otherwise cost
    4,000 fsyncs)."""

    def __init__(self, work: WorkArea, durable: bool) -> None:
        self.work = work
        self.durable = durable
        self._pending: list[tuple[Sealed, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def commit(self, item: Sealed) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((item, fut))
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._loop())
        await fut

    async def _loop(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            errors: list[BaseException | None]
            try:
                errors = await asyncio.to_thread(
                    commit_batch, [item for item, _ in batch], self.work.finished_log,
                    self.work.out_dir, self.durable)
            except asyncio.CancelledError:
                for _, fut in batch:
                    fut.cancel()
                raise
            except BaseException as exc:  # noqa: BLE001 - every waiter gets it
                errors = [exc] * len(batch)
            for (_, fut), error in zip(batch, errors, strict=True):
                if fut.done():
                    continue
                if error is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(error)


async def finish_file(slot: FileSlot, generation: int, size: int, *, apply: Apply,
                      committer: Committer, source_url: str,
                      journal_lock: asyncio.Lock) -> None:
    """Hash the file to ``size``; when its lifecycle agrees, commit it and record the result.
    Everything else (a digest mismatch: restart or fail) is the lifecycle's to decide."""
    assert slot.frontier is not None
    digest = await slot.frontier.finish(size)
    actions = apply(slot, Digested(generation, digest))
    if not any(isinstance(a, Commit) for a in actions):
        return
    st = slot.state
    work = committer.work
    fd = slot.fd
    slot.fd = -1  # the commit closes it
    source = redact_url(source_url)
    etag = st.journal.etag
    rel = st.rel
    try:
        await committer.commit(Sealed(
            fd, size, rel, work.part_path(rel), work.final_path(rel),
            lambda mtime_ns: FinishedEntry(rel, size, digest, etag, source, mtime_ns)))
    except NotLogged as exc:
        slot.sealed = True  # on the way out it is journaled whole: the next run renames it
        apply(slot, Committed(generation, exc.error))
        return
    except WeightliftError as exc:
        apply(slot, Committed(generation, exc))
        return
    failpoint("finalize.before_journal_unlink")
    if slot.journal_on_disk:
        async with journal_lock:  # after any flush that snapshotted this file
            unlink_quietly(work.journal_path(rel))
    slot.result = FileResult(rel, size, digest, "downloaded", st.fetched, etag=etag,
                             source=source)
    log.debug("%s: finalized: %d bytes, sha256 %s, from %s (%d fetched, %d restarts)",
              rel, size, digest, source, st.fetched, st.restarts)
    slot.frontier = None  # done with: not kept for every file until the pull ends
    apply(slot, Committed(generation))
