"""What runs on each node: the ordinary pull (same engine, journal, hashing, finalisation,
receipt, verification) with a ``ByteSource`` that takes from origin only the chunks this node
claimed, publishing them to the object store, and reads every other chunk from a peer.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import ray

from weightlift.downloader.byte_source import Answer, HttpByteSource, Sink
from weightlift.downloader.config import EngineConfig
from weightlift.downloader.engine import user_agent
from weightlift.downloader.errors import (
    EXIT_OK,
    EXIT_TRANSFER_FAILED,
    EXIT_VERIFY_FAILED,
    Abandon,
    Rejected,
    TransferFailed,
    WeightliftError,
)
from weightlift.downloader.events import BytesReceived, Event, FileFinished, PullStarted
from weightlift.downloader.fanout.plan import ChunkPlan, ClusterChunk
from weightlift.downloader.fetch import Pace
from weightlift.downloader.manifest import Manifest
from weightlift.downloader.pull import pull
from weightlift.downloader.redact import redact_text
from weightlift.downloader.response_check import Asked, Decision, Verdict
from weightlift.downloader.sources.local import ResolvedSource

PROGRESS_EVERY = 0.5  # seconds between a node's progress reports to the coordinator


@dataclass(frozen=True)
class OwnerAnswer:
    """What origin said about the object, passed with a published chunk to its readers."""

    total: int | None
    etag: str | None
    last_modified: str | None
    headers: dict[str, str]


@dataclass(frozen=True)
class NodeSpec:
    node_id: str  # Ray's node id (hex)
    name: str  # the short id `{node}` expands to
    out_dir: str
    manifest: Manifest
    can_refresh: bool
    expected_params: int | None
    description: str
    plan: ChunkPlan
    config: EngineConfig
    verify: bool


@dataclass
class Counters:
    origin: int = 0  # bytes this node fetched from origin
    peers: int = 0  # bytes it read from other nodes' object stores
    done: int = 0  # bytes of the model it holds (resumed + written)
    total: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"origin": self.origin, "peers": self.peers, "done": self.done,
                "total": self.total}


class _Tee:
    """Copies a chunk's bytes into ``buf`` and passes the part the engine asked for on."""

    def __init__(self, chunk: ClusterChunk, lo: int, hi: int, sink: Sink,
                 counters: Counters) -> None:
        self.buf = np.empty(chunk.length, dtype=np.uint8)
        self._chunk, self._lo, self._hi, self._sink = chunk, lo, hi, sink
        self._counters = counters
        self.received = 0

    def answered(self, decision: Decision, headers: Mapping[str, str]) -> None:
        """Storage's judged answer, before the first byte: passed on to the engine's sink
        (when it takes answers) as the answer to the range it asked for."""
        if decision.whole and not self._chunk.whole:
            # A 200 to the chunk's Range request: this storage ignores Range, which a cluster
            # pull cannot split; nothing was written.
            raise Rejected(Decision(Verdict.BAD_RESPONSE, "storage ignored a Range request"))
        self._sink.answered(replace(decision, whole=False), headers)

    def write(self, offset: int, data: bytes | memoryview) -> bool:
        n = len(data)
        start = offset - self._chunk.start
        self.buf[start:start + n] = np.frombuffer(data, dtype=np.uint8)
        self.received += n
        self._counters.origin += n
        lo, hi = max(offset, self._lo), min(offset + n, self._hi)
        if lo < hi:
            view = memoryview(data)[lo - offset:hi - offset]
            if not self._sink.write(lo, view):
                return False
        return True


