"""The per-file lifecycle as a table: events in, state and actions out (pure, no I/O)."""

from __future__ import annotations

import pytest

from weightlift.downloader.errors import (
    EXIT_TRANSFER_FAILED,
    EXIT_VERIFY_FAILED,
    SizeMismatch,
    TransferFailed,
)
from weightlift.downloader.journal import JournalState
from weightlift.downloader.lifecycle import FileState
from weightlift.downloader.lifecycle_events import (
    Answered,
    AskRetry,
    CheckHeader,
    Commit,
    Committed,
    Digested,
    Ended,
    Fail,
    Fetch,
    Finalise,
    HashTo,
    HeaderJudged,
    Landed,
    Limits,
    NetFailed,
    Phase,
    Refresh,
    Refreshed,
    Rejected,
    ResetHash,
    Restart,
    RetryDecided,
    StatusFailed,
)
from weightlift.downloader.ranges import RangeSet
from weightlift.downloader.response_check import Decision, Verdict
from weightlift.downloader.retry import GiveUp, Retry, WaitTooLong
from weightlift.downloader.storage_errors import StorageErrorKind

SHA = "a" * 64
OTHER = "b" * 64
LIMITS = Limits(progress_reset_bytes=50)
OK206 = Decision(Verdict.WRITE, total=1000, etag='"e1"')
WHOLE200 = Decision(Verdict.WRITE, total=1000, etag='"e1"', whole=True)


def make(size: int | None = 1000, chunk: int = 100, *, sha: str | None = SHA,
         done: list[tuple[int, int]] = (), ranged: bool = True, etag: str | None = None,
         header: bool = False) -> FileState:
    journal = JournalState(rel="f", size=size or 0, etag=etag, ranged=ranged,
                           done=RangeSet(done))
    return FileState("f", size, sha, journal, chunk, limits=LIMITS, header_check=header)


def fetches(actions: list) -> list:
    return [a.request for a in actions if isinstance(a, Fetch)]


def kinds(actions: list) -> list[str]:
    return [type(a).__name__ for a in actions]


def land(st: FileState, req, start: int, end: int) -> list:
    return st.step(Landed(req.id, start, end - start))


@pytest.mark.parametrize(("size", "chunk", "done", "ranged", "expected"), [
    # Range support unproven: the first range goes alone, and may be answered whole.
    (1000, 100, [], True, [(0, 100, False, True)]),
    # An earlier run proved Range: every gap at once.
    (1000, 400, [(0, 100)], True,
     [(100, 500, False, False), (500, 900, False, False), (900, 1000, False, False)]),
    (100, 100, [], True, [(0, 100, True, False)]),  # one chunk: a plain GET
    (1000, 100, [], False, [(0, 1000, True, False)]),  # no Range support: one whole GET
    (None, 100, [], False, [(0, None, True, False)]),  # unknown size: one GET to its end
])
def test_first_requests(size, chunk, done, ranged, expected):
    st = make(size, chunk, done=done, ranged=ranged)
    got = [(r.start, r.end, r.whole, r.may_be_whole) for r in fetches(st.start())]
    assert got == expected


def test_an_empty_file_finalises_without_a_request():
    st = make(0)
    assert kinds(st.start()) == ["Finalise"]


def test_a_206_to_the_first_request_releases_the_other_ranges():
    st = make()
    (first,) = fetches(st.start())
    rest = fetches(st.step(Answered(first.id, OK206)))
    assert [(r.start, r.end) for r in rest] == [(i, i + 100) for i in range(100, 1000, 100)]
    assert st.journal.etag == '"e1"'
    assert st.step(Answered(first.id, OK206)) == []  # released once


def test_a_200_to_the_first_request_is_the_whole_object():
    st = make()
    (first,) = fetches(st.start())
    assert st.step(Answered(first.id, WHOLE200)) == []  # no other request
    assert not st.journal.ranged
    acts = land(st, first, 0, 600)
    assert kinds(acts) == ["HashTo"]
    acts = land(st, first, 600, 1000)
    assert kinds(acts) == ["HashTo", "Finalise"]
    assert st.phase is Phase.FINALISING


def test_bytes_of_a_superseded_request_are_refused():
    st = make(etag='"e1"', done=[(0, 100)])
    reqs = fetches(st.start())
    old = reqs[0]
    acts = st.step(Rejected(reqs[1].id, Decision(Verdict.OBJECT_CHANGED, "etag")))
    assert kinds(acts)[0] == "Restart"
    assert st.generation == 1
    assert st.done.total == 0
    assert not st.is_current(old.id)
    assert land(st, old, 100, 200) == []  # the sink never writes it; the state ignores it
    assert st.done.total == 0
    assert st.step(NetFailed(old.id, "late")) == []


