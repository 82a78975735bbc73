"""ManifestResolver: the current manifest, refreshed before its URLs expire and when they have.

Many workers may see an expired URL at once; they share one refresh call (single-flight). A
refreshed manifest must name the same files with the same sizes: the bytes on disk belong to
those objects, and a change under our feet is reported, never papered over.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone

from weightlift.downloader.errors import TransferFailed
from weightlift.downloader.manifest import Manifest, ManifestFile
from weightlift.downloader.url_expiry import expiry_of

log = logging.getLogger(__name__)

RefreshFn = Callable[[], Awaitable[Manifest]]
MAX_PROACTIVE_MARGIN = 60.0
# Refreshes that bring no progress in between; after this many, the platform is not helping.
MAX_IDLE_REFRESHES = 4
# How long aclose() waits for a cancelled refresh to end (a refresh function that swallows the
# cancellation must not hang the pull's exit).
CLOSE_TIMEOUT = 5.0


def _now() -> datetime:
    return datetime.now(timezone.utc)


class ManifestResolver:
    def __init__(
        self,
        manifest: Manifest,
        refresh: RefreshFn | None = None,
        *,
        clock: Callable[[], datetime] = _now,
        max_refreshes: int = 10_000,
    ) -> None:
        self._refresh_fn = refresh
        self._clock = clock
        self._max_refreshes = max_refreshes
        self._inflight: asyncio.Task[None] | None = None
        self._closed = False
        self.refreshes = 0
        self._idle_refreshes = 0
        # Told after every refresh (True when it was ahead of expiry), e.g. to show progress.
        self.on_refresh: Callable[[bool], None] = lambda proactive: None
        self._install(manifest)

    @property
    def manifest(self) -> Manifest:
        return self._manifest

    @property
    def can_refresh(self) -> bool:
        return self._refresh_fn is not None

    def _install(self, manifest: Manifest) -> None:
        self._manifest = manifest
        self._files = manifest.by_rel()
        # Built once per manifest, not per expired answer (50,000 files all answering 403
        # after an expiry would otherwise cost 50,000 sets of 50,000 URLs).
        self._urls = frozenset(f.url for f in manifest.files)
        now = self._clock()
        expiries = [e for e in (expiry_of(f.url) for f in manifest.files) if e is not None]
        self._expires_at = min(expiries) if expiries else None
        if self._expires_at is not None:
            lifetime = (self._expires_at - now).total_seconds()
            # Refresh a fifth of the way before the end, at most a minute ahead.
            self._margin = min(MAX_PROACTIVE_MARGIN, max(0.0, lifetime * 0.2))
        else:
            self._margin = 0.0
        self._installed_at = time.monotonic()
        if self._expires_at is not None:
            log.debug("manifest URLs expire at %s (in %.1fs); refreshing %.1fs ahead",
                      self._expires_at.isoformat(timespec="seconds"),
                      (self._expires_at - now).total_seconds(), self._margin)

    def file(self, rel: str) -> ManifestFile:
        return self._files[rel]

    def note_progress(self) -> None:
        """Bytes arrived since the last refresh: the refreshes are working."""
        self._idle_refreshes = 0

    def is_expired(self, rel: str) -> bool:
        exp = expiry_of(self._files[rel].url)
        return exp is not None and exp <= self._clock()

    async def url_for(self, rel: str) -> str:
        """The URL to use now for ``rel``, refreshing first if it is about to expire."""
        if self._refresh_fn is not None and self._expires_at is not None:
            left = (self._expires_at - self._clock()).total_seconds()
            if left <= self._margin:
                await self.refresh(stale_url=self._files[rel].url, proactive=True)
        return self._files[rel].url

    async def refresh(self, *, stale_url: str | None = None, proactive: bool = False) -> bool:
        """Refresh once for everyone waiting; False when this source cannot refresh or the
        resolver is closed."""
        if self._refresh_fn is None or self._closed:
            return False
        if stale_url is not None and stale_url not in self._urls:
            return True  # someone already refreshed since this URL was handed out
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(self._do_refresh(proactive))
        await asyncio.shield(self._inflight)
        return True

    async def aclose(self) -> None:
        """End the resolver: cancel an in-flight refresh and wait (a bounded time) until it has
        ended, so that nothing of this pull runs or logs after it returns. Later refreshes are
        refused. Idempotent.

        The refresh runs in its own task, shielded so that one waiter's cancellation does not
        cancel it for the others; that is why nothing else ever stops it.
        """
        self._closed = True
        task, self._inflight = self._inflight, None
        if task is None:
            return
        task.cancel()  # a no-op when it has ended
        await asyncio.wait({task}, timeout=CLOSE_TIMEOUT)
        if not task.done():
            log.debug("a manifest refresh ignored its cancellation; not waiting for it")
            return
        if not task.cancelled():
            task.exception()  # retrieved: its error belonged to waiters that are gone

    async def _do_refresh(self, proactive: bool) -> None:
        assert self._refresh_fn is not None
        if self.refreshes >= self._max_refreshes:
            raise TransferFailed(f"gave up after {self.refreshes} manifest refreshes")
        if not proactive:
            self._idle_refreshes += 1
            if self._idle_refreshes > MAX_IDLE_REFRESHES:
                raise TransferFailed(
                    f"storage still rejects the URLs after {MAX_IDLE_REFRESHES} refreshes",
                    "the platform may be handing out URLs that are already expired; "
                    "check the machine's clock, then run again to resume",
                )
        log.debug("refreshing the manifest (%s)", "its URLs are about to expire" if proactive
                  else "storage refused a URL")
        new = await self._refresh_fn()
        check_same_files(self._manifest, new)
        self.refreshes += 1
        log.info("manifest refreshed (%s); %d files", "ahead of expiry" if proactive else
                 "storage said expired", len(new.files))
        self._install(new)
        self.on_refresh(proactive)


def check_same_files(old: Manifest, new: Manifest) -> None:
    """A refresh may change URLs only: same names, same sizes, same hashes."""
    new_files = new.by_rel()
    for f in old.files:
        g = new_files.get(f.rel)
        if g is None:
            raise TransferFailed(
                f"the refreshed manifest no longer lists {f.rel!r}",
                "the model changed on the platform; pull into a new folder",
            )
        if f.size is not None and g.size is not None and f.size != g.size:
            raise TransferFailed(
                f"the refreshed manifest gives {f.rel!r} a new size ({f.size} → {g.size})",
                "the model changed on the platform; run again to start that file over",
            )
        if f.sha256 and g.sha256 and f.sha256 != g.sha256:
            raise TransferFailed(
                f"the refreshed manifest gives {f.rel!r} a new sha256",
                "the model changed on the platform; run again to start that file over",
            )
