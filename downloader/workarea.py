"""The output folder and weightlift's hidden work area inside it.

Layout (all inside DIR, nothing outside it is ever written):
  DIR/<rel>                              final files, only ever whole and verified
  DIR/.weightlift/lock                   flock held by the running pull
  DIR/.weightlift/parts/<key>.part       data being downloaded (key = hash of rel)
  DIR/.weightlift/parts/<key>.journal    finished byte ranges + validator of that part
  DIR/.weightlift/finished.jsonl         one line per file finalised (append-only)
  DIR/.weightlift/receipt.json           the receipt of the last complete pull
Keeping parts in the work area means a manifest file called ``x.part`` can never collide with
our own temporary files, and the folder a user sees holds only whole files.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
from pathlib import Path

from weightlift.downloader.errors import BadManifest, UsageError
from weightlift.downloader.receipt import WORK_DIR


def part_key(rel: str) -> str:
    return hashlib.sha256(rel.encode("utf-8")).hexdigest()[:32]


class WorkArea:
    """Paths inside an output folder, and the lock that keeps two pulls apart."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.root = out_dir / WORK_DIR
        self.parts = self.root / "parts"
        self.finished_log = self.root / "finished.jsonl"
        self._lock_fd: int | None = None

    def create(self) -> None:
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise UsageError(f"output path exists and is not a folder: {self.out_dir}") from None
        except OSError as exc:
            raise UsageError(
                f"cannot create output folder {self.out_dir}: {exc.strerror}"
            ) from None
        for sub in (self.root, self.parts):
            if sub.is_symlink():
                raise UsageError(f"{sub} is a symlink; refusing to write through it")
            sub.mkdir(exist_ok=True)

    def lock(self) -> None:
        """Hold an exclusive lock for this process's lifetime (released by the OS on kill)."""
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UsageError(
                    f"another weightlift is already pulling into {self.out_dir}",
                    "wait for it to finish, or use another output folder",
                ) from None
            raise
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def part_path(self, rel: str) -> Path:
        return self.parts / f"{part_key(rel)}.part"

    def journal_path(self, rel: str) -> Path:
        return self.parts / f"{part_key(rel)}.journal"

    def final_path(self, rel: str) -> Path:
        """DIR/<rel>, after checking that no existing component of it is a symlink or a file.

        ``rel`` was validated by the manifest (no '..', not absolute); this guards against the
        folder itself holding a planted symlink that would carry a write outside DIR.
        """
        path = self.out_dir
        parts = rel.split("/")
        for i, part in enumerate(parts):
            path = path / part
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(st.st_mode):
                raise BadManifest(
                    f"{path} is a symlink; refusing to write through it",
                    "remove it, or pull into an empty folder",
                )
            last = i == len(parts) - 1
            if not last and not stat.S_ISDIR(st.st_mode):
                raise BadManifest(f"{path} exists and is not a folder, but {rel!r} needs one")
            if last and stat.S_ISDIR(st.st_mode):
                raise BadManifest(f"{path} is a folder, but the manifest names a file there")
        return path
