"""A training run's whole life as a pure function of elapsed seconds (no I/O, no aiohttp).

`RunTimeline(script, platform)` lays the run out once, up front: status segments, metric points,
log lines, events and checkpoints, each stamped with the elapsed second it happens at. Asking
"what does the run look like at t?" is then a filter, so every poll of the emulated API is
deterministic, consistent between endpoints, and cheap. The clock is accelerated: a 120-step run
with one preemption takes a few seconds by default.

Status words are the platform's own: Axom `queued → provisioning → staging → running ⇄
checkpointing → uploading → completed` (+ `preempted`, `failed`); TensorOne `queued →
initializing → running → completed` (+ `paused`, `failed`, `cancelling`, `cancelled`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Literal

Platform = Literal["axom", "tensorone"]
INSTANT_SPEED = math.inf
CANCELLED_ERROR = "cancelled by user"

# Canonical phases used while laying out the timeline, mapped to each platform's words.
_STATUS: dict[Platform, dict[str, str]] = {
    "axom": {
        "queued": "queued", "provisioning": "provisioning", "staging": "staging",
        "running": "running", "checkpointing": "checkpointing", "uploading": "uploading",
        "preempted": "preempted", "completed": "completed", "failed": "failed",
        "cancelling": "running", "cancelled": "failed",  # Axom has no cancelled status
    },
    "tensorone": {
        "queued": "queued", "provisioning": "initializing", "staging": "initializing",
        "running": "running", "checkpointing": "running", "uploading": "running",
        "preempted": "paused", "completed": "completed", "failed": "failed",
        "cancelling": "cancelling", "cancelled": "cancelled",
    },
}
TERMINAL = frozenset({"completed", "failed", "cancelled"})


def iso(epoch: float) -> str:
    """ISO-8601 UTC with milliseconds and a Z, as both platforms print timestamps."""
    stamp = datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


@dataclass(frozen=True)
class RunScript:
    """How a run unfolds. Durations are in (accelerated) seconds, positions in steps."""

    total_steps: int = 120
    steps_per_second: float = 60.0
    queued_s: float = 0.2
    provisioning_s: float = 0.2
    staging_s: float = 0.2  # `initializing` on TensorOne (with provisioning)
    checkpoint_every: int = 40
    checkpointing_s: float = 0.1
    uploading_s: float = 0.3
    preempt_at_step: int | None = None
    preempted_s: float = 0.3
    fail_at_step: int | None = None
    cancel_at_step: int | None = None
    error: str = "CUDA error: out of memory on worker gpu-3 (retries exhausted)"
    model_bytes: int = 2 << 20
    shards: int = 2
    seed: int = 0
    metrics_every: int = 1  # a metric point every N steps (keep long runs' answers small)
    log_every: int = 10  # a progress log line every N steps

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise ValueError("total_steps must be >= 1")
        if not self.steps_per_second > 0:
            raise ValueError("steps_per_second must be positive")
        if self.checkpoint_every < 1 or self.metrics_every < 1 or self.log_every < 1:
            raise ValueError("checkpoint_every, metrics_every and log_every must be >= 1")
        for name in ("preempt_at_step", "fail_at_step", "cancel_at_step"):
            at = getattr(self, name)
            if at is not None and not 0 < at <= self.total_steps:
                raise ValueError(f"{name} must be within 1..total_steps")
        if self.shards < 1 or self.model_bytes < 1024 * self.shards:
            raise ValueError("shards must be >= 1 and model_bytes at least 1 KiB per shard")
        durations = (self.queued_s, self.provisioning_s, self.staging_s, self.checkpointing_s,
                     self.uploading_s, self.preempted_s)
        if any(d < 0 for d in durations):
            raise ValueError("durations must be >= 0")

    @classmethod
    def instant(cls, **kw: Any) -> RunScript:
        """A run that is already over at t=0 (every phase takes no time)."""
        base: dict[str, Any] = dict(
            steps_per_second=INSTANT_SPEED, queued_s=0.0, provisioning_s=0.0, staging_s=0.0,
            checkpointing_s=0.0, uploading_s=0.0, preempted_s=0.0)
        base.update(kw)
        return cls(**base)

    def scaled(self, speed: float) -> RunScript:
        """The same run `speed` times faster (durations divided, steps/s multiplied)."""
        return replace(
            self, steps_per_second=self.steps_per_second * speed,
            queued_s=self.queued_s / speed, provisioning_s=self.provisioning_s / speed,
            staging_s=self.staging_s / speed, checkpointing_s=self.checkpointing_s / speed,
            uploading_s=self.uploading_s / speed, preempted_s=self.preempted_s / speed)


@dataclass(frozen=True)
class Segment:
    """A stretch of time in one phase; in `running` the step climbs from step0 to step1."""

    phase: str  # canonical
    t0: float
    t1: float
    step0: int
    step1: int
    retries: int


@dataclass(frozen=True)
class Point:
    """One metrics point (Axom's shape, minus the timestamp, which the API stamps)."""

    t: float
    step: int
    cycle: int  # 0 before the first requeue, then 1, ...
    phase: str  # warmup / train / anneal
    loss: float
    lr: float
    throughput: float  # tokens per second
    vram_gb: float
    grad_norm: float
    samples_per_second: float
    step_time: float


@dataclass(frozen=True)
class Log:
    t: float
    seq: int
    stream: str
    text: str


@dataclass(frozen=True)
class Event:
    t: float
    kind: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Checkpoint:
    t: float
    index: int  # 1, 2, ... in creation order
    step: int
    kind: str  # "automatic" | "final"
    loss: float
    validation_loss: float


@dataclass(frozen=True)
class RunState:
    """The run as of one instant (platform status words)."""

    status: str
    phase: str  # canonical phase
    step: int
    retries: int
    error: str | None
    terminal: bool
    started_t: float | None  # first entered running
    finished_t: float | None


@dataclass
class _Builder:
    script: RunScript
    platform: Platform
    t: float = 0.0
    step: int = 0
    retries: int = 0
    segments: list[Segment] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    logs: list[tuple[float, str, str]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)

    def status(self, phase: str) -> str:
        return _STATUS[self.platform][phase]

    def hold(self, phase: str, seconds: float) -> None:
        """Stay in `phase` for `seconds` (a status-change event when the word changes)."""
        if not self.segments or self.status(self.segments[-1].phase) != self.status(phase):
            self.event(self.status(phase), {"status": self.status(phase), "step": self.step})
        self.segments.append(
            Segment(phase, self.t, self.t + seconds, self.step, self.step, self.retries))
        self.t += seconds

    def event(self, kind: str, payload: dict[str, Any]) -> None:
        self.events.append(Event(self.t, kind, payload))

    def log(self, text: str, stream: str = "stdout", at: float | None = None) -> None:
        self.logs.append((self.t if at is None else at, stream, text))

    def run_to(self, target: int) -> None:
        s = self.script
        sps = s.steps_per_second
        t0 = self.t
        if not self.segments or self.status(self.segments[-1].phase) != self.status("running"):
            self.event("running", {"status": self.status("running"), "step": self.step})
        for step in range(self.step + 1, target + 1):
            at = t0 + (step - self.step) / sps
            if step % s.metrics_every == 0 or step == target:
                self.points.append(metric_point(s, step, self.retries, at))
            if step % s.log_every == 0:
                p = metric_point(s, step, self.retries, at)
                self.log(f"step {step}/{s.total_steps} loss={p.loss:.4f} lr={p.lr:.2e} "
                         f"tok/s={p.throughput:.0f} grad_norm={p.grad_norm:.3f}", at=at)
        self.segments.append(Segment("running", t0, t0 + (target - self.step) / sps,
                                     self.step, target, self.retries))
        self.t = t0 + (target - self.step) / sps
        self.step = target

    def checkpoint(self, kind: str) -> Checkpoint:
        p = metric_point(self.script, max(self.step, 1), self.retries, self.t)
        ck = Checkpoint(self.t, len(self.checkpoints) + 1, self.step, kind, p.loss,
                        round(p.loss * 1.04 + 0.01, 4))
        self.checkpoints.append(ck)
        return ck


def _noise(seed: int, step: int, cycle: int, what: str) -> float:
    """A deterministic value in [-1, 1) for (seed, step, cycle, what)."""
    return random.Random(f"{seed}:{step}:{cycle}:{what}").uniform(-1.0, 1.0)


def metric_point(s: RunScript, step: int, cycle: int, t: float) -> Point:
    """Metrics at `step`: loss decays with noise, lr warms up then follows a cosine."""
    frac = step / s.total_steps
    warm = max(1, s.total_steps // 10)
    peak = 2e-4
    if step <= warm:
        lr = peak * step / warm
    else:
        lr = peak * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, s.total_steps - warm)))
    loss = 0.9 + 1.6 * math.exp(-3.0 * frac) + 0.04 * _noise(s.seed, step, cycle, "loss")
    grad = 0.35 + 0.9 * math.exp(-2.5 * frac) + 0.05 * _noise(s.seed, step, cycle, "grad")
    tput = 3650.0 + 120.0 * _noise(s.seed, step, cycle, "tput")
    vram = 38.4 + 0.6 * _noise(s.seed, step, cycle, "vram")
    phase = "warmup" if step <= warm else ("anneal" if frac > 0.9 else "train")
    tokens_per_sample = 2048
    return Point(t=t, step=step, cycle=cycle, phase=phase, loss=round(loss, 5),
                 lr=float(f"{max(lr, 0.0):.6e}"), throughput=round(tput, 1),
                 vram_gb=round(vram, 2), grad_norm=round(grad, 4),
                 samples_per_second=round(tput / tokens_per_sample * 8, 3),
                 step_time=round(8 * tokens_per_sample / tput, 3))


