"""The driver side of a cluster pull: resolve once, plan once, start the coordinator, run one
pull task pinned to each selected node, serve URL refreshes, gather the nodes' reports."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from weightlift.downloader.config import EngineConfig
from weightlift.downloader.errors import (
    EXIT_OK,
    EXIT_TRANSFER_FAILED,
    PlatformError,
    UsageError,
    WeightliftError,
)
from weightlift.downloader.fanout.plan import (
    NODE_PLACEHOLDER,
    check_template,
    node_dir,
    plan_cluster,
)
from weightlift.downloader.redact import redact_text
from weightlift.downloader.sources.local import ResolvedSource

DEFAULT_BUDGET = 1 << 30  # object-store bytes the cluster may hold at once (published chunks)
POLL_EVERY = 0.5

# on_progress(bytes held by all nodes, bytes all nodes must hold)
ProgressFn = Callable[[int, int], None]


@dataclass
class NodeReport:
    node: str  # Ray node id
    name: str  # what `{node}` expanded to
    output: str
    ok: bool
    exit_code: int
    bytes_from_origin: int = 0
    bytes_from_peers: int = 0
    seconds: float = 0.0
    error: str | None = None
    params: int | None = None
    rss_peak: int | None = None  # the node's pull process, peak resident bytes


@dataclass
class ClusterReport:
    nodes: list[NodeReport]
    model_bytes: int
    chunk_size: int
    seconds: float
    budget: int
    object_store_peak: int  # most published-but-unreleased bytes held at once, cluster-wide
    over_budget_claims: int  # claims let past a full budget (see coordinator.STALL_GRACE)
    refreshes: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(n.ok for n in self.nodes)

    @property
    def exit_code(self) -> int:
        """0 when every node holds the verified model, else the gravest node's code (a
        verification failure, 1, outranks transfer trouble, 3)."""
        codes = [n.exit_code for n in self.nodes if not n.ok]
        return min(codes) if codes else EXIT_OK

    @property
    def origin_bytes(self) -> int:
        return sum(n.bytes_from_origin for n in self.nodes)


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray: pip install 'weightlift[ray]'") from None
    return ray


def preflight(out_dir_template: str, address: str | None) -> Any:
    """Refuse what cannot work before any source is resolved: no Ray installed, no cluster
    named (and none connected), a bad ``{node}`` template. Returns the ``ray`` module."""
    ray = _ray()
    check_template(out_dir_template)
    if not ray.is_initialized() and not (address or os.environ.get("RAY_ADDRESS")):
        raise UsageError("--ray needs a cluster: pass --ray-address or set RAY_ADDRESS",
                         "e.g. --ray-address auto on a node of a running cluster")
    return ray


async def _reachable(address: str, timeout: float = 5.0) -> None:
    """A `host:port` cluster address must answer a TCP connect: ``ray.init`` would otherwise
    retry an unreachable one for minutes."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # "auto", or a ray:// client address: Ray says itself what is wrong
    # asyncio.wait, not wait_for (which can swallow a cancellation on Python <= 3.11).
    connect = asyncio.ensure_future(asyncio.open_connection(host.strip("[]"), int(port)))
    done, _ = await asyncio.wait({connect}, timeout=timeout)
    if not done:
        connect.cancel()
    elif connect.exception() is None:
        connect.result()[1].close()
        return
    raise PlatformError(f"cannot reach the Ray cluster at {address}",
                        "check the address (the head's GCS port, 6379 by default) and that "
                        "the cluster is up")


def select_nodes(ray_nodes: list[dict[str, Any]], selector: str | None) -> list[dict[str, Any]]:
    """The alive nodes, or those holding custom resource ``NAME`` or label ``KEY=VALUE``."""
    alive = [n for n in ray_nodes if n.get("Alive")]
    if not selector:
        return alive
    if "=" in selector:
        key, value = selector.split("=", 1)
        return [n for n in alive if (n.get("Labels") or {}).get(key) == value]
    return [n for n in alive if (n.get("Resources") or {}).get(selector, 0) > 0]


def check_shared_hosts(nodes: list[dict[str, Any]], template: str) -> None:
    """Nodes on one host share its disk: without ``{node}`` they would all write one folder."""
    if NODE_PLACEHOLDER in template:
        return
    hosts = Counter(n.get("NodeManagerAddress") for n in nodes)
    host, count = hosts.most_common(1)[0] if hosts else (None, 0)
    if count > 1:
        raise UsageError(f"{count} of the selected Ray nodes run on one host ({host}) and "
                         f"would share the folder {template}",
                         "put {node} in -o DIR (each node gets its own folder), or pick one "
                         "node per host with --ray-nodes")


def short_names(node_ids: list[str]) -> list[str]:
    """The first 12 hex digits of each node id (the full ids if two would clash)."""
    short = [n[:12] for n in node_ids]
    return short if len(set(short)) == len(short) else list(node_ids)


async def pull_cluster(
    source: ResolvedSource,
    out_dir_template: str,
    config: EngineConfig,
    *,
    address: str | None = None,
    nodes: str | None = None,
    budget: int = DEFAULT_BUDGET,
    verify: bool = True,
    expect_params: int | None = None,
    on_progress: ProgressFn | None = None,
) -> ClusterReport:
    """Pull ``source`` onto every selected node of the Ray cluster at ``address`` (or
    ``RAY_ADDRESS``; an already connected ``ray`` is used as is) into ``out_dir_template`` with
    ``{node}`` expanded per node; origin serves each chunk to one node only. Raises UsageError
    (no Ray, no matching node, bad template) or PlatformError (cluster unreachable)."""
    ray = preflight(out_dir_template, address)
    connected_here = False
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or "auto"
        await _reachable(address)
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise PlatformError(f"cannot join the Ray cluster at {address}: {exc}",
                                "check the address and that the cluster is up") from None
        connected_here = True
    try:
        return await _pull_cluster(ray, source, out_dir_template, config, nodes, budget,
                                   verify, expect_params, on_progress)
    finally:
        if connected_here:
            ray.shutdown()


