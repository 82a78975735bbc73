"""Load (issue 6, item 6): many connections, many ranges, many files.

- 64 files x 4 ranges each with 64 connections against the storage emulator, in this process:
  every byte right (sha256 against the source), about 64 connections really in flight at once,
  no file descriptor left open afterwards (compared as (fd, target) pairs of /proc/self/fd,
  once the emulator's own keep-alive sockets have closed), and at most one part file open per
  file. The same pull in a child process keeps its own peak RSS (VmHWM, `rss_probe`) under
  RSS_BASE + connections x RSS_PER_CONNECTION.
- A pull of many tiny files (`--tiny-files`, CI 5,000; the closing figures use 50,000): in
  this process (no fd leak, part files open at once bounded by the engine's MAX_OPEN_PARTS, not
  by the file count) and as children, a small run and a large one: RSS grows by no more than
  RSS_PER_FILE per extra file and stays under an absolute bound, the child's descriptors (sampled
  from /proc/<pid>/fd while it runs) stay bounded, every byte right, time reported.
- The fd check itself is shown to fail: a pull whose part files leak a descriptor each is caught.

Figures go to `--chaos-report`: e.g.
`pytest -m chaos tests/chaos/test_load.py --tiny-files 50000 --chaos-report /tmp/load-50k.jsonl`.
"""

from __future__ import annotations

import asyncio
import faulthandler
import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import weightlift.downloader.part_files as part_files_mod
from weightlift.downloader.engine import MAX_OPEN_PARTS, EngineConfig
from weightlift.downloader.manifest import Manifest, validate_manifest
from weightlift.downloader.pull import pull
from weightlift.downloader.receipt import load_receipt
from weightlift.downloader.retry import RetryPolicy
from weightlift.downloader.sources.local import ResolvedSource
from weightlift.emulator.faults import Fault

pytestmark = pytest.mark.chaos

KiB = 1 << 10
MiB = 1 << 20

CHUNK = 256 * KiB  # 4 ranges per file of just under 1 MiB
CONNECTIONS = 64
# A child pulling with C connections: the interpreter with aiohttp and pydantic loaded (about
# 45 MB), plus per connection its 1 MiB read block and what aiohttp buffers behind it
# (measured: 72 MB for 64).
RSS_BASE_MB = 60
RSS_PER_CONNECTION_MB = 1
# A child pulling N tiny files: each file costs its manifest entry (a presigned URL of about
# 400 bytes), its engine state, its result and receipt line (measured: about 3.5 KiB a file).
RSS_PER_FILE_KIB = 8
RSS_TINY_BASE_MB = 100


# ---- descriptors ------------------------------------------------------------------------------

def _fds(pid: int | str = "self") -> set[tuple[int, str]]:
    """(fd, what it points at) for every open descriptor of `pid`."""
    where = f"/proc/{pid}/fd"
    out: set[tuple[int, str]] = set()
    for name in os.listdir(where):
        try:
            target = os.readlink(f"{where}/{name}")
        except OSError:  # closed meanwhile (the listing's own descriptor, among others)
            continue
        out.add((int(name), target))
    return out


async def _leaked(before: set[tuple[int, str]], settle: float = 5.0) -> dict[int, str]:
    """Descriptors open now that were not open (to the same thing) before. The emulator's
    server side of a keep-alive connection closes a moment after the client's: wait for
    that, a bounded time, so only what stays open is reported."""
    deadline = time.monotonic() + settle
    while True:
        extra = {fd: target for fd, target in _fds() - before}
        if not extra or time.monotonic() > deadline:
            return extra
        await asyncio.sleep(0.05)


class FdSampler:
    """Samples a process's descriptors while a pull runs: peaks of all, sockets, part files."""

    def __init__(self, pid: int | str = "self", interval: float = 0.01) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = self.peak_sockets = self.peak_parts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fd-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                fds = _fds(self.pid)
            except OSError:  # the child has exited
                return
            self.peak = max(self.peak, len(fds))
            self.peak_sockets = max(self.peak_sockets,
                                    sum(t.startswith("socket:") for _, t in fds))
            self.peak_parts = max(self.peak_parts, sum(t.endswith(".part") for _, t in fds))
            self._stop.wait(self.interval)

    def __enter__(self) -> FdSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---- models and manifests ---------------------------------------------------------------------

