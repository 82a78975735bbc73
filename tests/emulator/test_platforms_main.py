"""The platforms served from threads (for subprocess tests) and `python -m weightlift.emulator`."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from weightlift.emulator.__main__ import parse_size
from weightlift.emulator.platforms import ThreadedPlatforms
from weightlift.emulator.runs import RunScript


def get_json(url: str, key: str | None = None) -> Any:
    req = urllib.request.Request(url)
    if key is not None:
        req.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_threaded_platforms_serve_both_apis_on_separate_origins(
        threaded_platforms: ThreadedPlatforms) -> None:
    tp = threaded_platforms
    env = tp.env()
    assert set(env) == {"AXOM_API_BASE", "AXOM_KEY", "TENSORONE_API_BASE", "TENSORONE_API_KEY"}
    assert env["AXOM_API_BASE"] == tp.axom_base
    assert tp.axom_base.endswith("/api")
    assert tp.tensorone_base.endswith("/v2")
    assert urlsplit(tp.storage_base).port != urlsplit(tp.axom_base).port
    assert tp.endpoints.env() == env
    job = tp.emu.add_axom_job(RunScript.instant(model_bytes=256 << 10))
    t1 = tp.emu.add_tensorone_job(RunScript.instant(model_bytes=256 << 10))
    assert get_json(f"{tp.axom_base}/jobs/{job}", env["AXOM_KEY"])["status"] == "completed"
    manifest = get_json(f"{tp.axom_base}/models/{tp.emu.axom_model_id(job)}/download",
                        env["AXOM_KEY"])
    with urllib.request.urlopen(manifest["files"][-1]["url"], timeout=10) as resp:
        assert json.loads(resp.read())["model_type"] == "weightlift-synthetic"
    models = get_json(f"{tp.tensorone_base}/training/models?trainingJobId={t1}",
                      env["TENSORONE_API_KEY"])
    assert models["models"][0]["size"]["parameters"] == tp.emu.expected_params(t1)
    with pytest.raises(urllib.error.HTTPError) as err:
        get_json(f"{tp.axom_base}/jobs/{job}")
    assert err.value.code == 401
    err.value.close()  # an HTTPError holds the response's socket open


def _start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "weightlift.emulator", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _read_until(proc: subprocess.Popen[str], marker: str) -> str:
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + 20
    while marker not in seen and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
    assert marker in seen, seen
    return seen


def _interrupt(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, err


def test_main_serves_platforms_with_one_job_each_and_exits_130(tmp_path: Path) -> None:
    proc = _start(["--port", "0", "--speed", "40", "--model-size", "256KB",
                   "--url-lifetime", "30", "--workdir", str(tmp_path / "w")], tmp_path)
    try:
        text = _read_until(proc, "curl ")
        axom_base = re.search(r"Axom API:\s+(\S+)\s+key (\S+)", text)
        t1_base = re.search(r"TensorOne API:\s+(\S+)\s+key (\S+)", text)
        axom_job = re.search(r"Axom job:\s+(\S+)", text)
        t1_job = re.search(r"TensorOne job:\s+(\S+)", text)
        assert axom_base, text
        assert t1_base, text
        assert axom_job, text
        assert t1_job, text
        assert f"weightlift watch axom://jobs/{axom_job[1]} --pull -o ./model" in text
        assert f"AXOM_API_BASE={axom_base[1]} AXOM_KEY={axom_base[2]}" in text
        deadline = time.monotonic() + 15
        while True:
            job = get_json(f"{axom_base[1]}/jobs/{axom_job[1]}", axom_base[2])
            if job["status"] == "completed" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert job["status"] == "completed"
        assert job["retries"] == 1  # the default script has one preemption
        manifest = get_json(f"{axom_base[1]}/models/{job['model_id']}/download", axom_base[2])
        assert len(manifest["files"]) == 4
        exp = re.search(r"X-Amz-Expires=(\d+)", manifest["files"][0]["url"])
        assert exp
        assert 30 <= int(exp[1]) <= 31
        with urllib.request.urlopen(manifest["files"][0]["url"], timeout=10) as resp:
            assert len(resp.read()) == manifest["files"][0]["size"]
        t1 = get_json(f"{t1_base[1]}/training/jobs/{t1_job[1]}", t1_base[2])
        assert t1["jobId"] == t1_job[1]
    finally:
        code, err = _interrupt(proc)
    assert code == 130
    assert "Traceback" not in err


def test_storage_subcommand_still_works(tmp_path: Path) -> None:
    src = tmp_path / "files"
    src.mkdir()
    (src / "a.bin").write_bytes(b"x" * 1000)
    manifest_path = tmp_path / "m.json"
    proc = _start(["storage", "--dir", str(src), "--port", "0", "--manifest",
                   str(manifest_path)], tmp_path)
    try:
        _read_until(proc, "manifest:")
        manifest = json.loads(manifest_path.read_text())
        with urllib.request.urlopen(manifest["files"][0]["url"], timeout=10) as resp:
            assert resp.read() == b"x" * 1000
    finally:
        code, _ = _interrupt(proc)
    assert code == 130


@pytest.mark.parametrize(("text", "n"), [("64MB", 64 << 20), ("1.5G", 3 << 29),
                                         ("262144", 1 << 18), ("256kb", 256 << 10)])
def test_parse_size(text: str, n: int) -> None:
    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["", "12 parsecs", "1KB", "-5MB"])
def test_parse_size_refuses(text: str) -> None:
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        parse_size(text)
