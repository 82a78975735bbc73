"""The transfer engine: sets a pull up, runs its scheduler, and saves its state on the way out.

Each file's lifecycle is the pure state machine in ``lifecycle.py``; the I/O around it is split
into ``scheduler`` (queue, pool, actions), ``range_worker`` (one request, fenced writes),
``journaler``, ``committer`` and ``part_files``. See ARCHITECTURE.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Callable
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import aiohttp

from weightlift.downloader import storage_errors
from weightlift.downloader.byte_source import ByteSource, HttpByteSource
from weightlift.downloader.committer import Committer
from weightlift.downloader.config import (
    MAX_OPEN_PARTS,
    EngineConfig,
    FileResult,
    HeaderCheck,
    PullResult,
)
from weightlift.downloader.errors import (
    NetworkError,
    StatusError,
    TransferFailed,
    WeightliftError,
    redact_url,
)
from weightlift.downloader.events import (
    Event,
    FileFailed,
    FileFinished,
    FileStarted,
    ManifestRefreshed,
    PullStarted,
    Retrying,
)
from weightlift.downloader.fetch import Pace, probe
from weightlift.downloader.finalize import (
    check_free_space,
    hold_reserve,
    move_into_place,
    preallocate,
    reserve_size,
)
from weightlift.downloader.hashing import sha256_file
from weightlift.downloader.journal import FinishedEntry, JournalState, load_finished
from weightlift.downloader.journaler import Journaler, sweep_temps
from weightlift.downloader.lifecycle import FileState
from weightlift.downloader.lifecycle_events import LocalFailed, gave_up, refused, url_expired
from weightlift.downloader.part_files import PartFiles, listing, resume
from weightlift.downloader.planner import auto_chunk_size
from weightlift.downloader.resolver import ManifestResolver
from weightlift.downloader.response_check import Probed
from weightlift.downloader.retry import Retry
from weightlift.downloader.safe_files import reserve_fds, unlink_quietly
from weightlift.downloader.scheduler import Scheduler
from weightlift.downloader.slot import FileSlot
from weightlift.downloader.throughput import TokenBucket
from weightlift.downloader.workarea import WorkArea

__all__ = ["MAX_OPEN_PARTS", "Engine", "EngineConfig", "FileResult", "HeaderCheck",
           "PullResult"]

log = logging.getLogger(__name__)


def user_agent() -> str:
    """The User-Agent of every storage request (a cluster pull's nodes send it too)."""
    try:
        return f"weightlift/{version('weightlift')}"
    except PackageNotFoundError:  # pragma: no cover
        return "weightlift"


class Engine:
    def __init__(self, resolver: ManifestResolver, work: WorkArea, config: EngineConfig,
                 emit: Callable[[Event], None] = lambda e: None) -> None:
        self.resolver = resolver
        self.work = work
        self.cfg = config
        self.emit = emit
        self._rng = random.Random(config.seed)
        resolver.on_refresh = lambda proactive: self.emit(
            ManifestRefreshed(proactive, resolver.refreshes))

    async def run(self) -> PullResult:
        started = time.monotonic()
        manifest = self.resolver.manifest
        finished = load_finished(self.work.finished_log)
        results: dict[str, FileResult] = {}
        todo: list[FileSlot] = []
        resumed = 0
        limits = self.cfg.limits()
        for mf in manifest.files:
            # Refuses a symlink or clashing path in the folder before any byte is fetched.
            final = self.work.final_path(mf.rel)
            entry = finished.get(mf.rel)
            if entry is not None and (
                await asyncio.to_thread(_still_final, final, entry, mf.size, mf.sha256)
                or await asyncio.to_thread(self._recover_sealed, mf.rel, final, entry, mf.size,
                                           mf.sha256)
            ):
                results[mf.rel] = FileResult(mf.rel, entry.size, entry.sha256,
                                             "already-complete", etag=entry.etag,
                                             source=entry.source)
                # A kill after the rename can leave the journal behind; it is done with.
                unlink_quietly(self.work.journal_path(mf.rel))
                resumed += entry.size
                self.emit(FileFinished(mf.rel, entry.size, entry.sha256, skipped=True))
                continue
            todo.append(FileSlot(FileState(
                mf.rel, mf.size, mf.sha256, JournalState(rel=mf.rel, size=mf.size or 0),
                chunk_size=1, limits=limits, header_check=self.cfg.header_check is not None)))
        max_open = max(MAX_OPEN_PARTS, 2 * self.cfg.connections)
        # At most about max_open part files are open at once (plus those a connection is busy
        # with past that bound): make room, or say so now.
        reserve_fds(min(len(todo), max_open + self.cfg.connections), self.cfg.connections)
        parts = PartFiles(self.work, max_open)
        journaler = Journaler(self.work, lambda: list(parts.opened.values()),
                              durable=self.cfg.durable, interval=self.cfg.journal_interval,
                              spacing=self.cfg.journal_spacing)
        sched: Scheduler | None = None
        async with self._session() as session:
            try:
                await self._probe_sizes(session, todo)
                # A file whose probe failed (404, refused) has its result: nothing to open.
                live = [s for s in todo if s.result is None]
                total = sum(s.state.size or 0 for s in live)
                chunk = self.cfg.chunk_size or auto_chunk_size(total, self.cfg.connections)
                journaler.budget = min(self.cfg.journal_bytes, max(256 << 10, total // 400))
                names = listing(self.work.parts)
                sweep_temps(self.work.parts, names)
                for i, slot in enumerate(live):
                    slot.state.chunk_size = chunk
                    slot.state.journal = resume(slot, self.work, names)
                    resumed += slot.state.done.total
                    # Up front for a model's usual few to hundreds of files (a symlink or a
                    # full disk shows before any fetch); beyond that, when their turn comes.
                    if i < max_open:
                        parts.open(slot)
                if live:  # given back on the way out, for journals on a disk filled meanwhile
                    await asyncio.to_thread(hold_reserve, self.work.reserve,
                                            reserve_size(len(live)))
                if self.cfg.check_free_space:
                    # A part not opened yet: its earlier blocks taken off its size up front.
                    await asyncio.to_thread(check_free_space, self.work, [
                        (s.state.size or 0, s.fd) if s.fd >= 0
                        else (max(0, (s.state.size or 0) - s.part_owned), -1) for s in live
                    ])
                for slot in live:
                    if slot.state.size and slot.fd >= 0:
                        preallocate(slot.fd, slot.state.size, self.work.out_dir)
                log.debug("pull: %d file(s), %d to fetch (%d bytes on disk already), "
                          "%d connections, chunks of %d bytes", len(manifest.files), len(live),
                          resumed, self.cfg.connections, chunk)
                # The model's size: what is finished plus what is to fetch, each file once
                # (its resumed ranges are part of its size, not added to it).
                model_bytes = total + sum(r.size for r in results.values())
                self.emit(PullStarted(len(manifest.files), model_bytes, resumed))
                for slot in live:
                    self.emit(FileStarted(slot.rel, slot.state.size or 0, slot.state.done.total))
                sched = Scheduler(self.cfg, self.resolver, parts, journaler, Committer(
                    self.work, self.cfg.durable), self._source(session), self.emit)
                await sched.transfer(live)
            finally:
                if sched is not None:
                    await sched.wait_tasks()
                await journaler.settle()
                # The space set aside now takes the journals, even on a disk filled meanwhile.
                unlink_quietly(self.work.reserve)
                journaler.save_on_exit(todo)
        for slot in todo:
            if slot.result is not None:
                results[slot.rel] = slot.result
        ordered = [results[mf.rel] for mf in manifest.files if mf.rel in results]
        return PullResult(
            files=ordered,
            bytes_fetched=sum(s.state.fetched for s in todo),
            seconds=time.monotonic() - started,
            refreshes=self.resolver.refreshes,
            retries=sched.retries if sched is not None else 0,
            restarts=sched.restarts if sched is not None else 0,
        )

    def _session(self) -> aiohttp.ClientSession:
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self.cfg.connect_timeout,
            sock_connect=self.cfg.connect_timeout, sock_read=self.cfg.stall_timeout,
        )
        connector = aiohttp.TCPConnector(limit=self.cfg.connections, ttl_dns_cache=300)
        # No default auth headers: presigned URLs carry their own; a platform key never
        # reaches storage. auto_decompress off so a gzip body is seen, not silently inflated.
        # trust_env off: proxies from the environment are applied per request in fetch.py
        # (env_proxy), without aiohttp's ~/.netrc lookup, whose credentials must not reach
        # storage. No cookie jar: a cookie one storage host sets is never replayed, to it or to
        # another host a redirect leads to.
        return aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False, trust_env=False,
            headers={"User-Agent": user_agent()}, cookie_jar=aiohttp.DummyCookieJar(),
        )

    def _pace(self) -> Pace:
        min_speed = self.cfg.min_speed
        if self.cfg.max_rate is not None:
            # A capped pull's connections share the cap: the floor must stay under their share.
            min_speed = min(min_speed, self.cfg.max_rate / self.cfg.connections / 4)
        return Pace(header_timeout=self.cfg.header_timeout, min_speed=min_speed,
                    min_speed_window=self.cfg.min_speed_window, read_size=self.cfg.read_size)

    def _source(self, session: aiohttp.ClientSession) -> ByteSource:
        if self.cfg.byte_source is not None:
            return self.cfg.byte_source
        throttle = None
        if self.cfg.max_rate is not None:
            bucket = TokenBucket(self.cfg.max_rate, time.monotonic())

            async def throttle(n: int) -> None:
                wait = bucket.take(n, time.monotonic())
                if wait > 0:
                    await asyncio.sleep(wait)

        return HttpByteSource(session, self._pace(), throttle)

    def _recover_sealed(self, rel: str, final: Path, entry: FinishedEntry, size: int | None,
                        sha256: str | None) -> bool:
        """A file logged as finished whose rename a kill interrupted: its sealed part is still
        in the work area, untouched since (same size and mtime). Move it into place, unless
        the manifest now names other bytes (the model changed since): that part is stale."""
        if (size is not None and size != entry.size) or (
                sha256 is not None and sha256 != entry.sha256):
            return False
        part = self.work.part_path(rel)
        try:
            st = os.stat(part, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if st.st_size != entry.size or st.st_mtime_ns != entry.mtime_ns:
            return False
        move_into_place(part, final, self.work.out_dir, self.cfg.durable)
        return True

    async def _probe_sizes(self, session: aiohttp.ClientSession, slots: list[FileSlot]) -> None:
        """Learn the size of files whose source does not state it (plain URLs)."""
        unknown = [s for s in slots if s.state.size is None]
        if not unknown:
            return
        sem = asyncio.Semaphore(self.cfg.connections)

        async def one(slot: FileSlot) -> None:
            async with sem:
                try:
                    probed = await self._probe(session, slot.rel)
                except WeightliftError as exc:
                    slot.state.step(LocalFailed(-1, exc))
                    slot.result = FileResult(slot.rel, 0, None, "failed", 0, exc.one_line(),
                                             exc.exit_code)
                    self.emit(FileFailed(slot.rel, exc.one_line()))
                    return
                slot.state.size = probed.size
                slot.state.journal = JournalState(rel=slot.rel, size=probed.size or 0,
                                                  ranged=probed.ranged)

        await asyncio.gather(*(one(s) for s in unknown))

    async def _probe(self, session: aiohttp.ClientSession, rel: str) -> Probed:
        attempt = 0
        while True:
            url = await self.resolver.url_for(rel)
            status: int | None = None
            retry_after: str | None = None
            try:
                return await probe(session, url, self._pace())
            except StatusError as exc:
                kind = storage_errors.classify_response(
                    exc.status, exc.body, exc.headers,
                    url_expired_by_clock=self.resolver.is_expired(rel),
                    can_refresh=self.resolver.can_refresh)
                reason = storage_errors.describe(exc.status, exc.body)
                expired = kind is storage_errors.StorageErrorKind.EXPIRED
                if expired and not self.resolver.can_refresh:
                    raise url_expired(rel, reason) from None
                if expired:
                    await self.resolver.refresh(stale_url=url)
                    attempt += 1
                    if attempt > self.cfg.max_expired_streak:
                        raise TransferFailed(f"{rel}: storage keeps answering {reason}") from None
                    continue
                if kind is not storage_errors.StorageErrorKind.RETRYABLE:
                    raise refused(rel, reason, redact_url(url)) from None
                status = exc.status if self.cfg.retry.is_retryable_status(exc.status) else None
                retry_after = exc.headers.get("Retry-After")
            except NetworkError as exc:
                reason = exc.reason
            decision = self.cfg.retry.decide(attempt, status=status, retry_after=retry_after,
                                             now=datetime.now(timezone.utc), rng=self._rng)
            if not isinstance(decision, Retry):
                raise gave_up(rel, attempt + 1, reason)
            self.emit(Retrying(rel, reason, decision.delay))
            await asyncio.sleep(decision.delay)
            attempt += 1


def _still_final(final: os.PathLike[str], entry: FinishedEntry, size: int | None,
                 sha256: str | None) -> bool:
    """Is the finished file still there and the same? Re-hash only if it was touched."""
    try:
        st = os.stat(final, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if st.st_size != entry.size or (size is not None and size != entry.size):
        return False
    if sha256 is not None and sha256 != entry.sha256:
        return False
    if st.st_mtime_ns == entry.mtime_ns:
        return True
    return sha256_file(Path(final)) == entry.sha256
