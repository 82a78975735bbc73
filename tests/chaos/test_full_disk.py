"""Full disk (issue 6, item 3): pulls into a small tmpfs the test mounts itself.

- Up front: when the free-space check says the model cannot fit, exit 3 "no space left on
  DIR", nothing fetched, nothing under a final name.
- Mid-pull: something else fills the disk while the pull runs (this test writes a filler file
  until ENOSPC once storage has served some bytes), with and without preallocation: exit 3 with
  one line "no space left on DIR (… free some space, then run the same command …)", no
  traceback, journals and finished files kept, never a wrong file under a final name.
- At each write site (part data pwrite, journal, finished log, receipt, folder creation, a later
  file's part creation and preallocation): a hook in the child (a `sitecustomize` on its
  PYTHONPATH) fills the disk, for real, right before that site is reached, so the kernel's own
  ENOSPC arrives exactly there. Each maps to DiskFull: exit 3 and the same one line.
- After space is freed, the same command completes byte-identical and re-fetches little: bytes
  served across both runs stay <= 1.10x the model wherever the first run's progress is
  journaled.

Mounting needs root (CAP_SYS_ADMIN) and a `mount` binary; without them every test here skips
with the reason. CI runs as root, so there they run.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from weightlift.emulator.faults import Fault

pytestmark = pytest.mark.chaos

KiB = 1 << 10
MiB = 1 << 20
BOUND = 1.10  # bytes served across the failed run and the resume, as a multiple of the model

_LOG_LINE = re.compile(r"^weightlift: (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
_ERROR = "weightlift: error: "


# ---- the small filesystem -------------------------------------------------------------------

Mount = Callable[..., Path]


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Mount]:
    """`small_fs(size="16m", nr_inodes=None)` mounts a fresh tmpfs and returns its folder;
    every mount is undone when the test ends. Skips where mounting is not allowed."""
    mounts: list[Path] = []

    def mount(size: str = "16m", nr_inodes: int | None = None) -> Path:
        binary = shutil.which("mount")
        if binary is None:
            pytest.skip("full-disk tests need a `mount` binary to make a small tmpfs")
        if os.geteuid() != 0:
            pytest.skip("full-disk tests mount a small tmpfs, which needs root (not root here)")
        where = tmp_path / f"fs{len(mounts)}"
        where.mkdir()
        opts = f"size={size},mode=0755" + (f",nr_inodes={nr_inodes}" if nr_inodes else "")
        done = subprocess.run([binary, "-t", "tmpfs", "-o", opts, "tmpfs", str(where)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"full-disk tests cannot mount a tmpfs here (EPERM, a container "
                        f"without CAP_SYS_ADMIN?): {done.stderr.strip()}")
        mounts.append(where)
        return where

    yield mount
    for where in reversed(mounts):
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _fill(path: Path) -> int:
    """Write `path` until the filesystem says ENOSPC; returns the bytes it took."""
    taken = 0
    buf = bytes(MiB)
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                n = f.write(buf)
                if not n:
                    break
                taken += n
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return taken


def _free(fs: Path) -> None:
    """Delete every filler (the test's and the hook's) from the small filesystem."""
    for p in fs.glob("filler*"):
        p.unlink()


# ---- the ENOSPC hook run inside the child -----------------------------------------------------

# Written as sitecustomize.py into a folder put first on the child's PYTHONPATH. It changes no
# behaviour of weightlift: at the chosen site it fills the disk (WL_FILLER, in the small tmpfs)
# and then lets the real call run, so the ENOSPC the pull sees is the kernel's.
HOOK = r'''
import builtins
import errno
import os
import threading

_SITE = os.environ.get("WL_FILL_AT", "")
_FILLER = os.environ.get("WL_FILLER", "")
_INODES = bool(os.environ.get("WL_FILL_INODES"))
# A filesystem where preallocation reserves nothing (copy-on-write, ZFS): the part data pwrite
# is then what meets the full disk.
_NO_FALLOC = bool(os.environ.get("WL_NO_FALLOC")) or _SITE == "pwrite"
_lock = threading.Lock()
_hits = {}
_done = []
_open, _bopen, _mkdir, _pwrite, _falloc = (
    os.open, builtins.open, os.mkdir, os.pwrite, os.posix_fallocate)


def _fill():
    fd = _open(_FILLER, os.O_WRONLY | os.O_CREAT, 0o644)
    buf = bytes(1 << 20)
    try:
        while os.write(fd, buf):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    if _INODES:
        for i in range(100000):
            try:
                os.close(_open(f"{_FILLER}.{i}", os.O_WRONLY | os.O_CREAT, 0o644))
            except OSError:
                break


def _at(site, nth=1):
    """Fill the disk on the nth arrival at `site` (if it is the armed one), once."""
    if site != _SITE:
        return
    with _lock:
        if _done:
            return
        _hits[site] = _hits.get(site, 0) + 1
        if _hits[site] < nth:
            return
        _done.append(site)
        _fill()


def _name(path):
    try:
        return os.path.basename(os.fsdecode(path))
    except TypeError:
        return ""


def open_(path, flags, mode=0o777, *args, **kwargs):
    name = _name(path) if flags & (os.O_WRONLY | os.O_RDWR) else ""
    if ".journal." in name and name.endswith(".tmp"):
        _at("journal")
    elif name == "finished.jsonl":
        _at("finished")
    elif name == "receipt.json.tmp":
        _at("receipt")
    elif name.endswith(".part") and flags & os.O_CREAT:
        _at("part2", 2)
    return _open(path, flags, mode, *args, **kwargs)


def bopen(file, *args, **kwargs):
    if _name(file) == "receipt.json.tmp":
        _at("receipt")
    return _bopen(file, *args, **kwargs)


def mkdir(path, *args, **kwargs):
    if _name(path) == "sub":
        _at("mkdir")
    return _mkdir(path, *args, **kwargs)


def pwrite(fd, data, offset):
    _at("pwrite")
    return _pwrite(fd, data, offset)


def posix_fallocate(fd, offset, length):
    if _NO_FALLOC:
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))
    if os.readlink(f"/proc/self/fd/{fd}").endswith(".part"):
        _at("prealloc2", 2)
    return _falloc(fd, offset, length)


if _SITE or _NO_FALLOC:
    os.open, builtins.open, os.mkdir, os.pwrite, os.posix_fallocate = (
        open_, bopen, mkdir, pwrite, posix_fallocate)
'''


def _hook_env(tmp_path: Path, site: str, filler: Path, *, inodes: bool = False,
              no_falloc: bool = False) -> dict[str, str]:
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(HOOK)
    path = os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH", "")) if p)
    env = {"PYTHONPATH": path, "WL_FILL_AT": site, "WL_FILLER": str(filler)}
    if inodes:
        env["WL_FILL_INODES"] = "1"
    if no_falloc:
        env["WL_NO_FALLOC"] = "1"
    return env


# ---- models, manifests, checks ----------------------------------------------------------------

def _model(emu, sizes: dict[str, int], seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    files = {rel: rng.randbytes(n) for rel, n in sizes.items()}
    for rel, data in files.items():
        emu.put_bytes(rel, data)
    return files


def _manifest(server, files: dict[str, bytes], path: Path, secrets) -> str:
    entries = []
    for rel in files:
        url = server.presign(rel)
        secrets.add_url(url)
        entries.append({"rel": rel, "size": len(files[rel]), "url": url})
    path.write_text(json.dumps({"files": entries}))
    return str(path)


def _pull_args(manifest: str, out: Path, *extra: str) -> list[str]:
    return ["pull", manifest, "-o", str(out), "-q", "--no-verify", *extra]


def _assert_disk_full(code: int, stderr: str, out: Path) -> str:
    """Exit 3 and exactly one line: "no space left on <out>" with what to do; nothing else but
    log records (the child runs at DEBUG), no traceback, no "internal error"."""
    assert code == 3, stderr[-4000:]
    assert "Traceback" not in stderr, stderr[-4000:]
    assert "internal error" not in stderr, stderr[-4000:]
    errors = [line for line in stderr.splitlines() if line.startswith(_ERROR)]
    assert len(errors) == 1, errors or stderr[-4000:]
    line = errors[0]
    assert f"no space left on {out}" in line, line
    assert "free some space" in line, line
    assert "run the same command" in line, line
    stray = [line for line in stderr.splitlines()
             if not _LOG_LINE.match(line) and not line.startswith(_ERROR)]
    assert not stray, stray[:10]
    return line


def _assert_finals_right(out: Path, files: dict[str, bytes]) -> list[str]:
    """No file under a final name holds wrong bytes; returns the names that are final."""
    final = []
    for rel, data in files.items():
        path = out / rel
        if path.exists():
            assert path.read_bytes() == data, f"{rel}: wrong bytes under the final name"
            final.append(rel)
    return final


def _work_leftovers(out: Path) -> list[str]:
    """Temp files a failed write left behind in the work area."""
    root = out / ".weightlift"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.tmp")) if root.exists() else []


def _kept_bytes(out: Path, files: dict[str, bytes], final: list[str]) -> int:
    """Bytes the state on disk keeps: final files, and what the journals claim."""
    kept = sum(len(files[rel]) for rel in final)
    for journal in (out / ".weightlift" / "parts").glob("*.journal"):
        kept += sum(end - start for start, end in json.loads(journal.read_text())["done"])
    return kept


def _assert_complete(out: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        got = (out / rel).read_bytes()
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest(), rel
    receipt = json.loads((out / ".weightlift" / "receipt.json").read_text())
    assert {f["rel"]: f["sha256"] for f in receipt["files"]} == {
        rel: hashlib.sha256(d).hexdigest() for rel, d in files.items()}


def _resume_after_freeing(fs: Path, emu, wl, args, out: Path, files: dict[str, bytes]) -> int:
    """Free the space, clear the faults, run the same command again: it must complete, byte
    for byte, with its receipt. Returns what storage served over both runs."""
    _free(fs)
    emu.clear_faults()
    res = wl(*args)
    assert res.returncode == 0, res.stderr[-4000:]
    _assert_complete(out, files)
    return emu.total_bytes_served


# ---- (a) up front ----------------------------------------------------------------------------

def test_fails_up_front_when_the_model_cannot_fit(small_fs, threaded_storage, tmp_path, wl,
                                                  secrets, chaos_report):
    fs = small_fs("8m")
    emu = threaded_storage.emu
    files = _model(emu, {"a.bin": 6 * MiB, "sub/b.bin": 4 * MiB}, seed=1)
    manifest = _manifest(threaded_storage, files, tmp_path / "m.json", secrets)
    out = fs / "out"
    started = time.monotonic()
    res = wl(*_pull_args(manifest, out))
    line = _assert_disk_full(res.returncode, res.stderr, out)
    assert "nothing was fetched" in line, line
    assert emu.total_bytes_served == 0
    assert not (out / "a.bin").exists()
    assert not (out / "sub").exists()
    assert _work_leftovers(out) == []
    chaos_report("full-disk-up-front", model_bytes=10 * MiB, fs_bytes=8 * MiB,
                 served=emu.total_bytes_served, seconds=round(time.monotonic() - started, 2))


def test_up_front_check_counts_whole_blocks(small_fs, threaded_storage, tmp_path, wl, secrets):
    """600 files of 100 bytes are 60 KB of data but 600 blocks (2.4 MB on a 4 KiB-block
    filesystem): a check that adds up bytes says "fits" and the pull then fails half-way
    through preallocating. It must fail up front instead, having fetched nothing."""
    fs = small_fs("2m")
    emu = threaded_storage.emu
    files = _model(emu, {f"t/{i:03d}.json": 100 for i in range(600)}, seed=2)
    manifest = _manifest(threaded_storage, files, tmp_path / "m.json", secrets)
    out = fs / "out"
    res = wl(*_pull_args(manifest, out))
    line = _assert_disk_full(res.returncode, res.stderr, out)
    assert "nothing was fetched" in line, line
    assert emu.total_bytes_served == 0
    assert not (out / "t").exists()


# ---- (b) + (c): something else fills the disk mid-pull ---------------------------------------

@pytest.mark.parametrize("prealloc", [True, False], ids=["preallocated", "no-prealloc"])
def test_disk_fills_mid_pull_then_resumes(small_fs, threaded_storage, tmp_path, wl, wl_popen,
                                          secrets, chaos_report, prealloc):
    fs = small_fs("20m")
    emu = threaded_storage.emu
    files = _model(emu, {"a.bin": 5 * MiB, "b.bin": 5 * MiB, "sub/c.json": 3 * KiB}, seed=3)
    model = sum(map(len, files.values()))
    manifest = _manifest(threaded_storage, files, tmp_path / "m.json", secrets)
    out = fs / "out"
    for rel in files:  # slow enough that the disk fills while it runs
        emu.inject(rel, Fault.throttle(2 * MiB), times=10_000)
    # Without preallocation (as on a copy-on-write filesystem) the part data pwrite is the
    # write that meets the full disk.
    env = None if prealloc else _hook_env(tmp_path, "", fs / "filler-never", no_falloc=True)
    log = tmp_path / "first.log"
    args = _pull_args(manifest, out, "--connections", "2", "--chunk-size", "1M")
    started = time.monotonic()
    proc = wl_popen(*args, env=env, log=log)
    deadline = time.monotonic() + 20
    while emu.total_bytes_served < 2 * MiB and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, log.read_text()[-4000:]
    filled = _fill(fs / "filler")
    code = proc.wait(timeout=30)
    first_seconds = time.monotonic() - started
    stderr = log.read_text("utf-8", "replace")
    _assert_disk_full(code, stderr, out)
    assert "could not save the journal" not in stderr, "progress lost on the full disk"
    final = _assert_finals_right(out, files)
    assert _work_leftovers(out) == []
    served_first = emu.total_bytes_served
    kept = _kept_bytes(out, files, final)
    # Everything that arrived is kept but what was in flight (a block per connection).
    assert kept >= served_first - 2 * MiB, (kept, served_first)

    served = _resume_after_freeing(fs, emu, wl, args, out, files)
    chaos_report("full-disk-mid-pull", prealloc=prealloc, model_bytes=model, filler_bytes=filled,
                 served_first=served_first, served_total=served,
                 refetched=served - model, final_after_first=len(final),
                 first_seconds=round(first_seconds, 2))
    assert served <= BOUND * model, (served_first, served, model)


# ---- ENOSPC at each write site, then (c) -------------------------------------------------------

# site -> (inodes filled instead of bytes, bytes bound holds, bytes fetched before the failure,
#          what the error line names)
SITES = {
    # the part data pwrite, on a filesystem where preallocation reserves nothing
    "pwrite": (False, True, "some", "cannot write the part file"),
    "journal": (False, True, "some", "cannot write the journal"),  # a journal's temp file
    "finished": (False, True, "some", "cannot write the finished log"),  # first finalisation
    "receipt": (False, True, "all", "cannot write the receipt"),  # every file final
    "mkdir": (True, False, "some", "cannot move b.bin into place"),  # the final name's folder
    "part2": (True, False, "none", "cannot create a part file"),  # a later file's part
    "prealloc2": (False, False, "none", "a file needs 1.0 MiB"),  # a later file's preallocation
}


@pytest.mark.parametrize("site", list(SITES))
def test_enospc_at_each_write_site(small_fs, threaded_storage, tmp_path, wl, secrets,
                                   chaos_report, site):
    inodes, bound, fetched, what = SITES[site]
    fs = small_fs("16m", nr_inodes=96 if inodes else None)
    emu = threaded_storage.emu
    files = _model(emu, {"a.bin": 2 * MiB, "sub/b.bin": 1 * MiB}, seed=4)
    model = sum(map(len, files.values()))
    manifest = _manifest(threaded_storage, files, tmp_path / "m.json", secrets)
    out = fs / "out"
    # Slow enough for a journal write (one a second) while a.bin's ranges are still coming;
    # little in flight at the failure.
    rate = MiB // 2 if site == "journal" else 4 * MiB
    for rel in files:
        emu.inject(rel, Fault.throttle(rate), times=10_000)
    args = _pull_args(manifest, out, "--connections", "2", "--chunk-size", "1M")
    started = time.monotonic()
    res = wl(*args, env=_hook_env(tmp_path, site, fs / "filler", inodes=inodes))
    first_seconds = time.monotonic() - started
    line = _assert_disk_full(res.returncode, res.stderr, out)
    assert what in line, line
    if not inodes:
        assert "could not save the journal" not in res.stderr, "progress lost"
    assert _work_leftovers(out) == []
    final = _assert_finals_right(out, files)
    served_first = emu.total_bytes_served
    if fetched == "none":
        assert served_first == 0
        assert not final
    elif fetched == "all":
        assert served_first >= model
        assert sorted(final) == sorted(files)
    else:
        assert 0 < served_first

    served = _resume_after_freeing(fs, emu, wl, args, out, files)
    chaos_report("full-disk-site", site=site, model_bytes=model, served_first=served_first,
                 served_total=served, refetched=served - model,
                 first_seconds=round(first_seconds, 2))
    if bound:
        assert served <= BOUND * model, (served_first, served, model)


def test_no_inode_left_for_the_output_folder(small_fs, threaded_storage, tmp_path, wl, secrets):
    """Folder creation: the disk has no inode left when the output folder is made."""
    fs = small_fs("4m", nr_inodes=16)
    with pytest.raises(OSError, match="No space left"):  # noqa: PT012
        for i in range(100):
            (fs / f"filler.{i}").touch()
    emu = threaded_storage.emu
    files = _model(emu, {"a.bin": 64 * KiB}, seed=5)
    manifest = _manifest(threaded_storage, files, tmp_path / "m.json", secrets)
    out = fs / "out"
    res = wl(*_pull_args(manifest, out))
    line = _assert_disk_full(res.returncode, res.stderr, out)
    assert "cannot create the folder" in line, line
    assert emu.total_bytes_served == 0
    _resume_after_freeing(fs, emu, wl, _pull_args(manifest, out), out, files)


# ---- the journal helpers on a full disk (in process) -------------------------------------------

def test_full_disk_never_tears_a_journal_or_the_finished_log(small_fs):
    """A write cut short by the full disk: the finished log gets its torn tail dropped (or the
    next append would be glued to it), a journal keeps its old content and leaves no temp."""
    from weightlift.downloader.journal import (
        FinishedEntry,
        JournalState,
        append_finished,
        load_finished,
        load_journal,
        write_atomic,
    )

    fs = small_fs("1m")
    log = fs / "finished.jsonl"
    first = FinishedEntry("a.bin", 1, "0" * 64, None, "http://h/a.bin", 1)
    append_finished(log, first, durable=True)
    journal = fs / "x.journal"
    state = JournalState(rel="x", size=100)
    state.done.add(0, 10)
    write_atomic(journal, state.to_json(), durable=True)
    _fill(fs / "filler")
    size = log.stat().st_size
    # Lines longer than what is left of the log's last block: the write is cut short.
    group = [FinishedEntry(f"{i:04d}" * 300, 1, "1" * 64, None, "", 1) for i in range(6)]
    with pytest.raises(OSError, match="No space left"):
        append_finished(log, group, durable=True)
    assert log.stat().st_size == size
    assert list(load_finished(log)) == ["a.bin"]
    state.done.add(10, 100)
    big = JournalState(rel="x", size=100, etag="e" * 9000, done=state.done)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(journal, big.to_json(), durable=True)
    kept = load_journal(journal, "x", 100)
    assert kept is not None
    assert kept.done.total == 10
    assert sorted(p.name for p in fs.iterdir()) == ["filler", "finished.jsonl", "x.journal"]
