"""safetensors header parsing and validation that never trusts the header.

The rules are the reference implementation's, plus its audit's advice: the 8-byte little-endian
length is capped (100 MB) and checked against the file size before anything is allocated; the
header is strict UTF-8 JSON starting with ``{``, with no duplicate keys; ``__metadata__`` maps
strings to strings; dtypes come from the known table; shapes are non-negative ints; each tensor's
byte length equals shape x dtype bits / 8 (overflow and sub-byte alignment checked); offsets are
contiguous from 0 with no gaps or overlaps; and the data exactly fills the rest of the file.

Everything here is pure except :func:`read_header`, which reads only the header bytes of a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import NoReturn

from weightlift.downloader.errors import VerificationFailed
from weightlift.downloader.strict_json import StrictJSONError, iter_object_strict
from weightlift.verify.dtypes import DTYPE_BITS

MAX_HEADER_SIZE = 100_000_000  # the reference implementation's cap
U64_MAX = (1 << 64) - 1
METADATA_KEY = "__metadata__"
_DTYPE_NAMES = {name: name for name in DTYPE_BITS}
_HINT = "the file is damaged or not a safetensors file; download it again"


class HeaderError(VerificationFailed):
    """A safetensors header that breaks the format's rules; the message is one line."""

    def __init__(self, message: str, *, tensor: str | None = None) -> None:
        super().__init__(message, _HINT)
        self.tensor = tensor


