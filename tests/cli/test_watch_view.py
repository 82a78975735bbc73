"""watch's wording, driven by hand-made RunSnapshot sequences (no network, no clock)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from weightlift.cli.watch_view import (
    LOG_PREFIX,
    SPARK_CHARS,
    LogText,
    StatusLine,
    StepProgress,
    Update,
    WatchView,
    clean_text,
    fmt_duration,
    fmt_lr,
    fmt_rate,
    sparkline,
    text_bar,
)
from weightlift.downloader.sources.run_status import MetricPoint, RunSnapshot

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
JOB = "0f3c2a9e-1111-2222-3333-444455556666"  # the id conftest's snapshots carry


def play(seq: list[RunSnapshot], view: WatchView | None = None) -> list[Update]:
    view = view or WatchView()
    return [view.update(s, T0 + timedelta(seconds=2 * i)) for i, s in enumerate(seq)]


def text(updates: list[Update]) -> list[str]:
    out = []
    for u in updates:
        for item in u.items:
            out.append(item.line() if isinstance(item, StepProgress) else item.text)
    return out


def status_lines(updates: list[Update]) -> list[str]:
    return [i.text for u in updates for i in u.items if isinstance(i, StatusLine)]


def test_transcript_of_a_preempted_run_reads_calmly(axom_run, losses) -> None:
    lines = text(play(axom_run))
    spark_full = sparkline(losses(1, 40).values())
    assert lines[:9] == [
        "12:00:00 llama-3-8b-sft: queued (waiting for a worker), step 0/120",
        "12:00:02 provisioning (a worker is being set up)",
        "12:00:04 staging (loading data and weights onto the worker)",
        "12:00:06 running",
        LOG_PREFIX + "starting training: 120 steps",
        "12:00:06 step 10/120 [#-------------------]   8%  loss 2.539 "
        f"{sparkline(losses(1, 10).values())}  lr 3.0e-04  12.4k tok/s  grad_norm 0.81",
        "12:00:08 checkpointing at step 40/120",
        LOG_PREFIX + "saved checkpoint step-40",
        f"12:00:08 step 40/120 [######--------------]  33%  loss 1.54 {spark_full}  "
        "lr 3.0e-04  12.4k tok/s  grad_norm 0.81",
    ]
    statuses = status_lines(play(axom_run))
    assert statuses[5:] == [
        "12:00:12 preempted at step 52/120 — the platform requeues it and resumes from its "
        "last checkpoint; not an error",
        "12:00:14 queued again, retry 1 (waiting for a worker)",
        "12:00:16 provisioning again (a worker is being set up)",
        "12:00:18 running again at step 45/120, resumed from its last checkpoint",
        "12:00:22 uploading the trained model",
        "12:00:24 completed: 120/120 steps, final loss 0.406, 1 preemption absorbed by the "
        "platform; watched for 24s",
    ]
    # A preemption is news, not an alarm.
    joined = "\n".join(lines).lower()
    assert "error" not in joined.replace("not an error", "")
    assert "fail" not in joined
    assert "warn" not in joined


def test_verdict_comes_after_the_last_logs(axom_run) -> None:
    last = play(axom_run)[-1]
    assert isinstance(last.items[-1], StatusLine)
    assert last.items[-1].text.startswith("12:00:24 completed")
    assert isinstance(last.items[-2], LogText)
    assert last.terminal


def test_no_progress_line_while_queued_at_step_0(snap) -> None:
    first = play([snap("queued", "waiting", 0)])[0]
    assert [type(i) for i in first.items] == [StatusLine]
    assert [e["event"] for e in first.events] == ["status", "progress"]  # machines get it all
    second = play([snap("queued", "waiting", 0), snap("provisioning", "waiting", 0)])[1]
    assert [e["event"] for e in second.events] == ["status"]  # step 0 again is not progress


def test_checkpoint_round_trip_does_not_print_running_again(snap) -> None:
    seq = [snap("running", "running", 30), snap("checkpointing", "running", 40),
           snap("running", "running", 50)]
    assert status_lines(play(seq)) == [
        "12:00:00 llama-3-8b-sft: running, step 30/120",
        "12:00:02 checkpointing at step 40/120",
    ]


def test_a_whole_requeue_between_two_polls_is_still_reported_calmly(snap) -> None:
    # The poll never saw `preempted`: only `retries` rose while the status looked the same.
    seq = [snap("running", "running", 50, retries=0), snap("running", "running", 44, retries=1)]
    lines = status_lines(play(seq))
    assert lines[1] == ("12:00:02 requeued by the platform (retry 1): its worker was preempted; "
                        "not an error, it resumes from its last checkpoint")


def test_requeue_seen_as_queued_with_rising_retries(snap) -> None:
    seq = [snap("running", "running", 50, retries=2), snap("queued", "waiting", 40, retries=3),
           snap("running", "running", 41, retries=3)]
    lines = status_lines(play(seq))
    assert lines[1] == ("12:00:02 queued again, retry 3 (waiting for a worker): its worker was "
                        "preempted; not an error, it resumes from its last checkpoint")
    assert lines[2] == "12:00:04 running again at step 41/120, resumed from its last checkpoint"


def test_step_going_back_without_a_status_change_is_explained(snap) -> None:
    seq = [snap("running", "running", 52, retries=None), snap("running", "running", 41,
                                                              retries=None)]
    assert status_lines(play(seq))[1] == (
        "12:00:02 back at step 41 (was 52): resumed from its last checkpoint, the steps after "
        "it are redone")


def test_tensorone_pause_and_resume(snap) -> None:
    seq = [snap("running", "running", 30, platform="tensorone", retries=None),
           snap("paused", "paused", 30, platform="tensorone", retries=None),
           snap("queued", "waiting", 30, platform="tensorone", retries=None),
           snap("initializing", "waiting", 30, platform="tensorone", retries=None),
           snap("running", "running", 31, platform="tensorone", retries=None),
           snap("completed", "completed", 120, platform="tensorone", retries=None)]
    assert status_lines(play(seq))[1:] == [
        "12:00:02 paused at step 30/120 — it can resume; still watching",
        "12:00:04 queued again (waiting for a worker)",
        "12:00:06 initializing again (the worker is starting)",
        "12:00:08 running again at step 31/120, resumed from its last checkpoint",
        "12:00:10 completed: 120/120 steps, 1 preemption absorbed by the platform; "
        "watched for 10s",
    ]


@pytest.mark.parametrize("phase", ["failed", "cancelled"])
def test_failed_or_cancelled_run_ends_with_a_done_event_carrying_the_error(snap, phase) -> None:
    err = "CUDA error: out of memory on worker gpu-3 (retries exhausted)"
    seq = [snap("running", "running", 50), snap(phase, phase, 52, error=err, logs=("oom",))]
    updates = play(seq)
    assert status_lines(updates)[-1] == f"12:00:02 {phase} at step 52/120; watched for 2s"
    assert updates[-1].terminal
    done = updates[-1].events[-1]
    assert done["event"] == "done"
    assert done["ok"] is False
    assert done["exit_code"] == 4
    assert done["error"] == err
    assert done["phase"] == phase
    assert done["status"] == phase


def test_first_poll_of_a_finished_run(snap) -> None:
    u = play([snap("completed", "completed", 120, losses={120: 0.5})])[0]
    assert status_lines([u]) == ["12:00:00 llama-3-8b-sft: already completed: 120/120 steps, "
                                 "final loss 0.5"]
    assert [e["event"] for e in u.events] == ["status", "metrics", "progress", "done"]
    assert u.events[-1]["ok"] is True
    assert u.events[-1]["exit_code"] == 0


def test_first_poll_of_a_preempted_run_with_retries(snap) -> None:
    u = play([snap("preempted", "waiting", 52, retries=2)])[0]
    assert status_lines([u]) == [
        "12:00:00 llama-3-8b-sft: preempted — the platform resumes it from its last checkpoint; "
        "not an error, step 52/120, requeued 2 times so far (normal)"]


def test_json_events_are_strict_json_in_order(snap) -> None:
    seq = [snap("running", "running", 1, losses={1: 2.5}, logs=("hello",)),
           snap("running", "running", 2, losses={2: float("nan")}),
           snap("completed", "completed", 2)]
    events = [e for u in play(seq) for e in u.events]
    for e in events:
        json.loads(json.dumps(e, allow_nan=False))
        assert e["time"].endswith("+00:00")
    assert [e["event"] for e in events] == [
        "status", "metrics", "progress", "log", "metrics", "progress", "status", "done"]
    assert events[0] == {"event": "status", "time": "2025-03-01T12:00:00+00:00",
                         "platform": "axom", "job_id": JOB, "name": "llama-3-8b-sft",
                         "status": "running", "phase": "running", "previous": None, "step": 1,
                         "total_steps": 120, "retries": 0}
    assert events[1]["loss"] == 2.5
    assert events[1]["step"] == 1
    assert events[2]["percent"] == pytest.approx(0.8)
    assert events[3]["text"] == "hello"
    assert events[4]["loss"] is None  # NaN is not JSON


def test_rising_retries_emit_a_status_event_even_without_a_status_change(snap) -> None:
    seq = [snap("running", "running", 50, retries=0), snap("running", "running", 50, retries=1)]
    ev = play(seq)[1].events
    assert ev[0]["event"] == "status"
    assert ev[0]["retries"] == 1


def test_repeated_current_metrics_are_not_repeated(snap) -> None:
    # TensorOne reports "the current metrics" on every poll; unchanged, they are not news.
    seq = [snap("running", "running", 5, losses={5: 1.0}),
           snap("running", "running", 5, losses={5: 1.0})]
    second = play(seq)[1]
    assert second.items == ()
    assert second.events == ()


def test_diverging_loss_shows_in_the_line_and_spark(snap) -> None:
    seq = [snap("running", "running", 1, losses={1: 2.0}),
           snap("running", "running", 2, losses={2: float("inf")})]
    line = text(play(seq))[-1]
    assert "loss inf" in line
    assert "!" in line


def test_log_lines_are_scrubbed_split_and_stripped_of_terminal_codes(snap) -> None:
    s = snap("running", "running", 1, logs=(
        "\x1b[31mred\x1b[0m and https://bucket.s3.amazonaws.com/m.bin?X-Amz-Signature=abc",
        "two\nlines"))
    logs = [i.text for i in play([s])[0].items if isinstance(i, LogText)]
    assert logs == [LOG_PREFIX + " red  and https://bucket.s3.amazonaws.com/m.bin?…",
                    LOG_PREFIX + "two", LOG_PREFIX + "lines"]


def test_eta_and_missing_metrics() -> None:
    pt = MetricPoint(7, loss=None, lr=None, throughput=None, grad_norm=None)
    s = RunSnapshot("tensorone", JOB, "running", "running", step=7, total_steps=None,
                    eta="32m", new_metrics=(pt,))
    line = text(play([s]))[-1]
    assert line == "12:00:00 step 7  eta 32m"


def test_unknown_status_word_is_shown_as_is(snap) -> None:
    seq = [snap("running", "running", 5), snap("evaluating", "running", 6)]
    assert status_lines(play(seq))[1] == "12:00:02 evaluating"


# -- small pure helpers ---------------------------------------------------------------------
def test_sparkline() -> None:
    assert sparkline([]) == ""
    assert sparkline([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]) == SPARK_CHARS
    assert sparkline([8.0, 1.0]) == "█▁"
    assert sparkline([2.0, 2.0]) == "▄▄"
    assert sparkline([1.0, float("nan"), 2.0]) == "▁!█"
    assert sparkline([float("nan")]) == "!"
    assert len(sparkline(range(100))) == 30  # type: ignore[arg-type]
    assert sparkline(range(100))[-1] == "█"  # type: ignore[arg-type]


def test_formatters() -> None:
    assert text_bar(0, 10) == "[" + "-" * 20 + "]"
    assert text_bar(5, 10) == "[" + "#" * 10 + "-" * 10 + "]"
    assert text_bar(15, 10) == "[" + "#" * 20 + "]"
    assert text_bar(1, 0) == "[" + "-" * 20 + "]"
    assert fmt_rate(950) == "950"
    assert fmt_rate(12_400) == "12.4k"
    assert fmt_rate(2.5e6) == "2.5M"
    assert fmt_lr(3e-4) == "3.0e-04"
    assert fmt_lr(0.0) == "0"
    assert fmt_duration(13) == "13s"
    assert fmt_duration(125) == "2m 05s"
    assert fmt_duration(3725) == "1h 02m"
    assert clean_text("a\tb\x07c  ") == "a\tb c"
