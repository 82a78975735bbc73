"""Seeded fault schedules for chaos trials against the storage emulator. Pure: no I/O, no clock.

`build_schedule(seed, files, now=...)` draws, from `random.Random(seed)` only, everything one
trial does: the pull's knobs (connections, chunk size, URL lifetime, whether the manifest
carries sha256) and a list of faults, each aimed at one file and landing at a random object
offset (`from_offset`, `drop_after` byte counts, flipped offsets, stall points). The same seed
and file list always give the same schedule, so a failing trial is replayed from its seed;
`Schedule.describe()` prints it.

Transient faults are budgeted per file so that, whatever order they land in, no chunk can see
more failures in a row than the engine's retry policy allows: a trial made only of them must
end byte-identical. A schedule may add one *terminal* fault (it never stops, or it is a
Retry-After far beyond any cap): such a trial ends with exit 3 if that fault fires, and a
clean re-run completes it.
"""

from __future__ import annotations

import email.utils
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from weightlift.emulator.faults import Fault

FOREVER = 1_000_000  # `times` of a fault that never stops within a trial
KiB = 1 << 10

# Transient kinds and their relative weights. Every kind named by the chaos brief is here.
_KINDS: tuple[tuple[str, int], ...] = (
    ("drop_after", 4), ("stall", 2), ("status", 4), ("throttled_429", 2), ("expire", 2),
    ("wrong_content_range", 2), ("ignore_range", 2), ("flip_byte", 2), ("replace_object", 1),
    ("gzip", 2),
)
# Failed attempts a chunk may see in a row, at most, from one file's transient faults: the
# engine gives up at 8 (RetryPolicy.max_attempts), bad responses at 8 per file.
FILE_FAILURE_BUDGET = 5
# Expired answers per trial: every one costs a manifest refresh, and the resolver gives up
# after 4 refreshes with no byte in between (MAX_IDLE_REFRESHES).
EXPIRE_BUDGET = 3
STALL_SECONDS = 1.5  # longer than the stall timeout a trial runs with (see StallTimeout)
STALL_TIMEOUT = 0.5  # WEIGHTLIFT_STALL_TIMEOUT for the pull


@dataclass(frozen=True)
class FileInfo:
    """One file of the model as the schedule sees it: its name, size, and (for a safetensors
    shard) where its tensor data starts, so a replacement keeps the header valid."""

    rel: str
    size: int
    data_start: int | None = None  # None: not a shard, never replaced


@dataclass(frozen=True)
class PlannedFault:
    """One fault to arm: `storage.inject(key_of(rel), fault, times=, from_offset=)`."""

    rel: str
    fault: Fault
    times: int
    from_offset: int = 0
    terminal: bool = False  # it never stops (or asks to wait far beyond any cap)
    replace_seed: int | None = None  # replace_object: `replacement(...)` builds the content

    @property
    def label(self) -> str:
        f = self.fault
        if f.kind == "status":
            ra = f" Retry-After={f.retry_after!r}" if f.retry_after is not None else ""
            return f"status {f.code}{ra}"
        if f.kind in ("drop_after", "short_body"):
            return f"{f.kind}({f.n_bytes})"
        if f.kind == "stall":
            return f"stall({f.seconds}s after {f.n_bytes})"
        if f.kind == "flip_byte":
            return f"flip_byte(@{f.offset})"
        if f.kind == "throttle":
            return f"throttle({f.rate:.0f} B/s)"
        if f.kind == "replace_object":
            return f"replace_object(seed {self.replace_seed})"
        return f.kind

    def describe(self) -> str:
        times = "forever" if self.times >= FOREVER else f"x{self.times}"
        end = " [terminal]" if self.terminal else ""
        return f"{self.rel} @>={self.from_offset}: {self.label} {times}{end}"