@pytest.mark.parametrize(("landed", "whole", "attempt"), [
    (10, False, 3),  # a ranged request that brought 10 bytes: no fresh budget
    (60, False, 0),  # durable progress (>= progress_reset_bytes): the budget starts over
    (900, True, 3),  # a whole GET cut short: its bytes are thrown away, the budget is not reset
])
def test_only_durable_progress_resets_the_attempt_budget(landed, whole, attempt):
    st = make(ranged=not whole, etag='"e1"', done=[] if whole else [(900, 1000)])
    (req,) = fetches(st.start())[:1]
    st.live[req.id].request = req = type(req)(req.id, req.start, req.end, req.whole, 3)
    land(st, req, 0, landed)
    (ask,) = st.step(NetFailed(req.id, "dropped"))
    assert isinstance(ask, AskRetry)
    assert ask.attempt == attempt
    again = st.step(RetryDecided(req.id, Retry(0.5)))
    new = fetches(again)[0]
    assert new.delay == 0.5
    if whole:
        assert kinds(again) == ["ResetHash", "Fetch"]
        assert (new.start, st.done.total) == (0, 0)
    else:
        assert new.start == landed


@pytest.mark.parametrize(("decision", "message"), [
    (GiveUp(8), "gave up after 8 tries: dropped"),
    (WaitTooLong(7200), "asks to wait 2 h"),
])
def test_the_retry_policy_ends_a_file(decision, message):
    st = make()
    (req,) = fetches(st.start())
    st.step(NetFailed(req.id, "dropped"))
    (fail,) = st.step(RetryDecided(req.id, decision))
    assert isinstance(fail, Fail)
    assert message in fail.error.message
    assert st.phase is Phase.FAILED
    assert not st.live


def test_size_mismatch_is_a_verification_failure():
    st = make()
    (req,) = fetches(st.start())
    (fail,) = st.step(Rejected(req.id, Decision(Verdict.SIZE_MISMATCH, "object is 5 bytes")))
    assert isinstance(fail.error, SizeMismatch)
    assert fail.error.exit_code == EXIT_VERIFY_FAILED
    assert "running again will not fix it" in fail.error.one_line()


def test_200s_to_range_requests_end_in_one_whole_get():
    st = make(etag='"e1"', done=[(0, 100)])
    req = fetches(st.start())[0]
    for _ in range(LIMITS.no_range_retries):
        acts = st.step(Rejected(req.id, Decision(Verdict.NO_RANGE_SUPPORT, "200")))
        assert kinds(acts) == ["AskRetry"]
        req = fetches(st.step(RetryDecided(req.id, Retry(0))))[0]
    acts = st.step(Rejected(req.id, Decision(Verdict.NO_RANGE_SUPPORT, "200")))
    assert kinds(acts) == ["Restart", "Fetch"]
    assert fetches(acts)[0].whole
    assert not st.journal.ranged


def test_bad_responses_are_a_budget():
    st = make(etag='"e1"', done=[(0, 100)])
    req = fetches(st.start())[0]
    for _ in range(LIMITS.max_bad_responses):
        acts = st.step(Rejected(req.id, Decision(Verdict.BAD_RESPONSE, "gzip")))
        assert isinstance(acts[0], AskRetry)
        assert acts[0].attempt <= LIMITS.bad_response_backoff_cap
        req = fetches(st.step(RetryDecided(req.id, Retry(0))))[0]
    (fail,) = st.step(Rejected(req.id, Decision(Verdict.BAD_RESPONSE, "gzip")))
    assert "keeps sending bad responses" in fail.error.message


def test_expired_urls_refresh_a_bounded_number_of_times():
    st = make()
    req = fetches(st.start())[0]
    expired = StorageErrorKind.EXPIRED
    for _ in range(LIMITS.max_expired_streak):
        assert st.step(StatusFailed(req.id, expired, "403 AccessDenied")) == [Refresh(req.id)]
        req = fetches(st.step(Refreshed(req.id)))[0]
    (fail,) = st.step(StatusFailed(req.id, expired, "403 AccessDenied"))
    assert "keeps answering" in fail.error.message


@pytest.mark.parametrize(("kind", "can_refresh", "expected"), [
    (StorageErrorKind.EXPIRED, False, "the URL has expired"),
    (StorageErrorKind.FATAL, True, "storage refused it"),
    (StorageErrorKind.NOT_FOUND, True, "storage refused it"),
])
def test_status_errors_that_end_a_file(kind, can_refresh, expected):
    st = make()
    req = fetches(st.start())[0]
    (fail,) = st.step(StatusFailed(req.id, kind, "404 NoSuchKey", can_refresh=can_refresh))
    assert expected in fail.error.message
    assert fail.error.exit_code == EXIT_TRANSFER_FAILED