class RayByteSource:
    """Per asked range: the cluster chunks it falls in, each claimed (fetch from origin, then
    publish), read from a peer, or (released before a late resume asked) fetched alone."""

    def __init__(self, plan: ChunkPlan, coordinator: Any, node: str, http: HttpByteSource,
                 counters: Counters, *, piece: int = 1 << 20) -> None:
        self._plan = plan
        self._coord = coordinator
        self._node = node
        self._http = http
        self._counters = counters
        self._piece = piece

    async def fetch(self, rel: str, url: str, asked: Asked, sink: Sink) -> Answer:
        pieces = self._plan.pieces(rel, asked.start, asked.end)
        if not pieces:  # not in the plan (a size the plan did not know): plain HTTP
            return await self._origin(rel, url, asked, sink)
        if asked.may_be_whole and asked.ranged:
            # The engine sends a file's first range alone until storage proves it answers Range
            # requests. A cluster pull is all ranges (a chunk answered whole is refused by the
            # _Tee, nothing written): say so now, so that every node queues the file's other
            # ranges at once and in the same order (nodes asking in different orders would fill
            # the object-store budget with chunks the others do not want yet).
            sink.answered(Decision(Verdict.WRITE, total=asked.size), {})
        written = 0
        answer: Answer | None = None
        for chunk, lo, hi in pieces:
            answer = await self._one(rel, url, asked, chunk, lo, hi, sink)
            written += hi - lo
        assert answer is not None
        return replace(answer, written=written)

    async def _one(self, rel: str, url: str, asked: Asked, chunk: ClusterChunk, lo: int,
                   hi: int, sink: Sink) -> Answer:
        while True:
            kind, refs, meta, version = await self._coord.claim.remote(chunk.index, self._node)
            if kind == "own":
                return await self._own(rel, url, asked, chunk, lo, hi, sink)
            if kind == "origin":
                whole = chunk.whole and lo == chunk.start and hi == chunk.end
                part = Asked(lo, hi, asked.size, ranged=not whole, validator=asked.validator)
                return await self._origin(rel, url, part, sink)
            assert refs is not None
            try:
                data = await refs[0]
            except ray.exceptions.RayError:
                # Its owner died with it: the next asker fetches it from origin again.
                await self._coord.lost.remote(chunk.index, version)
                continue
            del refs
            view = memoryview(data)[lo - chunk.start:hi - chunk.start]
            for at in range(0, len(view), self._piece):
                block = view[at:at + self._piece]
                if not sink.write(lo + at, block):
                    raise Abandon()
                self._counters.peers += len(block)
            del view, data
            self._coord.written.remote(chunk.index, self._node)
            own: OwnerAnswer = meta
            return Answer(own.total, own.etag, own.last_modified, own.headers, hi - lo)

    async def _own(self, rel: str, url: str, asked: Asked, chunk: ClusterChunk, lo: int,
                   hi: int, sink: Sink) -> Answer:
        tee = _Tee(chunk, lo, hi, sink, self._counters)
        whole = Asked(chunk.start, chunk.end, asked.size, ranged=not chunk.whole,
                      validator=asked.validator)
        try:
            answer = await self._http.fetch(rel, url, whole, tee)
        except BaseException:
            self._coord.abandon.remote(chunk.index, self._node)
            raise
        if tee.received != chunk.length:  # cannot happen after a clean answer; be sure
            self._coord.abandon.remote(chunk.index, self._node)
            raise TransferFailed(f"{rel}: chunk {chunk.start}-{chunk.end - 1} came short")
        ref = ray.put(tee.buf)
        meta = OwnerAnswer(answer.total, answer.etag, answer.last_modified, dict(answer.headers))
        await self._coord.publish.remote(chunk.index, self._node, [ref], meta)
        del ref
        return replace(answer, written=hi - lo)

    async def _origin(self, rel: str, url: str, asked: Asked, sink: Sink) -> Answer:
        counters = self._counters

        class _Counting:
            def answered(self, decision: Decision, headers: Mapping[str, str]) -> None:
                sink.answered(decision, headers)

            def write(self, offset: int, data: bytes | memoryview) -> bool:
                counters.origin += len(data)
                return sink.write(offset, data)

        return await self._http.fetch(rel, url, asked, _Counting())


def _pace(cfg: EngineConfig) -> Pace:
    """The request time limits the engine gives its own HTTP source."""
    return Pace(header_timeout=cfg.header_timeout, min_speed=cfg.min_speed,
                min_speed_window=cfg.min_speed_window, read_size=cfg.read_size)


