"""Fault injection for the emulated platform APIs: what goes wrong (`ApiFault`) and for which
requests (`ApiFaultPlan`).

Faults are armed per platform and path prefix with a count, like the storage faults:
`emu.inject_api("axom", "/api/jobs/", ApiFault.status(503, retry_after="1"), times=2)` answers the
next two Axom job requests with 503. They apply before authentication (as a load balancer or
proxy in front of the API would), except `wrong_shape`, which mangles the real answer.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Literal

ApiFaultKind = Literal["status", "malformed", "redirect", "wrong_shape"]
ApiPlatform = Literal["axom", "tensorone"]


@dataclass(frozen=True)
class ApiFault:
    """One API misbehaviour; build it with the classmethods, e.g. `ApiFault.status(503)`."""

    kind: ApiFaultKind
    code: int = 200
    retry_after: str | None = None
    body: bytes | None = None  # status: None means the platform's own error JSON
    location: str | None = None  # redirect

    @classmethod
    def status(cls, code: int, *, retry_after: str | None = None,
               body: bytes | None = None) -> ApiFault:
        """Answer `code` with the platform's error JSON (or `body`), optional Retry-After."""
        if not 100 <= code <= 599:
            raise ValueError(f"not an HTTP status: {code}")
        return cls("status", code=code, retry_after=retry_after, body=body)

    @classmethod
    def malformed(cls) -> ApiFault:
        """200 with a JSON content type but a truncated, unparsable body."""
        return cls("malformed")

    @classmethod
    def redirect(cls, location: str, status: int = 307) -> ApiFault:
        """Redirect to `location` (an absolute URL, e.g. another host's)."""
        if status not in (301, 302, 303, 307, 308):
            raise ValueError(f"not a redirect status: {status}")
        return cls("redirect", code=status, location=location)

    @classmethod
    def wrong_shape(cls) -> ApiFault:
        """200 with valid JSON but a required field missing (or a list where an object goes)."""
        return cls("wrong_shape")


@dataclass
class _Armed:
    platform: ApiPlatform
    prefix: str
    fault: ApiFault
    remaining: int


@dataclass
class ApiFaultPlan:
    """Armed faults in arming order; the first that matches a request is used. Thread-safe."""

    _armed: list[_Armed] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def arm(self, platform: ApiPlatform, path_prefix: str, fault: ApiFault, *,
            times: int = 1) -> None:
        if times < 1:
            raise ValueError("times must be >= 1")
        if platform not in ("axom", "tensorone"):
            raise ValueError(f"unknown platform: {platform}")
        with self._lock:
            self._armed.append(_Armed(platform, path_prefix, fault, times))

    def take(self, platform: str, path: str) -> ApiFault | None:
        with self._lock:
            for entry in self._armed:
                if entry.platform == platform and path.startswith(entry.prefix):
                    entry.remaining -= 1
                    if entry.remaining == 0:
                        self._armed.remove(entry)
                    return entry.fault
        return None

    def pending(self) -> int:
        with self._lock:
            return sum(a.remaining for a in self._armed)

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()