def test_retryable_status_asks_the_policy():
    st = make()
    req = fetches(st.start())[0]
    acts = st.step(StatusFailed(req.id, StorageErrorKind.RETRYABLE, "503", 503, "2"))
    assert acts == [AskRetry(req.id, 0, "503", 503, "2")]


def _complete(st: FileState) -> None:
    (req,) = fetches(st.start())
    st.step(Answered(req.id, WHOLE200))
    land(st, req, 0, 1000)


def test_a_digest_that_agrees_commits_and_ends_done():
    st = make()
    _complete(st)
    assert st.step(Digested(0, SHA)) == [Commit(0, SHA)]
    assert st.step(Committed(0)) == []
    assert st.phase is Phase.DONE


def test_a_wrong_digest_restarts_then_fails_with_exit_1():
    st = make()
    for i in range(LIMITS.max_restarts):
        _complete(st) if i == 0 else None
        acts = st.step(Digested(st.generation, OTHER))
        assert isinstance(acts[0], Restart)
        (req,) = fetches(acts)
        st.step(Answered(req.id, WHOLE200))
        land(st, req, 0, 1000)
    (fail,) = st.step(Digested(st.generation, OTHER))
    assert fail.error.exit_code == EXIT_VERIFY_FAILED
    assert fail.digest == OTHER
    assert st.phase is Phase.FAILED


def test_a_replaced_object_whose_bytes_the_manifest_does_not_pin_fails_at_once():
    st = make()
    (req,) = fetches(st.start())
    acts = st.step(Rejected(req.id, Decision(Verdict.OBJECT_CHANGED, "412")))
    (req,) = fetches(acts)
    st.step(Answered(req.id, WHOLE200))
    land(st, req, 0, 1000)
    (fail,) = st.step(Digested(1, OTHER))
    assert isinstance(fail.error, TransferFailed)
    assert "fresh manifest" in fail.error.one_line()


def test_an_object_replaced_between_generations_is_a_changed_object():
    """Chaos seed 3000531: a flipped byte restarted the file, and the object was replaced
    before the new generation's first answer (no If-Match to refuse it): its other ETag still
    marks the object as changed, so a digest the manifest does not pin fails at once (exit 3,
    bytes kept for a fresh manifest) instead of three more full fetches and exit 1."""
    st = make()
    (req,) = fetches(st.start())
    st.step(Answered(req.id, WHOLE200))
    land(st, req, 0, 1000)
    acts = st.step(Digested(0, OTHER))  # a byte flipped in transit
    assert isinstance(acts[0], Restart)
    (req,) = fetches(acts)
    st.step(Answered(req.id, Decision(Verdict.WRITE, total=1000, etag='"e2"', whole=True)))
    land(st, req, 0, 1000)
    (fail,) = st.step(Digested(1, OTHER))
    assert isinstance(fail.error, TransferFailed)
    assert fail.error.exit_code == EXIT_TRANSFER_FAILED
    assert "changed on storage" in fail.error.one_line()


def test_a_stale_digest_is_ignored():
    st = make()
    _complete(st)
    assert st.step(Digested(7, SHA)) == []


def test_unknown_size_ends_with_its_body():
    st = make(None, ranged=False)
    (req,) = fetches(st.start())
    land(st, req, 0, 30)
    land(st, req, 30, 50)
    assert st.step(Ended(req.id)) == [Finalise(0, 50)]
    assert st.size == 50


def test_a_pending_header_check_holds_the_finalise():
    st = make(100, header=True)
    (req,) = fetches(st.start())
    acts = land(st, req, 0, 100)
    assert kinds(acts) == ["HashTo", "CheckHeader"]
    assert acts[1] == CheckHeader(0, 0)
    # It wants 8 bytes more than the file has: judged as far as it can go.
    assert st.step(HeaderJudged(0, 0)) == [Finalise(0, 100)]


def test_a_broken_header_fails_the_file_and_supersedes_its_requests():
    st = make(header=True, etag='"e1"', done=[(0, 100)])
    reqs = fetches(st.start())
    acts = land(st, reqs[0], 100, 200)
    assert HashTo(200) in acts
    (fail,) = st.step(HeaderJudged(0, 0, "bad json"))
    assert "broken safetensors header" in fail.error.message
    assert not any(st.is_current(r.id) for r in reqs)


def test_events_after_the_end_change_nothing():
    st = make()
    _complete(st)
    st.step(Digested(0, SHA))
    st.step(Committed(0))
    assert st.step(NetFailed(0, "late")) == []
    assert st.step(Landed(0, 0, 10)) == []
    assert isinstance(ResetHash(), ResetHash)