@dataclass(frozen=True)
class Schedule:
    """Everything one chaos trial does, drawn from its seed."""

    seed: int
    connections: int
    chunk_size: int
    url_lifetime: float
    with_sha256: bool
    huge_retry_after: bool  # this trial's 429s ask for a day (each is terminal for its file)
    faults: tuple[PlannedFault, ...] = field(default_factory=tuple)

    @property
    def terminal(self) -> tuple[PlannedFault, ...]:
        return tuple(p for p in self.faults if p.terminal)

    def kinds(self) -> dict[str, int]:
        """Planned applications by fault kind (terminal faults count once)."""
        out: dict[str, int] = {}
        for p in self.faults:
            out[p.fault.kind] = out.get(p.fault.kind, 0) + (1 if p.times >= FOREVER else p.times)
        return out

    def describe(self) -> str:
        head = (f"seed={self.seed} connections={self.connections} chunk={self.chunk_size} "
                f"url_lifetime={self.url_lifetime}s sha256={'yes' if self.with_sha256 else 'no'}")
        return "\n".join([head, *("  " + p.describe() for p in self.faults)])


def http_date(epoch: float) -> str:
    return email.utils.formatdate(epoch, usegmt=True)


def build_schedule(seed: int, files: Sequence[FileInfo], *, now: float,
                   terminal_rate: float = 0.2) -> Schedule:
    """The schedule of trial `seed` for a model made of `files` (its first byte's time `now`,
    epoch seconds, only dates Retry-After values)."""
    if not files:
        raise ValueError("a schedule needs at least one file")
    rng = random.Random(seed)
    connections = rng.choice((2, 4, 4, 8))
    chunk_size = rng.choice((64 * KiB, 128 * KiB, 256 * KiB, 512 * KiB))
    url_lifetime = rng.choice((600.0, 600.0, 2.0, 0.6))
    with_sha256 = rng.random() < 0.7
    huge_retry_after = rng.random() < 0.15

    faults: list[PlannedFault] = []
    cost: dict[str, int] = {f.rel: 0 for f in files}
    expires = 0
    kinds = [k for k, _ in _KINDS]
    weights = [w for _, w in _KINDS]
    for _ in range(rng.randint(2, 8)):
        kind = rng.choices(kinds, weights)[0]
        target = rng.choice(files)
        planned = _draw(rng, kind, target, files, now, huge_retry_after, with_sha256,
                        chunk_size)
        if planned is None:
            continue
        # A drop after some bytes, or a stall after some bytes, is progress: it resets the
        # engine's attempt count. Everything else is a failed attempt for that chunk.
        failing = planned.times if not _progresses(planned.fault) else 0
        if planned.fault.kind == "expire":
            if expires + planned.times > EXPIRE_BUDGET:
                continue
            expires += planned.times
        if cost[planned.rel] + failing > FILE_FAILURE_BUDGET:
            continue
        cost[planned.rel] += failing
        faults.append(planned)

    if huge_retry_after and not any(p.terminal for p in faults):
        # This trial is about a Retry-After far beyond any cap: make sure one is aimed.
        planned = _draw(rng, "throttled_429", rng.choice(files), files, now, True, with_sha256,
                        chunk_size)
        assert planned is not None
        faults.append(planned)
    if rng.random() < terminal_rate:
        # Armed after the transients (they match first) and before the throttle (which matches
        # everything), of a kind no transient aims at the same file, so a request record
        # tells whether it fired.
        target = rng.choice(files)
        offset = _landing(rng, target.size, chunk_size)
        used = {p.fault.kind for p in faults if p.rel == target.rel}
        choices = [k for k in ("status", "drop_after", "expire") if k not in used]
        if choices:
            terminal = rng.choice(choices)
            fault = (Fault.status(rng.choice((500, 502, 503, 504))) if terminal == "status"
                     else Fault.drop_after(0) if terminal == "drop_after" else Fault.expire())
            faults.append(PlannedFault(target.rel, fault, FOREVER, offset, terminal=True))
    if url_lifetime < 5:
        # Short-lived URLs only expire during a pull that lasts: slow every response down.
        rate = rng.choice((2.0, 3.0, 4.0)) * (1 << 20)
        faults.append(PlannedFault("*", Fault.throttle(rate), FOREVER))
    return Schedule(seed, connections, chunk_size, url_lifetime, with_sha256, huge_retry_after,
                    tuple(faults))


