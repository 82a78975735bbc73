"""`pull --dry-run`: what would be fetched, what is already here, and whether it fits.

Reads the output folder (final files, the finished log, the journals) without writing to it
or locking it; asks storage only for the sizes a manifest does not state (one 1-byte ranged
GET per such file, as the engine's own probe).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from weightlift.downloader.errors import EXIT_OK, EXIT_TRANSFER_FAILED
from weightlift.downloader.errors import redact_url as _redact_url
from weightlift.downloader.journal import load_finished, load_journal
from weightlift.downloader.manifest import ManifestFile
from weightlift.downloader.sources.local import ResolvedSource
from weightlift.downloader.workarea import WorkArea
from weightlift.reports import DiskSpace, FileEntry, PullReport, Totals


def already_here(work: WorkArea, mf: ManifestFile, size: int | None,
                 finished: dict[str, int]) -> int:
    """Bytes of ``mf`` a pull would not fetch again: all of a finished file still in place,
    else what its journal claims (a lower bound of what the engine will trust)."""
    if size is not None and finished.get(mf.rel) == size:
        try:
            st = os.stat(work.out_dir / mf.rel, follow_symlinks=False)
        except OSError:
            st = None
        if st is not None and st.st_size == size:
            return size
    journal = load_journal(work.journal_path(mf.rel), mf.rel, size)
    return journal.done.total if journal is not None else 0


def free_space(out: Path) -> int:
    """Free bytes on the filesystem the output folder is (or would be) on."""
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


async def probe_sizes(files: list[ManifestFile]) -> dict[str, int | str]:
    """Sizes of the files whose manifest entry has none: rel → size, or rel → why unknown."""
    unknown = [f for f in files if f.size is None]
    if not unknown:
        return {}
    import aiohttp

    from weightlift.downloader.fetch import probe

    out: dict[str, int | str] = {}
    async with aiohttp.ClientSession(auto_decompress=False, trust_env=False,
                                     cookie_jar=aiohttp.DummyCookieJar()) as session:
        async def one(f: ManifestFile) -> None:
            try:
                size = (await probe(session, f.url)).size
            except Exception as exc:  # a dry run reports it, the pull would retry it
                out[f.rel] = f"size unknown: {exc} ({_redact_url(f.url)})"
                return
            out[f.rel] = size if size is not None else "size unknown (no length from storage)"

        await asyncio.gather(*(one(f) for f in unknown))
    return out


async def plan_report(sources: list[str], selected: ResolvedSource, out: Path,
                      resolved: ResolvedSource, shown: str) -> PullReport:
    """The dry run's report: per file to-fetch / partial / present; exit 0 when it fits, 3
    when the disk has less free space than the bytes still to fetch."""
    from weightlift.pulling import source_ids

    files = list(selected.manifest.files)
    probed = await probe_sizes(files)
    work = WorkArea(out)
    finished = {rel: e.size for rel, e in
                (await asyncio.to_thread(load_finished, work.finished_log)).items()}
    entries: list[FileEntry] = []
    for mf in files:
        got = probed.get(mf.rel, mf.size)
        size = got if isinstance(got, int) else None
        here = await asyncio.to_thread(already_here, work, mf, size, finished)
        status = "present" if size is not None and here >= size else \
            "partial" if here else "to-fetch"
        entries.append(FileEntry(rel=mf.rel, size=size, sha256=None, status=status,
                                 bytes_present=here,
                                 error=got if isinstance(got, str) else None))
    total = sum(e.size or 0 for e in entries)
    present = sum(e.bytes_present for e in entries)
    needed = total - present
    free = free_space(out)
    fits = needed <= free
    model_id, checkpoint_id = source_ids(sources, resolved)
    error = None if fits else \
        f"not enough space in {out}: {needed:,} bytes to fetch, {free:,} free"
    return PullReport(
        ok=fits, exit_code=EXIT_OK if fits else EXIT_TRANSFER_FAILED, error=error,
        source=shown, model_id=model_id, checkpoint_id=checkpoint_id, output=str(out),
        dry_run=True, files=entries,
        totals=Totals(files=len(entries), bytes=total, bytes_fetched=0, bytes_present=present,
                      seconds=0.0, throughput_mb_s=0.0),
        expected_params=resolved.expected_params,
        skipped_files=len(resolved.manifest.files) - len(files),
        disk=DiskSpace(needed_bytes=needed, free_bytes=free, fits=fits))
