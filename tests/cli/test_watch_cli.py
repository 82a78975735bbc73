"""`weightlift watch` as a user runs it: a child process against the emulated platforms.

Runs are the emulator's accelerated ones (about 1.5 s, one preemption), starting at the first
poll (fixture `watched_platforms`); `--interval 0.05` keeps the poll close behind them. A poll
may miss a short phase (`preempted` lasts ~0.1 s), so assertions are about what is always said,
not about which poll saw what.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from weightlift.emulator.platforms import ThreadedPlatforms
from weightlift.emulator.runs import RunScript

FAST = 3.0  # × the emulator's default speed
OOM = "CUDA error: out of memory on worker gpu-3 (retries exhausted)"


def _weightlift(tp: ThreadedPlatforms, *args: str,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "weightlift.cli", *args], capture_output=True,
                          text=True, env={**os.environ, **tp.env(), **(env or {})}, timeout=90)


def _watch(tp: ThreadedPlatforms, source: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return _weightlift(tp, "watch", source, "--interval", "0.05", *extra)


def _no_noise(out: subprocess.CompletedProcess[str]) -> None:
    text = out.stdout + out.stderr
    assert "Traceback" not in text
    assert "X-Amz" not in text  # presigned signatures never printed
    assert "axom_live_" not in text  # nor the key
    assert "tpo_test_" not in text


def test_axom_run_through_a_preemption_to_completion_exits_0(
        watched_platforms: ThreadedPlatforms) -> None:
    tp = watched_platforms
    job = tp.emu.add_axom_job(RunScript(preempt_at_step=50).scaled(FAST))
    out = _watch(tp, f"axom://jobs/{job}")
    assert out.returncode == 0, out.stderr
    _no_noise(out)
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert lines[0].startswith(f"watching axom job {job}: polling every 0.05s")
    assert "llama-3-8b-sft: " in lines[1]
    # The requeue is told calmly, whichever poll saw it.
    assert "not an error" in out.stderr
    assert "running again at step" in out.stderr
    assert "error:" not in out.stderr
    assert any("step 120/120 [####################] 100%  loss" in ln for ln in lines)
    assert any(ln.strip().startswith("│ ") for ln in lines)  # the run's own log lines
    assert " completed: 120/120 steps, final loss " in lines[-1]
    assert "1 preemption absorbed by the platform" in lines[-1]


def test_axom_run_that_fails_exits_4_with_the_platforms_error(
        watched_platforms: ThreadedPlatforms, tmp_path: Path) -> None:
    tp = watched_platforms
    job = tp.emu.add_axom_job(RunScript(preempt_at_step=30, fail_at_step=70).scaled(FAST))
    out = _watch(tp, f"axom://jobs/{job}", "--pull", "-o", str(tmp_path / "model"))
    assert out.returncode == 4, out.stderr
    _no_noise(out)
    lines = out.stderr.splitlines()
    assert " failed at step 70/120; watched for " in lines[-2]
    assert lines[-1] == (f"weightlift: error: axom job {job} failed at step 70/120: {OOM} "
                         "(nothing to pull)")
    assert not (tmp_path / "model").exists()


def test_json_lines_parse_and_end_with_done(watched_platforms: ThreadedPlatforms) -> None:
    tp = watched_platforms
    # A pause long enough that a poll surely sees it.
    job = tp.emu.add_tensorone_job(RunScript(preempt_at_step=50, preempted_s=1.0).scaled(FAST))
    out = _watch(tp, f"tensorone://jobs/{job}", "--json")
    assert out.returncode == 0, out.stderr
    _no_noise(out)
    assert out.stderr == ""
    events = [json.loads(line) for line in out.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert {"status", "progress", "metrics", "done"} <= set(kinds)
    assert kinds[0] == "status"
    assert kinds[-1] == "done"
    assert events[-1]["ok"] is True
    assert events[-1]["job_id"] == job
    assert events[-1]["platform"] == "tensorone"
    steps = [e["step"] for e in events if e["event"] == "progress"]
    assert steps[-1] == 120
    statuses = [e["status"] for e in events if e["event"] == "status"]
    assert "paused" in statuses
    assert statuses[-1] == "completed"
    assert any(e["event"] == "metrics" and isinstance(e["loss"], float) for e in events)


def test_watch_pull_pulls_and_verifies_the_model(watched_platforms: ThreadedPlatforms,
                                                  tmp_path: Path) -> None:
    tp = watched_platforms
    job = tp.emu.add_axom_job(RunScript(preempt_at_step=50, model_bytes=1 << 20).scaled(FAST))
    out_dir = tmp_path / "model"
    out = _watch(tp, f"axom://jobs/{job}", "--pull", "-o", str(out_dir), "--json")
    assert out.returncode == 0, out.stderr
    _no_noise(out)
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert [e["event"] for e in events][-2:] == ["done", "pull"]
    report = events[-1]["report"]
    assert report["ok"] is True
    assert report["expected_params"] == tp.emu.expected_params(job)
    assert report["verification"]["params"] == tp.emu.expected_params(job)
    assert {f["rel"] for f in report["files"]} >= {"config.json",
                                                   "model.safetensors.index.json"}
    for f in report["files"]:
        assert (out_dir / f["rel"]).stat().st_size == f["size"]


def test_watch_pull_human_output(watched_platforms: ThreadedPlatforms, tmp_path: Path) -> None:
    tp = watched_platforms
    job = tp.emu.add_tensorone_job(RunScript().scaled(FAST))
    out = _watch(tp, f"tensorone://jobs/{job}", "--pull", "-o", str(tmp_path / "ckpt"))
    assert out.returncode == 0, out.stderr
    _no_noise(out)
    text = out.stderr
    assert text.index(" completed: 120/120 steps") < text.index("pulling tensorone://jobs/")
    assert f"verified: {tp.emu.expected_params(job):,} parameters = expected" in text
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupting_watch_exits_130_and_says_the_run_goes_on(
        watched_platforms: ThreadedPlatforms, sig: signal.Signals) -> None:
    tp = watched_platforms
    job = tp.emu.add_axom_job(RunScript(steps_per_second=0.5))
    proc = subprocess.Popen([sys.executable, "-m", "weightlift.cli", "watch", f"axom://jobs/{job}",
                             "--interval", "0.05"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **tp.env()})
    try:
        assert proc.stderr is not None
        seen = [proc.stderr.readline(), proc.stderr.readline()]  # intro, first status line
        assert "llama-3-8b-sft: " in seen[1]
        time.sleep(0.2)
        proc.send_signal(sig)
        _, rest = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130
    assert "Traceback" not in rest
    assert rest.splitlines()[-1] == ("weightlift: stopped watching; the run itself goes on (run "
                                     "the same command to watch it again)")


def test_not_a_job_is_a_usage_error_and_a_missing_key_a_platform_error(
        watched_platforms: ThreadedPlatforms) -> None:
    tp = watched_platforms
    out = _watch(tp, "axom://models/some-model")
    assert out.returncode == 2
    assert "watch follows a training run" in out.stderr
    out = _weightlift(tp, "watch", "axom://jobs/abc", env={"AXOM_KEY": ""})
    assert out.returncode == 4
    assert "AXOM_KEY is not set" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


# -- in-process (same code, no interpreter start-up): the rarer endings -----------------------
def _run_in_process(tp: ThreadedPlatforms,
                    *argv: str) -> tuple[int | None, str, str, Exception | None]:
    import io

    from weightlift.cli.main import build_parser
    from weightlift.cli.watch_cmd import run
    from weightlift.downloader.errors import WeightliftError

    args = build_parser().parse_args(["watch", *argv, "--interval", "0.05"])
    out, err = io.StringIO(), io.StringIO()
    try:
        code: int | None = run(args, env=tp.env(), stdout=out, stderr=err)
        exc: Exception | None = None
    except WeightliftError as e:
        code, exc = None, e
    return code, out.getvalue(), err.getvalue(), exc


def test_cancelled_tensorone_run_is_a_platform_error(watched_platforms: ThreadedPlatforms) -> None:
    tp = watched_platforms
    job = tp.emu.add_tensorone_job(RunScript(cancel_at_step=30).scaled(FAST))
    code, out, err, exc = _run_in_process(tp, f"tensorone://jobs/{job}", "--json")
    assert code is None
    assert exc is not None
    assert exc.exit_code == 4
    assert exc.one_line().startswith(f"tensorone job {job} cancelled at step ")
    events = [json.loads(line) for line in out.splitlines()]
    assert events[-1]["event"] == "done"  # the run's end, not a second "error" line
    assert events[-1]["phase"] == "cancelled"
    assert events[-1]["exit_code"] == 4
    assert err == ""


def test_unknown_job_in_json_mode_ends_with_an_error_line(
        watched_platforms: ThreadedPlatforms) -> None:
    tp = watched_platforms
    code, out, err, exc = _run_in_process(tp, "axom://jobs/no-such-job", "--json")
    assert exc is not None
    assert exc.exit_code == 4
    assert "no-such-job" in exc.one_line()
    (line,) = out.splitlines()
    assert json.loads(line) == {"schema": 1, "kind": "watch", "source": "axom://jobs/no-such-job",
                                "job_id": None, "report": None, "event": "error",
                                "error": exc.one_line(), "exit_code": 4}


def test_already_completed_run_exits_0_at_once(watched_platforms: ThreadedPlatforms) -> None:
    tp = watched_platforms
    job = tp.emu.add_axom_job(RunScript.instant())
    code, out, err, exc = _run_in_process(tp, f"axom://jobs/{job}", "-q")
    assert exc is None
    assert code == 0
    assert out == ""
    (line,) = err.splitlines()
    assert line.endswith("llama-3-8b-sft: already completed: 120/120 steps, final loss "
                         + line.rsplit(" ", 1)[1])
