"""Progress events the engine emits; the CLI turns them into bars, lines or JSON."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PullStarted:
    files: int
    total_bytes: int
    resumed_bytes: int  # already on disk (finished files and journaled ranges)


@dataclass(frozen=True)
class FileStarted:
    rel: str
    size: int
    resumed_bytes: int


@dataclass(frozen=True)
class BytesReceived:
    rel: str
    nbytes: int


@dataclass(frozen=True)
class FileFinished:
    rel: str
    size: int
    sha256: str
    skipped: bool = False  # already complete from an earlier run


@dataclass(frozen=True)
class FileRestarted:
    rel: str
    reason: str
    lost_bytes: int


@dataclass(frozen=True)
class FileFailed:
    rel: str
    reason: str


@dataclass(frozen=True)
class Retrying:
    rel: str
    reason: str
    delay: float


@dataclass(frozen=True)
class ManifestRefreshed:
    proactive: bool
    count: int


Event = (
    PullStarted | FileStarted | BytesReceived | FileFinished | FileRestarted | FileFailed
    | Retrying | ManifestRefreshed
)
