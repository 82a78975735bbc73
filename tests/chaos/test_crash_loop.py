"""The crash loop (issue 6, item 2): one pull of a multi-file checkpoint, killed with SIGKILL at
`--kills` moments and restarted each time, ends byte-identical, with storage having served at most
1.10x the model; after every kill, every file under its final name is absent or byte-identical to
its source, and the work area keeps its promises (a logged file is right; a journal claims only
bytes that are in its part file).

The moments, planned from `--chaos-seed`: every failpoint of weightlift.downloader.failpoints
once (between a data write and its journal, inside the journal write, each step of finalisation,
the receipt), armed through WEIGHTLIFT_FAILPOINTS so they land exactly there; the rest are random
byte counts (the child is killed when storage has served X more bytes).

The model is scaled with the number of kills (the per-kill loss is bounded by the journal
cadence, so the 1.10x budget needs the model to grow with the kills); CI's 20 kills pull ~100 MiB
at ~4 MiB/s. Replay a failure with the printed `--chaos-seed`.
"""

from __future__ import annotations

import faulthandler
import hashlib
import json
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from weightlift.downloader.failpoints import ENV as FAILPOINTS_ENV
from weightlift.downloader.failpoints import NAMES as FAILPOINT_NAMES
from weightlift.downloader.workarea import part_key
from weightlift.emulator.faults import Fault
from weightlift.emulator.model_gen import write_safetensors

pytestmark = pytest.mark.chaos

MiB = 1 << 20
CONNECTIONS = 4
CHUNK = "2M"
RATE = 1.25 * MiB  # per request: ~5 MiB/s over the 4 connections
MODEL_PER_KILL = 5 * MiB  # the model grows with --kills (the 1.10x budget is per kill)
SHARD_WEIGHTS = (16, 14, 13, 12, 12, 11, 11, 9)  # eight shards of different sizes
RUN_TIMEOUT = 90.0  # one child run, start to kill
# The child runs with its defaults: its journal cadence scales with the model (1/400 of it),
# which is what keeps 20 kills of a 100 MiB model within 10%.
CHILD_ENV: dict[str, str] = {}

# Failpoint moments in the order they are kept when --kills is smaller than their number.
FINALIZE = ("finalize.before_log", "finalize.before_rename", "finalize.before_dir_sync",
            "finalize.before_journal_unlink")
IN_FLIGHT = ("fetch.after_write", "journal.before_write", "journal.before_rename")
RECEIPT = ("receipt.before_write", "receipt.before_rename")
FIRST = "finalize.between_renames"  # the first run's batch of small files


@dataclass(frozen=True)
class Moment:
    failpoint: str | None = None  # None: a byte-count kill
    arrival: int = 1
    share: float = 1.0  # byte kills: the share of an even split of what is left to let through

    @property
    def kind(self) -> str:
        return self.failpoint or "bytes"

    def label(self) -> str:
        return f"{self.failpoint}={self.arrival}" if self.failpoint else f"bytes*{self.share:.2f}"


def plan_moments(kills: int, rng: random.Random) -> list[Moment]:
    """`kills` moments: each failpoint once (the first run's rename batch first; the in-flight
    and finalisation points among the first 60% of the byte kills, while shards are still
    downloading; the receipt last), byte kills around them."""
    wanted = [FIRST, *FINALIZE, *IN_FLIGHT, *RECEIPT]
    assert set(wanted) == set(FAILPOINT_NAMES), "a failpoint the crash loop does not plan"
    if kills < len(wanted):  # a short loop keeps the most telling ones
        keep = [FIRST, "finalize.before_rename", "fetch.after_write", "journal.before_write",
                "receipt.before_rename", "finalize.before_log", "finalize.before_dir_sync",
                "journal.before_rename", "finalize.before_journal_unlink",
                "receipt.before_write"][:kills]
        wanted = [w for w in wanted if w in keep]
    arrivals = {"fetch.after_write": rng.randint(1, 40), "journal.before_write": rng.randint(1, 5),
                "journal.before_rename": rng.randint(1, 5)}
    middle = [Moment(share=rng.uniform(0.1, 1.9)) for _ in range(kills - len(wanted))]
    points = [Moment(name, arrivals.get(name, 1)) for name in (*FINALIZE, *IN_FLIGHT)
              if name in wanted]
    rng.shuffle(points)
    span = int(len(middle) * 0.6)  # a good share of the download is still to come
    for pos, point in zip(sorted(rng.sample(range(span + len(points)), len(points))), points,
                          strict=True):
        middle.insert(pos, point)
    head = [Moment(FIRST)] if FIRST in wanted else []
    tail = [Moment(name) for name in RECEIPT if name in wanted]
    return head + middle + tail


