"""Platform SOURCE URIs (`axom://jobs/<id>`, `tensorone://jobs/<id>/checkpoints/<id>`, ...),
parsed into a value (pure). Anything malformed is a usage error, named in one line."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from weightlift.downloader.errors import UsageError

__all__ = ["PLATFORM_SCHEMES", "PlatformRef", "is_platform_uri", "parse_platform_uri"]

Platform = Literal["axom", "tensorone"]
Kind = Literal["job", "model", "checkpoint"]

PLATFORM_SCHEMES: tuple[str, ...] = ("axom://", "tensorone://")
# Ids are UUIDs on Axom and `job_…`/`ckpt_…`-style tokens on TensorOne. They end up in API
# paths, so only characters that need no escaping are accepted: no '/', '%', '?', '..'.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")

_FORMS = {
    "axom": "axom://jobs/<job-id> or axom://models/<model-id>",
    "tensorone": "tensorone://jobs/<job-id> or tensorone://jobs/<job-id>/checkpoints/<id>",
}


@dataclass(frozen=True)
class PlatformRef:
    """What a platform SOURCE names: a job (its model / latest checkpoint), a model, or one
    checkpoint of a job."""

    platform: Platform
    kind: Kind
    job_id: str | None = None
    model_id: str | None = None
    checkpoint_id: str | None = None

    def __str__(self) -> str:
        if self.kind == "model":
            return f"{self.platform}://models/{self.model_id}"
        if self.kind == "checkpoint":
            return f"{self.platform}://jobs/{self.job_id}/checkpoints/{self.checkpoint_id}"
        return f"{self.platform}://jobs/{self.job_id}"


def is_platform_uri(text: str) -> bool:
    """True when ``text`` uses one of the platform schemes (well-formed or not)."""
    return text.strip().lower().startswith(PLATFORM_SCHEMES)


def _shown(text: str) -> str:
    short = text if len(text) <= 120 else text[:117] + "..."
    return short.encode("unicode_escape").decode("ascii")


def parse_platform_uri(text: str) -> PlatformRef:
    """Parse a platform SOURCE; raise UsageError (exit 2) for anything else."""
    raw = text.strip()
    scheme, sep, rest = raw.partition("://")
    platform = scheme.lower()
    if not sep or platform not in _FORMS:
        raise UsageError(
            f"not a platform source: {_shown(raw)!r}",
            "use axom://jobs/<id>, axom://models/<id> or tensorone://jobs/<id>",
        )
    form = _FORMS[platform]

    def bad(why: str) -> UsageError:
        return UsageError(f"bad source {_shown(raw)!r}: {why}", f"use {form}")

    if "?" in rest or "#" in rest:
        raise bad("a query or fragment is not allowed")
    if rest.endswith("/"):  # tolerate one trailing slash, as a shell completion leaves it
        rest = rest[:-1]
    parts = rest.split("/")
    kind_word = parts[0]
    for part in parts[1:]:
        if not _ID.fullmatch(part):
            what = "an empty id" if not part else f"id {_shown(part)!r}"
            raise bad(f"{what} is not a valid id (letters, digits, '-', '_', '.')")
    if platform == "axom":
        if kind_word == "jobs" and len(parts) == 2:
            return PlatformRef("axom", "job", job_id=parts[1])
        if kind_word == "models" and len(parts) == 2:
            return PlatformRef("axom", "model", model_id=parts[1])
    else:
        if kind_word == "jobs" and len(parts) == 2:
            return PlatformRef("tensorone", "job", job_id=parts[1])
        if kind_word == "jobs" and len(parts) == 4 and parts[2] == "checkpoints":
            return PlatformRef("tensorone", "checkpoint", job_id=parts[1],
                               checkpoint_id=parts[3])
    if kind_word not in ("jobs", "models"):
        raise bad(f"unknown kind {_shown(kind_word)!r}")
    if len(parts) < 2:
        raise bad("the id is missing")
    raise bad("unexpected path")
