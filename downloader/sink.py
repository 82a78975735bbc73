"""What a byte source writes to and answers with (the vocabulary of ``byte_source``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from weightlift.downloader.response_check import Decision

__all__ = ["Answer", "Sink"]


class Sink(Protocol):
    """Where one request's bytes go."""

    def write(self, offset: int, data: bytes | memoryview) -> bool:
        """Synchronous: check that this request is still current and pwrite ``data`` at
        ``offset``, with no await between; False means "superseded: stop reading now"
        (nothing was written)."""
        ...

    def answered(self, decision: Decision, headers: Mapping[str, str]) -> None:
        """Storage's judged answer to this request, before its first byte: the engine learns
        from it early that the server answers Range requests (a file's other ranges are then
        released at once). Raises ``Abandon`` when the request was superseded meanwhile."""
        ...


@dataclass(frozen=True)
class Answer:
    """What a successful request told us. A source other than HTTP states what it knows:
    ``etag`` (the object's version: the first one seen is the file's, another restarts it)
    and ``total`` (the object's size, checked against the manifest's)."""

    total: int | None
    etag: str | None
    last_modified: str | None
    headers: Mapping[str, str]
    written: int
    decision: Decision | None = None  # HTTP: the judgement of the response's headers
