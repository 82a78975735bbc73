import hashlib
import io
import os

import pytest

from weightlift.cli.progress import Progress
from weightlift.downloader.events import (
    BytesReceived,
    FileFinished,
    FileStarted,
    ManifestRefreshed,
    PullStarted,
)
from weightlift.downloader.hashing import HashFrontier
from weightlift.downloader.journal import (
    FinishedEntry,
    JournalState,
    append_finished,
    load_finished,
    load_journal,
    write_atomic,
)
from weightlift.downloader.ranges import RangeSet


def test_journal_round_trip_and_mismatches(tmp_path):
    path = tmp_path / "j"
    state = JournalState("a.bin", 100, etag='"e"', done=RangeSet([(0, 10), (50, 60)]))
    write_atomic(path, state.to_json(), durable=True)
    back = load_journal(path, "a.bin", 100)
    assert back is not None
    assert list(back.done) == [(0, 10), (50, 60)]
    assert back.etag == '"e"'
    assert load_journal(path, "other.bin", 100) is None  # not this file's journal
    assert load_journal(path, "a.bin", 101) is None  # the manifest size changed
    assert load_journal(tmp_path / "missing", "a.bin", 100) is None
    path.write_bytes(b"{torn")
    assert load_journal(path, "a.bin", 100) is None


def test_journal_ignores_ranges_outside_the_file(tmp_path):
    path = tmp_path / "j"
    path.write_text('{"version": 1, "rel": "a", "size": 10, "done": [[0, 5], [8, 99], [-1, 2]]}')
    back = load_journal(path, "a", 10)
    assert back is not None
    assert list(back.done) == [(0, 5)]


def test_finished_log_survives_a_torn_last_line(tmp_path):
    log = tmp_path / "finished.jsonl"
    append_finished(log, FinishedEntry("a", 1, "0" * 64, None, "https://h/a", 5), durable=False)
    with open(log, "a") as fh:
        fh.write('{"rel": "b", "size"')  # kill -9 mid-append
    assert list(load_finished(log)) == ["a"]


async def test_hash_frontier_matches_sha256_in_any_arrival_order(tmp_path):
    data = os.urandom(9 << 20)
    path = tmp_path / "p"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        frontier = HashFrontier(fd)
        frontier.advance(1 << 20)
        frontier.advance(5 << 20)
        frontier.advance(3 << 20)  # going back is a no-op
        assert await frontier.finish(len(data)) == hashlib.sha256(data).hexdigest()
    finally:
        os.close(fd)


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_on_a_tty_and_lines_otherwise():
    tty = _TTY()
    p = Progress(quiet=False, stream=tty)
    p(PullStarted(files=1, total_bytes=1000, resumed_bytes=0))
    p(FileStarted("a.bin", 1000, 0))
    p(BytesReceived("a.bin", 1000))
    p(ManifestRefreshed(True, 1))
    p(FileFinished("a.bin", 1000, "0" * 64))
    p.close()
    out = tty.getvalue()
    assert "total" in out
    assert "refreshed ahead of time" in out
    plain = io.StringIO()
    p = Progress(quiet=False, stream=plain)
    p(PullStarted(files=2, total_bytes=2048, resumed_bytes=1024))
    p(BytesReceived("a.bin", 10))
    p.close()
    assert plain.getvalue() == "pulling 2 file(s), 2.00 KiB, 1.00 KiB already here\n"
    quiet = _TTY()
    p = Progress(quiet=True, stream=quiet)
    p(PullStarted(files=1, total_bytes=1, resumed_bytes=0))
    p.close()
    assert quiet.getvalue() == ""


def test_many_files_get_one_total_bar_not_a_bar_each():
    tty = _TTY()
    p = Progress(quiet=False, stream=tty)
    p(PullStarted(files=50, total_bytes=50, resumed_bytes=0))
    for i in range(50):
        p(FileStarted(f"f{i}", 1, 0))
    assert p._bars == {}
    p.close()


@pytest.mark.parametrize(("n", "text"), [
    (5 << 20, "5.0 MiB"), (3 << 30, "3.00 GiB"), (2 << 40, "2.00 TiB"), (1 << 62, "4.00 EiB"),
])
def test_sizes_in_space_messages_use_a_readable_unit(n, text):
    from weightlift.downloader.finalize import _gib

    assert _gib(n) == text
