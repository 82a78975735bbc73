import asyncio
import logging
from datetime import datetime, timedelta, timezone

import pytest

from weightlift.downloader import resolver as resolver_module
from weightlift.downloader.errors import TransferFailed
from weightlift.downloader.manifest import validate_manifest
from weightlift.downloader.resolver import MAX_IDLE_REFRESHES, ManifestResolver

T0 = datetime(2026, 11, 24, 12, 0, 0, tzinfo=timezone.utc)


def _manifest(gen: int, *, expires_in: int = 600, size: int = 10, extra: bool = False):
    stamp = (T0 + timedelta(seconds=gen)).strftime("%Y%m%dT%H%M%SZ")
    files = [{"rel": "a", "size": size,
              "url": f"https://s3/a?X-Amz-Date={stamp}&X-Amz-Expires={expires_in}&g={gen}"}]
    if extra:
        files.append({"rel": "b", "size": 1, "url": "https://s3/b"})
    return validate_manifest({"files": files})


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


async def test_concurrent_refreshes_share_one_call():
    calls = 0

    async def refresh():
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return _manifest(calls)

    r = ManifestResolver(_manifest(0), refresh, clock=Clock())
    stale = r.file("a").url
    await asyncio.gather(*(r.refresh(stale_url=stale) for _ in range(20)))
    assert calls == 1
    # A worker arriving late with the old URL does not trigger a second refresh.
    await r.refresh(stale_url=stale)
    assert calls == 1
    assert r.file("a").url != stale


async def test_proactive_refresh_before_expiry():
    clock = Clock()
    calls = 0

    async def refresh():
        nonlocal calls
        calls += 1
        return _manifest(int((clock.now - T0).total_seconds()), expires_in=100)

    r = ManifestResolver(_manifest(0, expires_in=100), refresh, clock=clock)
    seen = []
    r.on_refresh = seen.append
    clock.now = T0 + timedelta(seconds=70)  # 30 s left > margin of 20 s
    await r.url_for("a")
    assert calls == 0
    clock.now = T0 + timedelta(seconds=85)  # 15 s left < 20 s margin
    url = await r.url_for("a")
    assert calls == 1
    assert seen == [True]
    assert "g=85" in url


async def test_no_refresh_function_means_no_refresh():
    r = ManifestResolver(_manifest(0, expires_in=1), None, clock=Clock())
    assert not r.can_refresh
    assert await r.refresh() is False


@pytest.mark.parametrize(("new", "why"), [
    (lambda: validate_manifest({"files": [{"rel": "z", "size": 1, "url": "https://s/z"}]}),
     "no longer lists"),
    (lambda: _manifest(1, size=11), "new size"),
])
async def test_refresh_must_name_the_same_files(new, why):
    async def refresh():
        return new()

    r = ManifestResolver(_manifest(0), refresh, clock=Clock())
    with pytest.raises(TransferFailed, match=why):
        await r.refresh()


async def test_refreshes_without_progress_are_bounded():
    n = 0

    async def refresh():
        nonlocal n
        n += 1
        return _manifest(n)

    r = ManifestResolver(_manifest(0), refresh, clock=Clock())
    for _ in range(MAX_IDLE_REFRESHES):
        await r.refresh()
    with pytest.raises(TransferFailed, match="still rejects"):
        await r.refresh()
    r2 = ManifestResolver(_manifest(0), refresh, clock=Clock())
    for _ in range(MAX_IDLE_REFRESHES * 3):
        await r2.refresh()
        r2.note_progress()  # bytes arrived in between: refreshes are working


def test_is_expired_reads_the_url():
    clock = Clock()
    r = ManifestResolver(_manifest(0, expires_in=10), None, clock=clock)
    assert not r.is_expired("a")
    clock.now = T0 + timedelta(seconds=11)
    assert r.is_expired("a")


# --- aclose: an in-flight refresh never outlives its pull (issue 11, defect 8) --------------

class BlockingRefresh:
    """A refresh that never returns: it logs and retries, as an API session does while the
    platform is unreachable. Records whether it is running and how it ended."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.running = False
        self.ended: str | None = None
        self.calls = 0

    async def __call__(self):
        self.calls += 1
        self.running = True
        self.entered.set()
        try:
            while True:
                logging.getLogger("test.api").info("Axom API: ClientConnectionError; retrying")
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            self.ended = "cancelled"
            raise
        finally:
            self.running = False


async def test_aclose_cancels_and_awaits_a_refresh_whose_waiters_are_gone(caplog):
    caplog.set_level(logging.INFO, logger="test.api")
    refresh = BlockingRefresh()
    r = ManifestResolver(_manifest(0), refresh, clock=Clock())
    waiter = asyncio.ensure_future(r.refresh(stale_url=r.file("a").url))
    await asyncio.wait_for(refresh.entered.wait(), 5)
    waiter.cancel()  # the worker is gone (the pull failed): the shielded refresh is not
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await asyncio.sleep(0.05)
    assert refresh.running  # the orphan of defect 8, still retrying

    await asyncio.wait_for(r.aclose(), 5)
    assert not refresh.running
    assert refresh.ended == "cancelled"
    logged = len(caplog.records)
    await asyncio.sleep(0.1)
    assert len(caplog.records) == logged  # nothing logs after the close
    # Closed: no new refresh starts, callers are told this source cannot refresh any more.
    assert await r.refresh(stale_url=r.file("a").url) is False
    assert refresh.calls == 1
    await r.aclose()  # idempotent


async def test_aclose_retrieves_a_failed_refresh_and_is_quick_when_idle():
    async def broken():
        raise TransferFailed("platform unreachable")

    r = ManifestResolver(_manifest(0), broken, clock=Clock())
    with pytest.raises(TransferFailed):
        await r.refresh(stale_url=r.file("a").url)
    await asyncio.wait_for(r.aclose(), 1)  # no "exception was never retrieved" (warnings=error)
    idle = ManifestResolver(_manifest(0), None, clock=Clock())
    await asyncio.wait_for(idle.aclose(), 1)


async def test_aclose_does_not_hang_on_a_refresh_that_swallows_cancellation(monkeypatch):
    monkeypatch.setattr(resolver_module, "CLOSE_TIMEOUT", 0.2)
    release = asyncio.Event()

    async def stubborn():
        while not release.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                pass  # a badly behaved library
        return _manifest(1)

    r = ManifestResolver(_manifest(0), stubborn, clock=Clock())
    waiter = asyncio.ensure_future(r.refresh(stale_url=r.file("a").url))
    await asyncio.sleep(0.05)
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(r.aclose(), 5)
    assert asyncio.get_running_loop().time() - started < 2
    release.set()
    await asyncio.wait_for(waiter, 5)
