"""Fixtures for the watch tests: hand-made RunSnapshots and a preempted run from start to end."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from weightlift.downloader.sources.run_status import LogLine, MetricPoint, RunSnapshot
from weightlift.emulator.platforms import ClockFromFirstRequest, PlatformEmulator, ThreadedPlatforms

JOB = "0f3c2a9e-1111-2222-3333-444455556666"

SnapFactory = Callable[..., RunSnapshot]


def make_snap(status: str, phase: str, step: int | None = None, *, retries: int | None = 0,
              losses: dict[int, float] | None = None, logs: tuple[str, ...] = (),
              error: str | None = None, platform: str = "axom", total: int | None = 120,
              eta: str | None = None) -> RunSnapshot:
    """A snapshot of job JOB; each loss becomes a metric point with fixed lr/throughput/grad."""
    points = tuple(MetricPoint(s, loss=v, lr=3e-4, throughput=12_400.0, grad_norm=0.81)
                   for s, v in (losses or {}).items())
    kw: dict[str, Any] = {"platform": platform}
    return RunSnapshot(job_id=JOB, status=status, phase=phase,  # type: ignore[arg-type]
                       name="llama-3-8b-sft", step=step, total_steps=total, retries=retries,
                       error=error, eta=eta, new_metrics=points,
                       new_logs=tuple(LogLine(t) for t in logs), **kw)


def decaying_losses(a: int, b: int) -> dict[int, float]:
    return {s: round(3 * math.exp(-s / 60), 4) for s in range(a, b + 1)}


@pytest.fixture
def snap() -> SnapFactory:
    return make_snap


@pytest.fixture
def losses() -> Callable[[int, int], dict[int, float]]:
    return decaying_losses


@pytest.fixture
def axom_run() -> list[RunSnapshot]:
    """An Axom run through one preemption to completion, as a 2-second poll would see it."""
    s, L = make_snap, decaying_losses
    return [
        s("queued", "waiting", 0),
        s("provisioning", "waiting", 0),
        s("staging", "waiting", 0),
        s("running", "running", 10, losses=L(1, 10), logs=("starting training: 120 steps",)),
        s("checkpointing", "running", 40, losses=L(11, 40), logs=("saved checkpoint step-40",)),
        s("running", "running", 52, losses=L(41, 52)),
        s("preempted", "waiting", 52, logs=("worker gpu-3 reclaimed",)),
        s("queued", "waiting", 52, retries=1),
        s("provisioning", "waiting", 40, retries=1),
        s("running", "running", 45, retries=1, losses=L(41, 45)),
        s("running", "running", 120, retries=1, losses=L(46, 120)),
        s("uploading", "waiting", 120, retries=1),
        s("completed", "completed", 120, retries=1, logs=("model uploaded",)),
    ]


@pytest.fixture
def watched_platforms(tmp_path: Path) -> Iterator[ThreadedPlatforms]:
    """Like `threaded_platforms`, but runs start when `weightlift watch` first polls."""
    clock = ClockFromFirstRequest()
    emu = PlatformEmulator(tmp_path / "platforms", clock=clock)
    clock.emu = emu
    with ThreadedPlatforms(emu) as tp:
        yield tp
