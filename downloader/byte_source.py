"""Where a file's bytes come from: the seam between the engine and the network.

The engine hands a ``ByteSource`` one request at a time (``Asked``: bytes [start, end) of one
file) and a ``Sink`` bound to that request; the source writes the bytes through the sink, in
order, and returns an ``Answer``. The default is ``HttpByteSource`` (aiohttp, one shared session);
another source (chunks fetched on other machines) plugs in through ``EngineConfig.byte_source``.
Everything else (journal, hash frontier, finalise, receipt, header check) is the engine's,
whichever source is used.
"""

from __future__ import annotations

from typing import Protocol

import aiohttp

from weightlift.downloader.fetch import Pace, Throttle, fetch_range
from weightlift.downloader.response_check import Asked
from weightlift.downloader.sink import Answer, Sink

__all__ = ["Answer", "Asked", "ByteSource", "HttpByteSource", "Sink"]


class ByteSource(Protocol):
    async def fetch(self, rel: str, url: str, asked: Asked, sink: Sink) -> Answer:
        """Deliver ``asked`` of the object at ``url`` to ``sink``. Raises ``errors.NetworkError``
        (retry), ``StatusError`` (classify), ``Rejected`` (judged not to be written),
        ``Abandon`` (superseded), or a ``WeightliftError`` (local disk, bad redirect)."""
        ...


class HttpByteSource:
    """The default ``ByteSource``: HTTP(S) through one shared aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, pace: Pace | None = None,
                 throttle: Throttle | None = None, *, read_size: int | None = None) -> None:
        self._session = session
        self._pace = pace or Pace()
        if read_size is not None:
            self._pace = Pace(self._pace.header_timeout, self._pace.min_speed,
                              self._pace.min_speed_window, read_size)
        self._throttle = throttle

    async def fetch(self, rel: str, url: str, asked: Asked, sink: Sink) -> Answer:
        return await fetch_range(self._session, url, asked, sink, self._pace, self._throttle)
