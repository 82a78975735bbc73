"""Fixtures for the API and UX tests: a small real checkpoint served by the storage emulator,
and `weightlift` run as a child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from weightlift.emulator.model_gen import GeneratedCheckpoint, generate_checkpoint
from weightlift.emulator.platforms import (
    ClockFromFirstRequest,
    PlatformEmulator,
    ThreadedPlatforms,
)
from weightlift.emulator.serve import StorageEndpoint


@dataclass
class Served:
    """A generated checkpoint uploaded to storage, with its manifest file."""

    gen: GeneratedCheckpoint
    manifest: Path
    storage: StorageEndpoint
    files: dict[str, bytes]

    def write_manifest(self, path: Path, model_id: str = "tiny-model", **kw: object) -> Path:
        path.write_text(json.dumps(self.storage.manifest(sorted(self.files), model_id=model_id,
                                                         **kw)))
        return path


def serve_checkpoint(storage: StorageEndpoint, root: Path, *, total_bytes: int = 96 * 1024,
                     shards: int = 2, seed: int = 1, model_id: str = "tiny-model",
                     prefix: str = "") -> Served:
    gen = generate_checkpoint(root / "src", total_bytes=total_bytes, shards=shards, seed=seed)
    files = {}
    for rel in gen.files:
        data = (root / "src" / rel).read_bytes()
        storage.emu.put_bytes(prefix + rel, data)
        files[prefix + rel] = data
    served = Served(gen, root / "manifest.json", storage, files)
    served.write_manifest(served.manifest, model_id=model_id)
    return served


@pytest.fixture
def served(threaded_storage: StorageEndpoint, tmp_path: Path) -> Served:
    """A 2-shard checkpoint of ~96 KiB (model id `tiny-model`) on threaded storage."""
    return serve_checkpoint(threaded_storage, tmp_path)


def weightlift(*args: str, env: dict[str, str] | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`weightlift ARGS` as a child, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "weightlift.cli", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=timeout,
                          check=False)


@pytest.fixture
def watched_platforms(tmp_path: Path) -> Iterator[ThreadedPlatforms]:
    """The emulated platforms from background threads; runs start at the first poll."""
    clock = ClockFromFirstRequest()
    emu = PlatformEmulator(tmp_path / "platforms", clock=clock)
    clock.emu = emu
    with ThreadedPlatforms(emu) as tp:
        yield tp
