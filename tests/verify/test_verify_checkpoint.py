"""verify_directory in process: totals, the gate, the receipt, the second opinion, deep scan."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import weightlift.verify.deep as deep_mod
from weightlift.downloader.errors import UsageError
from weightlift.downloader.receipt import Receipt, ReceiptFile, receipt_path, write_receipt
from weightlift.emulator.model_gen import (
    GeneratedCheckpoint,
    generate_checkpoint,
    write_safetensors,
)
from weightlift.verify.checkpoint import unsafe_shard_name, verify_directory

SHARD1 = "model-00001-of-00002.safetensors"


def _messages(report: Any) -> list[str]:
    return [str(p) for p in report.problems]


def test_good_sharded_checkpoint_passes_with_exact_count(
        ckpt: tuple[Path, GeneratedCheckpoint]) -> None:
    root, gen = ckpt
    report = verify_directory(root, expect_params=gen.params, deep=True)
    assert report.ok, _messages(report)
    assert report.params == gen.params
    assert report.expected_params == gen.params
    assert report.shards == 2
    assert report.tensors > 8
    assert set(report.params_by_dtype) == {"BF16", "F16", "F32", "I64"}
    assert sum(report.params_by_dtype.values()) == gen.params
    assert sum(report.params_by_shard.values()) == gen.params
    assert report.warnings == []
    assert report.findings == []
    assert {f.rel for f in report.files} == set(gen.files)
    table = report.to_table()
    assert f"= expected {gen.params:,}" in table
    assert "result: OK" in table
    assert json.loads(report.model_dump_json())["ok"] is True


def test_single_file_checkpoint(tmp_path: Path) -> None:
    gen = generate_checkpoint(tmp_path, total_bytes=8192, shards=1)
    assert gen.files == ("model.safetensors", "config.json")
    report = verify_directory(tmp_path, expect_params=gen.params)
    assert report.ok, _messages(report)
    assert report.params_by_shard == {"model.safetensors": gen.params}


def test_off_by_one_gate_shows_both_numbers(ckpt: tuple[Path, GeneratedCheckpoint]) -> None:
    root, gen = ckpt
    report = verify_directory(root, expect_params=gen.params + 1)
    assert not report.ok
    assert _messages(report) == [f"parameter count {gen.params:,} does not match the expected "
                                 f"{gen.params + 1:,} (1 fewer than expected)"]


def _write_receipt(root: Path, gen: GeneratedCheckpoint, expected: int | None) -> None:
    files = [ReceiptFile(rel=rel, size=(root / rel).stat().st_size,
                         sha256=hashlib.sha256((root / rel).read_bytes()).hexdigest())
             for rel in gen.files]
    write_receipt(root, Receipt(expected_params=expected, files=files))


def test_receipt_hashes_and_expected_params(ckpt: tuple[Path, GeneratedCheckpoint]) -> None:
    root, gen = ckpt
    _write_receipt(root, gen, gen.params)
    report = verify_directory(root)
    assert report.ok, _messages(report)
    assert report.hashed_files == len(gen.files)
    assert report.expected_params == gen.params
    assert all(f.sha256_checked for f in report.files)
    assert ".weightlift" not in {f.rel.split("/")[0] for f in report.files}

    # one flipped data byte: the header is still fine, only the hash can tell
    path = root / SHARD1
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01
    path.write_bytes(bytes(raw))
    report = verify_directory(root)
    assert [p.file for p in report.problems] == [SHARD1]
    assert "differs from the pull receipt's" in report.problems[0].message
    assert verify_directory(root, check_hashes=False).ok  # --no-hash


def test_receipt_gate_missing_file_and_size(ckpt: tuple[Path, GeneratedCheckpoint]) -> None:
    root, gen = ckpt
    _write_receipt(root, gen, gen.params - 3)
    (root / "model.safetensors.index.json").unlink()
    with open(root / "config.json", "ab") as fh:
        fh.write(b"\n")
    msgs = _messages(verify_directory(root, check_hashes=False))
    assert ("model.safetensors.index.json: missing: listed in the pull receipt but not on disk"
            in msgs)
    assert any(m.startswith("config.json: size ") and "differs from the pull receipt" in m
               for m in msgs)
    assert any("(3 more than expected)" in m for m in msgs)
    # the command line wins over the receipt's expected count
    assert verify_directory(root, expect_params=gen.params).expected_params == gen.params


def test_damaged_receipt_is_a_problem_not_a_crash(ckpt: tuple[Path, GeneratedCheckpoint]) -> None:
    root, _ = ckpt
    receipt_path(root).parent.mkdir()
    receipt_path(root).write_text("{not json")
    msgs = _messages(verify_directory(root))
    assert len(msgs) == 1
    assert "receipt" in msgs[0]
    assert "is damaged" in msgs[0]


def test_unusable_input_raises(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        verify_directory(tmp_path / "nope")
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="is not a directory"):
        verify_directory(tmp_path / "f")
    report = verify_directory(tmp_path)
    assert _messages(report) == [f"no .safetensors files in {tmp_path}"]


@pytest.mark.parametrize(("name", "unsafe"), [
    ("model-1.safetensors", False), ("sub/model.safetensors", False),
    ("../x.safetensors", True), ("/etc/x.safetensors", True), ("C:x.safetensors", True),
    ("a\\b.safetensors", True), ("model.bin", True), ("", True), ("a//b.safetensors", True),
])
def test_shard_name_safety(name: str, unsafe: bool) -> None:
    assert (unsafe_shard_name(name) is not None) is unsafe


class _FakeSlice:
    def __init__(self, shape: list[int]) -> None:
        self.shape = shape

    def get_shape(self) -> list[int]:
        return self.shape

    def get_dtype(self) -> str:
        return "F32"


class _FakeOpen:
    def __init__(self, path: str, framework: str) -> None:
        assert framework == "numpy"

    def __enter__(self) -> _FakeOpen:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def keys(self) -> list[str]:
        return ["w"]

    def metadata(self) -> dict[str, str] | None:
        return None

    def get_slice(self, name: str) -> _FakeSlice:
        return _FakeSlice([5])


def test_second_opinion_disagreement_is_a_problem(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    write_safetensors(tmp_path / "model.safetensors", {"w": ("F32", [4], bytes(16))})
    import safetensors

    monkeypatch.setattr(safetensors, "safe_open", _FakeOpen)
    msgs = _messages(verify_directory(tmp_path))
    assert msgs == ['model.safetensors: tensor "w": the safetensors library reads F32 [5], '
                    "weightlift's parser F32 [4]"]

    def refuse(path: str, framework: str) -> None:
        raise RuntimeError("Error while deserializing header: boom")

    monkeypatch.setattr(safetensors, "safe_open", refuse)
    msgs = _messages(verify_directory(tmp_path))
    assert len(msgs) == 1
    assert "the safetensors library rejects this file (Error while " \
        "deserializing header: boom) although weightlift's parser accepted it" in msgs[0]


def test_second_opinion_handles_bf16_and_sub_byte(tmp_path: Path) -> None:
    write_safetensors(tmp_path / "model.safetensors", {
        "b": ("BF16", [2, 2], b"\x80\x3f" * 4), "f4": ("F4", [4], b"\x12\x34"),
        "f8": ("F8_E4M3", [2], b"\x01\x02")}, {"format": "pt"})
    report = verify_directory(tmp_path, deep=True)
    assert report.ok, _messages(report)
    assert report.params_by_dtype == {"BF16": 4, "F4": 4, "F8_E4M3": 2}


def _bits(dtype: str, values: list[float]) -> bytes:
    if dtype == "BF16":
        return (np.array(values, dtype="<f4").view("<u4") >> 16).astype("<u2").tobytes()
    return np.array(values, dtype={"F16": "<f2", "F32": "<f4", "F64": "<f8"}[dtype]).tobytes()


@pytest.mark.parametrize("dtype", ["F16", "BF16", "F32", "F64"])
def test_deep_scan_counts_nan_and_inf(tmp_path: Path, dtype: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deep_mod, "BLOCK_BYTES", 64)  # force many windows per tensor
    values = [0.5] * 200
    values[3] = values[150] = float("nan")
    values[64] = float("-inf")
    values[199] = float("inf")
    write_safetensors(tmp_path / "model.safetensors", {
        "pad": ("U8", [3], b"\x01\x02\x03"),  # puts the float data off any alignment
        "bad": (dtype, [200], _bits(dtype, values)),
        "good": (dtype, [10], _bits(dtype, [1.0] * 10)),
        "zeros": (dtype, [4], bytes(4 * len(_bits(dtype, [0.0])))),
    })
    report = verify_directory(tmp_path, deep=True)
    assert _messages(report) == [f'model.safetensors: tensor "bad" ({dtype}) holds 2 NaN and '
                                 "2 Inf value(s)"]
    assert [str(w) for w in report.warnings] == [
        f'model.safetensors: tensor "zeros" ({dtype}) is all zeros']
    assert {f.tensor for f in report.findings} == {"bad", "zeros"}
    assert report.scanned_bytes == 3 + (200 + 10 + 4) * len(_bits(dtype, [0.0]))
    assert verify_directory(tmp_path).ok  # without --deep, values are not looked at


def test_deep_scan_progress_bar_runs(ckpt: tuple[Path, GeneratedCheckpoint],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    report = verify_directory(ckpt[0], deep=True, progress=True)
    assert report.ok
    assert "verify" in capsys.readouterr().err


def test_pull_calls_it_like_this(ckpt: tuple[Path, GeneratedCheckpoint]) -> None:
    root, gen = ckpt
    report = verify_directory(root, expect_params=gen.params, deep=False, check_hashes=False,
                              progress=False)
    assert report.ok
    assert report.params == gen.params


def test_header_problem_names_file_and_tensor(ckpt: tuple[Path, GeneratedCheckpoint]) -> None:
    root, _ = ckpt
    path = root / SHARD1
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = raw[8:8 + n].replace(b'"F32"', b'"F31"', 1)
    path.write_bytes(raw[:8] + header + raw[8 + n:])
    report = verify_directory(root)
    assert report.problems[0].file == SHARD1
    assert report.problems[0].tensor == "model.logit_scale"
    assert str(report.problems[0]) == (f'{SHARD1}: tensor "model.logit_scale": unknown dtype '
                                       '"F31"')
