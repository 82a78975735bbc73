"""`weightlift verify DIR` while `weightlift pull ... -o DIR` runs (issue 11, defect 9): it says
a pull is in progress (exit 2, one line) instead of judging a half-pulled folder, and the pull
goes on undisturbed to a checkpoint that verifies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from weightlift.downloader.workarea import pull_in_progress
from weightlift.emulator.faults import Fault
from weightlift.emulator.model_gen import generate_checkpoint

MiB = 1 << 20


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "weightlift.cli", *args]


def _verify(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_cli("verify", str(folder)), capture_output=True, text=True,
                          timeout=120, check=False)



def _throttled_manifest(storage, tmp_path: Path, total: int, shards: int, seed: int,
                        rate: int):
    """A generated checkpoint served by ``storage`` at ``rate`` bytes/s, and its manifest."""
    src = tmp_path / "src"
    ckpt = generate_checkpoint(src, total_bytes=total, shards=shards, seed=seed)
    files = []
    for rel in ckpt.files:
        storage.emu.put_file(rel, src / rel)
        files.append({"rel": rel, "size": (src / rel).stat().st_size,
                      "url": storage.presign(rel, lifetime=600)})
        storage.emu.inject(rel, Fault.throttle(rate), times=1000)
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"files": files}))
    return ckpt, manifest

def test_verify_during_a_pull_says_so_and_the_pull_completes(threaded_storage, tmp_path):
    # Slow enough that the pull is still running while verify looks (~2 s in all).
    ckpt, manifest = _throttled_manifest(threaded_storage, tmp_path, 2 * MiB, 2, 3, 600_000)
    out = tmp_path / "out"

    pull = subprocess.Popen(_cli("pull", str(manifest), "-o", str(out), "-q", "--connections",
                                 "2", "--expect-params", str(ckpt.params)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "WEIGHTLIFT_TRACEBACK": ""})
    try:
        deadline = time.monotonic() + 30
        while not pull_in_progress(out):
            assert pull.poll() is None, "the pull ended before verify could look"
            assert time.monotonic() < deadline, "the pull never took its lock"
            time.sleep(0.02)
        during = _verify(out)
        still_running = pull.poll() is None
        _, err = pull.communicate(timeout=120)
    finally:
        if pull.poll() is None:
            pull.kill()
            pull.communicate(timeout=10)

    assert still_running, "the pull ended while verify ran: throttle it more"
    assert during.returncode == 2, (during.stdout, during.stderr)
    lines = during.stderr.strip().splitlines()
    assert len(lines) == 1, during.stderr
    assert "a pull into" in lines[0]
    assert "is in progress" in lines[0]
    assert "no .safetensors" not in during.stdout + during.stderr
    assert "Traceback" not in during.stderr

    assert pull.returncode == 0, err[-3000:]  # looking did not disturb it
    after = _verify(out)
    assert after.returncode == 0, after.stderr
    for rel in ckpt.files:
        assert (out / rel).read_bytes() == (tmp_path / "src" / rel).read_bytes()


def test_verify_after_a_killed_pull_names_the_unfinished_files(threaded_storage, tmp_path):
    """A pull killed with SIGKILL holds no lock; verify says the pull did not finish rather
    than only that there are no shards."""
    ckpt, manifest = _throttled_manifest(threaded_storage, tmp_path, 1 * MiB, 1, 4, 100_000)
    out = tmp_path / "out"
    pull = subprocess.Popen(_cli("pull", str(manifest), "-o", str(out), "-q"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        parts = out / ".weightlift" / "parts"
        while not (parts.is_dir() and any(p.suffix == ".part" for p in parts.iterdir())):
            assert pull.poll() is None, "the pull ended before it was killed"
            assert time.monotonic() < deadline, "no part file appeared"
            time.sleep(0.02)
    finally:
        pull.kill()
        pull.wait(timeout=10)
    res = _verify(out)
    assert res.returncode == 1, res.stderr
    assert "a pull into this folder did not finish" in res.stderr
    assert "run the same pull again" in res.stderr
