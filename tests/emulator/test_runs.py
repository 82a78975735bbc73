"""The scripted run lifecycle as a pure function of elapsed time."""

from typing import Any

import pytest

from weightlift.emulator.runs import CANCELLED_ERROR, RunScript, RunTimeline


def statuses(tl: RunTimeline) -> list[str]:
    """The distinct status words the run passes through, in order."""
    out: list[str] = []
    step = 0.01
    t = 0.0
    while t <= tl.end_t + 0.05:
        st = tl.state(t).status
        if not out or out[-1] != st:
            out.append(st)
        t += step
    return out


def test_axom_happy_path_walks_the_documented_lifecycle() -> None:
    tl = RunTimeline(RunScript(), "axom")
    assert statuses(tl) == ["queued", "provisioning", "staging", "running", "checkpointing",
                            "running", "checkpointing", "running", "uploading", "completed"]
    end = tl.state(tl.end_t)
    assert (end.status, end.step, end.retries, end.error, end.terminal) == (
        "completed", 120, 0, None, True)
    assert [c.step for c in tl.checkpoints] == [40, 80, 120]
    assert [c.kind for c in tl.checkpoints] == ["automatic", "automatic", "final"]


def test_step_climbs_on_the_accelerated_clock() -> None:
    s = RunScript(steps_per_second=100.0)
    tl = RunTimeline(s, "axom")
    run_start = s.queued_s + s.provisioning_s + s.staging_s
    assert tl.state(run_start - 0.01).step == 0
    assert tl.state(run_start + 0.105).step == 10
    assert tl.state(run_start + 0.105).status == "running"


def test_preemption_requeues_and_resumes_from_last_checkpoint() -> None:
    tl = RunTimeline(RunScript(preempt_at_step=60), "axom")
    seq = statuses(tl)
    i = seq.index("preempted")
    assert seq[i - 1] == "running"
    assert seq[i + 1:i + 5] == ["queued", "provisioning", "staging", "running"]
    assert seq[-1] == "completed"
    pre = next(e for e in tl.events if e.kind == "preempted")
    assert pre.payload["step"] == 60
    requeue = next(e for e in tl.events if e.kind == "requeued")
    assert requeue.payload == {"retries": 1, "resume_step": 40}
    after = tl.state(requeue.t + 0.001)
    assert (after.status, after.step, after.retries) == ("queued", 40, 1)
    # replayed steps carry the new cycle
    assert {p.cycle for p in tl.points if 40 < p.step <= 60} == {0, 1}
    assert tl.state(tl.end_t).retries == 1


def test_preemption_before_any_checkpoint_restarts_from_zero() -> None:
    tl = RunTimeline(RunScript(preempt_at_step=10), "axom")
    requeue = next(e for e in tl.events if e.kind == "requeued")
    assert requeue.payload["resume_step"] == 0


def test_tensorone_words_for_the_same_lifecycle() -> None:
    tl = RunTimeline(RunScript(preempt_at_step=60), "tensorone")
    assert statuses(tl) == ["queued", "initializing", "running", "paused", "queued",
                            "initializing", "running", "completed"]


def test_failure_is_terminal_with_the_error_text() -> None:
    s = RunScript(fail_at_step=70)
    tl = RunTimeline(s, "axom")
    end = tl.state(tl.end_t + 10)
    assert (end.status, end.step, end.error) == ("failed", 70, s.error)
    assert tl.state(1.0).error is None  # not before it happens
    assert any(g.stream == "stderr" and s.error in g.text for g in tl.logs)
    assert tl.events[-1].kind == "failed"


def test_cancel_writes_a_final_checkpoint_on_tensorone_and_fails_on_axom() -> None:
    t1 = RunTimeline(RunScript(cancel_at_step=50), "tensorone")
    assert statuses(t1)[-2:] == ["cancelling", "cancelled"]
    assert t1.checkpoints[-1].kind == "final"
    assert t1.checkpoints[-1].step == 50
    assert t1.state(t1.end_t).error == CANCELLED_ERROR
    ax = RunTimeline(RunScript(cancel_at_step=50), "axom")
    end = ax.state(ax.end_t)
    assert (end.status, end.error) == ("failed", CANCELLED_ERROR)


def test_instant_is_completed_at_zero() -> None:
    tl = RunTimeline(RunScript.instant(preempt_at_step=50), "axom")
    st = tl.state(0.0)
    assert (st.status, st.step, st.retries) == ("completed", 120, 1)
    assert len(tl.points_at(0.0)) == len(tl.points)
    assert len(tl.logs_at(0.0)) == len(tl.logs)


def test_metrics_are_deterministic_and_loss_decreases() -> None:
    a = RunTimeline(RunScript(seed=3), "axom").points
    b = RunTimeline(RunScript(seed=3), "axom").points
    c = RunTimeline(RunScript(seed=4), "axom").points
    assert a == b
    assert [p.loss for p in a] != [p.loss for p in c]
    first, last = a[:10], a[-10:]
    assert sum(p.loss for p in last) < sum(p.loss for p in first)
    lrs = [p.lr for p in a]
    peak = lrs.index(max(lrs))
    assert 0 < peak < len(lrs) - 1  # warmup, then decay
    assert lrs[-1] < lrs[peak]
    assert all(p.grad_norm > 0 and p.throughput > 0 and p.vram_gb > 0 for p in a)


def test_logs_and_events_grow_with_time() -> None:
    tl = RunTimeline(RunScript(preempt_at_step=60), "axom")
    counts = [len(tl.logs_at(t)) for t in (0.0, 1.0, 2.0, 3.0, tl.end_t)]
    assert counts == sorted(counts)
    assert counts[0] >= 1
    assert counts[-1] > counts[1]
    assert [g.seq for g in tl.logs] == list(range(1, len(tl.logs) + 1))
    assert [g.t for g in tl.logs] == sorted(g.t for g in tl.logs)
    kinds = [e.kind for e in tl.events]
    assert kinds[0] == "submitted"
    assert kinds[-1] == "completed"
    assert {"checkpoint", "preempted", "requeued"} <= set(kinds)


def test_metrics_every_thins_the_points() -> None:
    tl = RunTimeline(RunScript(total_steps=1000, metrics_every=100, checkpoint_every=200), "axom")
    assert [p.step for p in tl.points] == list(range(100, 1001, 100))


def test_scaled_runs_faster() -> None:
    s = RunScript(preempt_at_step=60)
    assert RunTimeline(s.scaled(4.0)).end_t == pytest.approx(RunTimeline(s).end_t / 4)


@pytest.mark.parametrize("kw", [
    {"total_steps": 0}, {"steps_per_second": 0.0}, {"checkpoint_every": 0},
    {"fail_at_step": 121}, {"preempt_at_step": 0}, {"queued_s": -1.0},
    {"model_bytes": 1000}, {"shards": 0},
])
def test_bad_scripts_are_refused(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        RunScript(**kw)
