"""`weightlift verify` as a user runs it: a subprocess, exit codes, one line per problem."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from weightlift.emulator.model_gen import GeneratedCheckpoint

SHARD1 = "model-00001-of-00002.safetensors"
SHARD2 = "model-00002-of-00002.safetensors"
INDEX = "model.safetensors.index.json"

Tools = tuple[Callable[..., None], Callable[..., None]]


def weightlift(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "weightlift.cli", *args],
                          capture_output=True, text=True, check=False, timeout=60)


def _index(root: Path) -> dict[str, object]:
    return json.loads((root / INDEX).read_text())  # type: ignore[no-any-return]


def _set_index(root: Path, fn: Callable[[dict[str, dict[str, object]]], None]) -> None:
    doc = json.loads((root / INDEX).read_text())
    fn(doc)
    (root / INDEX).write_text(json.dumps(doc))


def _first_tensor(doc: dict[str, object]) -> str:
    return next(k for k in doc if k != "__metadata__")


def _set_length(root: Path, value: int) -> None:
    path = root / SHARD1
    raw = bytearray(path.read_bytes())
    raw[:8] = struct.pack("<Q", value)
    path.write_bytes(bytes(raw))


def _shift_second(delta: int) -> Callable[[dict[str, object]], None]:
    def fn(doc: dict[str, object]) -> None:
        entries = sorted((v["data_offsets"][0], k) for k, v in doc.items()  # type: ignore[index]
                         if k != "__metadata__")
        name = entries[1][1]
        entry = doc[name]
        assert isinstance(entry, dict)
        entry["data_offsets"] = [o + delta for o in entry["data_offsets"]]
    return fn


def _invert(doc: dict[str, object]) -> None:
    entry = doc[_first_tensor(doc)]
    assert isinstance(entry, dict)
    entry["data_offsets"] = list(reversed(entry["data_offsets"]))


def _entry_set(key: str, value: object) -> Callable[[dict[str, object]], None]:
    def fn(doc: dict[str, object]) -> None:
        entry = doc[_first_tensor(doc)]
        assert isinstance(entry, dict)
        entry[key] = value
    return fn


def _dup_key(header: bytes) -> bytes:
    doc = json.loads(header)
    name = _first_tensor(doc)
    text = json.dumps(doc)
    return text.replace("{", "{" + json.dumps(name) + ": " + json.dumps(doc[name]) + ", ", 1) \
        .encode()


def _truncate(root: Path) -> None:
    path = root / SHARD2
    path.write_bytes(path.read_bytes()[:-10])


def _append(root: Path) -> None:
    with open(root / SHARD2, "ab") as fh:
        fh.write(b"PK\x03\x04 trailing polyglot")


def _metadata_int(doc: dict[str, object]) -> None:
    doc["__metadata__"] = {"format": "pt", "step": 1000}


def _index_missing_tensor(doc: dict[str, dict[str, object]]) -> None:
    doc["weight_map"]["ghost.weight"] = SHARD1


def _index_missing_shard(doc: dict[str, dict[str, object]]) -> None:
    doc["weight_map"]["ghost.weight"] = "model-00003-of-00002.safetensors"


def _index_traversal(doc: dict[str, dict[str, object]]) -> None:
    doc["weight_map"]["ghost.weight"] = "../outside.safetensors"


def _index_drop_tensor(doc: dict[str, dict[str, object]]) -> None:
    wm = doc["weight_map"]
    del wm[next(iter(wm))]


def _index_total_size(doc: dict[str, dict[str, object]]) -> None:
    doc["metadata"]["total_size"] = int(doc["metadata"]["total_size"]) + 2  # type: ignore[call-overload]


def _extra_shard(root: Path) -> None:
    (root / "model-00003-of-00002.safetensors").write_bytes((root / SHARD2).read_bytes())


# (id, damage(root, edit_header, edit_json), extra args, text the one-line reason must contain)
DAMAGE: list[tuple[str, Callable[[Path, Tools], None], tuple[str, ...], str]] = [
    ("truncated-shard", lambda r, t: _truncate(r), (), "(truncated file?)"),
    ("length-past-end", lambda r, t: _set_length(r, 10**6), (), "runs past the end of the"),
    ("length-2^64-1", lambda r, t: _set_length(r, 2**64 - 1), (),
     "header length 18446744073709551615 is over the 100000000-byte cap"),
    ("length-over-cap", lambda r, t: _set_length(r, 100_000_001), (), "over the 100000000-byte"),
    ("invalid-utf8", lambda r, t: t[0](r / SHARD1, lambda h: h.replace(b"model", b"m\xffdel", 1)),
     (), "header is not valid UTF-8"),
    ("not-brace", lambda r, t: t[0](r / SHARD1, lambda h: b"[" + h[1:]), (),
     "header does not start with '{'"),
    ("duplicate-key", lambda r, t: t[0](r / SHARD1, _dup_key), (), "duplicate key"),
    ("unknown-dtype", lambda r, t: t[1](r / SHARD1, _entry_set("dtype", "F12")), (),
     "unknown dtype \"F12\""),
    ("overlap", lambda r, t: t[1](r / SHARD1, _shift_second(-2)), (), "overlap tensor"),
    ("gap", lambda r, t: t[1](r / SHARD1, _shift_second(2)), (), "gap of 2 bytes"),
    ("inverted", lambda r, t: t[1](r / SHARD1, _invert), (), "inverted data_offsets"),
    ("shape-mismatch", lambda r, t: t[1](r / SHARD1, _entry_set("shape", [3])), (),
     "bytes but data_offsets"),
    ("shape-overflow", lambda r, t: t[1](r / SHARD1, _entry_set("shape", [2**40, 2**40])), (),
     "overflows 64 bits"),
    ("trailing-bytes", lambda r, t: _append(r), (), "trailing bytes after the last tensor"),
    ("metadata-not-string", lambda r, t: t[1](r / SHARD1, _metadata_int), (),
     '__metadata__ value of "step" is int, not a string'),
    ("index-missing-tensor", lambda r, t: _set_index(r, _index_missing_tensor), (),
     'index names tensor "ghost.weight" in shard'),
    ("index-missing-shard", lambda r, t: _set_index(r, _index_missing_shard), (),
     'missing shard "model-00003-of-00002.safetensors"'),
    ("missing-shard", lambda r, t: (r / SHARD2).unlink(), (), f'missing shard "{SHARD2}"'),
    ("unreferenced-shard", lambda r, t: _extra_shard(r), (),
     "model-00003-of-00002.safetensors: unreferenced shard"),
    ("traversal-shard-name", lambda r, t: _set_index(r, _index_traversal), (),
     "shard name \"../outside.safetensors\" has '..'"),
    ("tensor-not-in-index", lambda r, t: _set_index(r, _index_drop_tensor), (),
     "is not in the weight_map"),
    ("index-total-size", lambda r, t: _set_index(r, _index_total_size), (),
     "metadata.total_size is"),
    ("params-off-by-one", lambda r, t: None, ("--expect-params", "{params_plus_1}"), "(1 fewer"),
    ("params-off-by-one-down", lambda r, t: None, ("--expect-params", "{params_minus_1}"),
     "(1 more than expected)"),
]


@pytest.mark.parametrize(("damage", "extra", "reason"), [(d, e, r) for _, d, e, r in DAMAGE],
                         ids=[i for i, _, _, _ in DAMAGE])
def test_each_damage_exits_1_with_one_line_reason(
        ckpt: tuple[Path, GeneratedCheckpoint], edit_header: Callable[..., None],
        edit_json: Callable[..., None], damage: Callable[[Path, Tools], None],
        extra: tuple[str, ...], reason: str) -> None:
    root, gen = ckpt
    damage(root, (edit_header, edit_json))
    args = [a.format(params_plus_1=gen.params + 1, params_minus_1=gen.params - 1) for a in extra]
    out = weightlift("verify", str(root), *args)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines
    assert all(line.startswith("weightlift: verification failed: ") for line in lines)
    assert any(reason in line for line in lines), lines
    assert "result: FAILED" in out.stdout


def test_good_checkpoint_exits_0_with_exact_count(ckpt: tuple[Path, GeneratedCheckpoint]) -> None:
    root, gen = ckpt
    out = weightlift("verify", str(root), "--expect-params", str(gen.params), "--deep")
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert f"= expected {gen.params:,}" in out.stdout
    assert "result: OK" in out.stdout


def test_json_report_is_one_document(ckpt: tuple[Path, GeneratedCheckpoint]) -> None:
    root, gen = ckpt
    out = weightlift("verify", str(root), "--json", "--expect-params", str(gen.params + 5))
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert doc["ok"] is False
    assert doc["params"] == gen.params
    assert doc["expected_params"] == gen.params + 5
    # Schema 1: one string per problem (file and tensor named inside it when there are some).
    assert doc["problems"][0].startswith(f"parameter count {gen.params:,}")
    assert "5 fewer than expected" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    out = weightlift("verify", str(tmp_path / "nope"))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        f"weightlift: error: {tmp_path / 'nope'} does not exist "
        "(give the folder the model was pulled into)"]


def test_quiet_good_run_prints_nothing(ckpt: tuple[Path, GeneratedCheckpoint]) -> None:
    out = weightlift("verify", str(ckpt[0]), "-q")
    assert out.returncode == 0
    assert out.stdout == ""
    assert out.stderr == ""
