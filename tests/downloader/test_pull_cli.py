"""`weightlift pull` as a user runs it: a subprocess against the emulator on loopback."""

import hashlib
import json
import os
import re
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


def test_broken_safetensors_header_stops_early_with_exit_1(threaded_storage, tmp_path):
    from weightlift.emulator.model_gen import write_safetensors

    good = tmp_path / "good.safetensors"
    write_safetensors(good, {"w": ("F32", [4 * MiB], bytes(16 * MiB))})
    raw = bytearray(good.read_bytes())
    raw[raw.index(b'"F32"'):raw.index(b'"F32"') + 5] = b'"XXX"'  # unknown dtype
    threaded_storage.emu.put_bytes("model.safetensors", bytes(raw))
    threaded_storage.emu.inject("model.safetensors", Fault.throttle(4 * MiB), times=10_000)
    m = _manifest(threaded_storage, {"model.safetensors": bytes(raw)}, tmp_path / "m.json")
    out = _weightlift("pull", m, "-o", str(tmp_path / "out"), "--connections", "2",
                      "--chunk-size", "1M")
    assert out.returncode == 1, out.stderr
    assert "model.safetensors: broken safetensors header" in out.stderr
    assert "XXX" in out.stderr
    assert "Traceback" not in out.stderr
    # It stopped after the header, not after 16 MiB.
    assert threaded_storage.emu.total_bytes_served < 6 * MiB
    assert not (tmp_path / "out" / "model.safetensors").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_exits_130_and_keeps_state(threaded_storage, tmp_path, sig):
    size = 32 * MiB
    data = _data(size, 4)
    threaded_storage.emu.put_bytes("a.bin", data)
    threaded_storage.emu.inject("a.bin", Fault.throttle(4 * MiB), times=10_000)
    m = _manifest(threaded_storage, {"a.bin": data}, tmp_path / "m.json")
    out_dir = tmp_path / "out"
    cmd = [sys.executable, "-m", "weightlift.cli", "pull", m, "-o", str(out_dir),
           "--connections", "2", "--chunk-size", "2M"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while threaded_storage.emu.total_bytes_served < 4 * MiB and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "resume" in err
    assert "Traceback" not in err
    journals = list((out_dir / ".weightlift" / "parts").glob("*.journal"))
    assert journals, "the journal must be saved on interrupt"
    threaded_storage.emu.clear_faults()
    before = threaded_storage.emu.total_bytes_served
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (out_dir / "a.bin").read_bytes() == data
    assert before + (threaded_storage.emu.total_bytes_served - before) <= size * 1.10


def test_not_enough_disk_fails_up_front_with_exit_3(threaded_storage, tmp_path):
    threaded_storage.emu.put_bytes("a.bin", b"x" * 10)
    huge = 1 << 60
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"files": [
        {"rel": "a.bin", "size": huge, "url": threaded_storage.presign("a.bin")}]}))
    out = _weightlift("pull", str(path), "-o", str(tmp_path / "out"), "--json")
    assert out.returncode == 3, out.stderr
    doc = json.loads(out.stdout)  # a failure has the same shape as a success (schema 1)
    assert (doc["schema"], doc["kind"], doc["ok"], doc["exit_code"]) == (1, "pull", False, 3)
    assert doc["error"] == out.stderr.split("error: ", 1)[1].strip()
    assert doc["output"] == str(tmp_path / "out")
    assert "no space left" in out.stderr
    assert "nothing was fetched" in out.stderr
    assert threaded_storage.emu.total_bytes_served == 0


def test_demo_runs_the_whole_flow(tmp_path):
    out = _weightlift("demo", "-o", str(tmp_path / "model"), "--size", "32M")
    assert out.returncode == 0, out.stderr
    assert "4/4 gate passed" in out.stderr
    # Issue 12 §3.10: a small demo model still shows a refresh (its pull outlives a URL).
    refreshed = re.search(r"refreshed (\d+) time", out.stderr)
    assert refreshed, out.stderr
    assert int(refreshed.group(1)) >= 1, out.stderr
    assert (tmp_path / "model" / ".weightlift" / "receipt.json").exists()
    check = _weightlift("verify", str(tmp_path / "model"))
    assert check.returncode == 0, check.stderr


def test_many_failed_files_print_ten_lines_then_a_count(threaded_storage, tmp_path):
    files = {f"f{i:02}.bin": _data(1000, 100 + i) for i in range(12)}
    for rel, d in files.items():
        threaded_storage.emu.put_bytes(rel, d)
        threaded_storage.emu.inject(rel, Fault.status(404), times=10)
    m = _manifest(threaded_storage, files, tmp_path / "m.json")
    out = _weightlift("pull", m, "-o", str(tmp_path / "out"), "--json")
    assert out.returncode == 3, out.stderr
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("weightlift: error:")]
    assert len(errors) == 11, errors
    assert errors[-1] == ("weightlift: error: … and 2 more failed file(s); --json lists each")
    assert len({f["rel"] for f in json.loads(out.stdout)["files"]
                if f["status"] == "failed"}) == 12
