"""Chaos trials: `weightlift pull axom://models/…` of a sharded checkpoint while a seeded schedule
(weightlift.emulator.chaos) makes storage misbehave at random points: drops, stalls, 5xx, 429
with small, huge and date-form Retry-After, expired URLs (forced, and real ones with a short
lifetime), wrong Content-Range, 200 instead of 206, flipped bytes, replaced objects, gzip.

Every trial ends byte-identical to the source, or (only when a fault that never stops fired)
with exit 3 and its state kept, after which a clean run completes it byte-identical and fetches
little. Trial i runs seed `--chaos-seed` + i; a failure prints the seed and the schedule
(replay one trial with `--chaos-seed SEED --trials 1`).

A replaced object ends as exactly one version of that object, never a mix: the new one (its
ETag changed, so the file starts over), or the old one when every byte had been read before the
replacement showed. When the manifest pins sha256, bytes of the new version cannot be what the
user asked for: the file fails clearly (exit 3, "changed on storage"), nothing wrong is
finalised, and a re-run with a fresh manifest (which pins the new sha256) completes it from the
bytes already on disk.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from weightlift.emulator.chaos import (
    FOREVER,
    STALL_TIMEOUT,
    FileInfo,
    PlannedFault,
    Schedule,
    build_schedule,
    http_date,
    replacement,
)
from weightlift.emulator.faults import Fault
from weightlift.emulator.http_range import select
from weightlift.emulator.platforms import ThreadedPlatforms
from weightlift.emulator.runs import RunScript
from weightlift.emulator.storage import RequestRecord, StorageEmulator

pytestmark = pytest.mark.chaos

MODEL_BYTES = 4 << 20
SHARDS = 3
CHILD_ENV = {"WEIGHTLIFT_RETRY_BASE": "0.02", "WEIGHTLIFT_STALL_TIMEOUT": str(STALL_TIMEOUT)}
EXIT_OK, EXIT_TRANSFER = 0, 3


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "trial" in metafunc.fixturenames:
        metafunc.parametrize("trial", range(metafunc.config.getoption("trials")))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _data_start(path: Path) -> int | None:
    if not path.name.endswith(".safetensors"):
        return None
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    return 8 + n


def _start_of(rec: RequestRecord, size: int) -> int:
    sel = select(rec.range_header, size)
    return sel.start if sel.satisfiable else size


def _fired(p: PlannedFault, key: str, records: list[RequestRecord], size: int) -> bool:
    """Did this planned fault apply to any request? (The schedule never aims a transient of a
    terminal fault's kind at the same file, so records tell them apart.)"""
    for rec in records:
        if rec.key != key or rec.method != "GET" or rec.fault != p.fault.kind:
            continue
        if p.fault.kind == "status" and rec.status != p.fault.code:
            continue
        if _start_of(rec, size) >= p.from_offset:
            return True
    return False


def _report(stdout: str) -> dict[str, Any]:
    try:
        doc = json.loads(stdout)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _arm(storage: StorageEmulator, model_id: str, sched: Schedule,
         originals: dict[str, bytes], files: dict[str, FileInfo]) -> None:
    for p in sched.faults:
        key = "*" if p.rel == "*" else f"{model_id}/{p.rel}"
        fault = p.fault
        if fault.kind == "replace_object":
            info = files[p.rel]
            assert info.data_start is not None
            assert p.replace_seed is not None
            fault = Fault.replace_object(
                replacement(originals[p.rel], info.data_start, p.replace_seed))
        storage.inject(key, fault, times=p.times, from_offset=p.from_offset)


def _model(tp: ThreadedPlatforms, seed: int) -> tuple[str, dict[str, bytes],
                                                      dict[str, FileInfo]]:
    """A finished Axom job's model, stored: (model id, bytes by rel, FileInfo by rel)."""
    emu = tp.emu
    job = emu.add_axom_job(RunScript.instant(model_bytes=MODEL_BYTES, shards=SHARDS, seed=seed))
    gen = emu.prepare_job(emu.job("axom", job))  # type: ignore[arg-type]
    workdir = emu.workdir / "axom" / job
    originals = {rel: (workdir / rel).read_bytes() for rel in gen.files}
    files = {rel: FileInfo(rel, len(data), _data_start(workdir / rel))
             for rel, data in originals.items()}
    return emu.axom_model_id(job), originals, files


def test_chaos_trial(trial: int, threaded_platforms: ThreadedPlatforms, tmp_path: Path,
                     wl: Any, secrets: Any, chaos_report: Any,
                     request: pytest.FixtureRequest) -> None:
    _trial(request.config.getoption("--chaos-seed") + trial, threaded_platforms, tmp_path, wl,
           secrets, chaos_report)


# Seeds that once failed, replayed by every run whatever --chaos-seed/--trials say.
REGRESSION_SEEDS = {
    # Issue 11 §2.1: with no sha256 in the manifest, a request opened before a restart wrote
    # its next block after the restart: a mix of two object versions was finalised.
    818: "a superseded request's block written after a restart",
    # Found by the 2,000-trial run of the redesigned engine; both were the test's own faults:
    # a byte flipped in transit and journaled by a first run that then stopped is only found by
    # the whole file's sha256 in the re-run, which rightly fetches that file again from byte 0
    # (the bound on re-fetched bytes did not allow for it)...
    3000275: "a journaled flipped byte costs its file a second fetch on resume",
    3001020: "the same, with a status that never stops instead of an expiry",
    # A product defect: a flipped byte restarted a file whose object was then replaced before
    # the new generation's first answer; the new ETag went unnoticed, so the pinned sha256
    # failed three more full fetches and exit 1 instead of "changed on storage" (exit 3).
    3000531: "an object replaced between two generations of a file is a changed object",
    # A terminal fault from an offset on fired on a range request, then the file went whole
    # from byte 0 (its server ignored Range), out of the fault's reach: exit 0 is right.
    3001673: "a file fetched whole from byte 0 escapes a fault aimed at later offsets",
    # ...and the secret watch read random model bytes in part files as a query parameter.
    3001196: "';sT=' in a kept part file is model data, not a leaked signature",
    3000303: "';Md5=' in a kept part file is model data, not a leaked signature",
}


@pytest.mark.parametrize("seed", sorted(REGRESSION_SEEDS))
def test_chaos_regression_seed(seed: int, threaded_platforms: ThreadedPlatforms,
                               tmp_path: Path, wl: Any, secrets: Any,
                               chaos_report: Any) -> None:
    _trial(seed, threaded_platforms, tmp_path, wl, secrets, chaos_report)


def _trial(seed: int, threaded_platforms: ThreadedPlatforms, tmp_path: Path, wl: Any,
           secrets: Any, chaos_report: Any) -> None:
    """One chaos trial of ``seed`` (see the module docstring for what it promises)."""
    tp = threaded_platforms
    emu = tp.emu
    storage = emu.storage
    secrets.add(emu.axom_key, emu.tensorone_key)

    model_id, originals, files = _model(tp, seed % 997)
    sched = build_schedule(seed, list(files.values()), now=time.time())
    context = (f"chaos trial seed={seed} (replay: pytest {__file__} --chaos-seed {seed} "
               f"--trials 1)\n{sched.describe()}")
    emu.url_lifetime = sched.url_lifetime
    emu.manifest_sha256 = sched.with_sha256
    _arm(storage, model_id, sched, originals, files)

    out = tmp_path / "model"
    source = f"axom://models/{model_id}"
    args = ("pull", source, "-o", str(out), "--json", "--connections", str(sched.connections),
            "--chunk-size", str(sched.chunk_size))
    env = {**tp.env(), **CHILD_ENV}
    figures: dict[str, Any] = {"seed": seed, "schedule": sched.describe()}
    t0 = time.monotonic()
    try:
        first = wl(*args, env=env)
        _check_secrets_after(secrets, storage, first, out)
        records = list(storage.requests)
        by_kind = Counter(r.fault for r in records if r.fault is not None)
        errors = [ln for ln in first.stderr.splitlines() if ln.startswith("weightlift: ")
                  and " DEBUG " not in ln and " INFO " not in ln]
        figures.update(faults=dict(by_kind), first_exit=first.returncode, errors=errors[-3:],
                       bytes_served_first=storage.total_bytes_served,
                       refreshes=_report(first.stdout).get("totals", {}).get("refreshes"))

        def key(rel: str) -> str:
            return f"{model_id}/{rel}"

        # A fault that never stops stops its file only while the file is fetched in ranges
        # from its offset on: a file that turned out to need one whole GET (its server ignored
        # Range) is fetched from byte 0, which the fault does not reach (seed 3001673).
        went_whole = {rel for rel in files if re.search(
            rf"{re.escape(rel)}: starting over: the server ignores Range requests", first.stderr)}
        terminal_fired = [p for p in sched.terminal
                          if _fired(p, key(p.rel), records, files[p.rel].size)
                          and not (p.rel in went_whole and p.from_offset > 0)]
        replaced = {p.rel for p in sched.faults if p.fault.kind == "replace_object"
                    and _fired(p, key(p.rel), records, files[p.rel].size)}
        current = {rel: storage.sha256(key(rel)) for rel in files}
        old = {rel: hashlib.sha256(data).hexdigest() for rel, data in originals.items()}
        # A replaced object seen by a pull that pins sha256 cannot end as the new version.
        pinned_replace = sched.with_sha256 and any(current[r] != old[r] for r in replaced)

        # Whatever happened, no file under its final name holds wrong bytes.
        for rel in files:
            final = out / rel
            if final.exists():
                allowed = {current[rel], old[rel]} if rel in replaced else {current[rel]}
                if sched.with_sha256:
                    allowed &= {old[rel]}  # what the first manifest pinned
                assert _sha(final) in allowed, f"{rel} holds wrong bytes under its final name"

        resumed = first.returncode != EXIT_OK or bool(terminal_fired)
        if resumed:
            why = [p.describe() for p in terminal_fired] + [f"{r} replaced" for r in replaced]
            assert terminal_fired or pinned_replace, (
                f"exit {first.returncode} without a fault that never stops: "
                f"{first.stderr[-2500:]}")
            assert first.returncode == EXIT_TRANSFER, (
                f"expected exit 3 ({why}), got {first.returncode}: {first.stderr[-2500:]}")
            last = first.stderr.strip().splitlines()[-1]
            assert last.startswith("weightlift: error:"), last
            assert (out / ".weightlift").is_dir(), "the partial state was not kept"
            if pinned_replace and not terminal_fired:
                assert re.search(r"changed on (storage|the platform)", first.stderr), \
                    first.stderr[-2500:]
            storage.clear_faults()
            served_before = storage.total_bytes_served
            finished = {f["rel"] for f in _report(first.stdout).get("files", [])
                        if f.get("status") in ("downloaded", "already-complete")}
            second = wl(*args, env=env)
            _check_secrets_after(secrets, storage, second, out)
            refetched = storage.total_bytes_served - served_before
            figures.update(second_exit=second.returncode, bytes_refetched=refetched)
            assert second.returncode == EXIT_OK, second.stderr[-2500:]
            report = _report(second.stdout)
            statuses = {f["rel"]: f["status"] for f in report["files"]}
            for rel in finished - replaced:
                assert statuses[rel] == "already-complete", f"{rel} was fetched again"
            unfinished = sum(files[r].size for r in files if r not in finished or r in replaced)
            # A byte flipped in transit and journaled before the first run stopped is found only
            # by the whole file's sha256 in the re-run: that file is fetched again from byte 0,
            # on top of its remainder. (There is no per-range checksum to find the bad range.)
            flipped = {p.rel for p in sched.faults if p.fault.kind == "flip_byte"
                       and _fired(p, key(p.rel), records, files[p.rel].size)}
            unfinished += sum(files[r].size for r in flipped - finished)
            assert refetched <= unfinished, (
                f"the clean re-run fetched {refetched} bytes; only {unfinished} were missing: "
                + "\n".join(ln for ln in second.stderr.splitlines() if " DEBUG " not in ln))
            figures["outcome"] = "exit3-then-resumed"
        else:
            report = _report(first.stdout)
            assert report.get("ok") is True, first.stdout[-2000:]
            figures["outcome"] = "ok"

        for rel in files:
            got = _sha(out / rel)
            if rel not in replaced:
                assert got == current[rel], f"{rel} differs from the source"
            elif sched.with_sha256:
                # Pinned: the old version if it was whole before the replacement showed, else
                # the new one, which only a re-run with a fresh manifest may accept.
                assert got == (current[rel] if resumed else old[rel]), f"{rel}: wrong version"
            else:
                assert got in (current[rel], old[rel]), f"{rel} is neither version"
        receipt = out / ".weightlift" / "receipt.json"
        assert receipt.exists()
    except BaseException as exc:
        figures.setdefault("outcome", "FAILED")
        raise AssertionError(f"{context}\n{type(exc).__name__}: {exc}") from exc
    finally:
        figures.update(wall_s=round(time.monotonic() - t0, 3), model_bytes=sum(
            f.size for f in files.values()), bytes_served=storage.total_bytes_served)
        figures["served_ratio"] = round(figures["bytes_served"] / figures["model_bytes"], 3)
        chaos_report("chaos-trial", **figures)


def _check_secrets_after(secrets: Any, storage: StorageEmulator, result: Any,
                         out: Path) -> None:
    """The `wl` fixture checked this run before its signatures were known: check again."""
    secrets.add_served(storage)
    secrets.check(result.stdout, "stdout")
    secrets.check(result.stderr, "stderr")
    secrets.check_tree(out)
    assert not re.search(r"X-Amz-(Signature|Credential)=", result.stderr)


def test_schedules_cover_every_fault_kind_over_a_ci_run(request: pytest.FixtureRequest) -> None:
    """The CI-size run (20 seeds from the default base) exercises the whole fault catalogue,
    so a small run is not quietly a run without, say, gzip or replaced objects."""
    base = request.config.getoption("--chaos-seed")
    files = [FileInfo("config.json", 113), FileInfo("a.safetensors", 1_400_000, 400),
             FileInfo("b.safetensors", 1_400_000, 400)]
    kinds: Counter[str] = Counter()
    retry_after: set[str] = set()
    for i in range(max(20, request.config.getoption("trials"))):
        sched = build_schedule(base + i, files, now=1.8e9)
        kinds.update(sched.kinds())
        for p in sched.faults:
            if p.fault.retry_after is not None:
                retry_after.add("date" if "GMT" in p.fault.retry_after else
                                "huge" if float(p.fault.retry_after) > 3600 else "small")
        assert all(p.times >= 1 for p in sched.faults)
        assert sum(p.times >= FOREVER for p in sched.faults if p.rel != "*") <= 1
    assert {"drop_after", "stall", "status", "expire", "wrong_content_range", "ignore_range",
            "flip_byte", "replace_object", "gzip", "throttle"} <= set(kinds), kinds


@pytest.mark.parametrize("form", ["seconds", "date"])
def test_a_huge_retry_after_fails_that_file_at_once_and_a_rerun_completes(
        threaded_platforms: ThreadedPlatforms, tmp_path: Path, wl: Any, secrets: Any,
        form: str) -> None:
    """Storage asking to come back in a day is not slept on (not even for the 60 s cap): that
    file fails at once with the wait in its message, the others finish, state is kept."""
    tp = threaded_platforms
    secrets.add(tp.emu.axom_key)
    model_id, originals, files = _model(tp, 5)
    shard = sorted(r for r in files if r.endswith(".safetensors"))[0]
    value = "86400" if form == "seconds" else http_date(time.time() + 86400)
    tp.emu.storage.inject(f"{model_id}/{shard}", Fault.status(429, retry_after=value))
    out = tmp_path / "model"
    args = ("pull", f"axom://models/{model_id}", "-o", str(out), "--json")
    env = {**tp.env(), **CHILD_ENV}
    t0 = time.monotonic()
    first = wl(*args, env=env)
    assert first.returncode == EXIT_TRANSFER, first.stderr[-2000:]
    assert time.monotonic() - t0 < 30
    errors = [ln for ln in first.stderr.splitlines() if ln.startswith("weightlift: error:")]
    assert len(errors) == 1
    assert f"{shard}: storage asks to wait 1 day before trying again" in errors[0]
    done = {f["rel"] for f in json.loads(first.stdout)["files"] if f["status"] == "downloaded"}
    assert done == set(files) - {shard}
    assert not (out / shard).exists()
    second = wl(*args, env=env)
    assert second.returncode == EXIT_OK, second.stderr[-2000:]
    for rel, data in originals.items():
        assert _sha(out / rel) == hashlib.sha256(data).hexdigest()
    _check_secrets_after(secrets, tp.emu.storage, second, out)


@pytest.mark.parametrize("pinned", [False, True], ids=["no-sha256", "sha256-pinned"])
def test_a_replaced_object_ends_as_one_version(threaded_platforms: ThreadedPlatforms,
                                               tmp_path: Path, wl: Any, secrets: Any,
                                               pinned: bool) -> None:
    """Replaced mid-pull: the file starts over once (not once per request in flight). With
    no sha256 it ends as the new version; with the manifest pinning the old sha256 it fails
    clearly (exit 3), keeps the new bytes, and a re-run with a fresh manifest finishes from
    disk without fetching them again."""
    tp = threaded_platforms
    secrets.add(tp.emu.axom_key)
    tp.emu.manifest_sha256 = pinned
    model_id, originals, files = _model(tp, 11)
    shard = sorted(r for r in files if r.endswith(".safetensors"))[1]
    info = files[shard]
    assert info.data_start is not None
    new = replacement(originals[shard], info.data_start, 3)
    storage = tp.emu.storage
    storage.inject(f"{model_id}/{shard}", Fault.replace_object(new), from_offset=256 << 10)
    out = tmp_path / "model"
    args = ("pull", f"axom://models/{model_id}", "-o", str(out), "--json",
            "--connections", "4", "--chunk-size", "128K")
    env = {**tp.env(), **CHILD_ENV}
    first = wl(*args, env=env)
    report = json.loads(first.stdout)
    assert report["totals"]["restarts"] == 1, first.stderr[-2000:]
    # Requests in flight when it changed cost a tiny 412 each (If-Match), not the new object.
    model = sum(f.size for f in files.values())
    assert storage.total_bytes_served <= model + info.size + 4 * (128 << 10)
    if not pinned:
        assert first.returncode == EXIT_OK, first.stderr[-2000:]
        assert (out / shard).read_bytes() == new
        return
    assert first.returncode == EXIT_TRANSFER, first.stderr[-2000:]
    errors = [ln for ln in first.stderr.splitlines() if ln.startswith("weightlift: error:")]
    assert len(errors) == 1
    assert f"{shard}: the object changed on storage during the pull" in errors[0]
    assert "fresh manifest" in errors[0]
    assert not (out / shard).exists()
    served = storage.total_bytes_served
    second = wl(*args, env=env)
    assert second.returncode == EXIT_OK, second.stderr[-2000:]
    assert storage.total_bytes_served == served  # the new bytes were kept, not fetched again
    assert (out / shard).read_bytes() == new
    _check_secrets_after(secrets, storage, second, out)
