"""Hypothesis explores the lifecycle: random orders of answers, bytes (late ones from superseded
requests too), failures, object replacements, digests and commits, with the invariants checked
after every step. ``WEIGHTLIFT_LIFECYCLE_EXAMPLES=5000 pytest tests/downloader/
test_lifecycle_machine.py`` runs more than the default run's few seconds' worth."""

from __future__ import annotations

import os
import random
from datetime import datetime, timezone

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from weightlift.downloader.journal import JournalState
from weightlift.downloader.lifecycle import FileState
from weightlift.downloader.lifecycle_events import (
    Answered,
    AskRetry,
    Commit,
    Committed,
    Digested,
    Ended,
    Fail,
    Fetch,
    Finalise,
    Landed,
    Limits,
    NetFailed,
    Phase,
    Refresh,
    Refreshed,
    Rejected,
    Request,
    RetryDecided,
    StatusFailed,
)
from weightlift.downloader.response_check import Decision, Verdict
from weightlift.downloader.retry import RetryPolicy
from weightlift.downloader.storage_errors import StorageErrorKind

EXAMPLES = int(os.environ.get("WEIGHTLIFT_LIFECYCLE_EXAMPLES", "400"))
POLICY = RetryPolicy(max_attempts=4)
LIMITS = Limits(max_restarts=3, max_bad_responses=4, max_expired_streak=3,
                progress_reset_bytes=64)
NOW = datetime(2026, 12, 2, tzinfo=timezone.utc)


def sha_of(version: int) -> str:
    return f"{version:064x}"


class Lifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.st: FileState | None = None
        self.version = 0  # the object's version on the server now
        self.replacements = 0
        self.part: list[int | None] = []  # which version each byte on disk came from
        self.writer_gen: list[int | None] = []  # the generation of the request that wrote it
        self.reqs: dict[int, Request] = {}  # every request ever issued
        self.gen_of: dict[int, int] = {}  # the generation a request was issued in
        self.served: dict[int, int] = {}  # request -> version it was answered with
        self.cursor: dict[int, int] = {}  # request -> next offset its body brings
        self.whole: set[int] = set()
        self.asks: list[AskRetry] = []
        self.refreshes: list[Refresh] = []
        self.finalise: Finalise | None = None
        self.commit: Commit | None = None
        self.rng = random.Random(0)
        self.events = 0

    # ---- driving ---------------------------------------------------------------------------

    def do(self, actions: list) -> None:
        assert self.st is not None
        for a in actions:
            if isinstance(a, Fetch):
                self.reqs[a.request.id] = a.request
                self.gen_of[a.request.id] = self.st.generation
                self.cursor[a.request.id] = a.request.start
            elif isinstance(a, AskRetry):
                self.asks.append(a)
            elif isinstance(a, Refresh):
                self.refreshes.append(a)
            elif isinstance(a, Finalise):
                assert self.st.size is not None
                assert a.size == self.st.size
                assert self.st.done.covers(0, self.st.size)
                self.finalise = a
            elif isinstance(a, Commit):
                # Finalised only when size and hash agree: every byte from one version.
                versions = set(self.part[: self.st.size])
                if self.st.size:
                    assert len(versions) == 1, versions
                    assert None not in versions
                    (v,) = versions
                    assert a.digest == sha_of(v)
                if self.st.expected_sha:
                    assert a.digest == self.st.expected_sha
                self.commit = a
            elif isinstance(a, Fail):
                assert self.st.phase is Phase.FAILED

    def step(self, event: object) -> None:
        assert self.st is not None
        self.events += 1
        self.do(self.st.step(event))  # type: ignore[arg-type]

    def live(self) -> list[int]:
        return sorted(self.st.live) if self.st else []

    def answered_reqs(self) -> list[int]:
        return sorted(self.served)

    # ---- rules -----------------------------------------------------------------------------

    @precondition(lambda self: self.st is None)
    # Mostly files of several ranges (where requests overlap in time), sometimes tiny ones.
    @rule(size=st.one_of(st.integers(101, 600), st.integers(0, 100)),
          chunk=st.sampled_from([50, 128, 1000]),
          pinned=st.booleans())
    def begin(self, size: int, chunk: int, pinned: bool) -> None:
        journal = JournalState(rel="f", size=size)
        self.st = FileState("f", size, sha_of(0) if pinned else None, journal, chunk,
                            limits=LIMITS)
        self.part = [None] * size
        self.writer_gen = [None] * size
        self.do(self.st.start())

    @precondition(lambda self: self.st is not None and any(
        r not in self.served for r in self.st.live))
    @rule(data=st.data(), whole=st.booleans())
    def answer(self, data: st.DataObject, whole: bool) -> None:
        req = data.draw(st.sampled_from([r for r in self.live() if r not in self.served]))
        request = self.reqs[req]
        etag = f'"v{self.version}"'
        self.served[req] = self.version
        if whole and request.may_be_whole:
            self.whole.add(req)
            self.cursor[req] = 0
            self.step(Answered(req, Decision(Verdict.WRITE, etag=etag, whole=True)))
        else:
            self.step(Answered(req, Decision(Verdict.WRITE, etag=etag)))

    @precondition(lambda self: self.st is not None and self.served)
    @rule(data=st.data(), n=st.integers(1, 200))
    def land(self, data: st.DataObject, n: int) -> None:
        """Bytes of any answered request, current or long superseded, reach the sink."""
        assert self.st is not None
        req = data.draw(st.sampled_from(self.answered_reqs()))
        request = self.reqs[req]
        end = self.st.size if req in self.whole or request.end is None else request.end
        start = self.cursor[req]
        n = min(n, (end or 0) - start)
        if n <= 0:
            return
        # The sink: the check and the write with nothing between.
        if not self.st.is_current(req):
            assert self.gen_of[req] < self.st.generation or self.st.terminal or (
                req not in self.st.live)
            return
        assert self.gen_of[req] == self.st.generation  # no superseded request writes
        for i in range(start, start + n):
            self.part[i] = self.served[req]
            self.writer_gen[i] = self.gen_of[req]
        self.cursor[req] = start + n
        self.step(Landed(req, start, n))

    @precondition(lambda self: self.st is not None and any(
        r in self.served for r in self.st.live))
    @rule(data=st.data())
    def end(self, data: st.DataObject) -> None:
        assert self.st is not None
        req = data.draw(st.sampled_from([r for r in self.live() if r in self.served]))
        request = self.reqs[req]
        end = self.st.size if req in self.whole or request.end is None else request.end
        if self.cursor[req] == end:
            self.step(Ended(req))
        else:
            self.step(NetFailed(req, f"body ended {end - self.cursor[req]} bytes early"))

    @precondition(lambda self: self.st is not None and self.st.live)
    @rule(data=st.data(), what=st.sampled_from([
        "net", "bad", "no-range", "size", "412", "expired", "retryable", "fatal"]))
    def fail(self, data: st.DataObject, what: str) -> None:
        req = data.draw(st.sampled_from(self.live()))
        if what == "net":
            self.step(NetFailed(req, "reset"))
        elif what in ("bad", "no-range", "size", "412"):
            if what == "412":
                self.version += 1  # If-Match failed: the object was replaced
            verdict = {"bad": Verdict.BAD_RESPONSE, "no-range": Verdict.NO_RANGE_SUPPORT,
                       "size": Verdict.SIZE_MISMATCH, "412": Verdict.OBJECT_CHANGED}[what]
            self.step(Rejected(req, Decision(verdict, what)))
        else:
            kind = {"expired": StorageErrorKind.EXPIRED, "retryable": StorageErrorKind.RETRYABLE,
                    "fatal": StorageErrorKind.FATAL}[what]
            self.step(StatusFailed(req, kind, what, 503 if what == "retryable" else None))

    @precondition(lambda self: self.asks)
    @rule()
    def decide(self) -> None:
        ask = self.asks.pop(0)
        decision = POLICY.decide(ask.attempt, status=ask.status, retry_after=ask.retry_after,
                                 now=NOW, rng=self.rng)
        self.step(RetryDecided(ask.req, decision))

    @precondition(lambda self: self.refreshes)
    @rule()
    def refreshed(self) -> None:
        self.step(Refreshed(self.refreshes.pop(0).req))

    @precondition(lambda self: self.st is not None and self.replacements < 3)
    @rule()
    def replace_object(self) -> None:
        self.version += 1
        self.replacements += 1

    @precondition(lambda self: self.finalise is not None)
    @rule()
    def digest(self) -> None:
        assert self.st is not None
        assert self.finalise is not None
        fin, self.finalise = self.finalise, None
        versions = set(self.part[: fin.size])
        digest = sha_of(versions.pop()) if len(versions) == 1 and None not in versions \
            else "f" * 64
        if fin.size == 0:
            digest = sha_of(0) if self.st.expected_sha else sha_of(self.version)
            self.part = []
        self.step(Digested(fin.generation, digest))

    @precondition(lambda self: self.commit is not None)
    @rule()
    def committed(self) -> None:
        assert self.commit is not None
        commit, self.commit = self.commit, None
        self.step(Committed(commit.generation))
        assert self.st is not None
        assert self.st.phase is Phase.DONE

    @precondition(lambda self: self.st is not None and not self.st.terminal)
    @rule()
    def storm(self) -> None:
        """Every request fails, without a byte, until the file ends: every budget ends."""
        assert self.st is not None
        bound = POLICY.max_attempts * (LIMITS.max_restarts + 2) * 64
        for _ in range(bound):
            if self.st.terminal or (self.finalise or self.commit):
                return
            for req in self.live():
                if req not in self.st.waiting:
                    self.step(NetFailed(req, "storm"))
            while self.asks or self.refreshes:
                if self.asks:
                    self.decide()
                else:
                    self.refreshed()
            if not self.st.live and not self.st.terminal and not (self.finalise or self.commit):
                return  # waiting on nothing the storm can fail (e.g. a header check)
        raise AssertionError("a file outlived every budget")

    @precondition(lambda self: self.st is not None and not self.st.terminal)
    @rule()
    def run_to_the_end(self) -> None:
        """A good server from here on: answer, deliver and end every request, decide every
        retry, digest and commit, until the file ends (within a bound)."""
        assert self.st is not None
        for _ in range(200):
            if self.st.terminal:
                return
            progressed = False
            for req in self.live():
                if req not in self.served:
                    self.served[req] = self.version
                    self.step(Answered(req, Decision(Verdict.WRITE, etag=f'"v{self.version}"')))
                    progressed = True
            for req in [r for r in self.live() if r in self.served]:
                request = self.reqs[req]
                end = self.st.size if req in self.whole or request.end is None else request.end
                start = self.cursor[req]
                if self.st.is_current(req) and end is not None and start < end:
                    for i in range(start, end):
                        self.part[i] = self.served[req]
                        self.writer_gen[i] = self.gen_of[req]
                    self.cursor[req] = end
                    self.step(Landed(req, start, end - start))
                    progressed = True
                if req in self.st.live and req not in self.st.waiting:
                    self.step(Ended(req))
                    progressed = True
            while self.asks or self.refreshes:
                progressed = True
                if self.asks:
                    self.decide()
                else:
                    self.refreshed()
            if self.finalise is not None:
                self.digest()
                progressed = True
            if self.commit is not None:
                self.committed()
                progressed = True
            if not progressed:
                return
        raise AssertionError("a good server never finished the file")

    def teardown(self) -> None:
        """Every example ends with a good server: whatever happened before, the file then
        ends, and a commit checks that its bytes are one version."""
        if self.st is not None and not self.st.terminal:
            self.run_to_the_end()

    @rule()
    def nothing(self) -> None:
        """Time passes (and a finished file stays finished)."""

    # ---- invariants ------------------------------------------------------------------------

    @invariant()
    def budgets_hold(self) -> None:
        if self.st is None:
            return
        assert self.st.restarts <= LIMITS.max_restarts + 1
        assert self.st.bad_responses <= LIMITS.max_bad_responses + 1
        assert self.st.expired_streak <= LIMITS.max_expired_streak + 1
        assert self.st.no_range_answers <= LIMITS.no_range_retries + 1
        # Each kind of failure has its budget; a request's try count is bounded by their sum.
        bound = POLICY.max_attempts + LIMITS.max_bad_responses + LIMITS.no_range_retries
        for live in self.st.live.values():
            assert live.request.attempt <= bound

    @invariant()
    def superseded_requests_are_not_current(self) -> None:
        if self.st is None:
            return
        for req, gen in self.gen_of.items():
            if gen < self.st.generation or self.st.terminal:
                assert not self.st.is_current(req)

    @invariant()
    def only_the_current_generation_is_claimed(self) -> None:
        """Every byte the file counts as done was written by a request of its current
        generation: nothing of a superseded request (or an old object) is kept."""
        if self.st is None or self.st.terminal:
            return
        for s, e in self.st.done:
            stale = {g for g in self.writer_gen[s:e] if g != self.st.generation}
            assert not stale, (s, e, stale, self.st.generation)

    @invariant()
    def done_is_within_the_file(self) -> None:
        if self.st is None or self.st.size is None:
            return
        for _, e in self.st.done:
            assert e <= self.st.size


Lifecycle.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=20, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestLifecycle = Lifecycle.TestCase
