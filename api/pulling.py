"""One pull as the API and the CLI run it: SOURCE checks, resolution, selection, the engine,
the checkpoint checks, and the PullReport.

``run_pull`` never raises for files that failed: their failures are in the report (with its
``exit_code``), so that the CLI can print the same document on success and on failure. It
raises ``WeightliftError`` only when there is nothing to report on (a bad SOURCE, a platform
error, a bad output folder).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from weightlift.downloader.engine import EngineConfig, PullResult
from weightlift.downloader.errors import (
    EXIT_OK,
    EXIT_TRANSFER_FAILED,
    EXIT_VERIFY_FAILED,
    UsageError,
)
from weightlift.downloader.events import Event, FileFinished, FileStarted, PullStarted
from weightlift.downloader.redact import redact_text
from weightlift.downloader.retry import RetryPolicy
from weightlift.downloader.sources.local import ResolvedSource
from weightlift.reports import FileEntry, PullReport, Totals
from weightlift.selection import Selection, select
from weightlift.settings import EnvSettings, default_connections, env_settings, folder_name
from weightlift.source_forms import check_source

WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json")


class Sink(Protocol):
    """Where a pull's events and human lines go (the CLI's tqdm Progress, or nothing)."""

    def __call__(self, event: Event) -> None: ...

    def say(self, text: str) -> None: ...

    def close(self, *, interrupted: bool = False) -> None: ...


class Silent:
    """The API's default sink: nothing is printed."""

    def __call__(self, event: Event) -> None:
        pass

    def say(self, text: str) -> None:
        pass

    def close(self, *, interrupted: bool = False) -> None:
        pass


@dataclass(frozen=True)
class PullOptions:
    connections: int | None = None
    chunk_size: int | None = None
    expect_params: int | None = None
    verify: bool = True
    selection: Selection = field(default_factory=Selection)
    max_rate: float | None = None
    dry_run: bool = False


def safetensors_header_check(rel: str, prefix: bytes, size: int) -> int:
    """Fail fast on a shard whose header can never load (see EngineConfig.header_check)."""
    if not rel.endswith(".safetensors"):
        return 0
    from weightlift.verify.header import header_length_needed, parse_header

    need = header_length_needed(prefix)
    if need is None:
        return 8
    if len(prefix) < need:
        return need
    parse_header(prefix[:need], size)
    return 0


def engine_config(options: PullOptions, settings: EnvSettings) -> EngineConfig:
    """The engine's settings: options first, then WEIGHTLIFT_* variables, then defaults."""
    return EngineConfig(
        connections=options.connections or default_connections(settings),
        chunk_size=options.chunk_size,
        stall_timeout=settings.stall_timeout,
        # Given here, checked, rather than read (and a bad value ignored) by EngineConfig.
        header_timeout=settings.header_timeout,
        min_speed=settings.low_speed,
        min_speed_window=settings.low_speed_time,
        retry=RetryPolicy(backoff_base=settings.retry_base),
        header_check=safetensors_header_check if options.verify else None,
        max_rate=options.max_rate,
    )


def shown_source(sources: list[str]) -> str:
    """The SOURCE arguments as a report shows them: no query strings (signatures)."""
    return redact_text(" ".join(s.split("?", 1)[0] + ("?…" if "?" in s else "")
                                for s in sources))


def source_ids(sources: list[str], resolved: ResolvedSource | None) -> tuple[str | None,
                                                                                str | None]:
    """(model_id, checkpoint_id): a TensorOne manifest's id names a checkpoint."""
    if resolved is None:
        return None, None
    mid = resolved.manifest.model_id
    if sources and sources[0].lower().startswith("tensorone://"):
        return None, mid
    return mid, None


def output_folder(out_dir: str | Path | None, settings: EnvSettings, sources: list[str],
                  resolved: ResolvedSource) -> Path:
    """``out_dir``, or WEIGHTLIFT_OUTPUT_ROOT/<model id or name> when it is not given."""
    if out_dir is not None:
        return Path(out_dir)
    if settings.output_root is None:
        raise UsageError("no output folder: pass -o DIR (out_dir=...)",
                         "or set WEIGHTLIFT_OUTPUT_ROOT to pull into ROOT/<model id>")
    mid = resolved.manifest.model_id
    return Path(settings.output_root).expanduser() / folder_name(mid, sources)


def advise(line: str, sources: list[str]) -> str:
    """A failure line with advice that fits the SOURCE form: a platform refreshes its own URLs,
    but expired plain URLs need fresh URLs and an expired manifest file a fresh manifest."""
    if not sources or any("://" in s and not s.lower().startswith(("http://", "https://"))
                          for s in sources):
        return line  # a platform (or hf/s3) source: it refreshes what expires
    urls = all(s.lower().startswith(("http://", "https://")) for s in sources)
    if urls:
        line = line.replace("get a fresh manifest and run again",
                            "get fresh URLs and run the command with them")
    if "expired" in line.lower() and "fresh" not in line:
        line += (" (the URL has expired: get fresh URLs and run the command with them)" if urls
                 else " (the manifest's URLs have expired: get a fresh manifest and run again)")
    return line


