"""Part files on disk: open, preallocate, check free space, and the final atomic rename."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from weightlift.downloader.errors import (
    DiskFull,
    TransferFailed,
    VerificationFailed,
    WeightliftError,
)
from weightlift.downloader.journal import FinishedEntry, append_finished
from weightlift.downloader.workarea import WorkArea


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"


def open_part(path: Path) -> int:
    """Open a part file for reading and writing at offsets, never through a symlink."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(f"no space left on {path.parent}") from None
        raise TransferFailed(f"cannot open {path}: {exc.strerror}") from None


def preallocate(fd: int, size: int, where: Path) -> None:
    """Reserve the file's blocks up front: writes into a preallocated file are faster and a
    full disk shows up now rather than mid-download. Filesystems without support are fine."""
    st = os.fstat(fd)
    if st.st_size >= size and st.st_blocks * 512 >= size:
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(
                f"no space left on {where}: a file needs {_gib(size)}",
                "free some space, then run the same command to resume",
            ) from None
        # EOPNOTSUPP/EINVAL: no fallocate here; extend the file sparsely instead.
        if os.fstat(fd).st_size < size:
            os.ftruncate(fd, size)


def check_free_space(work: WorkArea, files: list[tuple[int, int]]) -> None:
    """Fail up front when the remaining downloads cannot fit on the disk.

    ``files`` holds (size, fd of its part file); blocks a part already owns need no new space.
    """
    needed = 0
    for size, fd in files:
        owned = os.fstat(fd).st_blocks * 512 if fd >= 0 else 0
        needed += max(0, size - owned)
    free = shutil.disk_usage(work.out_dir).free
    if needed > free:
        raise DiskFull(
            f"no space left on {work.out_dir}: the download needs {_gib(needed)} more, "
            f"{_gib(free)} is free",
            "free some space or choose another output folder; nothing was fetched",
        )


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def seal_part(fd: int, size: int, name: str, durable: bool) -> int:
    """Check the part's size, make it readable, sync it, close ``fd``; returns its mtime (ns).

    The mtime survives the rename, so it can be logged before the file moves into place.
    """
    try:
        actual = os.fstat(fd).st_size
        if actual > size:
            os.ftruncate(fd, size)  # preallocation on a filesystem that rounds up
            actual = size
        if actual != size:
            raise VerificationFailed(f"{name}: {actual} bytes on disk, expected {size}")
        os.fchmod(fd, 0o644)
        if durable:
            os.fsync(fd)
        return os.fstat(fd).st_mtime_ns
    finally:
        os.close(fd)


def move_into_place(part: Path, final: Path, out_dir: Path, durable: bool) -> None:
    """Atomically rename a sealed part to its final name and make the rename durable."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, final)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(f"no space left on {out_dir}") from None
        raise TransferFailed(f"cannot move {final.name} into place: {exc.strerror}") from None
    if durable:
        _fsync_dir(final.parent)
        _fsync_dir(part.parent)


@dataclass(frozen=True)
class Sealed:
    """A finished part to put into place: its fd (closed by the commit), where it goes, and
    the line the finished log gets (``entry(mtime_ns)``)."""

    fd: int
    size: int
    rel: str
    part: Path
    final: Path
    entry: Callable[[int], FinishedEntry]


def commit_batch(items: list[Sealed], finished_log: Path, out_dir: Path, durable: bool, *,
                 move: Callable[..., None] | None = None) -> list[BaseException | None]:
    """Seal, log and rename a batch of finished parts with one log append and one sync per
    folder (a group commit): per file the same order as one at a time (data synced, then
    logged, then renamed), but the log and folder syncs are shared by the whole batch.

    Returns, per item, None or the error that stopped that file. ``move`` replaces
    ``move_into_place`` (tests stand a kill in for it).
    """
    move = move or move_into_place
    errors: list[BaseException | None] = [None] * len(items)
    entries: list[tuple[int, FinishedEntry]] = []
    for i, item in enumerate(items):
        try:
            mtime_ns = seal_part(item.fd, item.size, item.rel, durable)
        except (OSError, WeightliftError) as exc:
            errors[i] = exc
            continue
        entries.append((i, item.entry(mtime_ns)))
    if not entries:
        return errors
    append_finished(finished_log, [e for _, e in entries], durable=durable)
    dirs: set[Path] = set()
    for i, _ in entries:
        item = items[i]
        try:
            move(item.part, item.final, out_dir, False)
        except WeightliftError as exc:
            errors[i] = exc
            continue
        dirs.add(item.final.parent)
        dirs.add(item.part.parent)
    if durable:
        for d in sorted(dirs):
            _fsync_dir(d)
    return errors
