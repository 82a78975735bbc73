"""Sizes the cluster plan needs and a source did not state (plain URLs): asked once, by the
driver, so that every node plans the same chunks."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import aiohttp

from weightlift.downloader.config import EngineConfig
from weightlift.downloader.errors import NetworkError, StatusError, TransferFailed
from weightlift.downloader.fetch import probe as probe_object
from weightlift.downloader.manifest import Manifest, ManifestFile


async def with_sizes(manifest: Manifest, config: EngineConfig) -> Manifest:
    """``manifest`` with every file's size known, probing (one 1-byte GET each) those without.
    Raises TransferFailed when a size cannot be learnt (a server without Range support)."""
    unknown = [f for f in manifest.files if f.size is None]
    if not unknown:
        return manifest
    sem = asyncio.Semaphore(config.connections)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=config.connect_timeout,
                                    sock_read=config.stall_timeout)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False, trust_env=False,
                                     cookie_jar=aiohttp.DummyCookieJar()) as session:

        async def probe(f: ManifestFile) -> ManifestFile:
            async with sem:
                try:
                    probed = await probe_object(session, f.url)
                    size, ranged = probed.size, probed.ranged
                except (StatusError, NetworkError) as exc:
                    raise TransferFailed(f"{f.rel}: cannot learn its size for the cluster "
                                         f"plan ({exc})") from None
            if size is None or not ranged:
                raise TransferFailed(f"{f.rel}: storage does not answer Range requests; "
                                     "a cluster pull splits files into ranges",
                                     "pull it without --ray on each node")
            return replace(f, size=size)

        probed = {f.rel: f for f in await asyncio.gather(*(probe(f) for f in unknown))}
    return replace(manifest, files=tuple(probed.get(f.rel, f) for f in manifest.files))
