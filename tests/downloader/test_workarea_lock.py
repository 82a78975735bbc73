"""The output folder's lock, as a pull holds it and as `verify` looks at it (issue 11, defect 9):
a running pull is seen, and looking never blocks or breaks it."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from weightlift.downloader.errors import UsageError
from weightlift.downloader.receipt import WORK_DIR
from weightlift.downloader.workarea import LOCK_NAME, WorkArea, pull_in_progress

# A child that holds the folder's lock the way a pull does, until its stdin closes.
HOLDER = """
import sys
from pathlib import Path
from weightlift.downloader.workarea import WorkArea
work = WorkArea(Path(sys.argv[1]))
work.create()
work.lock()
print("locked", flush=True)
sys.stdin.read()
"""


def _locked_by_a_child(folder: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.close()
    proc.wait(timeout=10)
    proc.stdout.close()


def test_no_work_area_or_no_lock_file_is_no_pull(tmp_path: Path) -> None:
    assert pull_in_progress(tmp_path) is False
    (tmp_path / WORK_DIR).mkdir()
    assert pull_in_progress(tmp_path) is False
    assert not (tmp_path / WORK_DIR / LOCK_NAME).exists()  # looking never creates it


def test_a_held_lock_is_a_pull_in_progress_and_looking_leaves_it_held(tmp_path: Path) -> None:
    holder = _locked_by_a_child(tmp_path)
    try:
        for _ in range(3):
            assert pull_in_progress(tmp_path) is True
        # Still held by the pull: a second pull is refused as before.
        second = WorkArea(tmp_path)
        with pytest.raises(UsageError, match="another weightlift is already pulling"):
            second.lock()
    finally:
        _release(holder)
    assert pull_in_progress(tmp_path) is False  # a finished (or killed) pull holds nothing
    work = WorkArea(tmp_path)
    work.lock()
    work.unlock()


def test_in_process_lock_is_seen_too(tmp_path: Path) -> None:
    work = WorkArea(tmp_path)
    work.create()
    work.lock()
    try:
        assert pull_in_progress(tmp_path) is True
    finally:
        work.unlock()
    assert pull_in_progress(tmp_path) is False


def test_a_symlink_or_folder_in_place_of_the_lock_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / WORK_DIR).mkdir()
    target = tmp_path / "elsewhere"
    target.write_text("x")
    (tmp_path / WORK_DIR / LOCK_NAME).symlink_to(target)
    fd = os.open(target, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # even locked, a planted link's target is not ours
    try:
        assert pull_in_progress(tmp_path) is False
    finally:
        os.close(fd)
    (tmp_path / WORK_DIR / LOCK_NAME).unlink()
    (tmp_path / WORK_DIR / LOCK_NAME).mkdir()
    assert pull_in_progress(tmp_path) is False


def test_a_pull_starting_while_verify_looks_waits_instead_of_failing(tmp_path: Path) -> None:
    """verify's look is a shared lock held for an instant; a pull taking the lock in that
    instant tries again for a moment rather than saying another pull holds it."""
    work = WorkArea(tmp_path)
    work.create()
    fd = os.open(tmp_path / WORK_DIR / LOCK_NAME, os.O_RDONLY | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)  # a look that lasts 100 ms, far longer than a real one
    timer = threading.Timer(0.1, os.close, (fd,))
    timer.start()
    try:
        work.lock()
    finally:
        timer.join(5)
    work.unlock()
