"""What a followed training run looks like at one poll, the same for every platform.

The platform followers (`axom.py`, `tensorone.py`) turn API answers into these values; `watch`
renders them. Frozen values, no I/O: a renderer can be tested with hand-made snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# The platform's own status word is kept in `RunSnapshot.status`; `phase` is the normalised
# meaning a renderer or a CI gate acts on. `preempted` and requeues are "waiting", not errors.
Phase = Literal["waiting", "running", "paused", "completed", "failed", "cancelled"]
TERMINAL_PHASES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True)
class MetricPoint:
    """One training-metrics point; any field a platform does not report is None."""

    step: int | None
    loss: float | None = None
    lr: float | None = None
    throughput: float | None = None  # tokens/s (Axom `throughput`, TensorOne tokensPerSecond)
    grad_norm: float | None = None
    ts: str | None = None


@dataclass(frozen=True)
class LogLine:
    """One new log line of the run (already de-duplicated by the follower)."""

    text: str
    seq: int | None = None
    ts: str | None = None
    stream: str | None = None


@dataclass(frozen=True)
class RunSnapshot:
    """The run as of one poll. `new_metrics`/`new_logs` hold only what this poll added."""

    platform: Literal["axom", "tensorone"]
    job_id: str
    status: str  # the platform's own word: "preempted", "checkpointing", "initializing", ...
    phase: Phase
    name: str | None = None
    step: int | None = None
    total_steps: int | None = None
    retries: int | None = None  # Axom's requeue counter; rising is normal, not an error
    error: str | None = None  # the platform's error text for failed/cancelled runs
    eta: str | None = None  # the platform's own estimate ("32m"), shown as-is
    new_metrics: tuple[MetricPoint, ...] = ()
    new_logs: tuple[LogLine, ...] = ()

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES
