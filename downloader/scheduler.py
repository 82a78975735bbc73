"""The I/O shell of the lifecycle: a queue of requests, a pool of workers, and the one place
where a file's actions are carried out (``apply``)."""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Callable, Coroutine
from datetime import datetime, timezone
from typing import Any

from weightlift.downloader.byte_source import ByteSource
from weightlift.downloader.committer import Committer, finish_file
from weightlift.downloader.config import EngineConfig, FileResult
from weightlift.downloader.errors import DiskFull, VerificationFailed, WeightliftError
from weightlift.downloader.events import (
    BytesReceived,
    Event,
    FileFailed,
    FileFinished,
    FileRestarted,
    Retrying,
)
from weightlift.downloader.journaler import Journaler
from weightlift.downloader.lifecycle_events import (
    Action,
    AskRetry,
    CheckHeader,
    Commit,
    Fail,
    Fetch,
    Finalise,
    HashTo,
    HeaderJudged,
    Landed,
    LocalFailed,
    Phase,
    Refresh,
    Request,
    ResetHash,
    Restart,
    RetryDecided,
)
from weightlift.downloader.lifecycle_events import Event as LifeEvent
from weightlift.downloader.part_files import PartFiles
from weightlift.downloader.range_worker import run_request
from weightlift.downloader.resolver import ManifestResolver
from weightlift.downloader.slot import FileSlot

log = logging.getLogger(__name__)

# The most a header check may read: the safetensors cap on a header, plus its length field.
HEADER_READ_CAP = 8 + 100_000_000
# A header check on at most this many bytes runs on the loop (about a millisecond); larger
# ones in a thread.
HEADER_INLINE = 64 << 10


