"""The checkpoint generator: real files, right size, deterministic, finite, loadable."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from weightlift.emulator.model_gen import generate_checkpoint, write_safetensors
from weightlift.verify.checkpoint import verify_directory
from weightlift.verify.header import read_header


def _digests(root: Path, files: tuple[str, ...]) -> dict[str, str]:
    return {rel: hashlib.sha256((root / rel).read_bytes()).hexdigest() for rel in files}


@pytest.mark.parametrize(("total", "shards"), [(4096, 1), (64 * 1024, 4), (3 << 20, 3),
                                               (20 << 20, 2)])
def test_size_files_and_params(tmp_path: Path, total: int, shards: int) -> None:
    gen = generate_checkpoint(tmp_path, total_bytes=total, shards=shards, seed=3)
    on_disk = sorted(p.name for p in tmp_path.iterdir())
    assert sorted(gen.files) == on_disk
    assert gen.total_bytes == sum((tmp_path / rel).stat().st_size for rel in gen.files)
    assert abs(gen.total_bytes - total) / total < 0.05
    shard_names = [r for r in gen.files if r.endswith(".safetensors")]
    assert len(shard_names) == shards
    if shards > 1:
        assert shard_names[0] == f"model-00001-of-{shards:05d}.safetensors"
        index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
        assert set(index["weight_map"].values()) == set(shard_names)
        assert index["metadata"]["total_size"] == sum(
            read_header(tmp_path / s).data_bytes for s in shard_names)
    assert sum(read_header(tmp_path / s).params for s in shard_names) == gen.params
    assert json.loads((tmp_path / "config.json").read_text())["num_parameters"] == gen.params
    report = verify_directory(tmp_path, expect_params=gen.params, deep=True)
    assert report.ok, report.problems
    assert not report.warnings


def test_mixed_dtypes_scalar_and_finite_values(tmp_path: Path) -> None:
    gen = generate_checkpoint(tmp_path, total_bytes=1 << 20, shards=2, seed=5)
    dtypes: set[str] = set()
    scalars = 0
    for rel in gen.files:
        if not rel.endswith(".safetensors"):
            continue
        with safe_open(str(tmp_path / rel), framework="numpy") as f:
            for name in f.keys():
                sl = f.get_slice(name)
                dtypes.add(sl.get_dtype())
                scalars += sl.get_shape() == []
                if sl.get_dtype() != "BF16":  # numpy has no bfloat16; deep scan covers it
                    arr = f.get_tensor(name)
                    assert arr.size == 0 or np.any(arr)
                    if arr.dtype.kind == "f":
                        assert np.isfinite(arr).all()
    assert dtypes == {"BF16", "F16", "F32", "I64"}
    assert scalars == 1


def test_deterministic_per_seed(tmp_path: Path) -> None:
    a = generate_checkpoint(tmp_path / "a", total_bytes=256 * 1024, seed=9)
    b = generate_checkpoint(tmp_path / "b", total_bytes=256 * 1024, seed=9)
    c = generate_checkpoint(tmp_path / "c", total_bytes=256 * 1024, seed=10)
    assert a == b
    assert _digests(tmp_path / "a", a.files) == _digests(tmp_path / "b", b.files)
    assert _digests(tmp_path / "a", a.files) != _digests(tmp_path / "c", c.files)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shards"):
        generate_checkpoint(tmp_path, total_bytes=1 << 20, shards=0)
    with pytest.raises(ValueError, match="too small"):
        generate_checkpoint(tmp_path, total_bytes=100, shards=1)


def test_write_safetensors_round_trips_through_the_library(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    data = np.arange(6, dtype="<f4")
    write_safetensors(path, {"x": ("F32", [2, 3], data.tobytes()), "s": ("I64", [], bytes(8))},
                      {"k": "v"})
    with safe_open(str(path), framework="numpy") as f:
        assert f.metadata() == {"k": "v"}
        np.testing.assert_array_equal(f.get_tensor("x"), data.reshape(2, 3))
        assert f.get_tensor("s").shape == ()
