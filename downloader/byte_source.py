"""Where a file's bytes come from: the seam between the engine and the network.

The engine hands a ``ByteSource`` one request at a time (``Asked``) and a ``Sink`` bound to that
request; the source judges the answer and writes the body through the sink. The default is
``fetch.HttpByteSource`` (aiohttp, the shared session); another source (chunks fetched on other
machines) plugs in through ``EngineConfig.byte_source``. Everything else (journal, hash frontier,
finalise, receipt, header check) is the engine's, whichever source is used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from weightlift.downloader.response_check import Asked, Decision

__all__ = ["Answer", "Asked", "ByteSource", "Decision", "Sink"]


class Sink(Protocol):
    """Where one request's bytes go."""

    def answered(self, decision: Decision, headers: Mapping[str, str]) -> None:
        """The response was judged WRITE (``decision``); called before the first ``write``.
        Raises ``errors.Abandon`` when the request was superseded meanwhile."""

    def write(self, offset: int, data: bytes | memoryview) -> bool:
        """Synchronous: check that this request is still current and pwrite ``data`` at
        ``offset``, with no await between; False means "superseded: stop reading now"."""


@dataclass(frozen=True)
class Answer:
    """What a successful request told us: the response headers, the bytes written, and the
    judgement of the response (``decision.whole``: the body was the whole object)."""

    headers: Mapping[str, str]
    written: int
    decision: Decision | None = None


class ByteSource(Protocol):
    async def fetch(self, rel: str, url: str, asked: Asked, sink: Sink) -> Answer:
        """Get ``asked`` of the object at ``url`` into ``sink``. Raises ``errors.NetworkError``
        (retry), ``StatusError`` (classify), ``Rejected`` (judged not to be written),
        ``Abandon`` (superseded), or a ``WeightliftError`` (local disk, bad redirect)."""
