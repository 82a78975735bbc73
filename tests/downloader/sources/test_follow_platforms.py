"""Following runs on the emulated platforms, on a fake clock: the follower's sleeps advance the
emulator's time, so a whole run with a preemption takes a fraction of a second."""

from __future__ import annotations

from typing import Any

import pytest

from weightlift.downloader.sources.follow import follow
from weightlift.downloader.sources.resolve import open_run
from weightlift.downloader.sources.run_status import RunSnapshot
from weightlift.emulator.platforms import PlatformEndpoints
from weightlift.emulator.runs import CANCELLED_ERROR, RunScript

SMALL: dict[str, Any] = {"model_bytes": 64 << 10}
ERROR = RunScript().error


class FakeTime:
    """The emulator's clock; `sleep` moves it on instead of waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_time(platforms: PlatformEndpoints) -> FakeTime:
    t = FakeTime()
    platforms.emu.clock = t  # before any job is added: runs start at fake t=0
    return t


async def run_all(platforms: PlatformEndpoints, fake_time: FakeTime, source: str,
                  interval: float = 0.05) -> list[RunSnapshot]:
    async with open_run(source, platforms.env()) as follower:
        return [s async for s in follow(follower, interval=interval, max_interval=0.2,
                                        sleep=fake_time.sleep)]


def transitions(snaps: list[RunSnapshot]) -> list[str]:
    out: list[str] = []
    for s in snaps:
        if not out or out[-1] != s.status:
            out.append(s.status)
    return out


async def test_axom_through_a_preemption_to_completion(platforms: PlatformEndpoints,
                                                       fake_time: FakeTime) -> None:
    script = RunScript(preempt_at_step=60, **SMALL)
    job = platforms.emu.add_axom_job(script)
    snaps = await run_all(platforms, fake_time, f"axom://jobs/{job}")
    seen = transitions(snaps)
    assert seen[0] == "queued"
    assert seen[-1] == "completed"
    after = seen[seen.index("preempted"):]
    assert after[:2] == ["preempted", "queued"]
    assert "running" in after
    assert [s.terminal for s in snaps].count(True) == 1
    assert snaps[-1].terminal
    preempted = next(s for s in snaps if s.status == "preempted")
    assert preempted.phase == "waiting"
    assert preempted.error is None
    assert snaps[0].retries == 0
    assert snaps[-1].retries == 1
    assert snaps[-1].step == snaps[-1].total_steps == script.total_steps
    # metrics: each step shown once, in order, despite the replay after the requeue
    steps = [p.step for s in snaps for p in s.new_metrics if p.step is not None]
    assert steps == sorted(set(steps))
    assert steps[-1] == script.total_steps
    # logs: every line once, none lost, in order
    seqs = [ln.seq for s in snaps for ln in s.new_logs]
    assert seqs == list(range(1, len(seqs) + 1))
    async with open_run(f"axom://jobs/{job}", platforms.env()) as follower:
        everything = (await follower.poll()).new_logs
    assert len(seqs) == len(everything)
    # three requests per poll, all authorised, none failed
    assert len(platforms.emu.api_requests) == 3 * (len(snaps) + 1)
    assert {r.status for r in platforms.emu.api_requests} == {200}


async def test_axom_to_failure(platforms: PlatformEndpoints, fake_time: FakeTime) -> None:
    job = platforms.emu.add_axom_job(RunScript(fail_at_step=50, **SMALL))
    snaps = await run_all(platforms, fake_time, f"axom://jobs/{job}")
    last = snaps[-1]
    assert (last.status, last.phase, last.error) == ("failed", "failed", ERROR)
    assert all(s.error is None for s in snaps[:-1])
    assert last.step is not None
    assert last.step >= 50


async def test_axom_cancel_is_reported_as_failed(platforms: PlatformEndpoints,
                                                 fake_time: FakeTime) -> None:
    job = platforms.emu.add_axom_job(RunScript(cancel_at_step=30, **SMALL))
    last = (await run_all(platforms, fake_time, f"axom://jobs/{job}"))[-1]
    assert (last.phase, last.error) == ("failed", CANCELLED_ERROR)


async def test_tensorone_through_a_pause_to_completion(platforms: PlatformEndpoints,
                                                       fake_time: FakeTime) -> None:
    script = RunScript(preempt_at_step=60, **SMALL)
    job = platforms.emu.add_tensorone_job(script)
    snaps = await run_all(platforms, fake_time, f"tensorone://jobs/{job}")
    seen = transitions(snaps)
    assert seen[0] == "queued"
    assert seen[-1] == "completed"
    assert "paused" in seen
    assert "initializing" in seen[seen.index("paused"):]
    assert snaps[-1].step == script.total_steps
    assert any(s.eta for s in snaps)
    assert any(s.new_metrics for s in snaps)
    lines = [ln.seq for s in snaps for ln in s.new_logs]
    assert lines == list(range(1, len(lines) + 1))  # each line once, none lost
    # one request per poll, each asking for metrics and logs
    reqs = platforms.emu.api_requests
    assert len(reqs) == len(snaps)
    assert all(r.query.get("includeLogs") == "true" for r in reqs)
    assert all(r.query.get("includeMetrics") == "true" for r in reqs)


async def test_tensorone_cancelled(platforms: PlatformEndpoints, fake_time: FakeTime) -> None:
    job = platforms.emu.add_tensorone_job(RunScript(cancel_at_step=30, **SMALL))
    last = (await run_all(platforms, fake_time, f"tensorone://jobs/{job}"))[-1]
    assert (last.status, last.phase, last.error) == ("cancelled", "cancelled", CANCELLED_ERROR)


async def test_tensorone_failed(platforms: PlatformEndpoints, fake_time: FakeTime) -> None:
    job = platforms.emu.add_tensorone_job(RunScript(fail_at_step=40, **SMALL))
    last = (await run_all(platforms, fake_time, f"tensorone://jobs/{job}"))[-1]
    assert (last.phase, last.error) == ("failed", ERROR)


async def test_tensorone_paces_itself_by_the_rate_limit(platforms: PlatformEndpoints,
                                                        fake_time: FakeTime) -> None:
    emu = platforms.emu
    emu.tensorone_rate_limit = 30  # per hour
    job = emu.add_tensorone_job(RunScript(total_steps=1000, steps_per_second=1.0, **SMALL))
    async with open_run(f"tensorone://jobs/{job}", platforms.env()) as follower:
        polls = 0
        async for _ in follow(follower, interval=1.0, sleep=fake_time.sleep):
            polls += 1
            if polls == 3:
                break
    # 29 left of 30 after the first poll, 5 kept for the pull: ~3600/24 s between polls
    assert fake_time.sleeps[0] == pytest.approx(3600 / 24, rel=0.02)
    assert fake_time.sleeps[1] == pytest.approx(3600 / 23, rel=0.05)
    assert all(r.status == 200 for r in emu.api_requests)
