import asyncio
from datetime import datetime, timedelta, timezone

import pytest

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