def _progresses(fault: Fault) -> bool:
    return fault.kind in ("drop_after", "stall") and fault.n_bytes > 0


def _landing(rng: random.Random, size: int, chunk_size: int) -> int:
    """A random `from_offset`: mostly the start of a random chunk (a request starts there),
    sometimes a raw offset (only a request resumed after a cut starts mid-chunk), sometimes 0."""
    if not size or rng.random() < 0.2:
        return 0
    offset = rng.randrange(size)
    return offset - offset % chunk_size if rng.random() < 0.7 else offset


def _draw(rng: random.Random, kind: str, target: FileInfo, files: Sequence[FileInfo],
          now: float, huge_retry_after: bool, with_sha256: bool,
          chunk_size: int) -> PlannedFault | None:
    size = target.size
    offset = rng.randrange(size) if size else 0
    from_offset = _landing(rng, size, chunk_size)
    rel = target.rel
    if kind == "drop_after":
        n = rng.choice((0, rng.randrange(1, 64 * KiB), rng.randrange(1, 1 << 20)))
        if rng.random() < 0.25:  # a clean close (FIN) short of Content-Length, not a reset
            return PlannedFault(rel, Fault.short_body(max(1, n)), rng.randint(1, 2),
                                from_offset)
        return PlannedFault(rel, Fault.drop_after(n), rng.randint(1, 3), from_offset)
    if kind == "stall":
        after = rng.choice((0, rng.randrange(1, 256 * KiB)))
        seconds = rng.choice((STALL_SECONDS, 0.1))  # 0.1 s: slow, under the stall timeout
        return PlannedFault(rel, Fault.stall(seconds, after), rng.randint(1, 2), from_offset)
    if kind == "status":
        code = rng.choice((500, 502, 503, 504))
        return PlannedFault(rel, Fault.status(code), rng.randint(1, 3), from_offset)
    if kind == "throttled_429":
        if huge_retry_after:
            value = rng.choice(("86400", http_date(now + 86400), "9" * 30))
            return PlannedFault(rel, Fault.status(429, retry_after=value), 1, from_offset,
                                terminal=True)
        value = rng.choice(("0", "0", "1", http_date(now - 3600), "0.2"))
        return PlannedFault(rel, Fault.status(429, retry_after=value), rng.randint(1, 2),
                            from_offset)
    if kind == "expire":
        return PlannedFault(rel, Fault.expire(), rng.randint(1, 2), from_offset)
    if kind == "wrong_content_range":
        return PlannedFault(rel, Fault.wrong_content_range(), rng.randint(1, 2), from_offset)
    if kind == "ignore_range":
        return PlannedFault(rel, Fault.ignore_range(), rng.randint(1, 3), from_offset)
    if kind == "gzip":
        return PlannedFault(rel, Fault.gzip(), rng.randint(1, 2), from_offset)
    if kind == "flip_byte":
        if not with_sha256 or not size:
            return None  # without a checksum a flipped byte cannot be told from the truth
        return PlannedFault(rel, Fault.flip_byte(offset), 1)
    if kind == "replace_object":
        shards = [f for f in files if f.data_start is not None and f.size > f.data_start]
        if not shards:
            return None
        shard = rng.choice(shards)
        at = _landing(rng, shard.size, chunk_size)
        # The bytes are built by the caller (`replacement`): a placeholder keeps this pure.
        return PlannedFault(shard.rel, Fault.replace_object(b""), 1, at,
                            replace_seed=rng.randrange(1 << 30))
    raise ValueError(f"unknown fault kind {kind!r}")


def replacement(content: bytes, data_start: int, seed: int) -> bytes:
    """`content` (a safetensors shard) with some tensor-data bytes changed: same size, same
    header (so it still loads and counts the same), new bytes. Never equal to `content`."""
    if not 0 <= data_start < len(content):
        raise ValueError("no tensor data to change")
    rng = random.Random(seed)
    out = bytearray(content)
    span = len(content) - data_start
    for _ in range(1 + min(16, span // 4096)):
        at = data_start + rng.randrange(span)
        out[at] ^= rng.randrange(1, 256)
    return bytes(out)