def _session(config: EngineConfig) -> aiohttp.ClientSession:
    """An HTTP session set up as the engine sets up its own (see Engine.run): no auth headers,
    no cookies, no ~/.netrc, no transparent decompression."""
    timeout = aiohttp.ClientTimeout(total=None, connect=config.connect_timeout,
                                    sock_connect=config.connect_timeout,
                                    sock_read=config.stall_timeout)
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=config.connections, ttl_dns_cache=300),
        timeout=timeout, auto_decompress=False, trust_env=False,
        headers={"User-Agent": user_agent()}, cookie_jar=aiohttp.DummyCookieJar())


def run_node(spec: NodeSpec, coordinator: Any) -> dict[str, Any]:
    """The Ray task body: pull and verify into this node's folder; the node's report."""
    return asyncio.run(_run_node(spec, coordinator))


async def _run_node(spec: NodeSpec, coord: Any) -> dict[str, Any]:
    started = time.monotonic()
    coord.hello.remote(spec.node_id, os.getpid())
    counters = Counters(total=spec.plan.total_bytes)
    report: dict[str, Any] = {"node": spec.node_id, "name": spec.name, "output": spec.out_dir}
    generation = 0

    async def refresh() -> Manifest:
        nonlocal generation
        try:
            generation, manifest = await coord.refresh.remote(generation)
        except ray.exceptions.RayTaskError as exc:
            raise TransferFailed(f"refreshing the URLs failed: {redact_text(str(exc.cause))}",
                                 "run the same command again; finished bytes are kept") from None
        return manifest  # type: ignore[no-any-return]

    def emit(event: Event) -> None:
        if isinstance(event, BytesReceived):
            counters.done += event.nbytes
        elif isinstance(event, PullStarted):
            counters.done += event.resumed_bytes
        elif isinstance(event, FileFinished) and event.skipped:
            pass  # counted in PullStarted's resumed bytes

    async def report_progress() -> None:
        while True:
            coord.progress.remote(spec.node_id, counters.as_dict())
            await asyncio.sleep(PROGRESS_EVERY)

    reporter = asyncio.ensure_future(report_progress())
    code, error = EXIT_OK, None
    try:
        async with _session(spec.config) as session:
            source = RayByteSource(spec.plan, coord, spec.node_id,
                                   HttpByteSource(session, _pace(spec.config)), counters)
            config = replace(spec.config, byte_source=source, chunk_size=spec.plan.chunk_size)
            resolved = ResolvedSource(spec.manifest, refresh if spec.can_refresh else None,
                                      spec.expected_params, spec.description)
            result = await pull(resolved, Path(spec.out_dir), config, emit)
        failed = [f for f in result.files if f.status == "failed"]
        if failed:
            code = min(f.exit_code or EXIT_TRANSFER_FAILED for f in failed)
            error = redact_text(failed[0].error or "transfer failed")
        elif spec.verify:
            code, error, report["params"] = await _verify(spec)
        report["files"] = len(result.files)
    except WeightliftError as exc:
        code, error = exc.exit_code, exc.one_line()
    finally:
        reporter.cancel()
        coord.progress.remote(spec.node_id, counters.as_dict())
        await coord.leave.remote(spec.node_id)
    report.update(ok=code == EXIT_OK, exit_code=code, error=error,
                  bytes_from_origin=counters.origin, bytes_from_peers=counters.peers,
                  seconds=round(time.monotonic() - started, 3), rss_peak=_rss_peak())
    return report


def _rss_peak() -> int | None:
    """This worker process's peak resident memory in bytes (Linux), Ray's own share included."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


async def _verify(spec: NodeSpec) -> tuple[int, str | None, int | None]:
    """The checkpoint checks a single-machine pull runs after its download."""
    has_weights = any(f.rel.endswith(".safetensors") for f in spec.manifest.files)
    if not has_weights and spec.expected_params is None:
        return EXIT_OK, None, None
    from weightlift.verify.checkpoint import verify_directory

    vreport = await asyncio.to_thread(
        verify_directory, Path(spec.out_dir), expect_params=spec.expected_params, deep=False,
        check_hashes=False, progress=False)
    if not vreport.ok:
        return EXIT_VERIFY_FAILED, f"verification failed: {vreport.problems[0]}", vreport.params
    return EXIT_OK, None, vreport.params
