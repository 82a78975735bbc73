"""The transfer engine: one asyncio worker pool over all files of a manifest.

Large files are split into ranges, small ones fetched whole; every response is judged before a
byte is written; progress is journaled as it goes; each file is hashed as its contiguous prefix
grows and finalised (checked, synced, renamed) as soon as its last byte lands.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from weightlift.downloader import storage_errors
from weightlift.downloader.errors import (
    DiskFull,
    TransferFailed,
    VerificationFailed,
    WeightliftError,
    redact_url,
    write_failed,
)
from weightlift.downloader.events import (
    BytesReceived,
    Event,
    FileFailed,
    FileFinished,
    FileRestarted,
    FileStarted,
    ManifestRefreshed,
    PullStarted,
    Retrying,
)
from weightlift.downloader.failpoints import failpoint
from weightlift.downloader.fetch import (
    Abandon,
    Answer,
    NetworkError,
    Rejected,
    StatusError,
    _pwrite_all,
    fetch_range,
    probe_size,
)
from weightlift.downloader.finalize import (
    NotLogged,
    Sealed,
    check_free_space,
    commit_batch,
    hold_reserve,
    move_into_place,
    open_part,
    preallocate,
    reserve_size,
)
from weightlift.downloader.hashing import HashFrontier, sha256_file
from weightlift.downloader.journal import (
    FinishedEntry,
    JournalState,
    load_finished,
    load_journal,
    write_atomic,
)
from weightlift.downloader.planner import (
    DEFAULT_CONNECTIONS,
    Chunk,
    auto_chunk_size,
    plan_file,
)
from weightlift.downloader.ranges import RangeSet
from weightlift.downloader.resolver import ManifestResolver
from weightlift.downloader.response_check import Asked, Decision, Verdict, storage_sha256
from weightlift.downloader.retry import GiveUp, RetryPolicy, WaitTooLong
from weightlift.downloader.safe_files import reserve_fds, unlink_quietly
from weightlift.downloader.workarea import WorkArea

if TYPE_CHECKING:
    from weightlift.downloader.byte_source import ByteSource

log = logging.getLogger(__name__)

# A header check for files whose format we know: (prefix, file size) -> bytes still needed
# before it can judge, or 0 when it has judged (raising VerificationFailed when bad).
HeaderCheck = Callable[[str, bytes, int], int]

# Part files open at once, about: the first this many are opened (and preallocated) up front;
# later ones when their turn comes, once earlier ones are sealed and closed. A pull of 50,000
# tiny files would otherwise hold 50,000 descriptors (EMFILE past the usual 1,024 or 20,000).
MAX_OPEN_PARTS = 512


def _user_agent() -> str:
    try:
        return f"weightlift/{version('weightlift')}"
    except PackageNotFoundError:  # pragma: no cover
        return "weightlift"


@dataclass(frozen=True)
class EngineConfig:
    connections: int = DEFAULT_CONNECTIONS
    chunk_size: int | None = None  # None: chosen from the total size and connections
    read_size: int = 1 << 20
    stall_timeout: float = 30.0
    connect_timeout: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    durable: bool = True  # fsync data before the journal that claims it, and before rename
    # Journal when this much (or 1/400 of the model, if less) is unjournaled across files, at
    # most every journal_spacing s and at least every journal_interval s: a kill -9 then costs
    # about max(1/400 of the model, 256 KiB, what 50 ms bring) plus the blocks in flight.
    journal_bytes: int = 4 << 20
    journal_interval: float = 1.0
    journal_spacing: float = 0.05
    max_file_restarts: int = 3
    max_bad_responses: int = 8
    max_expired_streak: int = 5
    check_free_space: bool = True
    header_check: HeaderCheck | None = None
    seed: int | None = None
    # Where chunk bytes come from (byte_source.ByteSource); None: storage over HTTP.
    byte_source: ByteSource | None = None


@dataclass
class FileResult:
    rel: str
    size: int
    sha256: str | None
    status: str  # downloaded | already-complete | failed
    bytes_fetched: int = 0
    error: str | None = None
    exit_code: int = 0
    etag: str | None = None
    source: str = ""  # redacted URL (no query string)


@dataclass
class PullResult:
    files: list[FileResult]
    bytes_fetched: int
    seconds: float
    refreshes: int
    retries: int
    restarts: int

    @property
    def ok(self) -> bool:
        return all(f.status != "failed" for f in self.files)


class _DoneFlag:
    """Set once a file has its result. Not an asyncio.Event per file (a dict and a deque,
    about 0.8 KB: 40 MB for 50,000 files): the engine counts the files still to land."""

    __slots__ = ("_set", "on_set")

    def __init__(self) -> None:
        self._set = False
        self.on_set: Callable[[], None] | None = None

    def set(self) -> None:
        if not self._set:
            self._set = True
            if self.on_set is not None:
                self.on_set()

    def is_set(self) -> bool:
        return self._set


@dataclass(slots=True)  # one per file: 50,000 files
class _File:
    """Mutable download state of one file (owned by the engine's event loop)."""

    rel: str
    size: int | None
    expected_sha: str | None
    fd: int = -1
    journal: JournalState | None = None
    frontier: HashFrontier | None = None
    generation: int = 0
    restarts: int = 0
    object_changed: bool = False  # its object was replaced on storage during this pull
    bad_responses: int = 0
    no_range_answers: int = 0
    fetched: int = 0
    unjournaled: int = 0
    header_checked: bool = False
    header_need: int = 0  # prefix bytes the header check asked for (0: not asked yet)
    journal_on_disk: bool = False  # a journal file may exist for it (unlink when finished)
    finalizing: bool = False
    sealed: bool = False  # whole and synced, but the finished log could not take it
    stale_part: bool = False  # a part on disk its journal does not vouch for: emptied on open
    part_owned: int = 0  # bytes of disk a part left by an earlier run holds (free-space check)
    done_event: _DoneFlag = field(default_factory=lambda: _DoneFlag())
    result: FileResult | None = None
    storage_sha: str | None = None

    @property
    def done(self) -> RangeSet:
        assert self.journal is not None
        return self.journal.done


class Engine:
    def __init__(
        self,
        resolver: ManifestResolver,
        work: WorkArea,
        config: EngineConfig,
        emit: Callable[[Event], None] = lambda e: None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.resolver = resolver
        self.work = work
        self.cfg = config
        self.emit = emit
        self._sleep = sleep
        self._rng = random.Random(config.seed)
        self._files: dict[str, _File] = {}
        self._queue: asyncio.Queue[Chunk] = asyncio.Queue()
        self._journal_wakeup = asyncio.Event()
        self._unjournaled = 0  # bytes written, not yet claimed by a journal, across files
        self._journal_budget = config.journal_bytes  # set from the model's size in run()
        self._journal_lock = asyncio.Lock()  # one writer at a time, in generation order
        self._finalizers: set[asyncio.Task[None]] = set()
        self._commits: list[tuple[Sealed, asyncio.Future[None]]] = []
        self._work_files: set[str] | None = None  # names in the parts folder at the start
        # Part files open now (rel -> file). At most about MAX_OPEN_PARTS: the first ones are
        # opened up front, the rest when their turn comes (50,000 files, 50,000 fds otherwise).
        self._opened: dict[str, _File] = {}
        self._max_open = max(MAX_OPEN_PARTS, 2 * config.connections)
        self._room = asyncio.Event()  # a finaliser ended: a part may have been closed
        self._sealing = 0  # finalisers whose part is open: each will close it or restart
        self._unlanded = 0  # files of the transfer without a result yet
        self._landed = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        # Set when the pull cannot go on (disk full, a finaliser crashed): the pool stops.
        self._crash: asyncio.Future[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.retries = 0
        self.restarts = 0
        self._chunk_size = config.chunk_size or 0
        resolver.on_refresh = lambda proactive: self.emit(
            ManifestRefreshed(proactive, resolver.refreshes))

    # ---- setup -------------------------------------------------------------------------

    async def run(self) -> PullResult:
        started = time.monotonic()
        manifest = self.resolver.manifest
        finished = load_finished(self.work.finished_log)
        results: dict[str, FileResult] = {}
        todo: list[_File] = []
        resumed = 0
        for mf in manifest.files:
            # Refuses a symlink or clashing path in the folder before any byte is fetched.
            final = self.work.final_path(mf.rel)
            entry = finished.get(mf.rel)
            if entry is not None and await asyncio.to_thread(
                _still_final, final, entry, mf.size, mf.sha256
            ) or entry is not None and await asyncio.to_thread(
                self._recover_sealed, mf.rel, final, entry, mf.size, mf.sha256
            ):
                results[mf.rel] = FileResult(mf.rel, entry.size, entry.sha256,
                                             "already-complete", etag=entry.etag,
                                             source=entry.source)
                # A kill after the rename can leave the journal behind; it is done with.
                _unlink(self.work.journal_path(mf.rel))
                resumed += entry.size
                self.emit(FileFinished(mf.rel, entry.size, entry.sha256, skipped=True))
                continue
            todo.append(_File(rel=mf.rel, size=mf.size, expected_sha=mf.sha256))
        # At most about _max_open part files are open at once (plus those a connection is
        # busy with past that bound): make room, or say so now.
        reserve_fds(min(len(todo), self._max_open + self.cfg.connections),
                    self.cfg.connections)

        timeout = aiohttp.ClientTimeout(
            total=None, connect=self.cfg.connect_timeout,
            sock_connect=self.cfg.connect_timeout, sock_read=self.cfg.stall_timeout,
        )
        connector = aiohttp.TCPConnector(limit=self.cfg.connections, ttl_dns_cache=300)
        # No default auth headers: presigned URLs carry their own; a platform key never
        # reaches storage. auto_decompress off so a gzip body is seen, not silently inflated.
        # trust_env off: proxies from the environment are applied per request in fetch.py
        # (env_proxy), without aiohttp's ~/.netrc lookup, whose credentials must not reach
        # storage.
        # No cookie jar: a cookie one storage host sets is never replayed, to it or to another
        # host a redirect leads to.
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False, trust_env=False,
            headers={"User-Agent": _user_agent()}, cookie_jar=aiohttp.DummyCookieJar(),
        ) as session:
            self._session = session
            try:
                await self._probe_sizes(todo)
                # A file whose probe failed (404, refused) has its result: nothing to open.
                live = [f for f in todo if f.result is None]
                total = sum(f.size or 0 for f in live)
                if not self._chunk_size:
                    self._chunk_size = auto_chunk_size(total, self.cfg.connections)
                self._journal_budget = min(self.cfg.journal_bytes, max(256 << 10, total // 400))
                self._work_files = _listing(self.work.parts)
                _sweep_journal_temps(self.work.parts, self._work_files)
                for i, f in enumerate(live):
                    resumed += self._resume(f)
                    # Up front for a model's usual few to hundreds of files (a symlink or a
                    # full disk shows before any fetch); beyond that, when their turn comes.
                    if i < self._max_open:
                        self._open(f)
                if live:  # given back by _shutdown, for the journals on a disk filled meanwhile
                    await asyncio.to_thread(hold_reserve, self.work.reserve,
                                            reserve_size(len(live)))
                if self.cfg.check_free_space:
                    # A part not opened yet: its earlier blocks taken off its size up front.
                    await asyncio.to_thread(check_free_space, self.work, [
                        (f.size or 0, f.fd) if f.fd >= 0
                        else (max(0, (f.size or 0) - f.part_owned), -1) for f in live
                    ])
                for f in live:
                    if f.size and f.fd >= 0:
                        preallocate(f.fd, f.size, self.work.out_dir)
                log.debug("pull: %d file(s), %d to fetch (%d bytes on disk already), "
                          "%d connections, chunks of %d bytes", len(manifest.files), len(live),
                          resumed, self.cfg.connections, self._chunk_size)
                self.emit(PullStarted(len(manifest.files),
                                      manifest.known_bytes or total + resumed, resumed))
                for f in live:
                    self.emit(FileStarted(f.rel, f.size or 0, f.done.total))
                await self._transfer(live)
            finally:
                self._session = None
                await self._shutdown(todo)
        for f in todo:
            if f.result is not None:
                results[f.rel] = f.result
        ordered = [results[mf.rel] for mf in manifest.files if mf.rel in results]
        return PullResult(
            files=ordered,
            bytes_fetched=sum(f.fetched for f in todo),
            seconds=time.monotonic() - started,
            refreshes=self.resolver.refreshes,
            retries=self.retries,
            restarts=self.restarts,
        )

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

    async def _probe_sizes(self, files: list[_File]) -> None:
        """Learn the size of files whose source does not state it (plain URLs)."""
        unknown = [f for f in files if f.size is None]
        if not unknown:
            return
        sem = asyncio.Semaphore(self.cfg.connections)

        async def probe(f: _File) -> None:
            async with sem:
                try:
                    f.size, ranged = await self._probe(f)
                except Abandon:
                    return
                if not ranged:
                    f.journal = JournalState(rel=f.rel, size=f.size or 0, ranged=False)

        await asyncio.gather(*(probe(f) for f in unknown))

    async def _probe(self, f: _File) -> tuple[int | None, bool]:
        attempt = 0
        while True:
            url = await self.resolver.url_for(f.rel)
            try:
                return await probe_size(self._session_or_fail(), url)
            except StatusError as exc:
                await self._on_status_error(f, exc, url, attempt)
            except NetworkError as exc:
                await self._backoff(f, exc.reason, attempt, None, None)
            attempt += 1

    def _resume(self, f: _File) -> int:
        """Judge the file's journal against its part on disk (a stat, no descriptor kept);
        returns the bytes already on disk for it. ``_open`` opens the part later."""
        assert f.size is not None or (f.journal is not None and not f.journal.ranged)
        part = self.work.part_path(f.rel)
        journal_path = self.work.journal_path(f.rel)
        # One listing of the work area instead of a failed open per file (1,000 small files).
        f.journal_on_disk = self._work_files is None or journal_path.name in self._work_files
        st = None
        if self._work_files is None or part.name in self._work_files:
            try:
                st = os.stat(part, follow_symlinks=False)
            except FileNotFoundError:
                pass
        # Anything but a plain file there is refused by open_part when the part is opened.
        disk_size = st.st_size if st is not None and stat.S_ISREG(st.st_mode) else 0
        f.part_owned = st.st_blocks * 512 if st is not None and stat.S_ISREG(st.st_mode) else 0
        prior = load_journal(journal_path, f.rel, f.size) if f.journal_on_disk else None
        if prior is not None and prior.done.total and (
            max(e for _, e in prior.done) <= disk_size
        ):
            f.journal = prior
            return prior.done.total
        ranged = f.journal.ranged if f.journal is not None else True
        f.stale_part = st is not None
        f.part_owned = 0 if f.stale_part else f.part_owned
        f.journal = JournalState(rel=f.rel, size=f.size or 0, ranged=ranged)
        return 0

    def _open(self, f: _File) -> None:
        """Open the part file (its journal judged by ``_resume``)."""
        part = self.work.part_path(f.rel)
        f.fd = open_part(part, self.work.out_dir)
        self._opened[f.rel] = f
        if f.stale_part:
            os.ftruncate(f.fd, 0)
            f.stale_part = False
        f.frontier = HashFrontier(f.fd)

    async def _ensure_open(self, f: _File) -> None:
        """Open a part not opened up front, now that its turn has come. With about
        MAX_OPEN_PARTS parts open, first wait while finished files are being sealed and closed
        (``_sealing``: finalisers whose part is open need nothing else to get there, so this
        cannot deadlock): downloads never outrun the fsyncs by more than that many files. The
        preallocation meets a full disk here (DiskFull)."""
        while f.fd < 0 and len(self._opened) >= self._max_open and self._sealing:
            self._room.clear()
            await self._room.wait()
        if f.fd >= 0 or f.result is not None:
            return
        self._open(f)
        if f.size:
            preallocate(f.fd, f.size, self.work.out_dir)

    # ---- the pool ----------------------------------------------------------------------

    async def _transfer(self, files: list[_File]) -> None:
        for f in files:
            self._files[f.rel] = f
            if not f.done_event.is_set():
                self._unlanded += 1
                f.done_event.on_set = self._one_landed
        for f in files:
            self._enqueue(f)
            self._check_complete(f)
        workers = [asyncio.ensure_future(self._worker()) for _ in range(self.cfg.connections)]
        journaler = asyncio.ensure_future(self._journal_loop())
        waiting = asyncio.ensure_future(self._all_done(files))
        crash = self._crash_future()
        try:
            pending: set[asyncio.Future[None]] = {waiting, journaler, crash, *workers}
            while True:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                if waiting in done:
                    break
        finally:
            await _cancel_all([*workers, journaler, waiting])
            if not crash.done():
                crash.cancel()
            elif not crash.cancelled():
                crash.exception()  # retrieved here if the loop ended for another reason

    def _crash_future(self) -> asyncio.Future[None]:
        if self._crash is None:
            self._crash = asyncio.get_running_loop().create_future()
        return self._crash

    def _stop_pull(self, exc: BaseException) -> None:
        """Stop everything: the first fatal error wins and is raised by the pool."""
        crash = self._crash_future()
        if not crash.done():
            crash.set_exception(exc)

    def _finalizer_done(self, task: asyncio.Task[None]) -> None:
        self._finalizers.discard(task)
        self._room.set()
        if not task.cancelled() and task.exception() is not None:
            self._stop_pull(task.exception())  # type: ignore[arg-type]

    def _one_landed(self) -> None:
        self._unlanded -= 1
        if self._unlanded <= 0:
            self._landed.set()

    async def _all_done(self, files: list[_File]) -> None:
        if self._unlanded:
            await self._landed.wait()
        # Let finalisers that signalled completion return before we leave.
        if self._finalizers:
            await asyncio.gather(*self._finalizers)

    def _enqueue(self, f: _File) -> None:
        assert f.journal is not None
        for chunk in plan_file(f.rel, f.size or 0, f.done, self._chunk_size,
                               ranged=f.journal.ranged):
            self._queue.put_nowait(chunk)

    async def _worker(self) -> None:
        while True:
            chunk = await self._queue.get()
            f = self._files[chunk.rel]
            if f.result is None:
                try:
                    await self._ensure_open(f)
                    await self._fetch_chunk(f, chunk)
                except Abandon:
                    pass  # the file failed or restarted; its result says why
                except DiskFull:
                    raise  # no file can make progress: stop the pull, keep the state
                except WeightliftError as exc:
                    self._fail(f, exc)  # this file cannot be fetched; the others go on

    async def _fetch_chunk(self, f: _File, chunk: Chunk) -> None:
        generation = f.generation
        attempt = 0
        expired_streak = 0
        while f.generation == generation and f.result is None:
            assert f.journal is not None
            if not f.journal.ranged and f.done.total and not _covers(f):
                # No Range support: a cut-short whole GET can only start over from byte 0.
                self._lose_progress(f)
            whole = not f.journal.ranged or (chunk.whole and f.done.total == 0)
            if whole:
                if _covers(f):
                    return
                start, end = 0, f.size or 0
            else:
                gaps = f.done.gaps(chunk.start, chunk.end)
                if not gaps:
                    return
                start, end = gaps[0]
            url = await self.resolver.url_for(f.rel)
            asked = Asked(start=start, end=end, size=f.size, ranged=not whole,
                          validator=f.journal.etag)
            before = f.fetched
            log.debug("%s: requesting %s%s", f.rel,
                      "the whole file" if whole else f"bytes {start}-{end - 1}",
                      f" (try {attempt + 1})" if attempt else "")
            try:
                if self.cfg.byte_source is not None:
                    answer = await self._fetch_from_source(f, generation, url, asked)
                else:
                    answer = await fetch_range(
                        self._session_or_fail(), url, asked, f.fd,
                        lambda off, n: self._on_bytes(f, generation, off, n),
                        read_size=self.cfg.read_size,
                        same_object=lambda etag: self._same_object(f, etag, generation),
                        where=str(self.work.out_dir),
                    )
            except Abandon:
                return
            except NetworkError as exc:
                if f.fetched > before:
                    attempt = 0
                await self._backoff(f, exc.reason, attempt, None, None)
                attempt += 1
                continue
            except Rejected as exc:
                await self._on_rejected(f, generation, exc)
                if f.generation != generation:
                    return
                attempt += 1
                continue
            except StatusError as exc:
                expired = await self._on_status_error(f, exc, url, attempt)
                if expired:
                    expired_streak += 1
                    if expired_streak > self.cfg.max_expired_streak:
                        self._fail(f, TransferFailed(
                            f"{f.rel}: storage keeps answering {exc.status} after refreshes"))
                        return
                else:
                    attempt += 1
                continue
            expired_streak = 0
            if f.journal.last_modified is None:
                f.journal.last_modified = answer.last_modified
            if f.storage_sha is None:
                f.storage_sha = storage_sha256(answer.headers)
            if whole and f.size is None:
                f.size = answer.written
                f.journal.size = f.size
            self._check_complete(f)

    async def _fetch_from_source(self, f: _File, generation: int, url: str,
                                 asked: Asked) -> Answer:
        """``fetch_range``'s job through ``cfg.byte_source``: same writes, same ETag rule (the
        first ETag seen is the file's; another one restarts it, its bytes thrown away)."""
        assert self.cfg.byte_source is not None
        where = str(self.work.out_dir)
        engine = self

        class _PartSink:
            def write(self, offset: int, data: bytes | memoryview) -> bool:
                if f.generation != generation or f.result is not None or f.fd < 0:
                    return False
                _pwrite_all(f.fd, data, offset, where)
                return engine._on_bytes(f, generation, offset, len(data))

        answer = await self.cfg.byte_source.fetch(f.rel, url, asked, _PartSink())
        if not self._same_object(f, answer.etag, generation):
            raise Rejected(Decision(Verdict.OBJECT_CHANGED, "the object's ETag changed"))
        return answer

    def _session_or_fail(self) -> aiohttp.ClientSession:
        assert self._session is not None
        return self._session

    def _same_object(self, f: _File, etag: str | None, generation: int) -> bool:
        """The first ETag seen for a file is authoritative; any other means a new object."""
        assert f.journal is not None
        if f.generation != generation:
            # Answered after the file restarted: its ETag (the old object's, maybe) must not
            # become the new generation's validator, which would restart the file again.
            raise Abandon()
        if etag is None:
            return True
        if f.journal.etag is None:
            f.journal.etag = etag
            return True
        if f.journal.etag != etag:
            log.debug("%s: ETag changed from %s to %s: the object was replaced", f.rel,
                      f.journal.etag, etag)
            return False
        return True

    def _lose_progress(self, f: _File) -> None:
        assert f.journal is not None
        f.journal.done = RangeSet()
        if f.frontier is not None:
            f.frontier.cancel()
        f.frontier = HashFrontier(f.fd)

    def _on_bytes(self, f: _File, generation: int, offset: int, n: int) -> bool:
        if f.generation != generation:
            return False
        f.done.add(offset, offset + n)
        f.fetched += n
        f.unjournaled += n
        self.resolver.note_progress()
        self.emit(BytesReceived(f.rel, n))
        self._unjournaled += n
        if self._unjournaled >= self._journal_budget:
            self._journal_wakeup.set()
        assert f.frontier is not None
        prefix = f.done.prefix_end()
        if prefix > f.frontier.offset:
            f.frontier.advance(prefix)
            if not f.header_checked and self.cfg.header_check is not None:
                self._check_header(f, prefix)
        return True

    def _check_header(self, f: _File, prefix_end: int) -> None:
        """Fail fast: judge a known format's header as soon as its bytes are on disk. The
        check first says how many bytes it needs (none for formats it does not know), so only
        those are read back, once they have landed."""
        assert self.cfg.header_check is not None
        assert f.size is not None
        if f.header_need > prefix_end:
            return
        try:
            data = os.pread(f.fd, min(f.header_need, 8 + 100_000_000), 0) \
                if f.header_need else b""
            needed = self.cfg.header_check(f.rel, data, f.size)
        except VerificationFailed as exc:
            self._fail(f, VerificationFailed(f"{f.rel}: broken safetensors header: {exc.message}",
                                             "this file can never load; nothing more was fetched"),
                       stop_inflight=True)
            return
        if needed == 0 or needed > f.size:
            f.header_checked = True
            return
        if needed <= f.header_need:
            return  # not progressing: ask again when more has landed
        f.header_need = needed
        self._check_header(f, prefix_end)  # the bytes may be there already

    async def _on_rejected(self, f: _File, generation: int, exc: Rejected) -> None:
        if f.generation != generation:
            return  # the file restarted while this request ran: its answer is about the past
        verdict = exc.decision.verdict
        reason = exc.decision.reason
        if verdict is Verdict.OBJECT_CHANGED:
            f.object_changed = True
            await self._restart(f, f"object changed on the server ({reason})")
        elif verdict is Verdict.NO_RANGE_SUPPORT and f.no_range_answers < 2:
            # One 200 to a Range request may be a hiccup (a proxy, a cache); retry first.
            f.no_range_answers += 1
            await self._backoff(f, reason, f.no_range_answers, None, None)
        elif verdict is Verdict.NO_RANGE_SUPPORT:
            assert f.journal is not None
            f.journal.ranged = False
            await self._restart(f, "the server ignores Range requests; fetching it whole",
                                ranged=False)
        elif verdict is Verdict.SIZE_MISMATCH:
            self._fail(f, TransferFailed(f"{f.rel}: {reason}",
                                         "the manifest and the stored object disagree"))
        else:
            f.bad_responses += 1
            if f.bad_responses > self.cfg.max_bad_responses:
                self._fail(f, TransferFailed(f"{f.rel}: storage keeps sending bad responses "
                                             f"({reason})"))
                return
            await self._backoff(f, reason, min(f.bad_responses, 4), None, None)

    async def _on_status_error(self, f: _File, exc: StatusError, url: str, attempt: int) -> bool:
        """Handle a non-2xx answer; True when it was an expired URL (refreshed)."""
        kind = storage_errors.classify_response(
            exc.status, exc.body, exc.headers,
            url_expired_by_clock=self.resolver.is_expired(f.rel),
            can_refresh=self.resolver.can_refresh,
        )
        reason = storage_errors.describe(exc.status, exc.body)
        log.debug("%s: storage answered %s (%s) for %s", f.rel, reason, kind.value,
                  redact_url(url))
        if kind is storage_errors.StorageErrorKind.EXPIRED:
            if not self.resolver.can_refresh:
                self._fail(f, TransferFailed(
                    f"{f.rel}: the URL has expired ({reason})",
                    "get a fresh manifest and run again: finished bytes are kept"))
                raise Abandon()
            log.info("%s: URL expired (%s); refreshing the manifest", f.rel, reason)
            await self.resolver.refresh(stale_url=url)
            return True
        if kind is storage_errors.StorageErrorKind.RETRYABLE:
            # A retryable answer outside the policy's status list is retried like a network
            # error rather than given up on at once.
            status = exc.status if self.cfg.retry.is_retryable_status(exc.status) else None
            await self._backoff(f, reason, attempt, status, exc.headers.get("Retry-After"))
            return False
        where = redact_url(url)
        self._fail(f, TransferFailed(f"{f.rel}: storage refused it: {reason} ({where})"))
        raise Abandon()

    async def _backoff(self, f: _File, reason: str, attempt: int, status: int | None,
                       retry_after: str | None) -> None:
        decision = self.cfg.retry.decide(attempt, status=status, retry_after=retry_after,
                                         now=datetime.now(timezone.utc), rng=self._rng)
        if isinstance(decision, WaitTooLong):
            self._fail(f, TransferFailed(
                f"{f.rel}: storage asks to wait {decision.human} before trying again "
                f"({reason}, Retry-After)",
                "run the same command again after that; finished bytes are kept"))
            raise Abandon()
        if isinstance(decision, GiveUp):
            self._fail(f, TransferFailed(
                f"{f.rel}: gave up after {decision.attempts} tries: {reason}",
                "run the same command again to resume; finished bytes are kept"))
            raise Abandon()
        self.retries += 1
        log.info("%s: %s; retrying in %.2fs", f.rel, reason, decision.delay)
        self.emit(Retrying(f.rel, reason, decision.delay))
        await self._sleep(decision.delay)

    async def _restart(self, f: _File, reason: str, *, ranged: bool = True) -> None:
        """Throw away a file's bytes and start it over (the object it came from changed)."""
        f.restarts += 1
        self.restarts += 1
        if f.restarts > self.cfg.max_file_restarts:
            self._fail(f, TransferFailed(f"{f.rel}: restarted {f.restarts - 1} times: {reason}"))
            return
        assert f.journal is not None
        lost = f.done.total
        f.generation += 1
        if f.frontier is not None:
            f.frontier.cancel()
        f.frontier = HashFrontier(f.fd)
        f.header_checked = False
        f.header_need = 0
        f.storage_sha = None
        f.journal = JournalState(rel=f.rel, size=f.size or 0, ranged=ranged)
        f.journal_on_disk = True
        async with self._journal_lock:
            try:
                await asyncio.to_thread(write_atomic, self.work.journal_path(f.rel),
                                        f.journal.to_json(), durable=False)
            except OSError as exc:
                raise write_failed(exc, self.work.out_dir, "the journal") from None
        log.warning("%s: starting over: %s", f.rel, reason)
        self.emit(FileRestarted(f.rel, reason, lost))
        self._enqueue(f)

    def _fail(self, f: _File, exc: WeightliftError, *, stop_inflight: bool = False) -> None:
        """Mark a file failed: no new requests for it. Requests already streaming go on
        writing (their bytes are journaled for the resume) unless ``stop_inflight``."""
        if f.result is not None:
            return
        f.result = FileResult(f.rel, f.size or 0, None, "failed", f.fetched,
                              exc.one_line(), exc.exit_code)
        if stop_inflight:
            f.generation += 1
        self.emit(FileFailed(f.rel, exc.one_line()))
        f.done_event.set()
        if isinstance(exc, DiskFull):
            self._stop_pull(exc)

    # ---- completion --------------------------------------------------------------------

    def _check_complete(self, f: _File) -> None:
        if f.result is not None or f.finalizing or f.size is None:
            return
        if not f.done.covers(0, f.size):
            return
        f.finalizing = True
        task = asyncio.ensure_future(self._finalize(f, f.generation))
        self._finalizers.add(task)
        task.add_done_callback(self._finalizer_done)

    async def _finalize(self, f: _File, generation: int) -> None:
        assert f.size is not None
        assert f.journal is not None
        sealing = False
        try:
            # An empty file, or one a kill left whole on disk, may not be open yet.
            await self._ensure_open(f)
            if f.fd < 0:
                return  # failed meanwhile
            self._sealing += 1
            sealing = True
            assert f.frontier is not None
            digest = await f.frontier.finish(f.size)
            if f.generation != generation:
                return
            expected = f.expected_sha or f.storage_sha
            if expected and digest != expected and f.object_changed and f.expected_sha:
                # The object was replaced during this pull and its new bytes are not the ones
                # the manifest pins: fetching them again cannot help. Fail now and keep them
                # (journal intact): a re-run whose fresh manifest pins them finishes from disk.
                self._fail(f, TransferFailed(
                    f"{f.rel}: the object changed on storage during the pull, and its new "
                    f"sha256 {digest[:12]}… is not the manifest's {expected[:12]}…",
                    "the model was replaced at the source: run the same command again for a "
                    "fresh manifest (the new bytes are kept)" if self.resolver.can_refresh else
                    "the manifest is out of date: get a current one and run again (the new "
                    "bytes are kept)"))
                return
            if expected and digest != expected:
                f.finalizing = False
                what = "manifest" if f.expected_sha else "storage checksum"
                await self._restart(f, f"sha256 differs from the {what}")
                if f.result is not None and f.result.status == "failed":
                    f.result = FileResult(
                        f.rel, f.size, digest, "failed", f.fetched,
                        f"{f.rel}: sha256 {digest[:12]}… differs from the {what}'s "
                        f"{expected[:12]}… after {f.restarts - 1} retries", 1)
                    f.done_event.set()
                return
            final = self.work.final_path(f.rel)
            part = self.work.part_path(f.rel)
            fd, f.fd = f.fd, -1
            # Log before the rename: a kill in between leaves a logged file whose final name is
            # missing, and the next run re-finalises it from its complete journal, no network.
            source = redact_url(self.resolver.file(f.rel).url)
            etag, size = f.journal.etag, f.size
            try:
                await self._commit(Sealed(
                    fd, size, f.rel, part, final,
                    lambda mtime_ns: FinishedEntry(f.rel, size, digest, etag, source, mtime_ns)))
            finally:
                self._opened.pop(f.rel, None)  # the commit closed the part
            failpoint("finalize.before_journal_unlink")
            if f.journal_on_disk:
                async with self._journal_lock:  # after any flush that snapshotted this file
                    _unlink(self.work.journal_path(f.rel))
            f.result = FileResult(f.rel, f.size, digest, "downloaded", f.fetched,
                                  etag=f.journal.etag, source=source)
            f.frontier = None  # done with: not kept for every file until the pull ends
            log.debug("%s: finalized: %d bytes, sha256 %s, from %s (%d fetched, %d restarts)",
                      f.rel, f.size, digest, source, f.fetched, f.restarts)
            self.emit(FileFinished(f.rel, f.size, digest))
        except NotLogged as exc:
            f.sealed = True  # _shutdown journals it whole: the next run only renames it
            self._fail(f, exc.error)
        except WeightliftError as exc:
            self._fail(f, exc)
        finally:
            if sealing:
                self._sealing -= 1
                self._room.set()
            if f.result is not None:
                f.done_event.set()

    async def _commit(self, item: Sealed) -> None:
        """Seal, log and rename one finished part, batched with any others finishing at the
        same time (one log sync and one folder sync per batch: 1,000 small files would
        otherwise cost 4,000 fsyncs)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._commits.append((item, fut))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.ensure_future(self._commit_loop())
        await fut

    async def _commit_loop(self) -> None:
        while self._commits:
            batch, self._commits = self._commits, []
            errors: list[BaseException | None]
            try:
                errors = await asyncio.to_thread(
                    commit_batch, [item for item, _ in batch], self.work.finished_log,
                    self.work.out_dir, self.cfg.durable, move=move_into_place)
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

    # ---- journaling ----------------------------------------------------------------------

    async def _journal_loop(self) -> None:
        while True:
            await _wait_event(self._journal_wakeup, self.cfg.journal_interval)
            self._journal_wakeup.clear()
            started = time.monotonic()
            await self._write_journals(min_bytes=1)
            # Each round syncs data: no more than one per spacing, however fast bytes come.
            await asyncio.sleep(max(0.0, self.cfg.journal_spacing - (time.monotonic() - started)))

    async def _write_journals(self, *, min_bytes: int) -> None:
        """Sync the data, then write journals that claim only what was synced."""
        batch: list[tuple[_File, int, bytes]] = []
        for f in self._opened.values():  # not every file each second: 50,000 files
            landed = f.result is not None and f.result.status == "downloaded"
            if f.unjournaled >= min_bytes and not landed and f.fd >= 0 and f.journal:
                # Snapshot before syncing: every byte claimed was pwritten before this point.
                batch.append((f, f.generation, f.journal.to_json()))
                f.unjournaled = 0
                f.journal_on_disk = True
        # What is left unclaimed belongs to files landed or closed: nothing to journal there.
        self._unjournaled = 0
        if not batch:
            return

        def flush() -> None:
            for f, generation, data in batch:
                if f.generation != generation or f.fd < 0:
                    continue  # restarted (old object) or finalised meanwhile: nothing to claim
                if self.cfg.durable:
                    try:
                        os.fdatasync(f.fd)
                    except OSError:
                        continue
                failpoint("journal.before_write")
                try:
                    write_atomic(self.work.journal_path(f.rel), data, durable=False)
                except OSError as exc:  # the old journal stands: it claims less, never more
                    raise write_failed(exc, self.work.out_dir, "the journal") from None

        async with self._journal_lock:
            await asyncio.to_thread(flush)

    async def _shutdown(self, files: list[_File]) -> None:
        """On the way out (done, failed, cancelled): journal what is on disk, close files."""
        for task in list(self._finalizers):
            if not task.done():
                try:
                    await asyncio.shield(task)
                except BaseException:  # noqa: BLE001 - recorded in the file result already
                    pass
        # The space set aside now takes the journals below, even on a disk filled meanwhile.
        unlink_quietly(self.work.reserve)
        for f in files:
            if f.frontier is not None:
                f.frontier.cancel()
            landed = f.result is not None and f.result.status == "downloaded"
            # Nothing fetched and no journal yet (a pull stopped up front): nothing to save.
            blank = f.journal is not None and not f.journal.done.total and not f.journal_on_disk
            if (f.fd >= 0 or f.sealed) and f.journal is not None and not landed and not blank:
                try:
                    if self.cfg.durable and f.fd >= 0:
                        os.fdatasync(f.fd)
                    write_atomic(self.work.journal_path(f.rel), f.journal.to_json(),
                                 durable=self.cfg.durable)
                except OSError as exc:
                    log.warning("%s: could not save the journal: %s", f.rel, exc.strerror)
            if f.fd >= 0:
                os.close(f.fd)
                f.fd = -1


async def _wait_event(event: asyncio.Event, timeout: float) -> None:
    """Wait for ``event`` at most ``timeout`` seconds (without asyncio.wait_for, which can
    swallow a cancellation on Python <= 3.11)."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()


async def _cancel_all(tasks: list[asyncio.Future[None]]) -> None:
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


def _covers(f: _File) -> bool:
    return f.size is not None and f.journal is not None and f.journal.done.covers(0, f.size)


def _listing(folder: Path) -> set[str] | None:
    """The names in ``folder``; None when it cannot be listed (then every file is probed)."""
    try:
        return {entry.name for entry in os.scandir(folder)}
    except OSError:
        return None


def _sweep_journal_temps(folder: Path, names: set[str] | None) -> None:
    """Remove journal temp files that a kill left between their write and their rename
    (write_atomic); the folder's lock says no other pull can own one. Trimmed from ``names``."""
    for name in [n for n in names or () if ".journal." in n and n.endswith(".tmp")]:
        _unlink(folder / name)
        assert names is not None
        names.discard(name)


def _unlink(path: os.PathLike[str]) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


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