def make_model(src: Path, total: int, seed: int) -> dict[str, bytes]:
    """A sharded safetensors checkpoint of unique random bytes (no tiling: a byte written at the
    wrong offset must show), with the small side files a real one has, one in a subfolder."""
    rng = random.Random(seed)
    files: dict[str, bytes] = {}
    unit = total // sum(SHARD_WEIGHTS)
    n = len(SHARD_WEIGHTS)
    weight_map = {}
    for i, weight in enumerate(SHARD_WEIGHTS):
        rel = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        count = weight * unit // 2
        path = src / rel
        write_safetensors(path, {f"layers.{i}.weight": ("BF16", [count], rng.randbytes(count * 2))})
        files[rel] = path.read_bytes()
        weight_map[f"layers.{i}.weight"] = rel
    side = {
        "config.json": json.dumps({"model_type": "crash-loop", "seed": seed}).encode(),
        "generation_config.json": b'{"do_sample": false}',
        "model.safetensors.index.json": json.dumps({"weight_map": weight_map}).encode(),
        "tokenizer/tokenizer.json": json.dumps(
            {"vocab": {rng.randbytes(6).hex(): i for i in range(12_000)}}).encode(),
        "tokenizer/special_tokens_map.json": b'{"eos_token": "</s>"}',
    }
    for rel, data in side.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    return {**side, **files}  # small files first: they land together in the first batch


class Invariants:
    """What must hold after every kill, checked against the sources."""

    def __init__(self, out: Path, files: dict[str, bytes], rng: random.Random) -> None:
        self.out = out
        self.files = files
        self.sha = {rel: hashlib.sha256(d).hexdigest() for rel, d in files.items()}
        self.by_key = {part_key(rel): rel for rel in files}
        self.rng = rng
        self._verified: dict[str, tuple[int, int, int, int]] = {}
        self.final_checks = 0

    def check(self, after: str) -> int:
        """Raise on any broken promise; returns how many files are final."""
        final = self._final_names(after)
        self._finished_log(after)
        self._journals(after)
        self._receipt(after, final)
        return final

    def _final_names(self, after: str) -> int:
        final = 0
        for path in self.out.rglob("*"):
            rel = path.relative_to(self.out).as_posix()
            if rel == ".weightlift" or rel.startswith(".weightlift/") or path.is_dir():
                continue
            assert rel in self.files, f"after {after}: stray file {rel!r} in the output folder"
            assert not path.is_symlink(), f"after {after}: {rel} is a symlink"
            st = path.stat()
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            if self._verified.get(rel) != stamp:  # unchanged since checked: same bytes
                data = path.read_bytes()
                assert data == self.files[rel], (
                    f"after {after}: {rel} is under its final name with wrong bytes "
                    f"({len(data)} bytes, expected {len(self.files[rel])})")
                self._verified[rel] = stamp
                self.final_checks += 1
            final += 1
        return final

    def _finished_log(self, after: str) -> None:
        log = self.out / ".weightlift" / "finished.jsonl"
        if not log.exists():
            return
        lines = log.read_text("utf-8").splitlines()
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line torn by a kill mid-append: the reader skips it too
            rel = entry["rel"]
            assert (entry["sha256"], entry["size"]) == (self.sha[rel], len(self.files[rel])), (
                f"after {after}: the finished log vouches for a wrong {rel}")

    def _journals(self, after: str) -> None:
        """Every byte a journal claims is in its part file: its ranges' edges and a few
        windows inside are compared with the source."""
        parts = self.out / ".weightlift" / "parts"
        if not parts.exists():
            return
        for journal in parts.glob("*.journal"):
            state = json.loads(journal.read_bytes())  # written atomically: always whole
            rel = self.by_key[journal.stem]
            assert state["rel"] == rel
            src = self.files[rel]
            part = parts / f"{journal.stem}.part"
            if not part.exists():
                continue  # renamed into place, journal not yet removed: the final check covers it
            with open(part, "rb") as fh:
                for start, end in state["done"]:
                    assert 0 <= start <= end <= len(src), (after, rel, start, end)
                    windows = [(start, min(end, start + 65536)), (max(start, end - 65536), end)]
                    for _ in range(2):
                        at = self.rng.randrange(start, end) if end > start else start
                        windows.append((at, min(end, at + 65536)))
                    for a, b in windows:
                        fh.seek(a)
                        assert fh.read(b - a) == src[a:b], (
                            f"after {after}: the journal of {rel} claims bytes [{a}, {b}) "
                            "that are not in its part file")

    def _receipt(self, after: str, final: int) -> None:
        path = self.out / ".weightlift" / "receipt.json"
        if not path.exists():
            return
        receipt = json.loads(path.read_bytes())
        assert final == len(self.files), f"after {after}: a receipt before every file is final"
        assert {f["rel"]: f["sha256"] for f in receipt["files"]} == self.sha, after


