"""Reading and writing weightlift's own small files without following anything planted there.

The output folder may hold things weightlift did not make: a symlink at a journal's or the
receipt's name pointing outside, a FIFO that would block a read forever, ``/dev/zero`` behind a
link, a hard link to a file elsewhere. These helpers never follow a symlink, read only regular
files and only up to a limit, and write by creating a fresh file (so a planted hard link or
link is replaced, never written through).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


class NotPlainFile(OSError):
    """Not a regular file of ours (a symlink, FIFO, device, hard link) or larger than allowed."""


def read_plain(path: Path, limit: int) -> bytes:
    """The bytes of the regular file at ``path`` (at most ``limit``). FileNotFoundError when
    absent; NotPlainFile when it is a symlink, not a regular file, or larger than ``limit``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotPlainFile(errno.ELOOP, "is a symlink", str(path)) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotPlainFile(errno.EINVAL, "is not a regular file", str(path))
        if st.st_size > limit:
            raise NotPlainFile(errno.EFBIG, f"is larger than {limit} bytes", str(path))
        chunks = []
        total = 0
        while total <= limit:
            block = os.read(fd, min(1 << 20, limit + 1 - total))
            if not block:
                break
            chunks.append(block)
            total += len(block)
        if total > limit:
            raise NotPlainFile(errno.EFBIG, f"is larger than {limit} bytes", str(path))
        return b"".join(chunks)
    finally:
        os.close(fd)


def create_fresh(path: Path) -> int:
    """A new, empty file at ``path`` opened for writing: whatever was there (a symlink, a hard
    link to a file elsewhere, a stale temp file) is unlinked first, never written through."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                   0o644)


def unlink_quietly(path: Path) -> None:
    """Remove ``path`` if it can be removed (a temp file on the way out of an error, the space
    reserve): best effort, never raises."""
    try:
        os.unlink(path)
    except OSError:
        pass


def fsync_dir(path: Path) -> None:
    """Make the names in folder ``path`` durable (after a rename into it); best effort."""
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


# Descriptors a pull needs beside one per file: sockets (one per connection, counted by the
# caller), stdio, the lock, the finished log, temp files being written, the event loop's own.
FD_HEADROOM = 64


def reserve_fds(files: int, connections: int) -> None:
    """Make room for a pull that holds ``files`` part files open at once (the engine bounds
    that) and one socket per connection: raise the soft RLIMIT_NOFILE toward the hard limit
    when needed (Go's runtime does the same at start-up), and fail up front with one line
    naming both numbers, rather than with "Too many open files" part way through, when even
    the hard limit is too low."""
    import resource

    from weightlift.downloader.errors import UsageError

    needed = files + connections + FD_HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or needed <= soft:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(hard, max(needed, 1 << 16))
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):
            pass
    if needed > soft:
        raise UsageError(
            f"this pull needs about {needed:,} open files at once ({files:,} files to fetch), "
            f"more than this process's open-file limit of {soft:,} (hard limit "
            f"{'unlimited' if hard == resource.RLIM_INFINITY else f'{hard:,}'})",
            f"raise it with ulimit -n {needed}, or split the manifest")
