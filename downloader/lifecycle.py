"""The lifecycle of one file in a pull, as a pure state machine (h11-style). No I/O.

``FileState.step(event)`` changes only the state and returns the actions the I/O shell carries
out (send a request, ask the retry policy, restart, hash, finalise, fail, emit). No awaits, no
file descriptors, no clock: the table tests and the hypothesis machine drive it directly.

Every request carries an id. A restart (the object changed, a hash differed, the server ignores
Range) or a failure supersedes every earlier request: ``is_current(req)`` is False for them, and
the shell's sink asks it immediately before each write, with no await between, so no byte of a
superseded request reaches the part file.

Budgets are the named limits in ``Limits``; each counts what really happened: a failed request's
attempt count resets only when that request left durable progress (bytes that stay on disk for
the file: never the bytes of a whole-object GET that has to start over from byte 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from weightlift.downloader import lifecycle_events as le
from weightlift.downloader.errors import (
    SizeMismatch,
    TransferFailed,
    VerificationFailed,
    WeightliftError,
)
from weightlift.downloader.journal import JournalState
from weightlift.downloader.planner import plan_file
from weightlift.downloader.ranges import RangeSet
from weightlift.downloader.response_check import Decision, Verdict
from weightlift.downloader.retry import Decision as RetryDecision
from weightlift.downloader.retry import GiveUp, WaitTooLong
from weightlift.downloader.storage_errors import StorageErrorKind

__all__ = ["FileState"]


@dataclass(eq=False)
class FileState:
    """Everything the pull knows about one file; mutated only by ``step``."""

    rel: str
    size: int | None
    expected_sha: str | None
    journal: JournalState
    chunk_size: int
    limits: le.Limits = field(default_factory=le.Limits)
    header_check: bool = False
    phase: le.Phase = le.Phase.FETCHING
    generation: int = 0
    restarts: int = 0
    bad_responses: int = 0
    no_range_answers: int = 0
    expired_streak: int = 0
    object_changed: bool = False
    seen_etag: str | None = None  # the ETag of any earlier generation's object in this pull
    range_proven: bool = False  # a 206 (or a journal from an earlier run) proved Range works
    storage_sha: str | None = None
    fetched: int = 0  # bytes written by this pull (including any thrown away)
    header_state: str = "unchecked"  # unchecked | pending | ok
    header_need: int = 0
    digest: str | None = None
    error: WeightliftError | None = None
    live: dict[int, le.Live] = field(default_factory=dict)
    waiting: dict[int, str] = field(default_factory=dict)  # failed: req -> why, until decided
    next_id: int = 0
    hashed_to: int = 0

    @property
    def done(self) -> RangeSet:
        return self.journal.done

    @property
    def terminal(self) -> bool:
        return self.phase in (le.Phase.DONE, le.Phase.FAILED)

    def is_current(self, req: int) -> bool:
        """May request ``req`` write now? False once it was superseded or the file ended."""
        return self.phase is le.Phase.FETCHING and req in self.live

    # ---- start ---------------------------------------------------------------------------

    def start(self) -> list[le.Action]:
        """The first requests: the missing ranges, or the first one alone while Range
        support is unproven (a server ignoring Range then costs one whole GET)."""
        if self.journal.done.total and self.journal.ranged:
            self.range_proven = True  # an earlier run wrote ranges: proven then
        return self._plan()

    def _plan(self) -> list[le.Action]:
        if self.size is None:
            return [self._new(0, None, whole=True)]
        if self._complete():
            return self._landed_all()
        if not self.journal.ranged:
            if self.done.total:
                self.journal.done = RangeSet()  # a whole GET can only start from byte 0
                return [le.ResetHash(), self._new(0, self.size, whole=True)]
            return [self._new(0, self.size, whole=True)]
        chunks = plan_file(self.rel, self.size, self.done, self.chunk_size)
        if not self.range_proven:
            chunks = chunks[:1]
        out: list[le.Action] = []
        for c in chunks:
            whole = c.whole and not self.done.total
            out.append(self._new(c.start, c.end, whole=whole, may_be_whole=(
                not whole and not self.range_proven and c.start == 0)))
        return out

    def _new(self, start: int, end: int | None, *, whole: bool, attempt: int = 0,
             delay: float = 0.0, may_be_whole: bool = False) -> le.Fetch:
        req = le.Request(self.next_id, start, end, whole, attempt, delay, may_be_whole)
        self.next_id += 1
        self.live[req.id] = le.Live(req)
        return le.Fetch(req)

    # ---- the step ------------------------------------------------------------------------

    def step(self, event: le.Event) -> list[le.Action]:
        """Apply one event; returns what the shell must do. Events about superseded requests
        or generations change nothing."""
        if self.terminal:
            return []
        if isinstance(event, le.Landed):
            return self._on_landed(event)
        if isinstance(event, le.HeaderJudged):
            return self._on_header(event)
        if isinstance(event, le.Digested):
            return self._on_digest(event)
        if isinstance(event, le.Committed):
            return self._on_committed(event)
        if isinstance(event, le.LocalFailed):
            return self._fail(event.error)  # the part file or the request itself is broken
        live = self.live.get(event.req)
        if live is None:
            return []  # superseded: its answer is about the past
        if isinstance(event, le.Answered):
            return self._on_answered(live, event)
        if isinstance(event, le.Ended):
            return self._on_ended(live)
        if isinstance(event, le.RetryDecided):
            return self._on_retry(live, event.decision)
        if isinstance(event, le.Refreshed):
            self.waiting.pop(live.request.id, None)
            return self._again(live, live.request.attempt)
        if event.req in self.waiting:
            return []  # one failure per request
        if isinstance(event, le.NetFailed):
            return self._on_net_failed(live, event.reason)
        if isinstance(event, le.Rejected):
            return self._on_rejected(live, event.decision)
        return self._on_status(live, event)

    def _on_landed(self, ev: le.Landed) -> list[le.Action]:
        live = self.live.get(ev.req)
        if live is None or self.phase is not le.Phase.FETCHING:
            return []  # the sink never lets this happen; a no-op all the same
        end = ev.offset + ev.n
        if self.size is not None and end > self.size:
            raise ValueError(f"{self.rel}: bytes beyond the size landed")
        live.landed += ev.n
        self.fetched += ev.n
        self.done.add(ev.offset, end)
        actions: list[le.Action] = []
        prefix = self.done.prefix_end()
        if prefix > self.hashed_to:
            self.hashed_to = prefix
            actions.append(le.HashTo(prefix))
            actions.extend(self._header(prefix))
        if self.size is not None and self._complete():
            actions.extend(self._landed_all())
        return actions

    def _complete(self) -> bool:
        return self.size is not None and self.done.covers(0, self.size)

    def _landed_all(self) -> list[le.Action]:
        """Every byte is in: finalise, unless the header check has yet to judge."""
        assert self.size is not None
        self.live.clear()
        self.waiting.clear()
        if self.header_state == "pending":
            return []  # le.HeaderJudged finalises
        self.phase = le.Phase.FINALISING
        return [le.Finalise(self.generation, self.size)]

    def _header(self, prefix: int) -> list[le.Action]:
        if not self.header_check or self.header_state != "unchecked" or self.size is None:
            return []
        if self.header_need > prefix:
            return []
        self.header_state = "pending"
        return [le.CheckHeader(self.generation, self.header_need)]

    def _on_header(self, ev: le.HeaderJudged) -> list[le.Action]:
        if ev.generation != self.generation or self.header_state != "pending":
            return []
        if ev.error is not None:
            return self._fail(VerificationFailed(
                f"{self.rel}: broken safetensors header: {ev.error}",
                "this file can never load; nothing more was fetched"))
        assert self.size is not None
        if ev.needed == 0 or ev.needed > self.size:
            self.header_state = "ok"
        else:
            self.header_state = "unchecked"
            # Not progressing: ask again once more has landed.
            self.header_need = max(ev.needed, self.header_need + 1)
        if self._complete() and self.phase is le.Phase.FETCHING:
            if self.header_state == "unchecked":
                self.header_state = "pending"
                return [le.CheckHeader(self.generation, min(self.header_need, self.size))]
            return self._landed_all()
        return self._header(self.done.prefix_end())

    def _on_answered(self, live: le.Live, ev: le.Answered) -> list[le.Action]:
        self.expired_streak = 0
        if self.storage_sha is None:
            self.storage_sha = ev.storage_sha
        if self.journal.last_modified is None:
            self.journal.last_modified = ev.last_modified
        etag = ev.decision.etag
        if etag is not None and self.journal.etag is not None and etag != self.journal.etag:
            # Sent before the first answer (no If-Match): the first ETag seen is the object's.
            self.object_changed = True
            return self._restart("object changed on the server (the object's ETag changed)",
                                 ranged=True)
        if etag is not None and self.journal.etag is None:
            if self.seen_etag is not None and etag != self.seen_etag:
                # Replaced between generations (after a restart, the first answer carries no
                # If-Match to be refused): these bytes are of another object than before.
                self.object_changed = True
            self.journal.etag = self.seen_etag = etag
        req = live.request
        if ev.decision.whole and not req.whole:
            # A 200 to this file's first Range request: that body is the whole object.
            live.whole = True
            self.journal.ranged = False
            return []
        if req.whole or self.range_proven or not self.journal.ranged:
            return []
        self.range_proven = True  # a 206 as asked: release the file's other ranges
        claimed = self.done.copy()
        claimed.add(req.start, req.end or req.start)
        assert self.size is not None
        return [self._new(c.start, c.end, whole=False)
                for c in plan_file(self.rel, self.size, claimed, self.chunk_size)
                if not c.whole]

    def _on_ended(self, live: le.Live) -> list[le.Action]:
        self.live.pop(live.request.id, None)
        if self.size is None:
            # An object of unknown size: the body's end is its end.
            self.size = self.journal.size = live.landed
            if not self._complete():
                self.journal.done = RangeSet([(0, self.size)] if self.size else [])
            return self._landed_all()
        if self._complete():
            return [] if self.phase is not le.Phase.FETCHING else self._landed_all()
        return []  # its range is in; the file's others are still coming

    def _progress_kept(self, live: le.Live) -> bool:
        """Did the failed request leave bytes that stay on disk for good?"""
        if live.whole or live.request.whole or not self.journal.ranged:
            return False  # a whole GET starts over from byte 0
        return live.landed >= self.limits.progress_reset_bytes

    def _on_net_failed(self, live: le.Live, reason: str) -> list[le.Action]:
        attempt = 0 if self._progress_kept(live) else live.request.attempt
        self.waiting[live.request.id] = reason
        return [le.AskRetry(live.request.id, attempt, reason)]

    def _on_rejected(self, live: le.Live, decision: Decision) -> list[le.Action]:
        verdict, reason = decision.verdict, decision.reason
        if verdict is Verdict.OBJECT_CHANGED:
            self.object_changed = True
            return self._restart(f"object changed on the server ({reason})", ranged=True)
        if verdict is Verdict.SIZE_MISMATCH:
            return self._fail(SizeMismatch(
                f"{self.rel}: {reason}",
                "the manifest and the stored object disagree; running again will not fix it"))
        if verdict is Verdict.NO_RANGE_SUPPORT:
            self.no_range_answers += 1
            if self.no_range_answers <= self.limits.no_range_retries:
                # One 200 to a Range request may be a hiccup (a proxy, a cache); retry first.
                self.waiting[live.request.id] = reason
                return [le.AskRetry(live.request.id, self.no_range_answers, reason)]
            return self._restart("the server ignores Range requests; fetching it whole",
                                 ranged=False)
        self.bad_responses += 1
        if self.bad_responses > self.limits.max_bad_responses:
            return self._fail(TransferFailed(
                f"{self.rel}: storage keeps sending bad responses ({reason})"))
        self.waiting[live.request.id] = reason
        return [le.AskRetry(live.request.id,
                         min(self.bad_responses, self.limits.bad_response_backoff_cap), reason)]

    def _on_status(self, live: le.Live, ev: le.StatusFailed) -> list[le.Action]:
        if ev.kind is StorageErrorKind.EXPIRED:
            if not ev.can_refresh:
                return self._fail(le.url_expired(self.rel, ev.reason))
            self.expired_streak += 1
            if self.expired_streak > self.limits.max_expired_streak:
                return self._fail(TransferFailed(
                    f"{self.rel}: storage keeps answering {ev.reason} after refreshes"))
            self.waiting[live.request.id] = ev.reason
            return [le.Refresh(live.request.id)]
        if ev.kind is StorageErrorKind.RETRYABLE:
            self.waiting[live.request.id] = ev.reason
            return [le.AskRetry(live.request.id, live.request.attempt, ev.reason, ev.status,
                             ev.retry_after)]
        return self._fail(le.refused(self.rel, ev.reason, ev.where))

    def _on_retry(self, live: le.Live, decision: RetryDecision) -> list[le.Action]:
        reason = self.waiting.pop(live.request.id, "")
        if isinstance(decision, WaitTooLong):
            return self._fail(TransferFailed(
                f"{self.rel}: storage asks to wait {decision.human} before trying again "
                f"({reason}, Retry-After)",
                "run the same command again after that; finished bytes are kept"))
        if isinstance(decision, GiveUp):
            return self._fail(le.gave_up(self.rel, decision.attempts, reason))
        return self._again(live, live.request.attempt + 1, decision.delay)

    def _again(self, live: le.Live, attempt: int, delay: float = 0.0) -> list[le.Action]:
        """The same request once more, for what it has not delivered yet."""
        req = live.request
        self.live.pop(req.id, None)
        if self._progress_kept(live):
            attempt = 0
        if req.whole or live.whole or not self.journal.ranged or self.size is None:
            lost = self.done.total
            self.journal.done = RangeSet()
            if live.whole and self.size is not None:
                self.journal.ranged = False
            fetch = self._new(0, self.size, whole=True, attempt=attempt, delay=delay)
            if lost:
                self.hashed_to = 0
                return [le.ResetHash(), fetch]
            return [fetch]
        end = req.end if req.end is not None else self.size
        gaps = self.done.gaps(req.start, end)
        if not gaps:
            return []  # landed meanwhile (another request covered it): nothing to ask
        return [self._new(gaps[0][0], end, whole=False, attempt=attempt, delay=delay,
                          may_be_whole=req.may_be_whole and gaps[0][0] == 0)]

    def _restart(self, reason: str, *, ranged: bool) -> list[le.Action]:
        self.restarts += 1
        if self.restarts > self.limits.max_restarts:
            return self._fail(TransferFailed(
                f"{self.rel}: restarted {self.restarts - 1} times: {reason}"))
        lost = self.done.total
        self.generation += 1
        self.live.clear()  # every earlier request is superseded from here on
        self.waiting.clear()
        self.header_state = "unchecked"
        self.header_need = 0
        self.storage_sha = None
        self.range_proven = False
        self.hashed_to = 0
        self.journal = JournalState(rel=self.rel, size=self.size or 0, ranged=ranged)
        return [le.Restart(reason, lost), *self._plan()]

    def _on_digest(self, ev: le.Digested) -> list[le.Action]:
        if ev.generation != self.generation or self.phase is not le.Phase.FINALISING:
            return []
        expected = self.expected_sha or self.storage_sha
        if expected and ev.digest != expected:
            if self.object_changed and self.expected_sha:
                # The object was replaced during this pull and its new bytes are not the ones
                # the manifest pins: fetching again cannot help. Keep them (journal intact).
                return self._fail(TransferFailed(
                    f"{self.rel}: the object changed on storage during the pull, and its new "
                    f"sha256 {ev.digest[:12]}… is not the manifest's {expected[:12]}…",
                    "the model was replaced at the source: run the same command again for a "
                    "fresh manifest (the new bytes are kept)"))
            what = "manifest" if self.expected_sha else "storage checksum"
            self.phase = le.Phase.FETCHING
            actions = self._restart(f"sha256 differs from the {what}", ranged=self.journal.ranged)
            if self.phase is le.Phase.FAILED:
                self.error = VerificationFailed(
                    f"{self.rel}: sha256 {ev.digest[:12]}… differs from the {what}'s "
                    f"{expected[:12]}… after {self.restarts - 1} retries")
                return [le.Fail(self.error, ev.digest)]
            return actions
        self.digest = ev.digest
        return [le.Commit(self.generation, ev.digest)]

    def _on_committed(self, ev: le.Committed) -> list[le.Action]:
        if ev.generation != self.generation or self.phase is not le.Phase.FINALISING:
            return []
        if ev.error is not None:
            return self._fail(ev.error)
        self.phase = le.Phase.DONE
        return []

    def _fail(self, error: WeightliftError) -> list[le.Action]:
        """The file ends failed: every request in flight is superseded (the journal keeps
        what is on disk)."""
        self.phase = le.Phase.FAILED
        self.error = error
        self.live.clear()
        self.waiting.clear()
        return [le.Fail(error)]
