"""Where a chunk's bytes come from: the seam between the engine and the network.

The engine asks a ``ByteSource`` for bytes [asked.start, asked.end) of one file and hands it a
``Sink`` that writes them at their offsets in the part file (journal, hash frontier and
finalisation stay the engine's). ``EngineConfig.byte_source = None`` means plain HTTP
(``HttpByteSource``); the Ray fan-out (``weightlift.downloader.fanout``) plugs in a source that
takes most chunks from peer nodes instead of origin.
"""

from __future__ import annotations

from typing import Protocol

import aiohttp

from weightlift.downloader.fetch import Answer, fetch_range
from weightlift.downloader.response_check import Asked


class Sink(Protocol):
    def write(self, offset: int, data: bytes | memoryview) -> bool:
        """Synchronous: checks that the request is still current and pwrites ``data`` at
        ``offset``; False means "superseded: stop reading now" (nothing was written)."""
        ...


class ByteSource(Protocol):
    async def fetch(self, rel: str, url: str, asked: Asked, sink: Sink) -> Answer:
        """Deliver bytes [asked.start, asked.end) of ``rel`` to ``sink``, in order; raise fetch's
        NetworkError / StatusError / Rejected / Abandon like ``fetch_range``."""
        ...


class HttpByteSource:
    """Bytes straight from storage, over one shared aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, *, read_size: int = 1 << 20) -> None:
        self._session = session
        self._read_size = read_size

    async def fetch(self, rel: str, url: str, asked: Asked, sink: Sink) -> Answer:
        return await fetch_range(self._session, url, asked, -1, lambda off, n: True,
                                 read_size=self._read_size, sink=sink)
