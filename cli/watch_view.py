"""What `weightlift watch` shows: RunSnapshots in, lines for a person and JSON events out.

Pure: no I/O and no clock of its own (the caller passes the poll's time), so every wording is
tested with hand-made snapshots. `watch_cmd` decides where things go (stderr, a tqdm bar, stdout).
The tone is deliberate: preemptions, requeues and rising `retries` are the platform doing its
job, so they read as news, never as errors; only a failed or cancelled run is one.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from weightlift.downloader.errors import EXIT_OK, EXIT_PLATFORM
from weightlift.downloader.redact import redact_text
from weightlift.downloader.sources.run_status import MetricPoint, RunSnapshot

SPARK_CHARS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 30  # losses kept for the sparkline: enough to see a trend, short enough for a line
BAR_WIDTH = 20  # the text progress bar on non-TTY output
LOG_PREFIX = " " * 9 + "│ "  # under the "HH:MM:SS " column, so status lines stand out

# A few words on what a waiting status means, so a long `queued` reads as normal.
GLOSS: dict[str, str] = {
    "queued": "waiting for a worker",
    "provisioning": "a worker is being set up",
    "staging": "loading data and weights onto the worker",
    "initializing": "the worker is starting",
    "uploading": "uploading the trained model",
    "cancelling": "the platform is cancelling the run",
}

# Terminal escapes and other control characters in a platform's log text could redraw the
# user's terminal; tabs are kept, everything else of that kind becomes a space.
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|[\x00-\x08\x0b-\x1f\x7f]")


def clean_text(text: str) -> str:
    """Platform text made safe to print: no URL query strings, no terminal control sequences."""
    return _CONTROL.sub(" ", redact_text(text)).rstrip()


def sparkline(values: Iterable[float | None], width: int = SPARK_WIDTH) -> str:
    """The last ``width`` values as ▁▂▃▄▅▆▇█ scaled between their min and max; a non-finite
    value (a diverged loss) is shown as '!' so it is not mistaken for a low one."""
    tail = list(values)[-width:]
    finite = [v for v in tail if v is not None and math.isfinite(v)]
    if not finite:
        return "!" * len(tail)
    lo, hi = min(finite), max(finite)
    top = len(SPARK_CHARS) - 1
    out = []
    for v in tail:
        if v is None or not math.isfinite(v):
            out.append("!")
        elif hi == lo:
            out.append(SPARK_CHARS[top // 2])  # a flat line sits in the middle
        else:
            out.append(SPARK_CHARS[round((v - lo) / (hi - lo) * top)])
    return "".join(out)


def text_bar(step: int, total: int, width: int = BAR_WIDTH) -> str:
    """``[#####---------------]``: an ASCII bar for logs and pipes (tqdm draws the TTY one)."""
    frac = min(max(step / total, 0.0), 1.0) if total > 0 else 0.0
    filled = int(frac * width)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def fmt_float(x: float, digits: int = 4) -> str:
    return f"{x:.{digits}g}" if math.isfinite(x) else str(x)


def fmt_lr(x: float) -> str:
    return f"{x:.1e}" if math.isfinite(x) and x != 0 else fmt_float(x)


def fmt_rate(x: float) -> str:
    """Tokens per second, short: 950, 12.4k, 1.2M."""
    if not math.isfinite(x):
        return str(x)
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.1f}{suffix}"
    return f"{x:.0f}"


def fmt_duration(seconds: float) -> str:
    """13s, 2m 05s, 1h 02m."""
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def fmt_step(step: int | None, total: int | None) -> str:
    if step is None:
        return ""
    return f"step {step}/{total}" if total else f"step {step}"


@dataclass(frozen=True)
class Metrics:
    """The latest value of each metric (fields are updated independently: a platform may report
    some of them only now and then)."""

    loss: float | None = None
    lr: float | None = None
    throughput: float | None = None
    grad_norm: float | None = None

    def merged(self, p: MetricPoint) -> Metrics:
        return Metrics(
            loss=p.loss if p.loss is not None else self.loss,
            lr=p.lr if p.lr is not None else self.lr,
            throughput=p.throughput if p.throughput is not None else self.throughput,
            grad_norm=p.grad_norm if p.grad_norm is not None else self.grad_norm,
        )