def quote(name: str, limit: int = 100) -> str:
    """A tensor or file name made safe for a one-line message (escaped, truncated)."""
    text = json.dumps(name, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from a \\u escape
        text = json.dumps(name, ensure_ascii=True)
    if len(text) > limit:
        text = text[: limit - 2] + '…"'
    return text


@dataclass(frozen=True, slots=True)  # slots: a header may hold millions of them
class TensorInfo:
    """One tensor entry of a validated header; offsets are relative to the data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def numel(self) -> int:
        """Number of elements (a scalar, shape ``[]``, has 1)."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class SafetensorsHeader:
    """A header that passed every check; tensors are in data order."""

    tensors: tuple[TensorInfo, ...]
    metadata: Mapping[str, str] = field(default_factory=dict)
    data_start: int = 8  # absolute file offset of the data section (8 + header length)

    @property
    def params(self) -> int:
        """Sum over tensors of the product of the shape."""
        return sum(t.numel for t in self.tensors)

    @property
    def data_bytes(self) -> int:
        return self.tensors[-1].end if self.tensors else 0


Buffer = bytes | bytearray | memoryview


def header_length_needed(prefix: Buffer, file_size: int | None = None) -> int | None:
    """How many leading bytes hold the header (8 + its length); None if under 8 bytes are given.

    Raises :class:`HeaderError` when the length is over the cap, or past ``file_size`` if given.
    """
    if len(prefix) < 8:
        return None
    n = int.from_bytes(bytes(prefix[:8]), "little")
    if n > MAX_HEADER_SIZE:
        raise HeaderError(f"header length {n} is over the {MAX_HEADER_SIZE}-byte cap")
    if file_size is not None and 8 + n > file_size:
        raise HeaderError(f"header length {n} runs past the end of the {file_size}-byte file")
    return 8 + n


def _fail(message: str, tensor: str | None = None) -> NoReturn:
    raise HeaderError(message, tensor=tensor)


def _is_u64(value: object) -> bool:
    return type(value) is int and 0 <= value <= U64_MAX


def _check_text(text: str, what: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        _fail(f"{what} {quote(text)} is not valid UTF-8 (lone surrogate escape)")


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


class _LazyQuote:
    """``quote(name)`` computed when formatted into a message, not for every good tensor."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __format__(self, spec: str) -> str:
        return format(quote(self.name), spec)


def _tensor(name: str, info: object) -> TensorInfo:
    q = _LazyQuote(name)  # quoted only for a message: most headers hold no error
    _check_text(name, "tensor name")
    if not isinstance(info, dict):
        _fail(f"tensor {q}: entry is {_type_name(info)}, not an object", name)
    for key in ("dtype", "shape", "data_offsets"):
        if key not in info:
            _fail(f"tensor {q}: missing {key!r}", name)
    dtype = info["dtype"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        shown = quote(dtype) if isinstance(dtype, str) else _type_name(dtype)
        _fail(f"tensor {q}: unknown dtype {shown}", name)
    shape = info["shape"]
    if not isinstance(shape, list) or not all(_is_u64(d) for d in shape):
        _fail(f"tensor {q}: shape must be a list of non-negative integers", name)
    offsets = info["data_offsets"]
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(_is_u64(o) for o in offsets)):
        _fail(f"tensor {q}: data_offsets must be two non-negative integers", name)
    begin, end = offsets
    numel = 1
    for d in shape:  # left fold with a check at every step, as the reference's checked_mul
        numel *= d
        if numel > U64_MAX:
            _fail(f"tensor {q}: shape {shape} overflows 64 bits", name)
    nbits = numel * DTYPE_BITS[dtype]
    if nbits > U64_MAX:
        _fail(f"tensor {q}: shape {shape} of {dtype} overflows 64 bits", name)
    if nbits % 8:
        _fail(f"tensor {q}: {numel} elements of {dtype} are not a whole number of bytes", name)
    if end < begin:
        _fail(f"tensor {q}: inverted data_offsets [{begin}, {end}]", name)
    if end - begin != nbits // 8:
        _fail(f"tensor {q}: shape {shape} of {dtype} needs {nbits // 8} bytes "
              f"but data_offsets [{begin}, {end}] span {end - begin}", name)
    # The table's own string: one "F32" object shared by every tensor instead of one each.
    return TensorInfo(name, _DTYPE_NAMES[dtype], tuple(shape), begin, end)


def _members(text: str) -> Iterator[tuple[str, object]]:
    """The header object's members in document order; JSON and strictness errors as HeaderError."""
    try:
        yield from iter_object_strict(text)
    except StrictJSONError as exc:
        if exc.key is not None:
            _fail(f"duplicate key {quote(exc.key)} in header", exc.key)
        _fail(f"header is not strict JSON: {exc.constant} is not allowed")
    except json.JSONDecodeError as exc:
        _fail(f"header is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    except (ValueError, RecursionError) as exc:  # int digit limit, absurd nesting
        _fail(f"header is not valid JSON: {' '.join(str(exc).split())[:120]}")


def parse_header(prefix: Buffer, file_size: int) -> SafetensorsHeader:
    """Validate a safetensors file from its first ``8 + n`` bytes and its total size.

    ``prefix`` may be longer than the header; bytes past it are ignored. Raises
    :class:`HeaderError` with a one-line message naming the tensor and the problem. Peak memory
    is about 5x the header's length (its text, and ~200 bytes per tensor), whatever its shape.
    """
    if file_size < 8 or len(prefix) < 8:
        _fail(f"file is {file_size} bytes, too short for a safetensors header")
    need = header_length_needed(prefix, file_size)
    assert need is not None
    if len(prefix) < need:
        _fail(f"only {len(prefix)} of the {need} header bytes were given")
    return _parse_text(_decode(prefix, need), need, file_size)


def _decode(prefix: Buffer, need: int) -> str:
    """The header's text, strict UTF-8, starting with ``{``."""
    try:
        # Decoded straight from the caller's buffer: no copy of the header bytes is made.
        text = str(memoryview(prefix)[8:need], "utf-8", "strict")
    except UnicodeDecodeError as exc:
        _fail(f"header is not valid UTF-8 (byte {exc.start} of the header)")
    if not text.startswith("{"):
        _fail("header does not start with '{'")
    return text


def _parse_text(text: str, need: int, file_size: int) -> SafetensorsHeader:
    """Validate the decoded header ``text`` of a file of ``file_size`` bytes."""
    metadata: dict[str, str] = {}
    tensors: list[TensorInfo] = []
    # One member at a time: peak memory is the text plus the compact TensorInfo list, never a
    # parsed tree of the whole header (that took ~20x the header's size).
    for name, info in _members(text):
        if name == METADATA_KEY:
            if info is None:
                continue
            if not isinstance(info, dict):
                _fail(f"__metadata__ is {_type_name(info)}, not an object of strings")
            for key, value in info.items():
                _check_text(key, "__metadata__ key")
                if not isinstance(value, str):
                    _fail(f"__metadata__ value of {quote(key)} is {_type_name(value)}, "
                          "not a string")
                _check_text(value, "__metadata__ value")
                metadata[key] = value
            continue
        tensors.append(_tensor(name, info))
    del text

    # Two stable sorts make (begin, end) order without a million key tuples.
    tensors.sort(key=attrgetter("end"))
    tensors.sort(key=attrgetter("begin"))
    expected = 0
    previous: TensorInfo | None = None
    for t in tensors:
        if t.begin < expected:
            assert previous is not None
            _fail(f"tensor {quote(t.name)}: data_offsets [{t.begin}, {t.end}] overlap tensor "
                  f"{quote(previous.name)} [{previous.begin}, {previous.end}]", t.name)
        if t.begin > expected:
            _fail(f"tensor {quote(t.name)}: gap of {t.begin - expected} bytes before its "
                  f"data_offsets [{t.begin}, {t.end}]", t.name)
        expected = t.end
        previous = t

    data_len = file_size - need
    if expected > data_len:
        last = next(t for t in tensors if t.end > data_len)
        _fail(f"tensor {quote(last.name)}: data ends at byte {last.end} of the data section "
              f"but the file holds only {data_len} (truncated file?)", last.name)
    if expected < data_len:
        _fail(f"{data_len - expected} trailing bytes after the last tensor's data "
              "(the data must exactly fill the file)")
    return SafetensorsHeader(tuple(tensors), metadata, need)


def read_header(path: Path) -> SafetensorsHeader:
    """Read and validate the header of the file at ``path``; never reads the tensor data."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        first = fh.read(8)
        need = header_length_needed(first, size)
        if need is None:
            _fail(f"file is {size} bytes, too short for a safetensors header")
        buf = bytearray(need)  # one buffer, no `first + rest` copy of a 100 MB header
        buf[:8] = first
        view = memoryview(buf)
        got = 8
        while got < need:
            n = fh.readinto(view[got:])
            if not n:
                break
            got += n
    if got < need:  # the file shrank under us
        return parse_header(view[:got], size)
    text = _decode(buf, need)
    del view, buf  # the text alone is enough: do not hold the header twice while parsing it
    return _parse_text(text, need, size)
