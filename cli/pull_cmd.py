"""`weightlift pull`: call the API's pull, show progress, print the report and failures."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar

from weightlift.cli.progress import Progress, human_bytes
from weightlift.downloader.engine import EngineConfig
from weightlift.downloader.errors import EXIT_INTERRUPTED, WeightliftError
from weightlift.downloader.sources.local import ResolvedSource
from weightlift.pulling import (
    PullOptions,
    pull_resolved,
    run_pull,
    safetensors_header_check,
    shown_source,
)
from weightlift.reports import PullReport, Totals
from weightlift.selection import Selection

T = TypeVar("T")
__all__ = ["engine_config", "pull_and_verify", "run", "run_cancellable",
           "safetensors_header_check"]

MAX_ERROR_LINES = 10  # distinct failure lines printed before "… and N more"


async def run_cancellable(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro``; SIGTERM (preemption) cancels it like Ctrl-C, so state is saved."""
    task = asyncio.ensure_future(coro)
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    except (NotImplementedError, RuntimeError):  # pragma: no cover - not on the main thread
        pass
    try:
        return await task
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
    finally:
        try:
            loop.remove_signal_handler(signal.SIGTERM)
        except (NotImplementedError, RuntimeError):  # pragma: no cover
            pass


def pull_options(args: argparse.Namespace) -> PullOptions:
    return PullOptions(
        connections=args.connections, chunk_size=args.chunk_size,
        expect_params=args.expect_params, verify=not args.no_verify,
        # getattr: `watch`, the demo and the bench harness build their own namespaces.
        selection=Selection.of(getattr(args, "include", None), getattr(args, "exclude", None)),
        max_rate=getattr(args, "max_rate", None), dry_run=getattr(args, "dry_run", False))


def engine_config(args: argparse.Namespace) -> EngineConfig:
    """The engine settings for these arguments and the WEIGHTLIFT_* environment (for callers
    that drive the engine themselves, such as the Ray fan-out)."""
    from weightlift.pulling import engine_config as config_for
    from weightlift.settings import env_settings

    return config_for(pull_options(args), env_settings(os.environ))


def failed_report(sources: list[str], output: Path | None, exc: WeightliftError | None,
                  code: int) -> PullReport:
    """The report of a pull that ended before it had one (bad SOURCE, platform error, Ctrl-C):
    the same shape as any other."""
    return PullReport(
        ok=False, exit_code=code, error=exc.one_line() if exc else "interrupted",
        source=shown_source(sources), output=str(output) if output is not None else "",
        totals=Totals(files=0, bytes=0, bytes_fetched=0, bytes_present=0, seconds=0.0,
                      throughput_mb_s=0.0))


def tell(report: PullReport, progress: Progress, *, table: bool = True) -> None:
    """The person's lines after a pull: each distinct failure once (no "done" after one); a
    dry run's table on stdout unless ``table`` is False (--json prints the document)."""
    failures = list(dict.fromkeys(f.error for f in report.files if f.error
                                  and f.status == "failed"))
    for line in failures[:MAX_ERROR_LINES]:
        print(f"weightlift: error: {line}", file=sys.stderr)
    if len(failures) > MAX_ERROR_LINES:
        print(f"weightlift: error: … and {len(failures) - MAX_ERROR_LINES} more failed "
              "file(s); --json lists each", file=sys.stderr)
    for problem in report.problems:
        print(f"weightlift: verification failed: {problem}", file=sys.stderr)
    if report.dry_run:
        if table and not progress.quiet:
            print_plan(report)
        if report.error:
            print(f"weightlift: error: {report.error}", file=sys.stderr)
        return
    if report.ok:
        t = report.totals
        progress.say(f"done: {t.files} file(s) in {report.output}; fetched "
                     f"{human_bytes(t.bytes_fetched)} in {t.seconds:.1f}s "
                     f"({t.throughput_mb_s:.0f} MB/s)")


