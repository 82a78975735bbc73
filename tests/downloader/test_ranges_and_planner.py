import pytest

from weightlift.downloader.planner import Chunk, auto_chunk_size, plan_file
from weightlift.downloader.ranges import RangeSet

MiB = 1 << 20


def test_rangeset_merges_touching_and_overlapping():
    r = RangeSet()
    r.add(10, 20)
    r.add(30, 40)
    r.add(20, 30)
    assert list(r) == [(10, 40)]
    r.add(0, 5)
    r.add(3, 12)
    assert list(r) == [(0, 40)]
    r.add(50, 60)
    assert r.total == 50
    assert r.prefix_end() == 40
    assert r.covers(0, 40)
    assert not r.covers(0, 41)
    assert r.gaps(0, 70) == [(40, 50), (60, 70)]
    assert r.gaps(5, 35) == []


def test_rangeset_rejects_nonsense():
    with pytest.raises(ValueError, match="bad range"):
        RangeSet().add(5, 4)


def test_small_file_is_one_whole_get():
    assert plan_file("a", 100, RangeSet(), 16 * MiB) == [Chunk("a", 0, 100, whole=True)]


def test_large_file_is_split_and_covers_everything_once():
    size = 96 * MiB + 123
    chunks = plan_file("a", size, RangeSet(), 16 * MiB)
    assert all(not c.whole for c in chunks)
    assert chunks[0].start == 0
    assert chunks[-1].end == size
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert a.end == b.start
    # the 123-byte tail is folded into the last chunk, not requested alone
    assert chunks[-1].length == 16 * MiB + 123


def test_resume_plans_only_the_gaps():
    done = RangeSet([(0, 20 * MiB), (40 * MiB, 41 * MiB)])
    chunks = plan_file("a", 64 * MiB, done, 16 * MiB)
    fetched = RangeSet((c.start, c.end) for c in chunks)
    assert fetched.gaps(0, 64 * MiB) == [(0, 20 * MiB), (40 * MiB, 41 * MiB)]
    assert all(not c.whole for c in chunks)


def test_partially_done_small_file_uses_ranges():
    chunks = plan_file("a", 100, RangeSet([(0, 40)]), 16 * MiB)
    assert chunks == [Chunk("a", 40, 100)]


def test_empty_and_finished_files_need_nothing():
    assert plan_file("a", 0, RangeSet(), MiB) == []
    assert plan_file("a", 10, RangeSet([(0, 10)]), MiB) == []


def test_no_range_server_gets_one_whole_get():
    assert plan_file("a", 100 * MiB, RangeSet(), MiB, ranged=False) == [
        Chunk("a", 0, 100 * MiB, whole=True)]


def test_auto_chunk_size_keeps_connections_busy():
    assert auto_chunk_size(4 << 30, 16) == 16 * MiB
    assert auto_chunk_size(64 * MiB, 16) == 2 * MiB
    assert 2 * MiB <= auto_chunk_size(512 * MiB, 16) <= 16 * MiB
