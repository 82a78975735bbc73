"""A pull leaves nothing running behind it (issue 11, defect 8): a manifest refresh in flight
when the pull ends is cancelled and awaited before ``pull()`` returns, so nothing logs after
the pull's final line (the intermittent "Axom API: ClientConnectionError; retrying" after
the error line of `test_chaos_trial[0]`)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from weightlift.downloader.engine import EngineConfig
from weightlift.downloader.manifest import Manifest, validate_manifest
from weightlift.downloader.pull import pull
from weightlift.downloader.retry import RetryPolicy
from weightlift.downloader.sources.local import ResolvedSource

FAST = EngineConfig(connections=4, chunk_size=64 * 1024, stall_timeout=2.0,
                    retry=RetryPolicy(backoff_base=0.01, backoff_cap=0.05), seed=1)
API_LOG = "test.platform_api"


class StuckRefresh:
    """The platform API is unreachable: the refresh logs and retries forever, as
    api_session does, until it is cancelled."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.running = False
        self.stopped_at: float | None = None

    async def __call__(self) -> Manifest:
        self.running = True
        self.entered.set()
        try:
            while True:
                logging.getLogger(API_LOG).info("Axom API: ClientConnectionError; retrying")
                await asyncio.sleep(0.01)
        finally:
            self.running = False
            self.stopped_at = time.monotonic()


async def _expired_source(server, refresh: StuckRefresh) -> ResolvedSource:
    server.emu.put_bytes("a.bin", bytes(256 * 1024))
    # Expired before the pull starts: the first worker asks for a fresh manifest at once.
    url = server.presign("a.bin", lifetime=0.05)
    await asyncio.sleep(0.2)
    manifest = validate_manifest({"files": [{"rel": "a.bin", "size": 256 * 1024, "url": url}]})
    return ResolvedSource(manifest, refresh, None, "test")


async def test_a_pull_that_ends_during_a_refresh_leaves_nothing_running(
        storage_server, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=API_LOG)
    refresh = StuckRefresh()
    source = await _expired_source(storage_server, refresh)
    task = asyncio.ensure_future(pull(source, tmp_path, FAST))
    await asyncio.wait_for(refresh.entered.wait(), 10)
    await asyncio.sleep(0.05)
    assert refresh.running
    assert not task.done()

    task.cancel()  # the pull ends now (Ctrl-C, or the CLI giving up): the refresh must too
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    returned_at = time.monotonic()
    assert not refresh.running, "the refresh outlived the pull"
    assert refresh.stopped_at is not None
    assert refresh.stopped_at <= returned_at
    logged = len(caplog.records)
    await asyncio.sleep(0.2)
    late = [r.getMessage() for r in caplog.records[logged:]]
    assert not late, f"logged after the pull ended: {late[:3]}"
    # The lock was released on the way out: the same folder can be pulled into again.
    refresh2 = StuckRefresh()
    source2 = await _expired_source(storage_server, refresh2)
    task2 = asyncio.ensure_future(pull(source2, tmp_path, FAST))
    await asyncio.wait_for(refresh2.entered.wait(), 10)
    task2.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task2, 10)
    assert not refresh2.running