def _wait(proc, served, limit: int | None, deadline: float) -> None:
    """Until the child dies, or storage has served `limit` bytes (then SIGKILL it)."""
    while proc.poll() is None:
        if limit is not None and served() >= limit:
            proc.send_signal(signal.SIGKILL)
            break
        if time.monotonic() > deadline:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            raise AssertionError("a run neither finished nor reached its moment in time")
        time.sleep(0.002)
    proc.wait()


def _tail(log: Path, n: int = 2500) -> str:
    return log.read_text("utf-8", "replace")[-n:]


def test_crash_loop(threaded_storage, tmp_path, wl, wl_popen, secrets, chaos_report, request):
    kills: int = request.config.getoption("--kills")
    seed: int = request.config.getoption("--chaos-seed")
    rng = random.Random(seed)
    started = time.monotonic()
    emu = threaded_storage.emu

    src = tmp_path / "src"
    src.mkdir()
    files = make_model(src, max(20, kills) * MODEL_PER_KILL, seed)
    model = sum(len(d) for d in files.values())
    for rel in files:
        emu.put_file(rel, src / rel)
        if len(files[rel]) > MiB:
            emu.inject(rel, Fault.throttle(RATE), times=1 << 30)
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"files": [
        {"rel": rel, "size": len(d), "url": threaded_storage.presign(rel, lifetime=3600),
         "sha256": hashlib.sha256(d).hexdigest()} for rel, d in files.items()]}))
    for entry in json.loads(manifest.read_text())["files"]:
        secrets.add_url(entry["url"])

    out = tmp_path / "out"
    logs = tmp_path / "logs"
    logs.mkdir()
    args = ("pull", str(manifest), "-o", str(out), "--connections", str(CONNECTIONS),
            "--chunk-size", CHUNK)
    check = Invariants(out, files, random.Random(seed + 1))
    plan = plan_moments(kills, rng)
    happened: Counter[str] = Counter()
    context = f"replay with --chaos-seed {seed} --kills {kills}"

    for i, moment in enumerate(plan):
        # A rolling watchdog: each run (not the whole loop) must finish within its budget.
        faulthandler.dump_traceback_later(RUN_TIMEOUT + 30, exit=True)
        env = dict(CHILD_ENV)
        if moment.failpoint:
            env[FAILPOINTS_ENV] = f"{moment.failpoint}={moment.arrival}"
        log = logs / f"{i:03d}-{moment.kind}.log"
        limit = None
        if moment.failpoint is None:
            left = max(model - emu.total_bytes_served, MiB)
            still = sum(1 for m in plan[i:] if not (m.failpoint or "").startswith("receipt."))
            limit = emu.total_bytes_served + max(1, int(moment.share * left / (still + 1)))
        proc = wl_popen(*args, env=env, log=log)
        _wait(proc, lambda: emu.total_bytes_served, limit, time.monotonic() + RUN_TIMEOUT)
        what = f"kill {i + 1}/{len(plan)} ({moment.label()}); {context}"
        assert proc.returncode == -signal.SIGKILL, (
            f"{what}: the run ended with exit {proc.returncode} before its moment:\n{_tail(log)}")
        if moment.failpoint:
            assert f"weightlift failpoint {moment.failpoint}: SIGKILL" in _tail(log, 400), (
                f"{what}: killed, but not by its failpoint:\n{_tail(log)}")
        assert "Traceback" not in log.read_text("utf-8", "replace"), f"{what}:\n{_tail(log)}"
        happened[moment.kind] += 1
        check.check(what)

    faulthandler.dump_traceback_later(RUN_TIMEOUT + 30, exit=True)
    done = wl(*args, "--json", env=CHILD_ENV)
    assert done.returncode == 0, f"{context}\n{done.stderr[-3000:]}"
    assert json.loads(done.stdout)["ok"] is True
    assert check.check("the clean run") == len(files)
    for rel, data in files.items():
        assert (out / rel).read_bytes() == data, rel
    served = emu.total_bytes_served
    again = wl(*args, env=CHILD_ENV)
    assert again.returncode == 0, again.stderr[-3000:]
    assert emu.total_bytes_served == served, "re-running a finished pull fetched bytes"
    leftovers = sorted(p.name for p in (out / ".weightlift" / "parts").iterdir())
    leftovers += sorted(p.name for p in (out / ".weightlift").glob("*.tmp"))
    checked = wl("verify", str(out))
    assert checked.returncode == 0, checked.stderr[-3000:]

    ratio = served / model
    chaos_report("crash_loop", seed=seed, kills=kills, kills_survived=sum(happened.values()),
                 kill_moments=dict(sorted(happened.items())), model_bytes=model,
                 bytes_served=served, served_over_model=round(ratio, 4),
                 bytes_refetched=served - model, files_hashed=check.final_checks,
                 wall_seconds=round(time.monotonic() - started, 1))
    assert ratio <= 1.10, f"storage served {ratio:.3f}x the model over {kills} kills; {context}"
    assert not leftovers, f"the work area kept {leftovers} after a finished pull"


