"""The polling loop and its pacing, driven by a scripted follower and a recording sleep."""

from __future__ import annotations

from dataclasses import replace

import pytest

from weightlift.downloader.errors import PlatformError
from weightlift.downloader.sources.api_session import ApiUnavailable
from weightlift.downloader.sources.follow import changed, follow, next_delay
from weightlift.downloader.sources.run_status import LogLine, MetricPoint, RunSnapshot

BASE = RunSnapshot(platform="axom", job_id="j", status="running", phase="running", step=1)


class Scripted:
    """A RunFollower that returns prepared snapshots (or raises prepared errors)."""

    platform = "axom"
    job_id = "j"
    default_interval = 5.0

    def __init__(self, answers: list[RunSnapshot | Exception], floor: float = 0.0) -> None:
        self.answers = list(answers)
        self.floor = floor
        self.polls = 0

    async def poll(self) -> RunSnapshot:
        self.polls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def min_delay(self) -> float:
        return self.floor


class Sleeps(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def snap(**kw: object) -> RunSnapshot:
    return replace(BASE, **kw)  # type: ignore[arg-type]


def test_next_delay_grows_and_resets() -> None:
    d = 5.0
    seen = []
    for _ in range(6):
        d = next_delay(d, base=5.0, ceiling=20.0, was_changed=False)
        seen.append(d)
    assert seen == [7.5, 11.25, 16.875, 20.0, 20.0, 20.0]
    assert next_delay(20.0, base=5.0, ceiling=20.0, was_changed=True) == 5.0


def test_changed() -> None:
    assert changed(None, BASE)
    assert not changed(BASE, BASE)
    assert changed(BASE, snap(step=2))
    assert changed(BASE, snap(status="checkpointing"))
    assert changed(BASE, snap(retries=1))
    assert changed(BASE, snap(new_logs=(LogLine("hi"),)))
    assert changed(BASE, snap(new_metrics=(MetricPoint(step=1, loss=2.0),)))


async def test_follow_backs_off_when_idle_and_ends_at_terminal() -> None:
    answers: list[RunSnapshot | Exception] = [BASE, BASE, BASE, BASE, snap(step=2), snap(step=2),
                                              snap(status="completed", phase="completed")]
    follower = Scripted(answers)
    sleeps = Sleeps()
    got = [s async for s in follow(follower, sleep=sleeps, max_interval=12.0)]
    assert [s.status for s in got][-1] == "completed"
    assert len(got) == 7
    assert follower.polls == 7
    # first poll: base; unchanged: ×1.5 up to the ceiling; a change resets to base
    assert sleeps == [5.0, 7.5, 11.25, 12.0, 5.0, 7.5]


async def test_follow_interval_and_ceiling() -> None:
    follower = Scripted([BASE, BASE, BASE, snap(status="failed", phase="failed", error="x")])
    sleeps = Sleeps()
    got = [s async for s in follow(follower, interval=100.0, max_interval=60.0, sleep=sleeps)]
    assert got[-1].terminal
    assert sleeps == [100.0, 100.0, 100.0]  # the ceiling is never below the interval


async def test_follow_never_polls_faster_than_the_rate_limit_floor() -> None:
    follower = Scripted([BASE, snap(step=2), snap(status="cancelled", phase="cancelled")],
                        floor=38.0)
    sleeps = Sleeps()
    [s async for s in follow(follower, interval=1.0, sleep=sleeps)]
    assert sleeps == [38.0, 38.0]


async def test_follow_waits_out_a_short_outage() -> None:
    outage = ApiUnavailable("cannot reach the Axom API at https://x: no answer in time")
    follower = Scripted([BASE, outage, outage, snap(status="completed", phase="completed")])
    sleeps = Sleeps()
    got = [s async for s in follow(follower, interval=2.0, max_interval=30.0, sleep=sleeps,
                                   max_outages=2)]
    assert [s.status for s in got] == ["running", "completed"]
    assert sleeps == [2.0, 30.0, 30.0]


async def test_follow_gives_up_after_too_many_outages() -> None:
    outage = ApiUnavailable("cannot reach the Axom API")
    follower = Scripted([BASE, outage, outage, outage])
    with pytest.raises(ApiUnavailable):
        [s async for s in follow(follower, sleep=Sleeps(), max_outages=2)]


async def test_follow_raises_refusals_at_once() -> None:
    follower = Scripted([BASE, PlatformError("Axom rejected the API key (401)")])
    with pytest.raises(PlatformError, match="rejected"):
        [s async for s in follow(follower, sleep=Sleeps())]
    assert follower.polls == 2


async def test_terminal_first_poll_does_not_sleep() -> None:
    follower = Scripted([snap(status="completed", phase="completed")])
    sleeps = Sleeps()
    assert len([s async for s in follow(follower, sleep=sleeps)]) == 1
    assert sleeps == []


async def test_bad_interval() -> None:
    with pytest.raises(ValueError, match="interval must be positive"):
        [s async for s in follow(Scripted([BASE]), interval=0.0, sleep=Sleeps())]
