"""`weightlift pull --ray`: one model onto every node of a Ray cluster; one bar, one line per
node, per-node totals in --json."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict
from typing import Any

from weightlift.cli.progress import human_bytes
from weightlift.cli.pull_cmd import engine_config, run_cancellable
from weightlift.downloader.errors import UsageError, WeightliftError
from weightlift.downloader.redact import redact_obj, redact_text


class _Bar:
    """One tqdm bar for the whole cluster (bytes on all nodes), on a TTY only."""

    def __init__(self, quiet: bool) -> None:
        self._on = not quiet and sys.stderr.isatty()
        self._bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if not self._on:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                             desc="cluster", file=sys.stderr, dynamic_ncols=True)
        self._bar.update(max(0, done - self._bar.n))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def report_json(report: Any) -> dict[str, Any]:
    return {
        "ok": report.ok, "exit_code": report.exit_code,
        "nodes": [asdict(n) for n in report.nodes],
        "totals": {
            "nodes": len(report.nodes), "model_bytes": report.model_bytes,
            "origin_bytes": report.origin_bytes,
            "origin_over_model": round(report.origin_bytes / report.model_bytes, 3)
            if report.model_bytes else 0.0,
            "seconds": round(report.seconds, 3), "chunk_size": report.chunk_size,
            "object_store_budget": report.budget,
            "object_store_peak": report.object_store_peak,
            "over_budget_claims": report.over_budget_claims, "refreshes": report.refreshes,
        },
    }


def run(args: argparse.Namespace) -> int:
    if not args.ray:
        raise UsageError("--ray-address, --ray-nodes and --ray-budget go with --ray",
                         "add --ray")
    from weightlift.downloader.fanout import pull_cluster
    from weightlift.downloader.fanout.driver import DEFAULT_BUDGET, preflight

    preflight(args.output, args.ray_address)

    quiet = args.quiet or args.json
    bar = _Bar(quiet)

    async def resolve_then_pull() -> Any:
        from weightlift.downloader.sources.resolve import open_source

        async with open_source(args.sources) as source:
            if not quiet:
                print(f"source: {redact_text(source.description)}", file=sys.stderr)
            try:
                return await pull_cluster(
                    source, args.output, engine_config(args), address=args.ray_address,
                    nodes=args.ray_nodes, budget=args.ray_budget or DEFAULT_BUDGET,
                    verify=not args.no_verify, expect_params=args.expect_params,
                    on_progress=bar)
            finally:
                bar.close()

    try:
        report = asyncio.run(run_cancellable(resolve_then_pull()))
    except WeightliftError as exc:
        if args.json:
            print(json.dumps(redact_obj(
                {"ok": False, "error": exc.one_line(), "exit_code": exc.exit_code})))
        raise
    for node in report.nodes:
        if not node.ok:
            print(f"weightlift: error: node {node.name}: {redact_text(node.error or '')}",
                  file=sys.stderr)
        elif not quiet:
            print(f"node {node.name}: verified in {node.output} ({node.seconds:.1f}s; "
                  f"{human_bytes(node.bytes_from_origin)} from origin, "
                  f"{human_bytes(node.bytes_from_peers)} from peers)", file=sys.stderr)
    if not quiet:
        ratio = report.origin_bytes / report.model_bytes if report.model_bytes else 0.0
        print(f"done: {len(report.nodes)} node(s) in {report.seconds:.1f}s; origin served "
              f"{human_bytes(report.origin_bytes)} ({ratio:.2f}x the model); object store peak "
              f"{human_bytes(report.object_store_peak)}", file=sys.stderr)
    if args.json:
        print(json.dumps(redact_obj(report_json(report)), indent=1))
    return int(report.exit_code)
