"""The output folder and weightlift's hidden work area inside it.

Layout (all inside DIR, nothing outside it is ever written):
  DIR/<rel>                              final files, only ever whole and verified
  DIR/.weightlift/lock                   flock held by the running pull
  DIR/.weightlift/parts/<key>.part       data being downloaded (key = hash of rel)
  DIR/.weightlift/parts/<key>.journal    finished byte ranges + validator of that part
  DIR/.weightlift/finished.jsonl         one line per file finalised (append-only)
  DIR/.weightlift/receipt.json           the receipt of the last complete pull
  DIR/.weightlift/reserve                space set aside while a pull runs (finalize.py)
Keeping parts in the work area means a manifest file called ``x.part`` can never collide with
our own temporary files, and the folder a user sees holds only whole files.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
import time
from pathlib import Path

from weightlift.downloader.errors import BadManifest, UsageError, disk_full, is_disk_full
from weightlift.downloader.receipt import RECEIPT_NAME, WORK_DIR

# Our files directly in the work folder; each must be a plain file of ours if present.
LOCK_NAME = "lock"
_WORK_FILES = (LOCK_NAME, "finished.jsonl", RECEIPT_NAME, RECEIPT_NAME + ".tmp", "reserve")
# A pull that finds the lock taken tries again for this long before it says another pull
# holds it: `pull_in_progress` (verify) takes a shared lock for an instant to look.
_LOCK_PATIENCE = 0.25


def part_key(rel: str) -> str:
    return hashlib.sha256(rel.encode("utf-8")).hexdigest()[:32]


class WorkArea:
    """Paths inside an output folder, and the lock that keeps two pulls apart."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.root = out_dir / WORK_DIR
        self.parts = self.root / "parts"
        self.finished_log = self.root / "finished.jsonl"
        self.reserve = self.root / "reserve"
        self._lock_fd: int | None = None

    def create(self) -> None:
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise UsageError(f"output path exists and is not a folder: {self.out_dir}") from None
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full(self.out_dir, "cannot create the folder") from None
            raise UsageError(
                f"cannot create output folder {self.out_dir}: {exc.strerror}"
            ) from None
        for sub in (self.root, self.parts):
            if sub.is_symlink():
                raise UsageError(f"{sub} is a symlink; refusing to write through it")
            try:
                sub.mkdir(exist_ok=True)
            except FileExistsError:
                raise UsageError(f"{sub} exists and is not a folder",
                                 "remove it, or pull into another folder") from None
            except OSError as exc:
                if is_disk_full(exc):
                    raise disk_full(self.out_dir, f"cannot create {sub.name}") from None
                raise UsageError(f"cannot create {sub}: {exc.strerror}") from None
        for name in _WORK_FILES:
            _check_plain(self.root / name)

    def lock(self) -> None:
        """Hold an exclusive lock for this process's lifetime (released by the OS on kill)."""
        try:
            fd = os.open(self.root / LOCK_NAME,
                         os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full(self.out_dir, "cannot create the lock") from None
            raise UsageError(f"cannot open the lock {self.root / LOCK_NAME}: {exc.strerror}",
                             "remove it, or pull into another folder") from None
        deadline = time.monotonic() + _LOCK_PATIENCE
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                busy = exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
                if busy and time.monotonic() < deadline:
                    time.sleep(0.02)  # a verify looking, or a pull ending: not worth failing
                    continue
                os.close(fd)
                if busy:
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
        whole = os.fsencode(os.path.abspath(path / rel))
        if len(whole) >= _path_max(self.out_dir):
            raise BadManifest(
                f"{_shown(rel)} would be {len(whole)} bytes long in {self.out_dir}, more than "
                f"this system's path limit of {_path_max(self.out_dir)} bytes",
                "pull into a folder with a shorter path")
        parts = rel.split("/")
        for i, part in enumerate(parts):
            path = path / part
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno == errno.ENAMETOOLONG:
                    raise BadManifest(f"{_shown(rel)} is too long a name for the filesystem "
                                      f"of {self.out_dir}") from None
                if exc.errno == errno.ENOTDIR:
                    raise BadManifest(f"{path.parent} exists and is not a folder, but "
                                      f"{_shown(rel)} needs one") from None
                raise UsageError(f"cannot inspect {path}: {exc.strerror}") from None
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


def pull_in_progress(out_dir: Path) -> bool:
    """True when a pull holds ``out_dir``'s lock right now (a killed pull holds none).

    Looks by taking a shared lock without waiting and releasing it at once: a running pull's
    exclusive lock makes that fail immediately, so the pull is neither blocked nor disturbed
    (one that starts in that instant retries, see ``WorkArea.lock``). Never creates the lock
    file, never follows a symlink planted in its place.
    """
    try:
        fd = os.open(out_dir / WORK_DIR / LOCK_NAME,
                     os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False  # no lock file (never pulled into), or not one of ours
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _path_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_PATH_MAX")
    except (OSError, ValueError):
        return 4096


def _shown(rel: str) -> str:
    return repr(rel if len(rel) <= 80 else rel[:77] + "...")


def _check_plain(path: Path) -> None:
    """Refuse a work file that is a symlink, not a regular file, or a hard link to another
    file: something planted there, which writing to could change a file outside the folder."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        why = "is a symlink; refusing to follow it"
    elif not stat.S_ISREG(st.st_mode):
        why = "is not a regular file"
    elif st.st_nlink > 1:
        why = "is a hard link to another file; refusing to write to it"
    else:
        return
    raise UsageError(f"{path} {why}", "weightlift did not make it: remove it and run again")