@dataclass
class Model:
    files: dict[str, str]  # rel -> sha256 of the source
    sizes: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.sizes.values())


def _put_model(emu, sizes: dict[str, int], seed: int) -> Model:
    rng = random.Random(seed)
    model = Model({}, {})
    for rel, n in sizes.items():
        data = rng.randbytes(n)
        emu.put_bytes(rel, data)
        model.files[rel] = hashlib.sha256(data).hexdigest()
        model.sizes[rel] = n
    return model


def _sharded(prefix: str, count: int) -> dict[str, int]:
    """`count` files of just under 4 ranges each (no two the same size)."""
    return {f"{prefix}/shard-{i:02d}.bin": 4 * CHUNK - 1000 - 7 * i for i in range(count)}


def _tiny(prefix: str, count: int) -> dict[str, int]:
    """`count` tiny files, 0-96 bytes (about 1 in 97 empty), a thousand to a folder."""
    return {f"{prefix}/{i // 1000:03d}/{i:06d}.bin": i % 97 for i in range(count)}


def _entries(server, model: Model) -> list[dict[str, object]]:
    return [{"rel": rel, "size": model.sizes[rel], "url": server.presign(rel),
             "sha256": model.files[rel]} for rel in model.files]


def _source(server, model: Model) -> ResolvedSource:
    manifest: Manifest = validate_manifest({"files": _entries(server, model)})
    return ResolvedSource(manifest, None, None, "load test")


def _manifest_file(server, model: Model, path: Path, secrets) -> str:
    entries = _entries(server, model)
    for entry in entries[:3]:
        secrets.add_url(str(entry["url"]))
    path.write_text(json.dumps({"files": entries}))
    return str(path)


def _assert_landed(out: Path, model: Model) -> None:
    """Every byte right: each final file's sha256 against the source's, and the receipt."""
    wrong = [rel for rel, sha in model.files.items()
             if hashlib.sha256((out / rel).read_bytes()).hexdigest() != sha]
    assert not wrong, f"{len(wrong)} file(s) wrong, e.g. {wrong[:3]}"
    receipt = load_receipt(out)
    assert receipt is not None
    assert {f.rel: f.sha256 for f in receipt.files} == model.files
    assert not list((out / ".weightlift" / "parts").iterdir()), "work files left behind"


def _config(connections: int) -> EngineConfig:
    return EngineConfig(connections=connections, chunk_size=CHUNK, stall_timeout=20.0,
                        retry=RetryPolicy(backoff_base=0.01, backoff_cap=0.1), seed=6)


def _watchdog(seconds: float) -> None:
    """Re-arm the suite's hang watchdog (tests/conftest.py, 120 s) for a run whose size is
    chosen on the command line; the fixture's teardown cancels it as usual."""
    faulthandler.dump_traceback_later(max(120.0, seconds), exit=True)


# ---- children ---------------------------------------------------------------------------------

@dataclass
class ChildRun:
    returncode: int
    seconds: float
    peak_rss_mb: float
    peak_fds: int
    peak_parts: int
    stderr: str


def _run_child(wl_popen, rss_probe, args: list[str], log: Path, timeout: float) -> ChildRun:
    """`weightlift -vv ARGS` (the suite's DEBUG child, whose outputs are checked for secrets
    when the test ends), with its own peak RSS (the suite's `rss_probe`: VmHWM at exit) and
    sampled descriptors."""
    probe = rss_probe(log.stem)
    started = time.monotonic()
    proc = wl_popen(*args, log=log, env=probe.env)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        with FdSampler(proc.pid, interval=0.1) as fds:
            _, status, _ = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    stderr = log.read_text("utf-8", "replace")
    assert "Traceback" not in stderr, stderr[-3000:]
    assert probe.report.exists(), f"the child (exit {proc.returncode}) reported no RSS"
    return ChildRun(proc.returncode, time.monotonic() - started, probe.peak_mb(), fds.peak,
                    fds.peak_parts, stderr)


def _tiny_files(request: pytest.FixtureRequest) -> int:
    n = int(request.config.getoption("--tiny-files"))
    assert n >= 100, "--tiny-files: at least 100"
    return n


# ---- the fd check can fail ----------------------------------------------------------------------

