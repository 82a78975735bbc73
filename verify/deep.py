"""Deep scan: count NaN and Inf per float tensor and spot all-zero tensors, with bounded memory.

Each tensor is read through a small mmap window at a time (``BLOCK_BYTES``), never whole.
Floats are tested by their bit pattern (exponent all ones: Inf if the mantissa is 0, else NaN),
which covers BF16, for which numpy has no type, and avoids converting F16.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from weightlift.verify.dtypes import FLOAT_SCAN
from weightlift.verify.header import SafetensorsHeader, TensorInfo

BLOCK_BYTES = 16 << 20  # a multiple of every element size
_PROBE = 4096  # bytes looked at first when checking for "all zeros"


@dataclass(frozen=True)
class TensorFinding:
    """What the scan found in one tensor."""

    name: str
    dtype: str
    nan: int
    inf: int
    all_zero: bool


class _Scratch:
    """Per-thread buffers so a block costs no allocations."""

    def __init__(self) -> None:
        self.bits: dict[str, npt.NDArray[np.unsignedinteger]] = {}
        self.flags = np.empty(BLOCK_BYTES // 2, dtype=np.bool_)

    def bits_for(self, view: str) -> npt.NDArray[np.unsignedinteger]:
        buf = self.bits.get(view)
        if buf is None:
            buf = np.empty(BLOCK_BYTES // np.dtype(view).itemsize, dtype=view)
            self.bits[view] = buf
        return buf


def _windows(fd: int, start: int, end: int) -> list[tuple[int, int]]:
    return [(a, min(a + BLOCK_BYTES, end)) for a in range(start, end, BLOCK_BYTES)]


def _map(fd: int, a: int, b: int) -> tuple[mmap.mmap, int]:
    base = a - a % mmap.ALLOCATIONGRANULARITY
    flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
    mm = mmap.mmap(fd, b - base, flags=flags, prot=mmap.PROT_READ, offset=base)
    return mm, a - base


def scan_tensor(fd: int, data_start: int, t: TensorInfo, scratch: _Scratch | None = None,
                on_bytes: Callable[[int], None] | None = None) -> TensorFinding:
    """Scan one tensor of an open file; ``data_start`` is the file offset of the data section."""
    scratch = scratch or _Scratch()
    spec = FLOAT_SCAN.get(t.dtype)
    nan = inf = 0
    nonzero = False
    for a, b in _windows(fd, data_start + t.begin, data_start + t.end):
        mm, off = _map(fd, a, b)
        try:
            n = b - a
            if not nonzero:
                probe = np.frombuffer(mm, dtype=np.uint8, count=min(n, _PROBE), offset=off)
                nonzero = bool(probe.any())
                if not nonzero:
                    raw = np.frombuffer(mm, dtype=np.uint8, count=n, offset=off)
                    nonzero = bool(np.count_nonzero(raw))
                    del raw
                del probe
            if spec is not None:
                view, exp_mask, mant_mask = spec
                width = np.dtype(view).itemsize
                count = n // width
                bits = np.frombuffer(mm, dtype=view, count=count, offset=off)
                tmp = scratch.bits_for(view)[:count]
                flags = scratch.flags[:count]
                np.bitwise_and(bits, exp_mask, out=tmp)
                np.equal(tmp, exp_mask, out=flags)
                bad = int(np.count_nonzero(flags))
                if bad:
                    mantissa = bits[flags] & mant_mask
                    nans = int(np.count_nonzero(mantissa))
                    nan += nans
                    inf += bad - nans
                del bits, tmp, flags
        finally:
            mm.close()
        if on_bytes is not None:
            on_bytes(b - a)
    return TensorFinding(t.name, t.dtype, nan, inf, all_zero=t.nbytes > 0 and not nonzero)


def scan_file(path: Path, header: SafetensorsHeader,
              on_bytes: Callable[[int], None] | None = None) -> list[TensorFinding]:
    """Scan every tensor of a validated file; returns only tensors with NaN, Inf or all zeros."""
    scratch = _Scratch()
    found: list[TensorFinding] = []
    fd = os.open(path, os.O_RDONLY)
    try:
        for t in header.tensors:
            if t.nbytes == 0:
                continue
            f = scan_tensor(fd, header.data_start, t, scratch, on_bytes)
            if f.nan or f.inf or f.all_zero:
                found.append(f)
    finally:
        os.close(fd)
    return found
