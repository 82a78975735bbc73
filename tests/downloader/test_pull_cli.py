"""`weightlift pull` as a user runs it: a subprocess against the emulator on loopback."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from weightlift.emulator.faults import Fault

MiB = 1 << 20


def _data(n: int, seed: int) -> bytes:
    import random

    return random.Random(seed).randbytes(n)


def _weightlift(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "weightlift.cli", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=120, **kw)


def _manifest(server, files: dict[str, bytes], path, lifetime: float = 600) -> str:
    path.write_text(json.dumps({"files": [
        {"rel": rel, "size": len(d), "url": server.presign(rel, lifetime=lifetime)}
        for rel, d in files.items()]}))
    return str(path)


def test_pull_json_report_and_exit_0(threaded_storage, tmp_path):
    files = {"a.bin": _data(3 * MiB, 1), "dir/b.json": b"{}"}
    for rel, d in files.items():
        threaded_storage.emu.put_bytes(rel, d)
    m = _manifest(threaded_storage, files, tmp_path / "m.json")
    out = _weightlift("pull", m, "-o", str(tmp_path / "out"), "--json", "--chunk-size", "512K")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] is True
    assert {f["rel"]: f["sha256"] for f in report["files"]} == {
        rel: hashlib.sha256(d).hexdigest() for rel, d in files.items()}
    assert report["totals"]["bytes"] == sum(map(len, files.values()))
    assert "X-Amz" not in out.stdout + out.stderr


@pytest.mark.parametrize(("manifest", "why"), [
    ('{"files": [{"rel": "../evil", "size": 1, "url": "http://127.0.0.1/x"}]}', "'..'"),
    ('{"files": [{"rel": "/abs", "size": 1, "url": "http://127.0.0.1/x"}]}', "absolute"),
    ('{"files": [{"rel": "a", "size": -1, "url": "http://127.0.0.1/x"}]}', "negative"),
    ('{"files": [{"rel": "a", "size": 1, "url": "file:///etc/passwd"}]}', "not http"),
    ('{"files": 3}', "not a list"),
    ("not json", "invalid JSON"),
])
def test_bad_manifest_exits_2_one_line_nothing_written(tmp_path, manifest, why):
    path = tmp_path / "m.json"
    path.write_text(manifest)
    out_dir = tmp_path / "out"
    out = _weightlift("pull", str(path), "-o", str(out_dir))
    assert out.returncode == 2
    assert why in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert "Traceback" not in out.stderr
    assert not out_dir.exists()


def test_missing_manifest_and_bad_options(tmp_path):
    out = _weightlift("pull", str(tmp_path / "nope.json"), "-o", str(tmp_path / "o"))
    assert out.returncode == 2
    assert "not found" in out.stderr
    out = _weightlift("pull", "x.json", "-o", "o", "--connections", "0")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr


def test_transfer_failure_exits_3_and_resume_completes(threaded_storage, tmp_path):
    files = {"a.bin": _data(2 * MiB, 2)}
    threaded_storage.emu.put_bytes("a.bin", files["a.bin"])
    threaded_storage.emu.inject("a.bin", Fault.status(500), times=10_000, from_offset=MiB)
    m = _manifest(threaded_storage, files, tmp_path / "m.json")
    env = {"WEIGHTLIFT_RETRY_BASE": "0.001"}
    out = _weightlift("pull", m, "-o", str(tmp_path / "out"), "--chunk-size", "256K", env=env)
    assert out.returncode == 3, out.stderr
    assert "run the same command again" in out.stderr
    threaded_storage.emu.clear_faults()
    out = _weightlift("pull", m, "-o", str(tmp_path / "out"), "--chunk-size", "256K", env=env)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "out" / "a.bin").read_bytes() == files["a.bin"]


def test_kill_9_mid_download_then_resume_refetches_little(threaded_storage, tmp_path):
    size = 128 * MiB
    data = _data(size, 3)
    threaded_storage.emu.put_bytes("model.bin", data)
    # Serve slowly enough that the kill lands mid-download.
    threaded_storage.emu.inject("model.bin", Fault.throttle(8 * MiB), times=10_000)
    m = _manifest(threaded_storage, {"model.bin": data}, tmp_path / "m.json")
    out_dir = tmp_path / "out"
    cmd = [sys.executable, "-m", "weightlift.cli", "pull", m, "-o", str(out_dir), "-q",
           "--connections", "4", "--chunk-size", "4M"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while threaded_storage.emu.total_bytes_served < size // 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out_dir / "model.bin").exists()  # never a partial file under the final name
    served_before = threaded_storage.emu.total_bytes_served
    threaded_storage.emu.clear_faults()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (out_dir / "model.bin").read_bytes() == data
    refetched = threaded_storage.emu.total_bytes_served - served_before
    # Everything served before the kill, minus what was in flight, must not come again.
    assert served_before + refetched <= size * 1.10, (served_before, refetched)
    print(f"served before kill {served_before}, after {refetched}, size {size}")
