"""One pull: lock the output folder, run the engine, write the receipt."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from weightlift.downloader.engine import Engine, EngineConfig, PullResult
from weightlift.downloader.events import Event
from weightlift.downloader.receipt import Receipt, ReceiptFile, write_receipt
from weightlift.downloader.resolver import ManifestResolver
from weightlift.downloader.sources.local import ResolvedSource
from weightlift.downloader.workarea import WorkArea


async def pull(
    source: ResolvedSource,
    out_dir: Path,
    config: EngineConfig,
    emit: Callable[[Event], None] = lambda e: None,
    *,
    origin: str | None = None,
) -> PullResult:
    """Download every file of ``source`` into ``out_dir``; resumable, verified per file.
    ``origin`` (the SOURCE as the user gave it, redacted) is recorded in the receipt."""
    work = WorkArea(out_dir)
    work.create()
    work.lock()
    resolver = ManifestResolver(source.manifest, source.refresh)
    try:
        result = await Engine(resolver, work, config, emit).run()
        if result.ok:
            write_receipt(out_dir, Receipt(
                model_id=source.manifest.model_id,
                source=origin,
                revision=source.manifest.version,
                expected_params=source.expected_params,
                files=[ReceiptFile(rel=fr.rel, size=fr.size, sha256=fr.sha256 or "",
                                   source=fr.source, etag=fr.etag) for fr in result.files],
            ))
        return result
    finally:
        # A refresh still running (shielded, for other waiters) would outlive the pull and log
        # after its final line, over a session its caller closes next: end it first.
        await resolver.aclose()
        work.unlock()
