"""Benchmark data sets, generated once and cached under the work folder.

A data set is a folder of files plus ``files.json`` (rel, size, sha256 of each); the files are
served by nginx and fetched by every tool, and the sha256 values go into weightlift's manifest
and aria2c's ``--checksum`` options.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class DataFile:
    rel: str
    size: int
    sha256: str


@dataclass(frozen=True)
class DataSet:
    name: str  # folder name under <work>/data, also the URL path segment
    root: Path
    files: tuple[DataFile, ...]
    params: int | None = None

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    view = memoryview(bytearray(4 * MiB))
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(view):
            h.update(view[:n])
    return h.hexdigest()


def _load(name: str, root: Path) -> DataSet | None:
    meta = root / "files.json"
    try:
        doc = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    files = tuple(DataFile(f["rel"], f["size"], f["sha256"]) for f in doc["files"])
    if not all((root / f.rel).is_file() and (root / f.rel).stat().st_size == f.size
               for f in files):
        return None
    return DataSet(name, root, files, doc.get("params"))


def _save(name: str, root: Path, rels: list[str], params: int | None) -> DataSet:
    files = tuple(DataFile(rel, (root / rel).stat().st_size, _sha256(root / rel)) for rel in rels)
    doc = {"files": [f.__dict__ for f in files], "params": params}
    (root / "files.json").write_text(json.dumps(doc, indent=1))
    return DataSet(name, root, files, params)


def checkpoint(data_dir: Path, total_bytes: int, shards: int, seed: int = 1) -> DataSet:
    """A sharded safetensors checkpoint (shards, index, config) of about ``total_bytes``."""
    from weightlift.emulator.model_gen import generate_checkpoint

    name = f"ckpt-{total_bytes}-{shards}-{seed}"
    root = data_dir / name
    cached = _load(name, root)
    if cached is not None:
        return cached
    shutil.rmtree(root, ignore_errors=True)
    model = generate_checkpoint(root, total_bytes=total_bytes, shards=shards, seed=seed)
    os.sync()
    return _save(name, root, sorted(model.files), model.params)


def small_files(data_dir: Path, count: int, size: int, seed: int = 1) -> DataSet:
    """``count`` files of ``size`` random bytes each (the many-small-files case)."""
    name = f"small-{count}-{size}-{seed}"
    root = data_dir / name
    cached = _load(name, root)
    if cached is not None:
        return cached
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rng = random.Random(seed)
    rels = []
    for i in range(count):
        rel = f"f{i:05d}.bin"
        (root / rel).write_bytes(rng.randbytes(size))
        rels.append(rel)
    os.sync()
    return _save(name, root, rels, None)