async def _pull_cluster(ray: Any, source: ResolvedSource, template: str, config: EngineConfig,
                        selector: str | None, budget: int, verify: bool,
                        expect_params: int | None, on_progress: ProgressFn | None
                        ) -> ClusterReport:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from weightlift.downloader.fanout.coordinator import Coordinator
    from weightlift.downloader.fanout.node import NodeSpec, run_node
    from weightlift.downloader.fanout.sizes import with_sizes

    started = time.monotonic()
    chosen = select_nodes(ray.nodes(), selector)
    if not chosen:
        raise UsageError(f"no alive Ray node matches --ray-nodes {selector}" if selector
                         else "the Ray cluster has no alive node")
    check_shared_hosts(chosen, template)
    ids = [n["NodeID"] for n in chosen]
    names = short_names(ids)
    manifest = await with_sizes(source.manifest, config)
    plan = plan_cluster(manifest, config.chunk_size, config.connections)
    coord = ray.remote(Coordinator).options(num_cpus=0).remote(
        [c.length for c in plan.chunks], ids, max(budget, 1), manifest)
    expected = expect_params if expect_params is not None else source.expected_params
    task = ray.remote(num_cpus=0, max_retries=0)(run_node)
    refs: dict[str, Any] = {}
    for node_id, name in zip(ids, names, strict=True):
        spec = NodeSpec(node_id=node_id, name=name, out_dir=node_dir(template, name),
                        manifest=manifest, can_refresh=source.refresh is not None,
                        expected_params=expected, description=source.description, plan=plan,
                        config=config,
                        verify=verify)
        refs[node_id] = task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            node_id, soft=False)).remote(spec, coord)
    waiting = {asyncio.wrap_future(ref.future()): node_id for node_id, ref in refs.items()}
    helpers = [asyncio.ensure_future(_serve_refreshes(coord, source))]
    if on_progress is not None:
        helpers.append(asyncio.ensure_future(
            _show_progress(coord, on_progress, plan.total_bytes * len(ids))))
    reports: dict[str, NodeReport] = {}
    try:
        pending = set(waiting)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for fut in done:
                node_id = waiting[fut]
                name = names[ids.index(node_id)]
                try:
                    raw = fut.result()
                    reports[node_id] = NodeReport(**{k: raw.get(k) for k in (
                        "node", "name", "output", "ok", "exit_code", "bytes_from_origin",
                        "bytes_from_peers", "seconds", "error", "params", "rss_peak")})
                except ray.exceptions.RayError as exc:
                    # The task died (worker killed, node lost): its claims go back to the pool.
                    await coord.leave.remote(node_id)
                    reports[node_id] = NodeReport(
                        node_id, name, node_dir(template, name), False, EXIT_TRANSFER_FAILED,
                        error=f"{_death(exc)}; run the same command again to resume "
                              "(finished bytes are kept)")
        stats = await coord.stats.remote()
    except BaseException:
        for ref in refs.values():
            ray.cancel(ref)
        raise
    finally:
        for helper in helpers:
            helper.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
    for node_id, counters in stats["nodes"].items():
        report = reports.get(node_id)
        if report is not None and not report.bytes_from_origin and not report.bytes_from_peers:
            report.bytes_from_origin = counters.get("origin", 0)  # a dead node's last report
            report.bytes_from_peers = counters.get("peers", 0)
    ray.kill(coord)
    ledger = stats["ledger"]
    return ClusterReport(
        nodes=[reports[i] for i in ids], model_bytes=plan.total_bytes,
        chunk_size=plan.chunk_size, seconds=time.monotonic() - started, budget=ledger["budget"],
        object_store_peak=ledger["peak_held"], over_budget_claims=ledger["forced"],
        refreshes=stats["refreshes"], extra={"pids": stats["pids"]})


def _death(exc: BaseException) -> str:
    kind = type(exc).__name__
    if "WorkerCrashed" in kind:
        return "its pull task's process died"
    if "NodeDied" in kind:
        return "the node left the cluster"
    cause = getattr(exc, "cause", None) or exc
    last = (str(cause).strip().splitlines() or [""])[-1]
    return f"its pull task failed ({type(cause).__name__}: {redact_text(last)[:200]})"


async def _serve_refreshes(coord: Any, source: ResolvedSource) -> None:
    """Refresh the URLs when a node asks: one refresh at a time for the whole cluster."""
    while True:
        if not await coord.next_refresh_request.remote(30.0):
            continue
        if source.refresh is None:
            await coord.refreshed.remote(None, ("this source cannot refresh its URLs", 3))
            continue
        try:
            manifest = await source.refresh()
        except WeightliftError as exc:
            await coord.refreshed.remote(None, (exc.one_line(), exc.exit_code))
            continue
        await coord.refreshed.remote(manifest, None)


async def _show_progress(coord: Any, on_progress: ProgressFn, total: int) -> None:
    while True:
        stats = await coord.stats.remote()
        on_progress(sum(c.get("done", 0) for c in stats["nodes"].values()), total)
        await asyncio.sleep(POLL_EVERY)