class RunTimeline:
    """Everything that happens in one run, laid out once; query it at any elapsed time."""

    def __init__(self, script: RunScript, platform: Platform = "axom") -> None:
        self.script = script
        self.platform = platform
        b = _Builder(script, platform)
        self._build(b)
        self.segments = tuple(b.segments)
        self.points = tuple(b.points)
        self.events = tuple(b.events)
        self.checkpoints = tuple(b.checkpoints)
        ordered = sorted(enumerate(b.logs), key=lambda il: (il[1][0], il[0]))
        self.logs = tuple(Log(t, n + 1, stream, text)
                          for n, (_, (t, stream, text)) in enumerate(ordered))
        self.end_t = self.segments[-1].t0
        self.final_phase = self.segments[-1].phase
        self.final_loss = self.points[-1].loss if self.points else None
        self.error = script.error if self.final_phase == "failed" else (
            CANCELLED_ERROR if self.final_phase == "cancelled" else None)

    @staticmethod
    def _build(b: _Builder) -> None:
        s = b.script
        b.event("submitted", {"total_steps": s.total_steps})
        b.log(f"job submitted: {s.total_steps} steps, checkpoint every {s.checkpoint_every}")
        b.hold("queued", s.queued_s)
        b.log("worker assigned: node-a100-07 (8x A100 80GB)")
        b.hold("provisioning", s.provisioning_s)
        b.log("pulling image and dataset shards")
        b.hold("staging", s.staging_s)
        b.log("training started")
        last_ckpt = 0
        preempted = False
        while True:
            stops = [s.total_steps]
            nxt = (b.step // s.checkpoint_every + 1) * s.checkpoint_every
            if nxt < s.total_steps:
                stops.append(nxt)
            for at in (s.fail_at_step, s.cancel_at_step):
                if at is not None and at > b.step:
                    stops.append(at)
            if s.preempt_at_step is not None and not preempted and s.preempt_at_step > b.step:
                stops.append(s.preempt_at_step)
            target = min(stops)
            b.run_to(target)
            if target == s.fail_at_step:
                b.log(s.error, stream="stderr")
                b.log(f"job failed at step {b.step}", stream="stderr")
                b.event("failed", {"status": b.status("failed"), "step": b.step,
                                   "error": s.error})
                b.segments.append(Segment("failed", b.t, math.inf, b.step, b.step, b.retries))
                return
            if target == s.cancel_at_step:
                b.log(f"cancel requested at step {b.step}; writing final checkpoint")
                b.hold("cancelling", s.checkpointing_s)
                ck = b.checkpoint("final")
                b.event("checkpoint", {"step": b.step, "index": ck.index, "type": "final"})
                b.log(f"{CANCELLED_ERROR}; stopped at step {b.step}")
                b.event("cancelled", {"status": b.status("cancelled"), "step": b.step,
                                      "error": CANCELLED_ERROR})
                b.segments.append(
                    Segment("cancelled", b.t, math.inf, b.step, b.step, b.retries))
                return
            if target == s.preempt_at_step and not preempted:
                preempted = True
                b.log(f"worker node-a100-07 reclaimed at step {b.step} (spot preemption)",
                      stream="stderr")
                b.hold("preempted", s.preempted_s)
                b.retries += 1
                b.step = last_ckpt
                b.event("requeued", {"retries": b.retries, "resume_step": last_ckpt})
                b.log(f"requeued (retry {b.retries}); will resume from step {last_ckpt}")
                b.hold("queued", s.queued_s)
                b.log("worker assigned: node-a100-12 (8x A100 80GB)")
                b.hold("provisioning", s.provisioning_s)
                b.hold("staging", s.staging_s)
                b.log(f"resumed from checkpoint at step {last_ckpt}" if last_ckpt
                      else "no checkpoint yet; restarting from step 0")
                continue
            if target == s.total_steps:
                b.log(f"training finished at step {b.step}; uploading model")
                b.hold("uploading", s.uploading_s)
                ck = b.checkpoint("final")
                b.event("checkpoint", {"step": b.step, "index": ck.index, "type": "final"})
                b.log("upload complete")
                b.event("completed", {"status": "completed", "step": b.step})
                b.segments.append(
                    Segment("completed", b.t, math.inf, b.step, b.step, b.retries))
                return
            # a periodic checkpoint
            b.hold("checkpointing", s.checkpointing_s)
            ck = b.checkpoint("automatic")
            last_ckpt = b.step
            b.event("checkpoint", {"step": b.step, "index": ck.index, "type": "automatic"})
            b.log(f"saved checkpoint {ck.index} at step {b.step}")

    # --- queries -------------------------------------------------------------------------
    def segment_at(self, t: float) -> Segment:
        for seg in self.segments:
            if seg.t0 <= t < seg.t1:
                return seg
        return self.segments[-1] if t >= self.end_t else self.segments[0]

    def state(self, t: float) -> RunState:
        seg = self.segment_at(t)
        step = seg.step0
        if seg.phase == "running":
            step = min(seg.step1, seg.step0 + int((t - seg.t0) * self.script.steps_per_second))
        terminal = seg.phase in TERMINAL
        error = self.error if terminal else None
        started = next((g.t0 for g in self.segments if g.phase == "running"), None)
        return RunState(
            status=_STATUS[self.platform][seg.phase], phase=seg.phase, step=step,
            retries=seg.retries, error=error, terminal=terminal,
            started_t=started if started is not None and started <= t else None,
            finished_t=self.end_t if terminal else None)

    def points_at(self, t: float) -> list[Point]:
        return [p for p in self.points if p.t <= t]

    def logs_at(self, t: float) -> list[Log]:
        return [g for g in self.logs if g.t <= t]

    def events_at(self, t: float) -> list[Event]:
        return [e for e in self.events if e.t <= t]

    def checkpoints_at(self, t: float) -> list[Checkpoint]:
        return [c for c in self.checkpoints if c.t <= t]

    def running_seconds(self, t: float) -> float:
        """Seconds spent in `running` up to t (for GPU-seconds and cost)."""
        return sum(max(0.0, min(t, g.t1) - g.t0) for g in self.segments
                   if g.phase == "running" and g.t0 <= t)

    def eta_seconds(self, t: float) -> float:
        return max(0.0, self.end_t - t)
