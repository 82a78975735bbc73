"""The pure header parser: every rule, one damage per case, and hypothesis fuzzing."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import deserialize

from weightlift.downloader.errors import VerificationFailed
from weightlift.emulator.model_gen import write_safetensors
from weightlift.verify.dtypes import DTYPE_BITS
from weightlift.verify.header import (
    MAX_HEADER_SIZE,
    HeaderError,
    SafetensorsHeader,
    header_length_needed,
    parse_header,
    read_header,
)


def blob(header: str | bytes | dict[str, object], data: bytes = b"") -> bytes:
    """A whole file: 8-byte length, header, data."""
    if isinstance(header, dict):
        header = json.dumps(header)
    raw = header.encode() if isinstance(header, str) else header
    return struct.pack("<Q", len(raw)) + raw + data


def t(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, object]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def parse(raw: bytes) -> SafetensorsHeader:
    return parse_header(raw, len(raw))


GOOD = {"__metadata__": {"format": "pt"}, "a": t("F32", [2, 2], 0, 16),
        "b": t("BF16", [3], 16, 22), "s": t("I64", [], 22, 30), "e": t("F16", [0, 5], 30, 30)}


def test_good_header_parses_with_params_and_order() -> None:
    h = parse(blob(GOOD, bytes(30)))
    assert [x.name for x in h.tensors] == ["a", "b", "s", "e"]  # data order
    assert h.params == 4 + 3 + 1 + 0  # a scalar counts 1, an empty tensor 0
    assert h.metadata == {"format": "pt"}
    assert h.data_start == 8 + len(json.dumps(GOOD))
    assert isinstance(h, SafetensorsHeader)


def test_sub_byte_dtypes_sizes_and_alignment() -> None:
    assert DTYPE_BITS["F4"] == 4
    assert DTYPE_BITS["F6_E2M3"] == 6
    h = parse(blob({"x": t("F4", [4], 0, 2), "y": t("F6_E3M2", [4], 2, 5)}, bytes(5)))
    assert h.params == 8
    with pytest.raises(HeaderError, match="not a whole number of bytes"):
        parse(blob({"x": t("F4", [3], 0, 2)}, bytes(2)))


def test_every_reference_dtype_is_known() -> None:
    names = ("BOOL U8 I8 F8_E5M2 F8_E4M3 F8_E8M0 F8_E4M3FNUZ F8_E5M2FNUZ I16 U16 F16 BF16 I32 "
             "U32 F32 C64 F64 I64 U64 F4 F6_E2M3 F6_E3M2").split()
    assert set(names) == set(DTYPE_BITS)


def test_header_error_is_verification_failure_and_one_line() -> None:
    with pytest.raises(VerificationFailed) as info:
        parse(blob({"a\nb": t("XX", [1], 0, 1)}, b"x"))
    assert "\n" not in info.value.one_line()
    assert info.value.exit_code == 1
    assert isinstance(info.value, HeaderError)
    assert info.value.tensor == "a\nb"


def _offsets(begin: int, end: int) -> dict[str, object]:
    return {"a": t("F32", [1], 0, 4), "b": t("F32", [1], begin, end)}


DAMAGE = [
    ("too-short", b"\x01\x00\x00", "too short for a safetensors header"),
    ("length-past-end", struct.pack("<Q", 100) + b"{}", "runs past the end of the 10-byte file"),
    ("length-2^64-1", struct.pack("<Q", 2**64 - 1) + b"{}", "over the 100000000-byte cap"),
    ("length-over-cap", struct.pack("<Q", MAX_HEADER_SIZE + 1) + b"{}", "over the 100000000"),
    ("invalid-utf8", blob(b'{"a\xff":1}'), "not valid UTF-8"),
    ("not-brace", blob(b' {"a": 1}'), "does not start with '{'"),
    ("not-json", blob(b'{"a": '), "not valid JSON"),
    ("trailing-json", blob(b'{} {}'), "not valid JSON"),
    ("nan-constant", blob(b'{"a": NaN}'), "NaN is not allowed"),
    ("duplicate-key", blob('{{"a": {}, "a": {}}}'.format(json.dumps(t("U8", [1], 0, 1)),
                                                   json.dumps(t("U8", [1], 0, 1))), b"x"),
     'duplicate key "a"'),
    ("duplicate-inner-key", blob(b'{"a": {"dtype": "U8", "dtype": "U8", "shape": [1], '
                                 b'"data_offsets": [0, 1]}}', b"x"), 'duplicate key "dtype"'),
    ("unknown-dtype", blob({"w": t("F128", [1], 0, 16)}, bytes(16)), 'tensor "w": unknown dtype'),
    ("lowercase-dtype", blob({"w": t("f32", [1], 0, 4)}, bytes(4)), "unknown dtype"),
    ("overlap", blob(_offsets(2, 6), bytes(6)), 'tensor "b": data_offsets [2, 6] overlap tensor'),
    ("gap", blob(_offsets(6, 10), bytes(10)), 'tensor "b": gap of 2 bytes'),
    ("inverted", blob(_offsets(8, 4), bytes(8)), 'tensor "b": inverted data_offsets [8, 4]'),
    ("not-from-zero", blob({"a": t("F32", [1], 4, 8)}, bytes(8)), "gap of 4 bytes"),
    ("shape-mismatch", blob({"w": t("F32", [3], 0, 8)}, bytes(8)),
     'tensor "w": shape [3] of F32 needs 12 bytes but data_offsets [0, 8] span 8'),
    ("shape-overflow", blob({"w": t("F32", [2**32, 2**32], 0, 4)}, bytes(4)),
     "overflows 64 bits"),
    ("bits-overflow", blob({"w": t("F64", [2**62], 0, 4)}, bytes(4)), "overflows 64 bits"),
    ("shape-negative", blob({"w": t("F32", [-1], 0, 4)}, bytes(4)), "non-negative integers"),
    ("shape-float", blob({"w": t("F32", [1.0], 0, 4)}, bytes(4)), "non-negative integers"),
    ("shape-bool", blob({"w": t("F32", [True], 0, 4)}, bytes(4)), "non-negative integers"),
    ("offsets-three", blob({"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1, 2]}},
                           b"x"), "two non-negative integers"),
    ("missing-shape", blob({"w": {"dtype": "U8", "data_offsets": [0, 1]}}, b"x"),
     "missing 'shape'"),
    ("entry-not-object", blob({"w": [1, 2]}, b"x"), "entry is list, not an object"),
    ("trailing-bytes", blob({"w": t("U8", [1], 0, 1)}, b"xy"), "1 trailing bytes"),
    ("truncated", blob({"w": t("U8", [4], 0, 4)}, b"xy"), 'tensor "w": data ends at byte 4'),
    ("metadata-int", blob({"__metadata__": {"k": 1}}), '__metadata__ value of "k" is int'),
    ("metadata-list", blob({"__metadata__": ["a"]}), "__metadata__ is list"),
    ("lone-surrogate", blob(b'{"\\ud800": {"dtype": "U8", "shape": [1], '
                            b'"data_offsets": [0, 1]}}', b"x"), "lone surrogate"),
    ("huge-int", blob(b'{"w": {"dtype": "U8", "shape": [' + b"9" * 5000 + b'], '
                      b'"data_offsets": [0, 1]}}', b"x"), "not valid JSON"),
    ("deep-nesting", blob(b'{"w": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"), "not valid JSON"),
]


@pytest.mark.parametrize(("raw", "reason"), [(r, m) for _, r, m in DAMAGE],
                         ids=[i for i, _, _ in DAMAGE])
def test_damage_is_rejected_with_its_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(HeaderError) as info:
        parse(raw)
    assert reason in info.value.message
    assert "\n" not in info.value.one_line()


def test_null_metadata_and_extra_fields_are_accepted_as_by_the_reference() -> None:
    h = parse(blob({"__metadata__": None, "w": {**t("U8", [1], 0, 1), "extra": 1}}, b"x"))
    assert h.metadata == {}
    assert h.params == 1


def test_header_length_needed() -> None:
    raw = blob(GOOD, bytes(30))
    assert header_length_needed(raw[:7]) is None
    assert header_length_needed(raw[:8]) == 8 + len(json.dumps(GOOD))
    with pytest.raises(HeaderError, match="over the"):
        header_length_needed(struct.pack("<Q", 2**64 - 1))
    with pytest.raises(HeaderError, match="past the end"):
        header_length_needed(raw[:8], file_size=20)


def test_parse_header_uses_only_the_prefix_and_file_size() -> None:
    raw = blob(GOOD, bytes(30))
    need = header_length_needed(raw)
    assert need is not None
    h = parse_header(raw[:need], len(raw))  # no data bytes given
    assert h.params == 8
    with pytest.raises(HeaderError, match="trailing bytes"):
        parse_header(raw[:need], len(raw) + 1)
    with pytest.raises(HeaderError, match="only 10 of the"):
        parse_header(raw[:10], len(raw))


def test_read_header_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    write_safetensors(path, {"a": ("F32", [2], bytes(8)), "b": ("BF16", [], b"\x80\x3f")},
                      {"k": "v"})
    h = read_header(path)
    assert [x.name for x in h.tensors] == ["a", "b"]
    assert h.params == 3
    assert h.data_start % 8 == 0  # the writer pads like the reference


# --- properties -------------------------------------------------------------------------------

def _valid_blob() -> bytes:
    return blob(GOOD, bytes(range(30)))


def _check(raw: bytes, size: int) -> None:
    try:
        h = parse_header(raw, size)
    except HeaderError:
        return
    # Whatever is accepted is internally consistent.
    assert all(a.end == b.begin for a, b in zip(h.tensors, h.tensors[1:], strict=False))
    assert h.data_start + h.data_bytes == size


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=0, max_value=2**20))
def test_arbitrary_bytes_only_raise_our_error(raw: bytes, extra: int) -> None:
    _check(raw, len(raw))
    _check(raw, len(raw) + extra)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_valid_files_only_raise_our_error(data: st.DataObject) -> None:
    raw = bytearray(_valid_blob())
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate", "length"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[pos] = data.draw(st.integers(0, 255))
        elif op == "insert":
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del raw[pos:pos + data.draw(st.integers(1, 8))]
        elif op == "truncate":
            del raw[pos:]
        else:
            raw[0:8] = struct.pack("<Q", data.draw(st.integers(0, 2**64 - 1)))
    _check(bytes(raw), len(raw))


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2**64 + 1) | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                max_size=3),
    max_leaves=6)
_dtypes = st.sampled_from([*DTYPE_BITS, "F128", "f32", ""])
_entry = st.fixed_dictionaries({
    "dtype": _dtypes | _json_values,
    "shape": st.lists(st.integers(-1, 40), max_size=3) | _json_values,
    "data_offsets": st.lists(st.integers(-1, 64), min_size=2, max_size=2) | _json_values,
})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(max_size=4), _entry | _json_values, max_size=4),
       st.integers(0, 64))
def test_random_headers_agree_with_the_reference(doc: dict[str, object], nbytes: int) -> None:
    """Never more lenient than the safetensors library: what we accept, it accepts, the same."""
    try:
        raw = blob(json.dumps(doc), bytes(nbytes))
    except ValueError:  # NaN floats etc. are not JSON
        return
    try:
        h = parse(raw)
    except HeaderError:
        return
    theirs = deserialize(raw)
    assert {name: (v["dtype"], list(v["shape"])) for name, v in theirs} == \
        {x.name: (x.dtype, list(x.shape)) for x in h.tensors}


_byte_dtypes = [d for d, bits in DTYPE_BITS.items() if bits % 8 == 0]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_byte_dtypes), st.lists(st.integers(0, 5), max_size=3)),
                max_size=6),
       st.randoms(use_true_random=False))
def test_valid_layouts_are_accepted_like_the_reference(
        specs: list[tuple[str, list[int]]], rnd: object) -> None:
    doc: dict[str, object] = {}
    offset = 0
    params = 0
    for i, (dtype, shape) in enumerate(specs):
        numel = 1
        for d in shape:
            numel *= d
        size = numel * DTYPE_BITS[dtype] // 8
        doc[f"t{i}"] = t(dtype, shape, offset, offset + size)
        offset += size
        params += numel
    items = list(doc.items())
    rnd.shuffle(items)  # type: ignore[attr-defined]
    raw = blob(dict(items), bytes(offset))
    h = parse(raw)
    assert h.params == params
    assert {name for name, _ in deserialize(raw)} == {x.name for x in h.tensors}