async def test_fd_check_catches_a_leaked_part_file(storage_server, tmp_path, monkeypatch):
    """The leak check below is not vacuous: a pull whose every part file leaks a duplicate
    descriptor is caught, with the files named."""
    model = _put_model(storage_server.emu, _sharded("leak", 8), seed=1)
    leaked: list[int] = []
    real_open_part = part_files_mod.open_part

    def leaky_open_part(*args, **kwargs):  # type: ignore[no-untyped-def]
        fd = real_open_part(*args, **kwargs)
        leaked.append(os.dup(fd))
        return fd

    monkeypatch.setattr(part_files_mod, "open_part", leaky_open_part)
    before = _fds()
    try:
        result = await pull(_source(storage_server, model), tmp_path / "out", _config(8))
        assert result.ok, result.files
        found = await _leaked(before, settle=1.0)
        assert set(leaked) <= set(found), (leaked, found)
        # The parts were renamed into place: the leaked descriptors name the final files.
        finals = {str(tmp_path / "out" / rel) for rel in model.files}
        assert len(leaked) == len(model.files)
        assert {found[fd] for fd in leaked} == finals
    finally:
        for fd in leaked:
            os.close(fd)
    assert not await _leaked(before)


# ---- 64 files x 4 ranges, 64 connections --------------------------------------------------------

async def test_64_files_4_ranges_64_connections(storage_server, tmp_path, chaos_report):
    emu = storage_server.emu
    model = _put_model(emu, _sharded("wide", 64), seed=64)
    # Each range takes ~30 ms to send, so the 64 connections are all in flight at once.
    emu.inject("*", Fault.throttle(8 * MiB), times=10_000)
    out = tmp_path / "out"
    before = _fds()
    started = time.monotonic()
    with FdSampler() as sampled:
        result = await pull(_source(storage_server, model), out, _config(CONNECTIONS))
    seconds = time.monotonic() - started
    assert result.ok, [f for f in result.files if f.status == "failed"][:3]
    leaked = await _leaked(before)
    _assert_landed(out, model)
    ranged = [r for r in emu.requests if r.range_header]
    base_sockets = sum(t.startswith("socket:") for _, t in before)
    chaos_report("load-64x4", files=len(model.files), bytes=model.total, connections=CONNECTIONS,
                 requests=len(emu.requests), ranged=len(ranged), wall_s=round(seconds, 2),
                 fds_before=len(before), fds_after=len(before) + len(leaked),
                 peak_sockets=sampled.peak_sockets - base_sockets, peak_parts=sampled.peak_parts)
    assert not leaked, f"descriptors left open: {leaked}"
    assert len(ranged) == 4 * len(model.files), len(ranged)
    assert result.bytes_fetched == model.total
    # Client and server ends of each connection: about 64 pairs at the peak, never more.
    in_flight = (sampled.peak_sockets - base_sockets) / 2
    assert CONNECTIONS * 0.75 <= in_flight <= CONNECTIONS + 2, sampled.peak_sockets
    assert sampled.peak_parts <= len(model.files)


def test_64_files_4_ranges_child_rss(threaded_storage, tmp_path, wl_popen, rss_probe, secrets,
                                     chaos_report):
    emu = threaded_storage.emu
    model = _put_model(emu, _sharded("wide", 64), seed=65)
    manifest = _manifest_file(threaded_storage, model, tmp_path / "m.json", secrets)
    out = tmp_path / "out"
    args = ["pull", manifest, "-o", str(out), "--no-verify", "--connections", str(CONNECTIONS),
            "--chunk-size", "256K"]
    run = _run_child(wl_popen, rss_probe, args, tmp_path / "child.log", timeout=100)
    assert run.returncode == 0, run.stderr[-3000:]
    _assert_landed(out, model)
    bound = RSS_BASE_MB + CONNECTIONS * RSS_PER_CONNECTION_MB
    chaos_report("load-64x4-child", files=len(model.files), bytes=model.total,
                 connections=CONNECTIONS, wall_s=round(run.seconds, 2),
                 peak_rss_mb=round(run.peak_rss_mb, 1), rss_bound_mb=bound,
                 peak_fds=run.peak_fds, peak_parts=run.peak_parts)
    assert run.peak_rss_mb <= bound, (run.peak_rss_mb, bound)
    assert run.peak_parts <= len(model.files)


