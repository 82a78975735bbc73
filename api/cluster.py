"""A cluster pull (Ray fan-out) as the API and `pull --ray --json` report it: the schema-1
ClusterPullReport, on success and on failure alike. Ray is imported only when a cluster pull
runs (by the fan-out's preflight)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from weightlift.downloader.errors import UsageError, WeightliftError
from weightlift.downloader.redact import redact_text
from weightlift.downloader.sources.local import ResolvedSource
from weightlift.pulling import PullOptions, engine_config, shown_source, source_ids
from weightlift.reports import ClusterNodeResult, ClusterPullReport


def cluster_report(sources: list[str], resolved: ResolvedSource | None, template: str,
                   report: Any) -> ClusterPullReport:
    """The schema-1 document of the fan-out's ClusterReport (``downloader.fanout.driver``)."""
    model_id, checkpoint_id = source_ids(sources, resolved)
    nodes = [ClusterNodeResult(
        name=n.name, node_id=n.node, output=n.output, ok=n.ok, exit_code=n.exit_code,
        bytes_from_origin=n.bytes_from_origin, bytes_from_peers=n.bytes_from_peers,
        seconds=round(n.seconds, 3), params=n.params, rss_peak=n.rss_peak,
        error=redact_text(n.error) if n.error else None) for n in report.nodes]
    failed = [n for n in nodes if not n.ok]
    error = None
    if failed:
        first = failed[0]
        error = (f"{len(failed)} of {len(nodes)} node(s) failed; node {first.name}: "
                 f"{first.error or f'exit {first.exit_code}'}")
    return ClusterPullReport(
        ok=bool(report.ok), exit_code=int(report.exit_code), error=error,
        source=shown_source(sources), model_id=model_id, checkpoint_id=checkpoint_id,
        output=template, nodes=nodes, model_bytes=report.model_bytes,
        origin_bytes=report.origin_bytes, seconds=round(report.seconds, 3),
        chunk_size=report.chunk_size, object_store_budget=report.budget,
        object_store_peak=report.object_store_peak,
        over_budget_claims=report.over_budget_claims, refreshes=report.refreshes)


def failed_cluster_report(sources: list[str], template: str | None,
                          exc: WeightliftError | None, code: int) -> ClusterPullReport:
    """The document of a cluster pull that ended before the nodes reported (no Ray, bad input,
    cluster unreachable, Ctrl-C): the same shape as any other."""
    return ClusterPullReport(
        ok=False, exit_code=code, error=redact_text(exc.one_line()) if exc else "interrupted",
        source=shown_source(sources), output=template or "")


async def run_cluster_pull(
    sources: list[str], out_dir: str | None, options: PullOptions, *,
    env: Mapping[str, str], address: str | None = None, nodes: str | None = None,
    budget: int | None = None, on_progress: Callable[[int, int], None] | None = None,
    say: Callable[[str], None] | None = None,
) -> ClusterPullReport:
    """Pull ``sources`` onto every selected node of the Ray cluster (``address``, else
    ``RAY_ADDRESS`` in ``env`` or the process environment) into ``out_dir`` with ``{node}``
    expanded per node. Returns the report once the nodes ran (``ok`` False when one failed);
    raises UsageError (no Ray, bad input) or PlatformError (cluster unreachable) before."""
    if out_dir is None:
        raise UsageError("a cluster pull needs an output folder: pass -o DIR (out_dir=...)",
                         "e.g. /data/model or /shared/model-{node}")
    if options.dry_run:
        raise UsageError("dry_run is not taken with ray (--dry-run with --ray)")
    if options.selection.include or options.selection.exclude:
        raise UsageError("include/exclude are not taken with ray (--include/--exclude with "
                         "--ray)")
    from weightlift.downloader.fanout.driver import DEFAULT_BUDGET, preflight, pull_cluster
    from weightlift.settings import env_settings

    address = address or env.get("RAY_ADDRESS") or None
    preflight(out_dir, address)
    from weightlift.downloader.sources.resolve import open_source
    from weightlift.source_forms import check_source

    for s in sources:
        check_source(s)
    config = engine_config(options, env_settings(env))
    async with open_source(sources, env) as resolved:
        if say is not None:
            say(f"source: {redact_text(resolved.description)}")
        report = await pull_cluster(
            resolved, out_dir, config, address=address, nodes=nodes,
            budget=budget or DEFAULT_BUDGET, verify=options.verify,
            expect_params=options.expect_params, on_progress=on_progress)
        return cluster_report(sources, resolved, out_dir, report)

