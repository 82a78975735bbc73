"""The safetensors dtype table: every dtype the reference knows, with its size in bits."""

from __future__ import annotations

from typing import Final

# Name -> bits per element, as in the reference implementation's `Dtype::bitsize`.
DTYPE_BITS: Final[dict[str, int]] = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}

# Float dtypes whose values the deep scan checks for NaN and Inf (numpy view dtype, exponent mask).
# BF16 and F16 are read as raw uint16 bit patterns: numpy has no bfloat16, and the bit test is
# faster than converting F16.
FLOAT_SCAN: Final[dict[str, tuple[str, int, int]]] = {
    # name: (unsigned view dtype, exponent mask, mantissa mask)
    "F16": ("<u2", 0x7C00, 0x03FF),
    "BF16": ("<u2", 0x7F80, 0x007F),
    "F32": ("<u4", 0x7F800000, 0x007FFFFF),
    "F64": ("<u8", 0x7FF0000000000000, 0x000FFFFFFFFFFFFF),
}


def dtype_bits(name: str) -> int | None:
    """Bits per element of a safetensors dtype, or None when the name is not a known dtype."""
    return DTYPE_BITS.get(name)