def print_plan(report: PullReport) -> None:
    """A dry run's table, on stdout (it is the command's answer, not progress)."""
    width = max([len(f.rel) for f in report.files] + [4])
    print(f"{'file':<{width}}  {'size':>10}  {'here':>10}  status")
    for f in report.files:
        size = human_bytes(f.size) if f.size is not None else "?"
        print(f"{f.rel:<{width}}  {size:>10}  {human_bytes(f.bytes_present):>10}  {f.status}"
              + (f"  ({f.error})" if f.error else ""))
    disk = report.disk
    if disk is not None:
        print(f"to fetch: {human_bytes(disk.needed_bytes)} of {human_bytes(report.totals.bytes)}"
              f" into {report.output}; free there: {human_bytes(disk.free_bytes)} -> "
              + ("fits" if disk.fits else "DOES NOT FIT"))


async def pull_for_cli(sources: list[str], output: str | None, args: argparse.Namespace,
                       progress: Progress, *, env: Mapping[str, str] | None = None,
                       seen: list[Path] | None = None) -> PullReport:
    """The API's pull with the CLI's progress; ``seen`` receives the output folder."""
    if getattr(args, "hf_cache", None) is not None:
        return await pull_into_hf_cache_for_cli(sources, args, progress,
                                                env=os.environ if env is None else env,
                                                seen=seen)
    return await run_pull(sources, output, pull_options(args), progress,
                          env=os.environ if env is None else env,
                          on_output=seen.append if seen is not None else None)


async def pull_into_hf_cache_for_cli(sources: list[str], args: argparse.Namespace,
                                     progress: Progress, *, env: Mapping[str, str],
                                     seen: list[Path] | None = None) -> PullReport:
    """`--hf-cache`: the API's pull into the cache's staging folder, then the cache layout; the
    report's `output` is the snapshot, where the model is loaded from."""
    from weightlift.downloader.sources.hf_cache import pull_into_hf_cache
    from weightlift.downloader.sources.resolve import open_source
    from weightlift.settings import env_settings

    options = pull_options(args)
    async with open_source(sources, env) as source:
        report, snapshot = await pull_into_hf_cache(
            source, sources, args.hf_cache,
            lambda out: pull_resolved(sources, source, out, options, progress,
                                      settings=env_settings(env),
                                      on_output=seen.append if seen is not None else None),
            lambda done: [f.rel for f in done.files] if done.ok and not done.dry_run else None)
    if snapshot is not None:
        report.output = str(snapshot)
        progress.say(f"Hugging Face cache: {snapshot}")
    return report


async def pull_and_verify(source: ResolvedSource, out: Path, args: argparse.Namespace,
                          progress: Progress) -> tuple[int, dict[str, Any]]:
    """Pull an already-resolved source (the bench harness drives this) and tell the person;
    returns the exit code and the JSON report as a dict."""
    from weightlift.settings import env_settings

    report = await pull_resolved([source.description], source, out, pull_options(args),
                                 progress, settings=env_settings(os.environ))
    tell(report, progress)
    return report.exit_code, report.to_dict()


def run(args: argparse.Namespace) -> int:
    if args.ray or args.ray_address or args.ray_nodes or args.ray_budget:
        from weightlift.cli.ray_cmd import run as run_ray

        return run_ray(args)
    progress = Progress(quiet=args.quiet or args.json)
    seen: list[Path] = []
    try:
        report = asyncio.run(run_cancellable(
            pull_for_cli(args.sources, args.output, args, progress, seen=seen)))
    except WeightliftError as exc:
        progress.close()
        if args.json:  # still exactly one JSON document for a CI gate to parse
            print(failed_report(args.sources, seen[-1] if seen else _given(args), exc,
                                exc.exit_code).to_json())
        raise
    except KeyboardInterrupt:
        progress.close(interrupted=True)
        if args.json:
            print(failed_report(args.sources, seen[-1] if seen else _given(args), None,
                                EXIT_INTERRUPTED).to_json())
        raise
    tell(report, progress, table=not args.json)
    if args.json:
        print(report.to_json())
    return report.exit_code


def _given(args: argparse.Namespace) -> Path | None:
    return Path(args.output) if args.output else None
