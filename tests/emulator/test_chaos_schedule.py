"""The chaos suite's seeded fault schedules (weightlift.emulator.chaos): pure, reproducible,
aimed inside the files, within the engine's retry budget, and replayable from their text."""

from __future__ import annotations

import struct

import pytest

from weightlift.emulator.chaos import (
    EXPIRE_BUDGET,
    FILE_FAILURE_BUDGET,
    FOREVER,
    FileInfo,
    build_schedule,
    replacement,
)

FILES = [FileInfo("config.json", 113), FileInfo("model.safetensors.index.json", 1932),
         FileInfo("model-00001-of-00002.safetensors", 1_400_000, 1_000),
         FileInfo("model-00002-of-00002.safetensors", 1_399_000, 1_000)]
NOW = 1_800_000_000.0


def test_same_seed_same_schedule_other_seed_other_schedule() -> None:
    a = build_schedule(42, FILES, now=NOW)
    assert a == build_schedule(42, FILES, now=NOW)
    assert a.describe() == build_schedule(42, FILES, now=NOW).describe()
    others = {build_schedule(s, FILES, now=NOW).describe() for s in range(43, 63)}
    assert a.describe() not in others
    assert len(others) == 20


@pytest.mark.parametrize("seed", range(300))
def test_faults_land_inside_the_files_and_within_budget(seed: int) -> None:
    sched = build_schedule(seed, FILES, now=NOW)
    sizes = {f.rel: f.size for f in FILES}
    failing: dict[str, int] = {}
    expires = 0
    for p in sched.faults:
        if p.rel == "*":
            assert p.fault.kind == "throttle"
            assert sched.url_lifetime < 5
            continue
        assert 0 <= p.from_offset < max(1, sizes[p.rel])
        assert p.times >= 1
        f = p.fault
        if f.kind == "flip_byte":
            assert sched.with_sha256, "a flipped byte is undetectable without a checksum"
            assert 0 <= f.offset < sizes[p.rel]
        if f.kind == "replace_object":
            assert p.rel.endswith(".safetensors")
            assert p.replace_seed is not None
        if p.terminal:
            continue
        if f.kind == "expire":
            expires += p.times
        if not (f.kind in ("drop_after", "stall") and f.n_bytes > 0):
            failing[p.rel] = failing.get(p.rel, 0) + p.times
    assert expires <= EXPIRE_BUDGET
    assert all(n <= FILE_FAILURE_BUDGET for n in failing.values()), failing
    forever = [p for p in sched.faults if p.times >= FOREVER and p.rel != "*"]
    assert all(p.terminal for p in forever)
    assert len(forever) <= 1
    for t in forever:  # never shares its kind with a transient aimed at the same file
        assert not any(p.fault.kind == t.fault.kind for p in sched.faults
                       if p.rel == t.rel and p is not t)
    if sched.huge_retry_after:
        assert any(p.terminal and p.fault.code == 429 for p in sched.faults)
    for p in sched.faults:
        if p.fault.code == 429 and p.fault.retry_after is not None:
            assert p.terminal == sched.huge_retry_after


def test_huge_and_date_form_retry_after_both_occur() -> None:
    values = {p.fault.retry_after for s in range(400)
              for p in build_schedule(s, FILES, now=NOW).faults
              if p.fault.retry_after is not None}
    assert "86400" in values
    assert any(v.endswith("GMT") for v in values)
    assert "0" in values


def test_replacement_keeps_size_and_header_and_changes_data() -> None:
    header = b'{"w":{"dtype":"F32","shape":[4096],"data_offsets":[0,16384]}}'
    header += b" " * (-len(header) % 8)
    shard = struct.pack("<Q", len(header)) + header + bytes(range(256)) * 64
    start = 8 + len(header)
    new = replacement(shard, start, seed=7)
    assert len(new) == len(shard)
    assert new[:start] == shard[:start]
    assert new != shard
    assert new == replacement(shard, start, seed=7)
    with pytest.raises(ValueError, match="no tensor data"):
        replacement(shard, len(shard), seed=1)


def test_describe_names_every_fault_and_the_knobs() -> None:
    sched = next(s for s in (build_schedule(i, FILES, now=NOW) for i in range(200))
                 if s.terminal and len(s.faults) >= 3)
    text = sched.describe()
    assert text.startswith(f"seed={sched.seed} ")
    assert "forever [terminal]" in text
    assert len(text.splitlines()) == 1 + len(sched.faults)
