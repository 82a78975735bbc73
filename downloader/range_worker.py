"""One request of one file: ask the byte source, write through a fenced sink, and turn the
outcome into lifecycle events."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping

from weightlift.downloader import storage_errors
from weightlift.downloader.byte_source import ByteSource
from weightlift.downloader.errors import (
    Abandon,
    DiskFull,
    NetworkError,
    Rejected,
    StatusError,
    WeightliftError,
    redact_url,
    write_failed,
)
from weightlift.downloader.lifecycle_events import (
    Action,
    Answered,
    Ended,
    Event,
    Landed,
    LocalFailed,
    NetFailed,
    Refresh,
    Refreshed,
    Request,
    StatusFailed,
)
from weightlift.downloader.lifecycle_events import Rejected as RejectedEvent
from weightlift.downloader.resolver import ManifestResolver
from weightlift.downloader.response_check import Asked, Decision, Verdict, storage_sha256
from weightlift.downloader.retry import RetryPolicy
from weightlift.downloader.slot import FileSlot

log = logging.getLogger(__name__)

Apply = Callable[[FileSlot, Event], list[Action]]


class FencedSink:
    """The sink of one request. ``write`` checks that the request is still current and
    pwrites, with no await between: no byte of a superseded request reaches the part file."""

    __slots__ = ("_apply", "_req", "_slot", "_where", "answered_seen")

    def __init__(self, slot: FileSlot, req: int, apply: Apply, where: str) -> None:
        self._slot = slot
        self._req = req
        self._apply = apply
        self._where = where
        self.answered_seen = False

    def answered(self, decision: Decision, headers: Mapping[str, str]) -> None:
        self.answered_seen = True
        self._apply(self._slot, Answered(self._req, decision, storage_sha256(headers),
                                         headers.get("Last-Modified")))
        if not self._slot.state.is_current(self._req):
            raise Abandon()  # the answer showed another object: the file restarted

    def write(self, offset: int, data: bytes | memoryview) -> bool:
        slot = self._slot
        if not slot.state.is_current(self._req):
            return False
        view = memoryview(data)
        pos = offset
        try:
            while view:
                n = os.pwrite(slot.fd, view, pos)
                view = view[n:]
                pos += n
        except OSError as exc:
            raise write_failed(exc, self._where, "the part file") from None
        if slot.hash_inline and slot.frontier is not None:
            slot.frontier.feed(offset, data)  # a small file: no read-back, no thread hop
        self._apply(slot, Landed(self._req, offset, len(data)))
        return True


async def run_request(slot: FileSlot, req: Request, *, source: ByteSource,
                      resolver: ManifestResolver, policy: RetryPolicy, apply: Apply,
                      where: str) -> None:
    """Carry out one ``Fetch``; every outcome goes back to the lifecycle as an event.
    DiskFull propagates (no file can make progress: the pull stops, state kept)."""
    st = slot.state
    url = await resolver.url_for(st.rel)
    if not st.is_current(req.id):
        return
    asked = Asked(start=req.start, end=req.end if req.end is not None else 0, size=st.size,
                  ranged=not req.whole, validator=st.journal.etag,
                  may_be_whole=req.may_be_whole)
    log.debug("%s: requesting %s%s", st.rel,
              "the whole file" if req.whole else f"bytes {req.start}-{asked.end - 1}",
              f" (try {req.attempt + 1})" if req.attempt else "")
    sink = FencedSink(slot, req.id, apply, where)
    try:
        answer = await source.fetch(st.rel, url, asked, sink)
    except Abandon:
        return
    except NetworkError as exc:
        apply(slot, NetFailed(req.id, exc.reason))
        return
    except Rejected as exc:
        apply(slot, RejectedEvent(req.id, exc.decision))
        return
    except StatusError as exc:
        kind = storage_errors.classify_response(
            exc.status, exc.body, exc.headers,
            url_expired_by_clock=resolver.is_expired(st.rel), can_refresh=resolver.can_refresh)
        reason = storage_errors.describe(exc.status, exc.body)
        log.debug("%s: storage answered %s (%s) for %s", st.rel, reason, kind.value,
                  redact_url(url))
        # A retryable answer outside the policy's status list is retried like a network
        # error rather than given up on at once.
        status = exc.status if policy.is_retryable_status(exc.status) else None
        left = apply(slot, StatusFailed(
            req.id, kind, reason, status, exc.headers.get("Retry-After"),
            can_refresh=resolver.can_refresh, where=redact_url(url)))
        if any(isinstance(a, Refresh) for a in left):
            log.info("%s: URL expired (%s); refreshing the manifest", st.rel, reason)
            await resolver.refresh(stale_url=url)
            apply(slot, Refreshed(req.id))
        return
    except DiskFull:
        raise
    except WeightliftError as exc:
        apply(slot, LocalFailed(req.id, exc))
        return
    if not sink.answered_seen:
        # A source without an HTTP response to judge: what it states, after its bytes.
        decision = answer.decision or Decision(Verdict.WRITE, total=answer.total,
                                               etag=answer.etag)
        if decision.total is not None and st.size is not None and decision.total != st.size:
            apply(slot, RejectedEvent(req.id, Decision(
                Verdict.SIZE_MISMATCH, f"object is {decision.total} bytes, manifest says "
                f"{st.size}")))
            return
        apply(slot, Answered(req.id, decision, storage_sha256(answer.headers),
                             answer.last_modified))
    apply(slot, Ended(req.id))
