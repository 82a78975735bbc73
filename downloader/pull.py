"""One pull: lock the output folder, run the engine, write the receipt."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from weightlift.downloader.engine import Engine, EngineConfig, PullResult
from weightlift.downloader.events import Event
from weightlift.downloader.journal import load_finished
from weightlift.downloader.receipt import Receipt, ReceiptFile, write_receipt
from weightlift.downloader.resolver import ManifestResolver
from weightlift.downloader.sources.local import ResolvedSource
from weightlift.downloader.workarea import WorkArea


async def pull(
    source: ResolvedSource,
    out_dir: Path,
    config: EngineConfig,
    emit: Callable[[Event], None] = lambda e: None,
) -> PullResult:
    """Download every file of ``source`` into ``out_dir``; resumable, verified per file."""
    work = WorkArea(out_dir)
    work.create()
    work.lock()
    try:
        # Refuse symlinks or clashing paths in the folder before any byte is fetched.
        for f in source.manifest.files:
            work.final_path(f.rel)
        resolver = ManifestResolver(source.manifest, source.refresh)
        result = await Engine(resolver, work, config, emit).run()
        if result.ok:
            finished = load_finished(work.finished_log)
            files = []
            for fr in result.files:
                entry = finished.get(fr.rel)
                files.append(ReceiptFile(
                    rel=fr.rel, size=fr.size, sha256=fr.sha256 or "",
                    source=entry.source if entry else "", etag=entry.etag if entry else None,
                ))
            write_receipt(out_dir, Receipt(
                model_id=source.manifest.model_id,
                expected_params=source.expected_params,
                files=files,
            ))
        return result
    finally:
        work.unlock()
