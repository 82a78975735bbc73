"""Shared fixtures: the storage emulator, served in-loop or from a background thread."""

import faulthandler
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

from weightlift.emulator.serve import StorageEndpoint, ThreadedStorage
from weightlift.emulator.storage import StorageEmulator


@pytest.fixture
def storage() -> StorageEmulator:
    """A fresh, empty storage emulator (not served)."""
    return StorageEmulator()


@pytest.fixture
async def storage_server(
    storage: StorageEmulator, aiohttp_server: Callable[[web.Application], Awaitable[Any]]
) -> StorageEndpoint:
    """`storage` served on loopback in the test's event loop: `.emu`, `.base_url`, `.presign`."""
    server = await aiohttp_server(storage.app)
    return StorageEndpoint(storage, f"http://{server.host}:{server.port}")


@pytest.fixture
def threaded_storage(storage: StorageEmulator) -> Iterator[StorageEndpoint]:
    """`storage` served from a background thread, for tests that run `weightlift` as a child."""
    with ThreadedStorage(storage) as srv:
        yield srv.endpoint


@pytest.fixture(autouse=True)
def _hang_watchdog() -> Iterator[None]:
    """A test that runs past 120 s dumps every thread's stack and ends the run: a hang
    shows where it is instead of eating CI's time (stdlib only, no plugin)."""
    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()
