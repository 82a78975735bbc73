"""Issue 12 §3: the rough edges a new user hit, one test (or more) each, numbered as there.
(§3.3's `ls` is tested in test_cli_options.py; §3.10's demo refresh in
tests/downloader/test_pull_cli.py::test_demo_runs_the_whole_flow.)"""

from __future__ import annotations

import io
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import Served, serve_checkpoint, weightlift
from weightlift.cli.progress import Progress
from weightlift.downloader.events import BytesReceived, Event, PullStarted
from weightlift.emulator.faults import Fault
from weightlift.emulator.serve import StorageEndpoint
from weightlift.pulling import PullOptions, run_pull
from weightlift.settings import parse_count

MiB = 1 << 20


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def say(self, text: str) -> None:
        pass

    def close(self, *, interrupted: bool = False) -> None:
        pass


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_1_resumed_pull_counts_each_byte_once(threaded_storage: StorageEndpoint,
                                                    tmp_path: Path) -> None:
    data = bytes(range(256)) * (8 * MiB // 256)
    threaded_storage.emu.put_bytes("w.bin", data)
    threaded_storage.emu.inject("w.bin", Fault.status(500), times=10_000, from_offset=4 * MiB)
    url = threaded_storage.presign("w.bin")  # a plain URL: no size known up front
    env = {"WEIGHTLIFT_RETRY_BASE": "0.001"}
    options = PullOptions(chunk_size=MiB, connections=2, verify=False)
    first = await run_pull([url], tmp_path / "o", options, Recorder(), env=env)
    assert first.exit_code == 3
    threaded_storage.emu.clear_faults()
    rec = Recorder()
    second = await run_pull([url], tmp_path / "o", options, rec, env=env)
    assert second.ok
    started = next(e for e in rec.events if isinstance(e, PullStarted))
    assert started.resumed_bytes >= 4 * MiB
    assert started.total_bytes == len(data)  # not len(data) + resumed
    assert second.totals.bytes_present == started.resumed_bytes


def test_1_a_resumed_pull_says_what_was_already_there_on_a_terminal() -> None:
    tty = FakeTty()
    progress = Progress(quiet=False, stream=tty)
    progress(PullStarted(files=2, total_bytes=2 * MiB, resumed_bytes=MiB))
    progress(BytesReceived("a", MiB))
    progress.close()
    assert "resuming: 1.00 MiB of 2.00 MiB already here" in tty.getvalue()


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """The CLI in this process (no interpreter start-up): exit code and stderr."""
    from weightlift.cli.main import run

    code = run(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(("source", "says"), [
    ("axon://models/x", "unsupported SOURCE scheme 'axon://'"),
    ("axon://models/x", "did you mean axom://?"),
    ("tensorone:/jobs/x", "did you mean tensorone://jobs/x?"),
    ("s4://bucket/key", "did you mean s3://?"),
    ("meta-llama/Llama-3-8B", "use hf://meta-llama/Llama-3-8B"),
    ("http://127.0.0.1:9/", "names no file"),
])
def test_2_unsupported_or_typod_source_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                source: str, says: str) -> None:
    code, err = cli(["pull", source, "-o", str(tmp_path / "o")], capsys)
    assert code == 2, err
    (line,) = err.strip().splitlines()
    assert says in line
    if "scheme" in says or "meta-llama" in source:
        assert "hf://ORG/NAME[@REV]" in line
        assert "s3://BUCKET/KEY|PREFIX/" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("source", ["hf://org/name", "s3://bucket/key"])
def test_2_hf_and_s3_are_known_forms(tmp_path: Path, source: str) -> None:
    from weightlift.source_forms import check_source

    check_source(source)  # no "unsupported SOURCE scheme": the resolver takes it from here


def test_4_verbose_after_the_subcommand(served: Served, tmp_path: Path) -> None:
    run = weightlift("pull", str(served.manifest), "-o", str(tmp_path / "o"), "-vv")
    assert run.returncode == 0, run.stderr
    assert "DEBUG" in run.stderr
    check = weightlift("verify", str(tmp_path / "o"), "-v")
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize(("name", "value"), [
    ("WEIGHTLIFT_RETRY_BASE", "-1"), ("WEIGHTLIFT_STALL_TIMEOUT", "abc"),
    ("WEIGHTLIFT_LOG", "LOUD"), ("WEIGHTLIFT_CONNECTIONS", "0"),
    ("WEIGHTLIFT_HEADER_TIMEOUT", "soon"), ("WEIGHTLIFT_LOW_SPEED", "-5"),
    ("WEIGHTLIFT_LOW_SPEED_TIME", "0"),
])
def test_5_bad_environment_values_name_the_variable(
        served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    code, err = cli(["pull", str(served.manifest), "-o", str(tmp_path / "o")], capsys)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith(f"weightlift: error: {name}={value!r}")
    assert "internal error" not in line
    assert not (tmp_path / "o").exists()


def test_6_range_fallback_is_said_once_and_not_with_q(served: Served, tmp_path: Path) -> None:
    # A server that ignores Range on this file: after a retry or two the engine fetches it whole.
    shard = "model-00001-of-00002.safetensors"
    env = {"WEIGHTLIFT_RETRY_BASE": "0.001"}
    served.storage.emu.inject(shard, Fault.ignore_range(), times=10_000)
    run = weightlift("pull", str(served.manifest), "-o", str(tmp_path / "a"), "--chunk-size",
                     "16K", env=env)
    assert run.returncode == 0, run.stderr
    # Said at most once (the engine may fetch such a file whole at once, with nothing to say).
    assert run.stderr.count("starting over") <= 1, run.stderr
    assert "WARNING" not in run.stderr
    quiet = weightlift("pull", str(served.manifest), "-o", str(tmp_path / "b"), "--chunk-size",
                       "16K", "-q", env=env)
    assert quiet.returncode == 0
    assert quiet.stderr == ""


def test_6_verify_and_pull_say_each_problem_once_and_no_done(served: Served,
                                                             tmp_path: Path) -> None:
    wrong = str(served.gen.params + 1)
    run = weightlift("pull", str(served.manifest), "-o", str(tmp_path / "o"),
                     "--expect-params", wrong)
    assert run.returncode == 1
    assert run.stderr.count("does not match the expected") == 1
    assert "done:" not in run.stderr
    check = weightlift("verify", str(tmp_path / "o"), "--expect-params", wrong)
    assert check.returncode == 1
    assert (check.stdout + check.stderr).count("does not match the expected") == 1


def test_7_help_shows_examples_environment_and_exit_codes() -> None:
    top = weightlift("--help")
    assert top.returncode == 0
    assert "Thin by design" not in top.stdout
    for part in ("examples:", "environment:", "WEIGHTLIFT_CONNECTIONS", "exit codes:",
                 "130 interrupted"):
        assert part in top.stdout
    ver = weightlift("verify", "--help").stdout
    assert "the folder a model was pulled into" in ver
    assert re.search(r"--expect-params N\s+fail unless", ver)
    assert "examples:" in weightlift("pull", "--help").stdout
    short = weightlift("-V")
    assert short.returncode == 0
    assert short.stdout.startswith("weightlift ")


def test_8_folder_holding_another_model_is_refused_up_front(threaded_storage: StorageEndpoint,
                                                            tmp_path: Path) -> None:
    a = serve_checkpoint(threaded_storage, tmp_path / "a", seed=1, model_id="model-a",
                         prefix="a/")
    b = serve_checkpoint(threaded_storage, tmp_path / "b", seed=2, model_id="model-b",
                         prefix="b/")
    out = tmp_path / "out"
    assert weightlift("pull", str(a.manifest), "-o", str(out), "-q").returncode == 0
    before = threaded_storage.emu.total_bytes_served
    run = weightlift("pull", str(b.manifest), "-o", str(out))
    assert run.returncode == 2
    (line,) = run.stderr.strip().splitlines()
    assert "holds another model (model-a; this SOURCE is model-b)" in line
    assert threaded_storage.emu.total_bytes_served == before  # nothing fetched
    # Without a receipt: weight files the SOURCE does not list.
    shutil.rmtree(out / ".weightlift")
    urls = [threaded_storage.presign(rel) for rel in sorted(b.files)]
    run = weightlift("pull", *urls, "-o", str(out))
    assert run.returncode == 2
    assert "already holds weight files this SOURCE does not have" in run.stderr
    # The same model again (a resume or an update) is fine.
    assert weightlift("pull", str(a.manifest), "-o", str(out), "-q").returncode == 0


def test_9_verify_without_a_receipt_says_what_it_did_not_check(served: Served,
                                                               tmp_path: Path) -> None:
    src = tmp_path / "src"  # the generated checkpoint: no pull, no receipt
    run = weightlift("verify", str(src))
    assert run.returncode == 0, run.stderr
    assert "integrity: sha256 NOT checked" in run.stdout
    assert "parameter count: NOT checked" in run.stdout
    assert "result: OK (format only: sha256 and parameter count not checked)" in run.stdout
    doc = json.loads(weightlift("verify", str(src), "--json").stdout)
    assert doc["hashes_checked"] is False
    assert doc["params_checked"] is False
    assert "no pull receipt" in doc["warnings"][-1]


def test_10_size_mismatch_exits_1_not_3(served: Served, tmp_path: Path) -> None:
    doc: dict[str, Any] = served.storage.manifest(sorted(served.files))
    doc["files"][0]["size"] += 1
    path = tmp_path / "wrong.json"
    path.write_text(json.dumps(doc))
    run = weightlift("pull", str(path), "-o", str(tmp_path / "o"))
    assert run.returncode == 1, run.stderr
    assert "run again to resume" not in run.stderr


@pytest.mark.parametrize("text", ["41057", "41_057", "41,057", "4.1057e4", "41.057k"])
def test_10_expect_params_forms(text: str) -> None:
    assert parse_count(text) == 41057


def test_10_expect_params_forms_on_the_command_line(served: Served, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert served.gen.params == 41057  # the fixture's checkpoint (seed 1)
    for text in ("41_057", "4.1057e4"):
        code, err = cli(["verify", str(tmp_path / "src"), "--expect-params", text, "-q"], capsys)
        assert code == 0, err


@pytest.mark.parametrize("text", ["2.5", "-1", "1e-3", "lots"])
def test_10_expect_params_refuses_non_counts(text: str) -> None:
    with pytest.raises(ValueError, match="whole number|negative"):
        parse_count(text)


def _screen(raw: str) -> list[str]:
    """What a terminal shows for ``raw``: \\r, \\n, ESC[A (up), ESC[K (erase to end)."""
    lines, row, col = [""], 0, 0
    i = 0
    while i < len(raw):
        if raw.startswith("\x1b[A", i):
            row, i = max(0, row - 1), i + 3
            continue
        if raw.startswith("\x1b[K", i):
            lines[row], i = lines[row][:col], i + 3
            continue
        ch = raw[i]
        i += 1
        if ch == "\r":
            col = 0
        elif ch == "\n":
            row, col = row + 1, 0
            while len(lines) <= row:
                lines.append("")
        else:
            line = lines[row].ljust(col)
            lines[row] = line[:col] + ch + line[col + 1:]
            col += 1
    return lines


def test_10_ctrl_c_leaves_no_stray_caret_on_the_bar() -> None:
    tty = FakeTty()
    progress = Progress(quiet=False, stream=tty)
    progress(PullStarted(files=8, total_bytes=100 * MiB, resumed_bytes=0))
    progress(BytesReceived("a", 3 * MiB))
    tty.write("^C")  # what the terminal echoes where the cursor is when Ctrl-C is pressed
    progress.close(interrupted=True)
    tty.write("weightlift: interrupted\n")
    shown = _screen(tty.getvalue())
    assert not any("^" in line for line in shown), shown
    assert any(line.startswith("total:") for line in shown), shown


def test_issue11_defect11_one_line_per_failure_with_advice_for_urls(served: Served,
                                                                    tmp_path: Path) -> None:
    rel = "config.json"
    url = served.storage.presign(rel, lifetime=0.2)
    time.sleep(0.5)  # expired: storage answers S3's "Request has expired"
    run = weightlift("pull", url, "-o", str(tmp_path / "o"))
    assert run.returncode == 3, run.stderr
    failures = [line for line in run.stderr.splitlines() if rel in line and "expired" in line]
    assert len(failures) == 1, run.stderr
    assert "get fresh URLs and run the command with them" in failures[0]
    assert "manifest" not in failures[0]