@dataclass(frozen=True)
class StatusLine:
    """A status transition or a note about the run: shown even with -q."""

    text: str


@dataclass(frozen=True)
class LogText:
    """One line of the run's own log, already prefixed."""

    text: str


@dataclass(frozen=True)
class StepProgress:
    """Where the run is: drawn as a tqdm bar on a TTY, else printed with ``line()``."""

    time_label: str
    step: int | None
    total: int | None
    metrics: Metrics
    spark: str
    eta: str | None

    def summary(self) -> str:
        """The metrics part: 'loss 2.412 ▇▅▄▃  lr 3.0e-04  12.4k tok/s  grad_norm 0.81  eta 3m'."""
        m = self.metrics
        parts = []
        if m.loss is not None:
            parts.append(f"loss {fmt_float(m.loss)}" + (f" {self.spark}" if self.spark else ""))
        if m.lr is not None:
            parts.append(f"lr {fmt_lr(m.lr)}")
        if m.throughput is not None:
            parts.append(f"{fmt_rate(m.throughput)} tok/s")
        if m.grad_norm is not None:
            parts.append(f"grad_norm {fmt_float(m.grad_norm, 3)}")
        if self.eta:
            parts.append(f"eta {self.eta}")
        return "  ".join(parts)

    def line(self) -> str:
        """One plain line for logs and pipes."""
        head = fmt_step(self.step, self.total) or "step ?"
        if self.step is not None and self.total:
            head += f" {text_bar(self.step, self.total)} {100 * self.step / self.total:3.0f}%"
        summary = self.summary()
        return f"{self.time_label} {head}" + (f"  {summary}" if summary else "")


Item = StatusLine | LogText | StepProgress


@dataclass(frozen=True)
class Update:
    """What one snapshot changed, in the order a person should read it, plus JSON events."""

    items: tuple[Item, ...]
    events: tuple[dict[str, Any], ...]
    terminal: bool


def _status_event(stamp: str, prev: RunSnapshot | None, snap: RunSnapshot) -> dict[str, Any]:
    return {"event": "status", "time": stamp, "platform": snap.platform, "job_id": snap.job_id,
            "name": snap.name, "status": snap.status, "phase": snap.phase,
            "previous": prev.status if prev else None, "step": snap.step,
            "total_steps": snap.total_steps, "retries": snap.retries}


def _done_event(stamp: str, snap: RunSnapshot) -> dict[str, Any]:
    """The run's end; ``exit_code`` is what `watch` (without --pull) exits with."""
    ok = snap.phase == "completed"
    return {"event": "done", "time": stamp, "platform": snap.platform, "job_id": snap.job_id,
            "status": snap.status, "phase": snap.phase, "ok": ok, "step": snap.step,
            "total_steps": snap.total_steps, "retries": snap.retries,
            "error": clean_text(snap.error) if snap.error else None,
            "exit_code": EXIT_OK if ok else EXIT_PLATFORM}


def _finite(x: float | None) -> float | None:
    # Strict JSON has no NaN/Infinity; a machine reading the stream gets null instead.
    return x if x is None or math.isfinite(x) else None


