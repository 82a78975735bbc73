"""Fixtures for the verify tests: a small generated checkpoint and header surgery helpers."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from weightlift.emulator.model_gen import GeneratedCheckpoint, generate_checkpoint

SHARD1 = "model-00001-of-00002.safetensors"
SHARD2 = "model-00002-of-00002.safetensors"
INDEX = "model.safetensors.index.json"

HeaderEdit = Callable[[Path, Callable[[bytes], bytes]], None]


def _split(path: Path) -> tuple[bytes, bytes]:
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return raw[8:8 + n], raw[8 + n:]


@pytest.fixture
def ckpt(tmp_path: Path) -> tuple[Path, GeneratedCheckpoint]:
    """A good two-shard checkpoint of about 48 KiB with mixed dtypes."""
    out = tmp_path / "model"
    return out, generate_checkpoint(out, total_bytes=48 * 1024, shards=2, seed=1)


@pytest.fixture
def edit_header() -> HeaderEdit:
    """Replace a shard's header bytes (the length prefix follows), keeping its data."""

    def edit(path: Path, fn: Callable[[bytes], bytes]) -> None:
        header, data = _split(path)
        new = fn(header)
        path.write_bytes(struct.pack("<Q", len(new)) + new + data)

    return edit


@pytest.fixture
def edit_json() -> Callable[[Path, Callable[[dict[str, object]], None]], None]:
    """Change a shard's header as a parsed dict, re-encode it, keep the data."""

    def edit(path: Path, fn: Callable[[dict[str, object]], None]) -> None:
        header, data = _split(path)
        doc = json.loads(header)
        fn(doc)
        new = json.dumps(doc).encode()
        path.write_bytes(struct.pack("<Q", len(new)) + new + data)

    return edit
