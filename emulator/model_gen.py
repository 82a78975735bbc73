"""Generate real sharded safetensors checkpoints, fast, for tests, the emulator, demo and bench.

Data is one modest random block per dtype, tiled into every tensor with large writes, so a few
GiB take seconds. Values are finite and no tensor is all zeros, so a deep scan passes.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from weightlift.verify.dtypes import DTYPE_BITS

BLOCK_BYTES = 4 << 20  # the random block each dtype's data is tiled from
INDEX_NAME = "model.safetensors.index.json"

# One dtype's share of a shard: (dtype, fraction of the shard's bytes).
_MIX: tuple[tuple[str, float], ...] = (("BF16", 0.50), ("F16", 0.25), ("F32", 0.20),
                                       ("I64", 0.05))
_MAX_TENSOR_BYTES = 64 << 20
_META = {"format": "pt"}
SCALAR_NAME = "model.logit_scale"


@dataclass(frozen=True)
class GeneratedCheckpoint:
    """What :func:`generate_checkpoint` wrote: its parameter count, files (rel) and bytes."""

    params: int
    files: tuple[str, ...]
    total_bytes: int


TensorSpec = tuple[str, list[int], int]  # (dtype, shape, nbytes)


def nbytes_of(dtype: str, shape: Iterable[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n * DTYPE_BITS[dtype] // 8


def build_header(specs: dict[str, TensorSpec], metadata: dict[str, str] | None = None) -> bytes:
    """The first bytes of a safetensors file (length + JSON padded with spaces to 8 bytes)."""
    doc: dict[str, object] = {}
    if metadata is not None:
        doc["__metadata__"] = metadata
    offset = 0
    for name, (dtype, shape, nbytes) in specs.items():
        doc[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    body = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    body += b" " * (-len(body) % 8)
    return struct.pack("<Q", len(body)) + body


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int], bytes]],
                      metadata: dict[str, str] | None = None) -> None:
    """Write a small safetensors file; data is laid out in the dict's order.

    The data is not checked against the shape, so tests can craft broken files on purpose.
    """
    specs = {name: (dtype, list(shape), len(data)) for name, (dtype, shape, data) in
             tensors.items()}
    with open(path, "wb") as fh:
        fh.write(build_header(specs, metadata))
        for _, _, data in tensors.values():
            fh.write(data)


def _random_blocks(seed: int) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    n = BLOCK_BYTES // 4
    # Normal values far from 0 in magnitude (|x| >= 1e-3), so no element rounds to zero.
    f32 = rng.standard_normal(n, dtype=np.float32) * np.float32(0.02)
    f32 = np.where(np.abs(f32) < 1e-3, np.float32(1e-3), f32).astype(np.float32)
    bf16 = (f32.view(np.uint32) >> 16).astype(np.uint16)
    f16 = f32.astype(np.float16)
    i64 = rng.integers(1, 50_000, size=BLOCK_BYTES // 8, dtype=np.int64)
    return {
        "F32": f32.tobytes(),
        "BF16": bf16.tobytes() + bf16.tobytes(),
        "F16": f16.tobytes() + f16.tobytes(),
        "I64": i64.tobytes(),
    }


def _write_tiled(fh: BinaryIO, block: memoryview, nbytes: int, start: int) -> None:
    write = fh.write
    size = len(block)
    pos = start % size
    while nbytes > 0:
        take = min(nbytes, size - pos)
        write(block[pos:pos + take])
        nbytes -= take
        pos = 0


def _plan_shard(index: int, budget: int, width: int) -> dict[str, TensorSpec]:
    """Tensor specs of one shard, close to ``budget`` data bytes."""
    specs: dict[str, TensorSpec] = {}
    if index == 0:
        specs[SCALAR_NAME] = ("F32", [], 4)
    for kind, (dtype, share) in enumerate(_MIX):
        item = DTYPE_BITS[dtype] // 8
        remaining = int(budget * share)
        part = 0
        while remaining >= item:
            row_bytes = width * item
            if remaining >= row_bytes:
                rows = min(remaining, _MAX_TENSOR_BYTES) // row_bytes
                shape = [rows, width]
            else:
                shape = [remaining // item]
            nbytes = nbytes_of(dtype, shape)
            name = f"model.layers.{index}.block{kind}.part{part}.{dtype.lower()}"
            if dtype == "I64":
                name = f"model.layers.{index}.positions.part{part}"
            specs[name] = (dtype, shape, nbytes)
            remaining -= nbytes
            part += 1
    return specs


def _side_files(plan: list[dict[str, TensorSpec]], names: list[str],
                seed: int) -> tuple[bytes, bytes]:
    """The index and config.json texts for a planned checkpoint."""
    weight_map = {name: rel for rel, specs in zip(names, plan, strict=True) for name in specs}
    data_total = sum(s[2] for specs in plan for s in specs.values())
    params = sum(s[2] // (DTYPE_BITS[s[0]] // 8) for specs in plan for s in specs.values())
    index = {"metadata": {"total_size": data_total},
             "weight_map": dict(sorted(weight_map.items()))}
    config = {"model_type": "weightlift-synthetic", "num_parameters": params,
              "torch_dtype": "bfloat16", "seed": seed}
    return (json.dumps(index, indent=2).encode("utf-8"),
            json.dumps(config, indent=2).encode("utf-8"))


def generate_checkpoint(out_dir: Path, *, total_bytes: int, shards: int = 4,
                        seed: int = 0) -> GeneratedCheckpoint:
    """Write a sharded safetensors checkpoint of about ``total_bytes`` into ``out_dir``.

    Shards are ``model-0000i-of-0000N.safetensors`` with ``model.safetensors.index.json``, or
    one ``model.safetensors`` when ``shards == 1``; plus a small ``config.json``. Mixed dtypes
    (BF16, F16, F32, I64 and one scalar); deterministic for a seed; all values finite.
    """
    if shards < 1:
        raise ValueError("shards must be at least 1")
    if total_bytes < 1024 * shards:
        raise ValueError("total_bytes too small: at least 1 KiB per shard")
    out_dir.mkdir(parents=True, exist_ok=True)
    blocks = {k: memoryview(v) for k, v in _random_blocks(seed).items()}
    width = 1024
    while width > 8 and width * 8 * 32 > total_bytes // shards:
        width //= 2
    names = ["model.safetensors"] if shards == 1 else \
        [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    # Plan, measure headers, index and config exactly, and shrink the data budget to fit.
    budget = total_bytes // shards
    for _ in range(3):
        plan = [_plan_shard(i, budget, width) for i in range(shards)]
        index_text, config_text = _side_files(plan, names, seed)
        size = sum(len(build_header(p, _META)) + sum(s[2] for s in p.values()) for p in plan)
        size += len(config_text) + (len(index_text) if shards > 1 else 0)
        budget -= max(0, size - total_bytes) // shards + (1 if size > total_bytes else 0)
        if size <= total_bytes:
            break
    files: list[str] = []
    params = 0
    written = 0
    for i, (rel, specs) in enumerate(zip(names, plan, strict=True)):
        path = out_dir / rel
        with open(path, "wb") as fh:
            fh.write(build_header(specs, _META))
            for n, (name, (dtype, _shape, nbytes)) in enumerate(specs.items()):
                if name == SCALAR_NAME:
                    fh.write(struct.pack("<f", 1.0))
                else:
                    _write_tiled(fh, blocks[dtype], nbytes, (seed + i * 131 + n * 977) * 8)
                params += nbytes // (DTYPE_BITS[dtype] // 8)
        files.append(rel)
        written += os.path.getsize(path)
    if shards > 1:
        (out_dir / INDEX_NAME).write_bytes(index_text)
        files.append(INDEX_NAME)
        written += len(index_text)
    (out_dir / "config.json").write_bytes(config_text)
    files.append("config.json")
    written += len(config_text)
    return GeneratedCheckpoint(params=params, files=tuple(files), total_bytes=written)
