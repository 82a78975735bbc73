"""The engine's "where bytes come from" seam: whatever the source, the engine keeps its promises
(journal, sha256, atomic finalisation, receipt). No Ray needed."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import aiohttp

from weightlift.downloader.byte_source import Answer, HttpByteSource, Sink
from weightlift.downloader.config import EngineConfig
from weightlift.downloader.manifest import validate_manifest
from weightlift.downloader.pull import pull
from weightlift.downloader.receipt import load_receipt
from weightlift.downloader.response_check import Asked
from weightlift.downloader.sources.local import ResolvedSource

MiB = 1 << 20
FILES = {"a.bin": os.urandom(3 * MiB + 17), "b.bin": os.urandom(100), "empty": b""}


def _source(storage_server: Any) -> ResolvedSource:
    for rel, data in FILES.items():
        storage_server.emu.put_bytes(rel, data)
    return ResolvedSource(validate_manifest({"files": [
        {"rel": rel, "size": len(data), "url": storage_server.presign(rel)}
        for rel, data in FILES.items()]}), None, None, "test")


def _assert_landed(out: Path) -> None:
    for rel, data in FILES.items():
        assert (out / rel).read_bytes() == data
    receipt = load_receipt(out)
    assert receipt is not None
    assert {f.rel: f.sha256 for f in receipt.files} == {
        rel: hashlib.sha256(d).hexdigest() for rel, d in FILES.items()}


async def test_http_byte_source_pulls_like_the_engine_alone(storage_server: Any,
                                                            tmp_path: Path) -> None:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        config = EngineConfig(connections=4, chunk_size=1 * MiB,
                              byte_source=HttpByteSource(session))
        result = await pull(_source(storage_server), tmp_path, config)
    assert result.ok
    _assert_landed(tmp_path)
    assert storage_server.emu.total_bytes_served == sum(len(d) for d in FILES.values())
    assert sum(1 for r in storage_server.emu.requests if r.range_header) >= 3


class _FromMemory:
    """Bytes from memory, in 64 KiB blocks, with a fixed ETag: a stand-in for a peer."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int, int]] = []

    async def fetch(self, rel: str, url: str, asked: Asked, sink: Sink) -> Answer:
        self.asked.append((rel, asked.start, asked.end))
        data = memoryview(FILES[rel])
        for at in range(asked.start, asked.end, 64 << 10):
            assert sink.write(at, data[at:min(asked.end, at + (64 << 10))])
        return Answer(None, '"peer"', None, {}, asked.end - asked.start)


async def test_any_byte_source_gets_the_same_checks_and_receipt(storage_server: Any,
                                                                tmp_path: Path) -> None:
    memory = _FromMemory()
    result = await pull(_source(storage_server), tmp_path,
                        EngineConfig(connections=4, chunk_size=1 * MiB, byte_source=memory))
    assert result.ok
    _assert_landed(tmp_path)
    assert storage_server.emu.total_bytes_served == 0  # nothing came from storage
    assert sorted(memory.asked)[:3] == [("a.bin", 0, MiB), ("a.bin", MiB, 2 * MiB),
                                        ("a.bin", 2 * MiB, 3 * MiB + 17)]
    assert {f.rel: f.etag for f in result.files}["a.bin"] == '"peer"'