class _Tally:
    """Wraps the sink and remembers what was on disk already (for the report)."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.resumed = 0
        self.present: dict[str, int] = {}

    def __call__(self, event: Event) -> None:
        if isinstance(event, PullStarted):
            self.resumed = event.resumed_bytes
        elif isinstance(event, FileStarted):
            self.present[event.rel] = event.resumed_bytes
        elif isinstance(event, FileFinished) and event.skipped:
            self.present[event.rel] = event.size
        self.sink(event)


def file_entries(result: PullResult, present: Mapping[str, int],
                 sources: list[str]) -> list[FileEntry]:
    return [FileEntry(rel=f.rel, size=f.size, sha256=f.sha256 if f.status != "failed" else None,
                      status=f.status,
                      bytes_fetched=f.bytes_fetched, bytes_present=present.get(f.rel, 0),
                      error=advise(redact_text(f.error), sources) if f.error else None)
            for f in result.files]


def failure_summary(failed: list[FileEntry]) -> str:
    lines = list(dict.fromkeys(f.error or f"{f.rel}: failed" for f in failed))
    more = f" (and {len(failed) - 1} more failed file(s))" if len(failed) > 1 else ""
    return lines[0] + more


async def run_pull(sources: list[str], out_dir: str | Path | None, options: PullOptions,
                   sink: Sink, *, env: Mapping[str, str],
                   on_output: Callable[[Path], None] | None = None) -> PullReport:
    """Resolve, (dry-)run, verify; returns the report. ``on_output`` learns the output folder
    as soon as it is known (the CLI's JSON on an error needs it)."""
    settings = env_settings(env)
    if not sources:
        raise UsageError("no SOURCE given")
    for s in sources:
        check_source(s)
    from weightlift.downloader.sources.resolve import open_source

    async with open_source(sources, env) as resolved:
        return await pull_resolved(sources, resolved, out_dir, options, sink, settings=settings,
                                   on_output=on_output)


async def pull_resolved(sources: list[str], resolved: ResolvedSource,
                        out_dir: str | Path | None, options: PullOptions, sink: Sink, *,
                        settings: EnvSettings,
                        on_output: Callable[[Path], None] | None = None) -> PullReport:
    """``run_pull`` for a source already resolved (and, for a platform, its session open)."""
    config = engine_config(options, settings)
    out = output_folder(out_dir, settings, sources, resolved)
    if on_output is not None:
        on_output(out)
    selected = select(resolved, options.selection)
    from weightlift.folder_check import check_folder_holds_this_model

    await asyncio.to_thread(check_folder_holds_this_model, out, resolved.manifest)
    sink.say(f"source: {redact_text(resolved.description)}")
    if options.dry_run:
        from weightlift.dry_run import plan_report

        return await plan_report(sources, selected, out, resolved, shown_source(sources))
    return await _pull_and_check(sources, resolved, selected, out, options, config, sink)


async def _pull_and_check(sources: list[str], resolved: ResolvedSource,
                          selected: ResolvedSource, out: Path, options: PullOptions,
                          config: EngineConfig, sink: Sink) -> PullReport:
    from weightlift.downloader.pull import pull

    tally = _Tally(sink)
    if options.expect_params is not None:
        # The receipt keeps the count this pull was gated with: `verify DIR` checks it again.
        selected = dataclasses.replace(selected, expected_params=options.expect_params)
    try:
        result = await pull(selected, out, config, tally, origin=shown_source(sources))
    except (asyncio.CancelledError, KeyboardInterrupt):
        sink.close(interrupted=True)
        raise
    finally:
        sink.close()
    model_id, checkpoint_id = source_ids(sources, resolved)
    skipped = len(resolved.manifest.files) - len(selected.manifest.files)
    entries = file_entries(result, tally.present, sources)
    totals = Totals(
        files=len(result.files), bytes=sum(f.size for f in result.files),
        bytes_fetched=result.bytes_fetched, bytes_present=tally.resumed,
        seconds=round(result.seconds, 3),
        throughput_mb_s=round(result.bytes_fetched / result.seconds / 1e6, 1)
        if result.seconds else 0.0,
        refreshes=result.refreshes, retries=result.retries, restarts=result.restarts)
    report = PullReport(ok=False, exit_code=EXIT_TRANSFER_FAILED, source=shown_source(sources),
                        model_id=model_id, checkpoint_id=checkpoint_id, output=str(out),
                        files=entries, totals=totals, skipped_files=skipped)
    failed = [e for e, f in zip(entries, result.files, strict=True) if f.status == "failed"]
    if failed:
        # A file that can never be right (1) outranks bad input (2) and transfer trouble (3).
        codes = [f.exit_code or EXIT_TRANSFER_FAILED for f in result.files
                 if f.status == "failed"]
        report.exit_code = min(codes)
        report.error = failure_summary(failed)
        return report
    dropped_weights = any(f.rel.endswith(WEIGHT_SUFFIXES) and not options.selection.keeps(f.rel)
                          for f in resolved.manifest.files)
    expected = options.expect_params
    if expected is None and not dropped_weights:
        expected = resolved.expected_params
    report.expected_params = expected
    has_weights = any(f.rel.endswith(".safetensors") for f in result.files)
    code = EXIT_OK
    if dropped_weights and options.expect_params is None:
        note = ("checkpoint checks skipped: --include/--exclude left out weight files "
                "(run `weightlift verify` on the complete folder)")
        report.warnings.append(note)
        sink.say(note)
    elif options.verify and (has_weights or expected is not None):
        from weightlift.checking import check_folder

        # Off the loop: it reads every header and asks the safetensors library for a second
        # opinion, and the loop may still be serving an emulator or a watch.
        vreport = await asyncio.to_thread(check_folder, out, expected, False, False, False)
        report.verification = vreport
        report.params = vreport.params
        report.problems = list(vreport.problems)
        if not vreport.ok:
            code = EXIT_VERIFY_FAILED
            report.error = f"verification failed: {vreport.problems[0]}" + (
                f" (and {len(vreport.problems) - 1} more problem(s))"
                if len(vreport.problems) > 1 else "")
        else:
            sink.say(f"verified: {vreport.params:,} parameters"
                     + (f" = expected {expected:,}" if expected is not None else ""))
    report.ok = code == EXIT_OK
    report.exit_code = code
    return report
