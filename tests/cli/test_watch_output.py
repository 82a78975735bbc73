"""Where watch's output goes: stderr lines, a tqdm bar on a TTY, JSON lines on stdout, -q."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

from weightlift.cli.watch_cmd import WatchOutput, run_failed_error
from weightlift.cli.watch_view import WatchView
from weightlift.downloader.errors import EXIT_PLATFORM
from weightlift.downloader.sources.run_status import RunSnapshot

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


def feed(sink: WatchOutput, seq: list[RunSnapshot], view: WatchView | None = None) -> WatchView:
    view = view or WatchView()
    for i, s in enumerate(seq):
        sink.show(view.update(s, T0 + timedelta(seconds=2 * i)))
    return view


def feed_each(sink: WatchOutput, seq: list[RunSnapshot], view: WatchView) -> Iterator[None]:
    for i, s in enumerate(seq):
        sink.show(view.update(s, T0 + timedelta(seconds=2 * i)))
        yield


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_stderr_gets_status_progress_and_log_lines_stdout_nothing(
        axom_run: list[RunSnapshot]) -> None:
    out, err = io.StringIO(), io.StringIO()
    feed(WatchOutput(json_mode=False, quiet=False, stdout=out, stderr=err), axom_run)
    assert out.getvalue() == ""
    lines = err.getvalue().splitlines()
    assert lines[0].endswith("llama-3-8b-sft: queued (waiting for a worker), step 0/120")
    assert any("step 40/120 [######" in ln and "loss" in ln for ln in lines)
    assert any(ln.strip() == "│ saved checkpoint step-40" for ln in lines)
    assert "preempted at step 52/120" in err.getvalue()
    assert lines[-1].split(" ", 1)[1].startswith("completed: 120/120 steps")


def test_quiet_keeps_only_status_lines(axom_run: list[RunSnapshot]) -> None:
    err = io.StringIO()
    feed(WatchOutput(json_mode=False, quiet=True, stdout=io.StringIO(), stderr=err), axom_run)
    text = err.getvalue()
    assert "preempted at step 52/120" in text
    assert "completed" in text
    assert "│" not in text
    assert "loss" not in text.replace("final loss", "")


def test_json_mode_prints_only_json_lines_on_stdout(axom_run: list[RunSnapshot]) -> None:
    out, err = io.StringIO(), io.StringIO()
    sink = WatchOutput(json_mode=True, quiet=False, stdout=out, stderr=err)
    feed(sink, axom_run)
    assert err.getvalue() == ""
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    kinds = {e["event"] for e in events}
    assert kinds == {"status", "progress", "metrics", "log", "done"}
    assert events[-1]["event"] == "done"
    assert events[-1]["ok"] is True
    assert sink.done_sent
    statuses = [e["status"] for e in events if e["event"] == "status"]
    assert statuses[:3] == ["queued", "provisioning", "staging"]
    assert "preempted" in statuses


def test_tty_draws_a_step_bar_that_can_move_back_and_keeps_status_lines(
        axom_run: list[RunSnapshot]) -> None:
    err = FakeTTY()
    sink = WatchOutput(json_mode=False, quiet=False, stdout=io.StringIO(), stderr=err)
    assert sink.tty
    positions: list[int] = []
    for _ in feed_each(sink, axom_run[:-1], WatchView()):
        assert sink._bar is not None or not positions
        if sink._bar is not None:
            positions.append(sink._bar.n)
    assert 52 in positions
    assert min(positions[positions.index(52):]) == 40  # resumed from the checkpoint: back
    assert sink._bar is not None
    feed(sink, axom_run[-1:])  # the terminal snapshot closes the bar
    assert sink._bar is None
    text = err.getvalue()
    assert "step: " in text
    assert "/120 |" in text
    assert "loss" in text
    assert "preempted at step 52/120" in text
    assert "completed: 120/120 steps" in text


def test_failed_run_error_carries_the_platforms_text_and_exits_4() -> None:
    snap = RunSnapshot("axom", "j-1", "failed", "failed", step=52, total_steps=120,
                       error="CUDA error: out of memory on worker gpu-3 (retries exhausted)")
    exc = run_failed_error(snap, pulling=True)
    assert exc.exit_code == EXIT_PLATFORM
    assert exc.one_line() == ("axom job j-1 failed at step 52/120: CUDA error: out of memory on "
                              "worker gpu-3 (retries exhausted) (nothing to pull)")
    cancelled = RunSnapshot("tensorone", "j-2", "cancelled", "cancelled")
    assert run_failed_error(cancelled, pulling=False).one_line() == "tensorone job j-2 cancelled"
