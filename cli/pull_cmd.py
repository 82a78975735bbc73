"""`weightlift pull`: resolve the sources, download, verify, report."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from weightlift.cli.progress import Progress, human_bytes
from weightlift.downloader.engine import EngineConfig, PullResult
from weightlift.downloader.errors import (
    EXIT_OK,
    EXIT_TRANSFER_FAILED,
    EXIT_VERIFY_FAILED,
    WeightliftError,
)
from weightlift.downloader.planner import DEFAULT_CONNECTIONS
from weightlift.downloader.pull import pull
from weightlift.downloader.redact import redact_obj, redact_text
from weightlift.downloader.retry import RetryPolicy
from weightlift.downloader.sources.local import ResolvedSource

T = TypeVar("T")


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


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def engine_config(args: argparse.Namespace) -> EngineConfig:
    # WEIGHTLIFT_STALL_TIMEOUT / WEIGHTLIFT_RETRY_BASE exist for tests and unusual links.
    return EngineConfig(
        connections=args.connections or DEFAULT_CONNECTIONS,
        chunk_size=args.chunk_size,
        stall_timeout=_env_float("WEIGHTLIFT_STALL_TIMEOUT", 30.0),
        retry=RetryPolicy(backoff_base=_env_float("WEIGHTLIFT_RETRY_BASE", 0.25)),
        header_check=None if args.no_verify else safetensors_header_check,
    )


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


MAX_ERROR_LINES = 10  # distinct failure lines printed before "… and N more"


async def pull_and_verify(source: ResolvedSource, out: Path, args: argparse.Namespace,
                          progress: Progress) -> tuple[int, dict[str, Any]]:
    """Pull and verify inside the caller's event loop (a platform source's API session, which
    refreshes the URLs, lives there); returns the exit code and the JSON report."""
    try:
        result = await pull(source, out, engine_config(args), progress)
    finally:
        progress.close()
    report = pull_report(result, out)
    code = EXIT_OK
    failed = [f for f in result.files if f.status == "failed"]
    if failed:
        # A file that can never be right (1) outranks bad input (2) and transfer trouble (3).
        code = min(f.exit_code or EXIT_TRANSFER_FAILED for f in failed)
        # One line per distinct failure (files that failed for one shared reason say it
        # once), and no wall of lines when thousands of files failed: --json lists them all.
        lines = list(dict.fromkeys(redact_text(f.error or "") for f in failed))
        for line in lines[:MAX_ERROR_LINES]:
            print(f"weightlift: error: {line}", file=sys.stderr)
        if len(lines) > MAX_ERROR_LINES:
            print(f"weightlift: error: … and {len(lines) - MAX_ERROR_LINES} more failed "
                  "file(s); --json lists each", file=sys.stderr)
        report["ok"] = False
        report["exit_code"] = code
        return code, report
    expected = args.expect_params if args.expect_params is not None else source.expected_params
    report["expected_params"] = expected
    has_weights = any(f.rel.endswith(".safetensors") for f in result.files)
    if not args.no_verify and (has_weights or expected is not None):
        from weightlift.verify.checkpoint import verify_directory

        # Off the loop: it reads every header and asks the safetensors library for a second
        # opinion, and the loop may still be serving an emulator or a watch.
        vreport = await asyncio.to_thread(
            verify_directory, out, expect_params=expected, deep=False, check_hashes=False,
            progress=False)
        report["verification"] = json.loads(vreport.model_dump_json())
        if not vreport.ok:
            for problem in vreport.problems:
                print(f"weightlift: verification failed: {problem}", file=sys.stderr)
            code = EXIT_VERIFY_FAILED
        else:
            progress.say(f"verified: {vreport.params:,} parameters"
                         + (f" = expected {expected:,}" if expected is not None else ""))
    report["ok"] = code == EXIT_OK
    report["exit_code"] = code
    mbps = result.bytes_fetched / result.seconds / 1e6 if result.seconds else 0.0
    progress.say(f"done: {len(result.files)} file(s) in {out}; fetched "
                 f"{human_bytes(result.bytes_fetched)} in {result.seconds:.1f}s ({mbps:.0f} MB/s)")
    return code, report


def pull_report(result: PullResult, out: Path) -> dict[str, Any]:
    total = sum(f.size for f in result.files)
    return {
        "ok": result.ok,
        "output": str(out),
        "files": [
            {"rel": f.rel, "size": f.size, "sha256": f.sha256, "status": f.status,
             "bytes_fetched": f.bytes_fetched, **({"error": f.error} if f.error else {})}
            for f in result.files
        ],
        "totals": {
            "files": len(result.files),
            "bytes": total,
            "bytes_fetched": result.bytes_fetched,
            "seconds": round(result.seconds, 3),
            "throughput_mb_s": round(result.bytes_fetched / result.seconds / 1e6, 1)
            if result.seconds else 0.0,
            "refreshes": result.refreshes,
            "retries": result.retries,
            "restarts": result.restarts,
        },
        "verification": None,
        "expected_params": None,
    }


def run(args: argparse.Namespace) -> int:
    if args.ray or args.ray_address or args.ray_nodes or args.ray_budget:
        from weightlift.cli.ray_cmd import run as run_ray

        return run_ray(args)
    progress = Progress(quiet=args.quiet or args.json)

    async def resolve_then_pull() -> tuple[int, dict[str, Any]]:
        from weightlift.downloader.sources.resolve import open_source

        async with open_source(args.sources) as source:
            progress.say(f"source: {source.description}")
            if getattr(args, "hf_cache", None) is not None:
                from weightlift.downloader.sources.hf_cache import pull_into_hf_cache

                (code, report), snapshot = await pull_into_hf_cache(
                    source, args.sources, args.hf_cache,
                    lambda out: pull_and_verify(source, out, args, progress),
                    lambda done: [f["rel"] for f in done[1]["files"]] if done[0] == 0 else None)
                if snapshot is not None:  # where the model is now, for whoever loads it
                    report["output"] = str(snapshot)
                    progress.say(f"Hugging Face cache: {snapshot}")
                return code, report
            return await pull_and_verify(source, Path(args.output), args, progress)

    try:
        code, report = asyncio.run(run_cancellable(resolve_then_pull()))
    except WeightliftError as exc:
        if args.json:  # still exactly one JSON document for a CI gate to parse
            print(json.dumps(redact_obj(
                {"ok": False, "error": exc.one_line(), "exit_code": exc.exit_code})))
        raise
    if args.json:
        print(json.dumps(redact_obj(report), indent=1))
    return code
