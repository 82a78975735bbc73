"""Running emulator apps: in a background thread for synchronous tests, and a handle that
binds a `StorageEmulator` to the base URL it is served at."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiohttp import web

from weightlift.emulator.storage import StorageEmulator


@dataclass(frozen=True)
class StorageEndpoint:
    """A storage emulator together with the base URL where it is being served."""

    emu: StorageEmulator
    base_url: str

    def presign(self, key: str, *, lifetime: float = 600.0, style: str = "s3v4",
                method: str = "GET") -> str:
        return self.emu.presign(key, lifetime=lifetime, base_url=self.base_url, style=style,
                                method=method)

    def manifest(self, keys: Iterable[str] | None = None, *, lifetime: float = 600.0,
                 **kwargs: Any) -> dict[str, Any]:
        """An Axom-shaped manifest for `keys` (default: every object)."""
        return self.emu.manifest(self.emu.keys() if keys is None else keys,
                                 base_url=self.base_url, lifetime=lifetime, **kwargs)


class ThreadedServer:
    """Serve an aiohttp app on 127.0.0.1:<free port> from a background thread and event loop.

    ``with ThreadedServer(emu.app) as srv: subprocess.run([... srv.base_url ...])``.
    Stopping wakes stalled responses, waits for the runner's cleanup and closes the loop.
    """

    def __init__(self, app: web.Application, *, host: str = "127.0.0.1", port: int = 0,
                 shutdown_timeout: float = 2.0) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._shutdown_timeout = shutdown_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        if not self.port:
            raise RuntimeError("server not started")
        return f"http://{self._host}:{self.port}"

    def start(self) -> ThreadedServer:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._run, name="emulator-server", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise RuntimeError(f"emulator server failed to start: {self._error}") from self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start())
            except BaseException as exc:  # reported to start()
                self._error = exc
                self._ready.set()
                return
            self._ready.set()
            loop.run_forever()
            loop.run_until_complete(self._stop())
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    async def _start(self) -> None:
        runner = web.AppRunner(self._app, access_log=None,
                               shutdown_timeout=self._shutdown_timeout)
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, self._host, self._port)
        await site.start()
        self.port = runner.addresses[0][1]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._thread = None

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class ThreadedStorage(ThreadedServer):
    """A `ThreadedServer` around a `StorageEmulator`, handing out a `StorageEndpoint`."""

    def __init__(self, emu: StorageEmulator | None = None, **kwargs: Any) -> None:
        self.emu = emu if emu is not None else StorageEmulator()
        super().__init__(self.emu.make_app(), **kwargs)

    @property
    def endpoint(self) -> StorageEndpoint:
        return StorageEndpoint(self.emu, self.base_url)

    def __enter__(self) -> ThreadedStorage:
        self.start()
        return self
