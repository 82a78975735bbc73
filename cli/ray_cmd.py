"""`weightlift pull --ray`: one model onto every node of a Ray cluster; one bar, one line per
node, the schema-1 cluster-pull document in --json (``weightlift.cluster``)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import TYPE_CHECKING, Any

from weightlift.cli.progress import human_bytes
from weightlift.cli.pull_cmd import pull_options, run_cancellable
from weightlift.downloader.errors import EXIT_INTERRUPTED, UsageError, WeightliftError

if TYPE_CHECKING:
    from weightlift.reports import ClusterPullReport



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


def run(args: argparse.Namespace) -> int:
    """``pull --ray``: per-node lines on stderr; with --json, one schema-1 ``cluster-pull``
    document on stdout, on failure too."""
    if not args.ray:
        raise UsageError("--ray-address, --ray-nodes and --ray-budget go with --ray",
                         "add --ray")
    from weightlift.cluster import failed_cluster_report, run_cluster_pull

    quiet = args.quiet or args.json
    bar = _Bar(quiet)

    def say(line: str) -> None:
        if not quiet:
            print(line, file=sys.stderr)

    async def pull() -> ClusterPullReport:
        try:
            return await run_cluster_pull(
                args.sources, args.output, pull_options(args), env=os.environ,
                address=args.ray_address, nodes=args.ray_nodes, budget=args.ray_budget,
                on_progress=bar, say=say)
        finally:
            bar.close()

    try:
        report = asyncio.run(run_cancellable(pull()))
    except WeightliftError as exc:
        if args.json:  # still exactly one JSON document for a CI gate to parse
            print(failed_cluster_report(args.sources, args.output, exc, exc.exit_code).to_json())
        raise
    except KeyboardInterrupt:
        if args.json:
            print(failed_cluster_report(args.sources, args.output, None,
                                        EXIT_INTERRUPTED).to_json())
        raise
    for node in report.nodes:
        if not node.ok:
            print(f"weightlift: error: node {node.name}: {node.error or ''}", file=sys.stderr)
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
        print(report.to_json())
    return report.exit_code
