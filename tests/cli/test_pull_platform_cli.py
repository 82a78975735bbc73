"""`weightlift pull` with every platform SOURCE form, as a user runs it: a child process against
the emulated platforms, with URLs short-lived enough that the pull refreshes them on the way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from weightlift.emulator.platforms import ThreadedPlatforms
from weightlift.emulator.runs import RunScript

SMALL: dict[str, Any] = {"model_bytes": 3 << 20, "shards": 3}


def _pull(tp: ThreadedPlatforms, source: str, out: Path, *extra: str,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weightlift.cli", "pull", source, "-o", str(out), *extra],
        capture_output=True, text=True, timeout=90,
        env={**os.environ, **tp.env(), **(env or {})})


def _no_secrets(tp: ThreadedPlatforms, out: subprocess.CompletedProcess[str], *files: Path) -> None:
    texts = [out.stdout, out.stderr, *(f.read_text() for f in files if f.exists())]
    for text in texts:
        assert "Traceback" not in text
        assert tp.emu.axom_key not in text
        assert tp.emu.tensorone_key not in text
        assert "X-Amz-Signature" not in text
        assert "sig=" not in text


def _source(tp: ThreadedPlatforms, form: str) -> tuple[str, str]:
    """(SOURCE, job id) for one of the documented forms, its run already completed."""
    emu = tp.emu
    if form.startswith("axom"):
        job = emu.add_axom_job(RunScript.instant(**SMALL))
        if form == "axom-model":
            return f"axom://models/{emu.axom_model_id(job)}", job
        return f"axom://jobs/{job}", job
    job = emu.add_tensorone_job(RunScript.instant(**SMALL))
    if form == "tensorone-checkpoint":
        emu.prepare(job)
        first = emu.job("tensorone", job)
        assert first is not None
        return f"tensorone://jobs/{job}/checkpoints/{first.checkpoint_ids[0]}", job
    return f"tensorone://jobs/{job}", job


@pytest.mark.parametrize("form", ["axom-job", "axom-model", "tensorone-job",
                                  "tensorone-checkpoint"])
def test_every_platform_source_pulls_and_passes_the_parameter_gate(
        threaded_platforms: ThreadedPlatforms, tmp_path: Path, form: str) -> None:
    tp = threaded_platforms
    tp.emu.url_lifetime = 1.0  # expires during the pull: refreshes go through the API
    tp.emu.storage.inject("*", _throttle(), times=1_000_000)
    source, job = _source(tp, form)
    out = tmp_path / "model"
    done = _pull(tp, source, out, "--json", "--connections", "4", "--chunk-size", "256K")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True
    assert report["expected_params"] == tp.emu.expected_params(job)
    assert report["verification"]["params"] == tp.emu.expected_params(job)
    assert report["totals"]["refreshes"] >= 1
    names = {f["rel"] for f in report["files"]}
    if form.startswith("axom"):
        assert names == {"config.json", "model.safetensors.index.json",
                         *(f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3))}
    else:
        assert names == {"model.safetensors"}
    _no_secrets(tp, done, out / ".weightlift" / "receipt.json")
    again = _pull(tp, source, out, "--json")  # a finished pull fetches nothing
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["totals"]["bytes_fetched"] == 0


def _throttle() -> Any:
    from weightlift.emulator.faults import Fault

    return Fault.throttle(500_000)  # 4 connections × 0.5 MB/s: a 3 MiB pull lasts ~1.6 s


def test_a_run_still_going_is_exit_4_and_says_how_to_wait(
        threaded_platforms: ThreadedPlatforms, tmp_path: Path) -> None:
    tp = threaded_platforms
    job = tp.emu.add_axom_job(RunScript(steps_per_second=1.0, **SMALL))
    done = _pull(tp, f"axom://jobs/{job}", tmp_path / "m")
    assert done.returncode == 4
    line = done.stderr.strip().splitlines()[-1]
    assert "not completed yet" in line
    assert f"watch axom://jobs/{job} --pull" in line
    assert not (tmp_path / "m").exists()  # nothing was written
    _no_secrets(tp, done)


@pytest.mark.parametrize(("env", "needle"), [
    ({"AXOM_KEY": "axom_live_wrong"}, "check AXOM_KEY"),
    ({"AXOM_KEY": ""}, "AXOM_KEY is not set"),
])
def test_key_trouble_is_exit_4_with_advice(threaded_platforms: ThreadedPlatforms,
                                           tmp_path: Path, env: dict[str, str],
                                           needle: str) -> None:
    tp = threaded_platforms
    job = tp.emu.add_axom_job(RunScript.instant(**SMALL))
    done = _pull(tp, f"axom://jobs/{job}", tmp_path / "m", "--json", env=env)
    assert done.returncode == 4
    assert needle in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert json.loads(done.stdout)["exit_code"] == 4
    assert "axom_live_wrong" not in done.stdout + done.stderr


def test_unknown_model_names_the_id(threaded_platforms: ThreadedPlatforms,
                                    tmp_path: Path) -> None:
    done = _pull(threaded_platforms, "axom://models/no-such-model", tmp_path / "m")
    assert done.returncode == 4
    assert "no-such-model" in done.stderr
    assert "not found" in done.stderr.lower()


def test_malformed_platform_uri_is_a_usage_error(threaded_platforms: ThreadedPlatforms,
                                                 tmp_path: Path) -> None:
    done = _pull(threaded_platforms, "axom://jobz/123", tmp_path / "m")
    assert done.returncode == 2
    assert "axom://jobs/" in done.stderr
