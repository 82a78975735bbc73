"""Shared fixtures: the storage emulator and the emulated platforms (Axom, TensorOne), served
in-loop or from background threads."""

import faulthandler
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from weightlift.emulator.platforms import PlatformEmulator, PlatformEndpoints, ThreadedPlatforms
from weightlift.emulator.serve import StorageEndpoint, ThreadedStorage
from weightlift.emulator.storage import StorageEmulator


def pytest_addoption(parser: pytest.Parser) -> None:
    """Sizes of the reliability suite (tests/chaos). The defaults are CI's; the closing figures
    come from e.g. `pytest -m chaos --trials 200 --kills 50 --tiny-files 50000`."""
    group = parser.getgroup("chaos", "reliability suite sizes (tests/chaos)")
    group.addoption("--trials", type=int, default=20, help="chaos trials (default 20)")
    group.addoption("--kills", type=int, default=20, help="SIGKILLs in the crash loop (default 20)")
    group.addoption("--tiny-files", type=int, default=5000,
                    help="files in the many-tiny-files load pull (default 5000)")
    group.addoption("--chaos-seed", type=int, default=20261125,
                    help="base seed; trial i uses seed+i, printed on failure to replay it")
    group.addoption("--header-mb", type=float, default=10,
                    help="header length of the header-memory test, MB (default 10, at most 99)")
    group.addoption("--chaos-report", default=None, metavar="PATH",
                    help="append one JSON line of figures per trial, kill loop and load run")


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


@pytest.fixture
async def platforms(
    tmp_path: Path, aiohttp_server: Callable[[web.Application], Awaitable[Any]]
) -> PlatformEndpoints:
    """Axom and TensorOne emulated in the test's loop (no jobs yet): `.emu` (add jobs, inject
    faults, read `api_requests`), `.axom_base`, `.tensorone_base`, `.storage_base`, `.env()`.
    Storage and the APIs listen on different ports (different origins). For a hand-wound run
    clock, assign `platforms.emu.clock = fake` before adding jobs (runs start at the reading taken
    when they are added); `emu.url_lifetime` and the `tensorone_rate_*` knobs are mutable too."""
    emu = PlatformEmulator(tmp_path / "platforms")
    storage_srv = await aiohttp_server(emu.storage.make_app())
    emu.storage_base_url = f"http://{storage_srv.host}:{storage_srv.port}"
    api_srv = await aiohttp_server(emu.api_app())
    api = f"http://{api_srv.host}:{api_srv.port}"
    return PlatformEndpoints(emu, f"{api}/api", f"{api}/v2", emu.storage_base_url)


@pytest.fixture
def threaded_platforms(tmp_path: Path) -> Iterator[ThreadedPlatforms]:
    """The emulated platforms served from background threads, for tests that run `weightlift`
    as a child process: `env={**os.environ, **tp.env()}`."""
    with ThreadedPlatforms(PlatformEmulator(tmp_path / "platforms")) as tp:
        yield tp


@pytest.fixture(autouse=True)
def _hang_watchdog() -> Iterator[None]:
    """A test that runs past 120 s dumps every thread's stack and ends the run: a hang
    shows where it is instead of eating CI's time (stdlib only, no plugin)."""
    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()