def test_stale_sealed_part_does_not_land_after_the_model_changed(threaded_storage, tmp_path, wl,
                                                                  wl_popen):
    """Killed between the finished-log append and the rename; then the model is updated (same
    name and size, new bytes). The next pull must not move the old sealed part into place."""
    emu = threaded_storage.emu
    old, new = random.Random(1).randbytes(MiB), random.Random(2).randbytes(MiB)

    def publish(data: bytes) -> str:
        emu.put_bytes("a.bin", data)
        path = tmp_path / "manifest.json"
        path.write_text(json.dumps({"files": [{
            "rel": "a.bin", "size": len(data), "url": threaded_storage.presign("a.bin"),
            "sha256": hashlib.sha256(data).hexdigest()}]}))
        return str(path)

    out = tmp_path / "out"
    manifest = publish(old)
    proc = wl_popen("pull", manifest, "-o", str(out),
                    env={FAILPOINTS_ENV: "finalize.before_rename"}, log=tmp_path / "killed.log")
    assert proc.wait(timeout=60) == -signal.SIGKILL, _tail(tmp_path / "killed.log")
    assert not (out / "a.bin").exists()
    manifest = publish(new)
    done = wl("pull", manifest, "-o", str(out), "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "a.bin").read_bytes() == new
    assert json.loads(done.stdout)["files"][0]["sha256"] == hashlib.sha256(new).hexdigest()


def test_torn_finished_log_line_does_not_swallow_the_next_group(tmp_path):
    """A kill mid-write of a large group commit leaves a torn last line; the next append must
    not be glued to it (that entry would be lost, and its file fetched again)."""
    from weightlift.downloader.journal import FinishedEntry, append_finished, load_finished

    log = tmp_path / "finished.jsonl"
    first = [FinishedEntry(f"f{i}", i, "0" * 64, None, "", 1) for i in range(3)]
    append_finished(log, first, durable=False)
    whole = log.read_bytes()
    log.write_bytes(whole + whole[:40])  # the torn start of a further group
    append_finished(log, FinishedEntry("g", 7, "1" * 64, None, "", 2), durable=False)
    assert sorted(load_finished(log)) == ["f0", "f1", "f2", "g"]