class WatchView:
    """Turns the sequence of snapshots of one run into `Update`s; remembers only what it needs
    to describe changes (previous snapshot, losses for the sparkline, latest metrics)."""

    def __init__(self) -> None:
        self.prev: RunSnapshot | None = None
        self.metrics = Metrics()
        self.losses: deque[float] = deque(maxlen=SPARK_WIDTH)
        self.started: datetime | None = None
        self.max_step: int | None = None
        self.requeued = False  # a preemption/requeue is in progress: next `running` is a resume
        self.preemptions = 0  # seen by us (the platform's `retries` is preferred when it has one)
        self._last_point: MetricPoint | None = None
        self._shown_step: int | None = None

    # -- the one entry point -------------------------------------------------------------
    def update(self, snap: RunSnapshot, now: datetime) -> Update:
        if self.started is None:
            self.started = now
        label = now.strftime("%H:%M:%S")
        stamp = now.astimezone(timezone.utc).isoformat(timespec="seconds")
        prev = self.prev
        items: list[Item] = []
        events: list[dict[str, Any]] = []

        status_changed = prev is None or (prev.status, prev.phase) != (snap.status, snap.phase)
        if status_changed or (prev is not None and _rose(prev.retries, snap.retries)):
            events.append(_status_event(stamp, prev, snap))

        new_points = self._take_metrics(snap.new_metrics)  # first: the verdict quotes the loss
        status_text = self._status_text(prev, snap, now)
        for p in new_points:
            events.append({"event": "metrics", "time": stamp, "step": p.step,
                           "loss": _finite(p.loss), "lr": _finite(p.lr),
                           "throughput": _finite(p.throughput),
                           "grad_norm": _finite(p.grad_norm), "ts": p.ts})

        step_changed = snap.step is not None and snap.step != self._shown_step
        if snap.step is not None and step_changed:
            pct = round(100 * snap.step / snap.total_steps, 1) if snap.total_steps else None
            events.append({"event": "progress", "time": stamp, "step": snap.step,
                           "total_steps": snap.total_steps, "percent": pct, "eta": snap.eta})
        backwards = self._went_back(snap)
        progress: StepProgress | None = None
        # "step 0/120" while a run is queued says nothing; any later step or metric does.
        first_step = self._shown_step is None
        if snap.step is not None:
            self._shown_step = snap.step
        if (step_changed and (snap.step or not first_step)) or new_points:
            progress = StepProgress(label, self._shown_step, snap.total_steps, self.metrics,
                                    sparkline(self.losses), snap.eta)

        logs: list[LogText] = []
        for log in snap.new_logs:
            text = clean_text(log.text)
            events.append({"event": "log", "time": stamp, "text": text, "seq": log.seq,
                           "ts": log.ts, "stream": log.stream})
            logs.extend(LogText(LOG_PREFIX + part) for part in (text.splitlines() or [""]))

        # Reading order: what happened to the run, what it said since the last poll, where it
        # got to (so the newest step is the last line above the next poll's); the verdict of a
        # finished run comes last of all.
        if backwards is not None and status_text is None:
            status_text = backwards
        line = StatusLine(f"{label} {status_text}") if status_text else None
        if line is not None and not snap.terminal:
            items.append(line)
        items.extend(logs)
        if progress is not None:
            items.append(progress)
        if line is not None and snap.terminal:
            items.append(line)

        if snap.terminal:
            events.append(_done_event(stamp, snap))
        self.prev = snap
        return Update(tuple(items), tuple(events), snap.terminal)

    # -- pieces --------------------------------------------------------------------------
    def _take_metrics(self, points: Sequence[MetricPoint]) -> list[MetricPoint]:
        """New points, minus a repeat of the last one (a platform that reports only "the
        current metrics" returns the same point on every poll while nothing moves)."""
        fresh = []
        for p in points:
            if p == self._last_point:
                continue
            self._last_point = p
            fresh.append(p)
            self.metrics = self.metrics.merged(p)
            if p.loss is not None:
                self.losses.append(p.loss)
        return fresh

    def _went_back(self, snap: RunSnapshot) -> str | None:
        """A step lower than one already seen means the run resumed from a checkpoint."""
        if snap.step is None:
            return None
        prev_max = self.max_step
        self.max_step = snap.step if prev_max is None else max(prev_max, snap.step)
        if prev_max is not None and snap.step < prev_max and snap.phase == "running":
            return (f"back at step {snap.step} (was {prev_max}): resumed from its last "
                    "checkpoint, the steps after it are redone")
        return None

    def _status_text(self, prev: RunSnapshot | None, snap: RunSnapshot,
                     now: datetime) -> str | None:
        """The status line for this snapshot, or None when nothing worth a line changed."""
        step = fmt_step(snap.step, snap.total_steps)
        retries_rose = prev is not None and _rose(prev.retries, snap.retries)
        retry_note = f" (retry {snap.retries})" if retries_rose else ""
        if prev is None:
            who = snap.name or f"{snap.platform} job {snap.job_id}"
            return f"{who}: {self._describe_first(snap)}"
        if (prev.status, prev.phase) == (snap.status, snap.phase):
            if retries_rose:  # a whole preempt-requeue cycle fell between two polls
                self.preemptions += 1
                self.requeued = True
                return (f"requeued by the platform{retry_note}: its worker was preempted; "
                        "not an error, it resumes from its last checkpoint")
            return None
        status = snap.status
        if snap.terminal:
            return self._describe_end(snap, now)
        if status == "preempted":
            self.preemptions += 1
            self.requeued = True
            at = f" at {step}" if step else ""
            return (f"preempted{at} — the platform requeues it and resumes from its last "
                    f"checkpoint{retry_note}; not an error")
        if snap.phase == "paused":
            self.preemptions += 1
            self.requeued = True
            at = f" at {step}" if step else ""
            return f"paused{at} — it can resume; still watching{retry_note}"
        if status == "uploading":
            return "uploading the trained model"
        gloss = f" ({GLOSS[status]})" if status in GLOSS else ""
        again = f" again, retry {snap.retries}" if retries_rose else " again"
        if snap.phase == "waiting":
            if retries_rose and not self.requeued:
                self.preemptions += 1
                self.requeued = True
                return (f"{status}{again}{gloss}: its worker was preempted; not an error, "
                        "it resumes from its last checkpoint")
            return f"{status}{again if self.requeued else ''}{gloss}"
        if status == "checkpointing":
            return f"checkpointing at {step}" if step else "checkpointing"
        if status == "running":
            if self.requeued:
                self.requeued = False
                self.max_step = snap.step  # the resume is announced here, not as "back at"
                at = f" at {step}" if step else ""
                return f"running{again}{at}, resumed from its last checkpoint"
            if prev.status == "checkpointing":
                return None  # back to training after a checkpoint: the progress line says so
            return "running"
        return f"{status}{gloss}{retry_note}"

    def _describe_first(self, snap: RunSnapshot) -> str:
        if snap.terminal:
            return "already " + self._describe_end(snap, None)
        if snap.status in GLOSS:
            text = f"{snap.status} ({GLOSS[snap.status]})"
        else:
            text = snap.status
        if snap.status == "preempted" or snap.phase == "paused":
            self.requeued = True
            text += " — the platform resumes it from its last checkpoint; not an error"
        step = fmt_step(snap.step, snap.total_steps)
        if step:
            text += f", {step}"
        if snap.retries:
            text += f", requeued {_plural(snap.retries, 'time')} so far (normal)"
        return text

    def _describe_end(self, snap: RunSnapshot, now: datetime | None) -> str:
        step = fmt_step(snap.step, snap.total_steps)
        watched = ""
        if now is not None and self.started is not None:
            watched = f"; watched for {fmt_duration((now - self.started).total_seconds())}"
        if snap.phase == "completed":
            parts = [step.replace("step ", "") + " steps" if step else ""]
            if self.metrics.loss is not None:
                parts.append(f"final loss {fmt_float(self.metrics.loss)}")
            requeues = snap.retries if snap.retries is not None else self.preemptions
            if requeues:
                parts.append(f"{_plural(requeues, 'preemption')} absorbed by the platform")
            detail = ", ".join(p for p in parts if p)
            return f"completed{': ' + detail if detail else ''}{watched}"
        # The platform's error text is not repeated here: `watch` ends with it as its error line.
        at = f" at {step}" if step else ""
        return f"{snap.phase}{at}{watched}"


def _rose(before: int | None, after: int | None) -> bool:
    return before is not None and after is not None and after > before


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
