"""The "where bytes come from" seam: whatever the source, the engine keeps its promises (the
journal, sha256, the atomic finalise, the receipt), fences superseded requests, and caps the
rate when asked."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import aiohttp

from weightlift.downloader.byte_source import Answer, Asked, HttpByteSource, Sink
from weightlift.downloader.engine import EngineConfig
from weightlift.downloader.manifest import validate_manifest
from weightlift.downloader.pull import pull
from weightlift.downloader.receipt import load_receipt
from weightlift.downloader.sources.local import ResolvedSource

MiB = 1 << 20
FILES = {"a.bin": os.urandom(3 * MiB + 17), "b.bin": os.urandom(100), "empty": b""}


def _source(storage_server: Any, files: dict[str, bytes] = FILES, *,
            sha: bool = False) -> ResolvedSource:
    for rel, data in files.items():
        storage_server.emu.put_bytes(rel, data)
    return ResolvedSource(validate_manifest({"files": [
        {"rel": rel, "size": len(data), "url": storage_server.presign(rel),
         **({"sha256": hashlib.sha256(data).hexdigest()} if sha else {})}
        for rel, data in files.items()]}), None, None, "test")


def _assert_landed(out: Path, files: dict[str, bytes] = FILES) -> None:
    for rel, data in files.items():
        assert (out / rel).read_bytes() == data
    receipt = load_receipt(out)
    assert receipt is not None
    assert {f.rel: f.sha256 for f in receipt.files} == {
        rel: hashlib.sha256(d).hexdigest() for rel, d in files.items()}


class _FromMemory:
    """Bytes from memory in 64 KiB blocks, with a fixed ETag: a stand-in for a peer node."""

    def __init__(self, files: dict[str, bytes], etag: str = '"peer"') -> None:
        self.files = files
        self.etag = etag
        self.asked: list[tuple[str, int, int]] = []

    async def fetch(self, rel: str, url: str, asked: Asked, sink: Sink) -> Answer:
        data = memoryview(self.files[rel])
        end = asked.end if asked.ranged else len(data)
        self.asked.append((rel, asked.start, end))
        for at in range(asked.start, end, 64 << 10):
            assert sink.write(at, data[at:min(end, at + (64 << 10))])
        return Answer(len(data), self.etag, None, {}, end - asked.start)


async def test_http_byte_source_pulls_like_the_default(storage_server: Any,
                                                        tmp_path: Path) -> None:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        config = EngineConfig(connections=4, chunk_size=MiB,
                              byte_source=HttpByteSource(session, read_size=256 << 10))
        result = await pull(_source(storage_server), tmp_path, config)
    assert result.ok, result.files
    _assert_landed(tmp_path)
    assert storage_server.emu.total_bytes_served == sum(len(d) for d in FILES.values())


async def test_any_byte_source_gets_the_same_checks_and_receipt(storage_server: Any,
                                                                tmp_path: Path) -> None:
    memory = _FromMemory(FILES)
    result = await pull(_source(storage_server, sha=True), tmp_path,
                        EngineConfig(connections=4, chunk_size=MiB, byte_source=memory))
    assert result.ok, result.files
    _assert_landed(tmp_path)
    assert storage_server.emu.total_bytes_served == 0  # nothing came from storage
    assert sorted(memory.asked)[:3] == [("a.bin", 0, MiB), ("a.bin", MiB, 2 * MiB),
                                        ("a.bin", 2 * MiB, 3 * MiB + 17)]
    assert {f.rel: f.etag for f in result.files}["a.bin"] == '"peer"'


async def test_a_source_with_wrong_bytes_never_lands_them(storage_server: Any,
                                                          tmp_path: Path) -> None:
    bad = {rel: bytes(len(d)) for rel, d in FILES.items()}
    result = await pull(_source(storage_server, sha=True), tmp_path,
                        EngineConfig(connections=4, chunk_size=MiB, max_file_restarts=1,
                                     byte_source=_FromMemory(bad)))
    status = {f.rel: (f.status, f.exit_code) for f in result.files}
    assert status["a.bin"] == ("failed", 1)
    assert status["empty"] == ("downloaded", 0)
    assert not (tmp_path / "a.bin").exists()


class _SupersededMidway:
    """Answers the first request of a.bin with another object's ETag after writing half:
    the file restarts, and the sink of every earlier request refuses any further byte."""

    def __init__(self) -> None:
        self.refused = 0
        self.sinks: list[Sink] = []

    async def fetch(self, rel: str, url: str, asked: Asked, sink: Sink) -> Answer:
        data = FILES[rel]
        end = asked.end if asked.ranged else len(data)
        self.sinks.append(sink)
        if len(self.sinks) == 1:
            assert sink.write(asked.start, data[asked.start:end])
            return Answer(len(data), '"old"', None, {}, end - asked.start)
        for old in self.sinks[:-1]:  # late bytes of superseded requests: fenced
            if not old.write(0, b"X" * 4096):
                self.refused += 1
        assert sink.write(asked.start, data[asked.start:end])
        return Answer(len(data), '"new"', None, {}, end - asked.start)


async def test_a_superseded_request_cannot_write(storage_server: Any, tmp_path: Path) -> None:
    files = {"a.bin": FILES["a.bin"]}
    source = _SupersededMidway()
    result = await pull(_source(storage_server, files), tmp_path,
                        EngineConfig(connections=2, chunk_size=MiB, byte_source=source))
    assert result.ok, result.files
    assert result.restarts == 1
    assert source.refused > 0
    _assert_landed(tmp_path, files)


async def test_max_rate_caps_the_whole_pull(storage_server: Any, tmp_path: Path) -> None:
    files = {"a.bin": FILES["a.bin"][: 2 * MiB], "b.bin": FILES["a.bin"][: MiB]}
    started = time.monotonic()
    result = await pull(_source(storage_server, files), tmp_path,
                        EngineConfig(connections=4, chunk_size=512 << 10,
                                     max_rate=float(4 * MiB)))
    took = time.monotonic() - started
    assert result.ok, result.files
    _assert_landed(tmp_path, files)
    # 3 MiB at 4 MiB/s: at least 0.75 s less the bucket's first burst (0.4 MiB).
    assert took >= (3 * MiB - 0.4 * MiB) / (4 * MiB)