class Scheduler:
    def __init__(self, cfg: EngineConfig, resolver: ManifestResolver, parts: PartFiles,
                 journaler: Journaler, committer: Committer, source: ByteSource,
                 emit: Callable[[Event], None]) -> None:
        self.cfg = cfg
        self.resolver = resolver
        self.parts = parts
        self.journaler = journaler
        self.committer = committer
        self.source = source
        self.emit = emit
        self.retries = 0
        self.restarts = 0
        self._rng = random.Random(cfg.seed)
        self._queue: asyncio.Queue[tuple[FileSlot, Request]] = asyncio.Queue()
        self._tasks: set[asyncio.Future[None]] = set()  # finalisers, header checks, restarts
        self._timers: set[asyncio.TimerHandle] = set()
        self._unlanded = 0
        self._landed = asyncio.Event()
        self._crash: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._where = str(parts.work.out_dir)

    # ---- carrying out actions -------------------------------------------------------------

    def apply(self, slot: FileSlot, event: LifeEvent) -> list[Action]:
        """Step the file's lifecycle and carry out its actions; returns the ones the caller
        must carry out (Commit, Refresh: they need the caller's context)."""
        was_terminal = slot.state.terminal
        actions = slot.state.step(event)
        if isinstance(event, Landed) and not was_terminal:
            self.journaler.note(slot, event.n)
            self.resolver.note_progress()
            self.emit(BytesReceived(slot.rel, event.n))
        left = self._carry_out(slot, actions)
        if slot.state.terminal and not was_terminal:
            self._ended(slot)
        return left

    def _carry_out(self, slot: FileSlot, actions: list[Action]) -> list[Action]:
        left: list[Action] = []
        for i, action in enumerate(actions):
            if isinstance(action, HashTo):
                if slot.frontier is not None:
                    slot.frontier.advance(action.offset)
            elif isinstance(action, Fetch):
                self._send(slot, action.request)
            elif isinstance(action, AskRetry):
                left += self._ask_retry(slot, action)
            elif isinstance(action, Restart):
                # The fresh journal must be on disk before any byte of the new object lands.
                self._spawn(self._restart(slot, action, actions[i + 1:]))
                return left
            elif isinstance(action, ResetHash):
                slot.reset_hash()
            elif isinstance(action, CheckHeader) and action.need <= HEADER_INLINE:
                # Which format, how long a header: a few bytes, judged here (no thread hop
                # per file: 1,000 small files).
                self.apply(slot, self._judge(slot, action))
            elif isinstance(action, CheckHeader):
                self._spawn(self._check_header(slot, action))
            elif isinstance(action, Finalise):
                self._spawn(self._finalise(slot, action))
            elif isinstance(action, Fail):
                self._failed(slot, action)
            elif isinstance(action, Commit | Refresh):
                left.append(action)
        return left

    def _send(self, slot: FileSlot, req: Request) -> None:
        if req.delay > 0:
            loop = asyncio.get_running_loop()
            handle: asyncio.TimerHandle

            def due() -> None:
                self._timers.discard(handle)
                self._queue.put_nowait((slot, req))

            handle = loop.call_later(req.delay, due)
            self._timers.add(handle)
        else:
            self._queue.put_nowait((slot, req))

    def _ask_retry(self, slot: FileSlot, ask: AskRetry) -> list[Action]:
        decision = self.cfg.retry.decide(ask.attempt, status=ask.status,
                                         retry_after=ask.retry_after,
                                         now=datetime.now(timezone.utc), rng=self._rng)
        actions = slot.state.step(RetryDecided(ask.req, decision))
        if any(isinstance(a, Fetch) for a in actions):
            delay = next(a.request.delay for a in actions if isinstance(a, Fetch))
            self.retries += 1
            log.info("%s: %s; retrying in %.2fs", slot.rel, ask.reason, delay)
            self.emit(Retrying(slot.rel, ask.reason, delay))
        return self._carry_out(slot, actions)

    async def _restart(self, slot: FileSlot, restart: Restart, rest: list[Action]) -> None:
        self.restarts += 1
        slot.reset_hash()
        await self.journaler.restarted(slot)
        log.warning("%s: starting over: %s", slot.rel, restart.reason)
        self.emit(FileRestarted(slot.rel, restart.reason, restart.lost))
        self._carry_out(slot, rest)

    def _judge(self, slot: FileSlot, check: CheckHeader) -> HeaderJudged:
        """Run the header check on the file's first ``check.need`` bytes."""
        header_check = self.cfg.header_check
        size = slot.state.size
        assert header_check is not None
        assert size is not None
        try:
            data = os.pread(slot.fd, min(check.need, HEADER_READ_CAP), 0) if check.need else b""
            return HeaderJudged(check.generation, header_check(slot.rel, data, size))
        except VerificationFailed as exc:
            return HeaderJudged(check.generation, 0, exc.message)
        except OSError:
            # The part was closed meanwhile: the file's end judges it (verify).
            return HeaderJudged(check.generation, 0)

    async def _check_header(self, slot: FileSlot, check: CheckHeader) -> None:
        """Judge a large header once its bytes are on disk, in a thread (a 99 MB header
        must not stall every connection)."""
        self.apply(slot, await asyncio.to_thread(self._judge, slot, check))

    async def _finalise(self, slot: FileSlot, fin: Finalise) -> None:
        sealing = False
        try:
            # An empty file, or one a kill left whole on disk, may not be open yet.
            await self.parts.ensure_open(slot)
            if slot.fd < 0:
                return  # failed meanwhile
            self.parts.sealing += 1
            sealing = True
            try:
                await finish_file(slot, fin.generation, fin.size, apply=self.apply,
                                  committer=self.committer,
                                  source_url=self.resolver.file(slot.rel).url,
                                  journal_lock=self.journaler.lock)
            finally:
                if slot.fd < 0:
                    self.parts.closed(slot)
        finally:
            if sealing:
                self.parts.sealing -= 1
                self.parts.room()

    def _failed(self, slot: FileSlot, fail: Fail) -> None:
        st = slot.state
        exc = fail.error
        slot.result = FileResult(st.rel, st.size or 0, fail.digest, "failed", st.fetched,
                                 exc.one_line(), exc.exit_code)
        self.emit(FileFailed(st.rel, exc.one_line()))
        if isinstance(exc, DiskFull):
            self.stop(exc)

    def _ended(self, slot: FileSlot) -> None:
        """Count a file that reached its end, once (a nested ``apply``, such as an inline
        header check, may have counted it already)."""
        if slot.ended:
            return
        slot.ended = True
        if slot.state.phase is Phase.DONE and slot.result is not None:
            self.emit(FileFinished(slot.rel, slot.result.size, slot.result.sha256 or ""))
        self._unlanded -= 1
        if self._unlanded <= 0:
            self._landed.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.stop(task.exception())  # type: ignore[arg-type]

    def stop(self, exc: BaseException) -> None:
        """Stop everything: the first fatal error wins and is raised by the pool."""
        if not self._crash.done():
            self._crash.set_exception(exc)

    # ---- the pool ----------------------------------------------------------------------

    async def transfer(self, slots: list[FileSlot]) -> None:
        """Run every file to its end (done or failed), or raise the error that stopped all."""
        self._unlanded = sum(1 for s in slots if not s.state.terminal)
        if not self._unlanded:
            self._landed.set()
        for slot in slots:
            self._carry_out(slot, slot.state.start())
            if slot.state.terminal:
                self._ended(slot)
        workers = [asyncio.ensure_future(self._worker()) for _ in range(self.cfg.connections)]
        journaler = asyncio.ensure_future(self.journaler.run())
        waiting = asyncio.ensure_future(self._all_done())
        try:
            pending: set[asyncio.Future[None]] = {waiting, journaler, self._crash, *workers}
            while True:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                if waiting in done:
                    break
        finally:
            for handle in self._timers:
                handle.cancel()
            await cancel_all([*workers, journaler, waiting])
            if not self._crash.done():
                self._crash.cancel()
            elif not self._crash.cancelled():
                self._crash.exception()  # retrieved if the loop ended for another reason

    async def _all_done(self) -> None:
        await self._landed.wait()
        # Let finalisers that signalled completion return before we leave.
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _worker(self) -> None:
        while True:
            slot, req = await self._queue.get()
            if not slot.state.is_current(req.id):
                continue
            try:
                await self.parts.ensure_open(slot)
                if not slot.state.is_current(req.id):
                    continue
                await run_request(slot, req, source=self.source, resolver=self.resolver,
                                  policy=self.cfg.retry, apply=self.apply, where=self._where)
            except DiskFull as exc:
                self._failed_now(slot, exc)
                raise  # no file can make progress: stop the pull, keep the state
            except WeightliftError as exc:
                self._failed_now(slot, exc)  # this file cannot be fetched; the others go on

    def _failed_now(self, slot: FileSlot, exc: WeightliftError) -> None:
        self.apply(slot, LocalFailed(-1, exc))

    async def wait_tasks(self) -> None:
        """Let finalisers already sealing finish (on the way out)."""
        for task in list(self._tasks):
            if not task.done():
                try:
                    await asyncio.shield(task)
                except BaseException:  # noqa: BLE001 - recorded in the file result already
                    pass


async def cancel_all(tasks: list[asyncio.Future[None]]) -> None:
    """Cancel tasks and wait until every one has finished, re-cancelling any that lost the
    request (a library swallowing CancelledError must not hang the pull)."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" warnings