# ---- many tiny files -------------------------------------------------------------------------

async def test_many_tiny_files_in_process(storage_server, tmp_path, request, chaos_report):
    n = _tiny_files(request)
    _watchdog(60 + n / 250)
    connections = 32
    model = _put_model(storage_server.emu, _tiny("tiny", n), seed=n)
    source = _source(storage_server, model)
    out = tmp_path / "out"
    before = _fds()
    started = time.monotonic()
    with FdSampler(interval=0.05) as sampled:
        result = await pull(source, out, _config(connections))
    seconds = time.monotonic() - started
    assert result.ok, [f for f in result.files if f.status == "failed"][:3]
    leaked = await _leaked(before)
    _assert_landed(out, model)
    chaos_report("load-tiny-in-process", files=n, bytes=model.total, connections=connections,
                 requests=len(storage_server.emu.requests), wall_s=round(seconds, 2),
                 files_per_s=round(n / seconds), fds_before=len(before),
                 fds_after=len(before) + len(leaked), peak_fds=sampled.peak,
                 peak_parts=sampled.peak_parts)
    assert not leaked, f"descriptors left open: {dict(list(leaked.items())[:10])}"
    # Part files open at once are bounded by the engine, not by the number of files.
    assert sampled.peak_parts <= MAX_OPEN_PARTS + connections, sampled.peak_parts
    assert sampled.peak <= len(before) + MAX_OPEN_PARTS + 3 * connections + 32, sampled.peak
    # Empty files need no request; every other file exactly one.
    assert len(storage_server.emu.requests) == sum(1 for s in model.sizes.values() if s)


def test_many_tiny_files_child_rss(threaded_storage, tmp_path, wl_popen, rss_probe, secrets,
                                   request, chaos_report):
    n = _tiny_files(request)
    small = max(100, n // 10)
    _watchdog(60 + n / 150)
    emu = threaded_storage.emu
    runs: dict[int, ChildRun] = {}
    for count in (small, n):
        model = _put_model(emu, _tiny(f"t{count}", count), seed=count)
        manifest = _manifest_file(threaded_storage, model, tmp_path / f"m{count}.json", secrets)
        out = tmp_path / f"out{count}"
        run = _run_child(wl_popen, rss_probe, ["pull", manifest, "-o", str(out), "--no-verify"],
                         tmp_path / f"child{count}.log", timeout=60 + count / 200)
        assert run.returncode == 0, run.stderr[-3000:]
        _assert_landed(out, model)
        runs[count] = run
        chaos_report("load-tiny-child", files=count, bytes=model.total,
                     wall_s=round(run.seconds, 2), files_per_s=round(count / run.seconds),
                     peak_rss_mb=round(run.peak_rss_mb, 1), peak_fds=run.peak_fds,
                     peak_parts=run.peak_parts)
    grew_kib = (runs[n].peak_rss_mb - runs[small].peak_rss_mb) * 1024
    per_file_kib = grew_kib / (n - small)
    bound_mb = RSS_TINY_BASE_MB + n * RSS_PER_FILE_KIB / 1024
    chaos_report("load-tiny-rss", small=small, large=n,
                 rss_small_mb=round(runs[small].peak_rss_mb, 1),
                 rss_large_mb=round(runs[n].peak_rss_mb, 1),
                 per_file_kib=round(per_file_kib, 2), per_file_budget_kib=RSS_PER_FILE_KIB,
                 rss_bound_mb=round(bound_mb))
    assert per_file_kib <= RSS_PER_FILE_KIB, (per_file_kib, runs)
    assert runs[n].peak_rss_mb <= bound_mb, (runs[n].peak_rss_mb, bound_mb)
    # The child's descriptors: bounded by the engine's limits, not by the file count.
    for run in runs.values():
        assert run.peak_parts <= MAX_OPEN_PARTS + 32, run.peak_parts
        assert run.peak_fds <= MAX_OPEN_PARTS + 3 * 32 + 64, run.peak_fds


@pytest.fixture(autouse=True)
def _no_stray_threads() -> Iterator[None]:
    """The samplers are joined by the tests; nothing of ours outlives a test."""
    yield
    assert not [t for t in threading.enumerate() if t.name == "fd-sampler"]
