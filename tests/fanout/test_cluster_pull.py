"""`--ray` on a 3-node local cluster: every node ends with the verified model, origin serving it
about once, the object store bounded by the budget."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from weightlift.downloader.config import EngineConfig
from weightlift.downloader.errors import UsageError
from weightlift.downloader.fanout import pull_cluster
from weightlift.downloader.manifest import Manifest, validate_manifest
from weightlift.downloader.pull import pull
from weightlift.downloader.sources.local import ResolvedSource, resolve_local

pytestmark = pytest.mark.ray

MiB = 1 << 20
# Fixtures (tests/fanout/conftest.py): ray_cluster -> LocalCluster, origin -> Origin.


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_holds_model(folder: Path, origin: Any) -> None:
    for rel, digest in origin.sha256.items():
        assert sha256_of(folder / rel) == digest, f"{folder / rel} differs from origin"
    receipt = json.loads((folder / ".weightlift" / "receipt.json").read_text())
    assert {f["rel"] for f in receipt["files"]} == set(origin.sha256)


async def test_every_node_gets_the_model_origin_serving_it_once(
        ray_cluster: Any, origin: Any, tmp_path: Path) -> None:
    origin.emu.reset_counters()
    source = resolve_local([str(origin.manifest_path)])
    report = await pull_cluster(source, str(tmp_path / "{node}" / "model"),
                                EngineConfig(connections=8, chunk_size=2 * MiB),
                                budget=16 * MiB)
    assert report.ok, [n.error for n in report.nodes]
    assert len(report.nodes) == 3
    assert report.exit_code == 0
    for node in report.nodes:
        assert node.params == origin.params
        assert_holds_model(Path(node.output), origin)
        assert node.bytes_from_origin + node.bytes_from_peers == origin.model_bytes
    served = origin.emu.total_bytes_served
    assert served <= 1.1 * origin.model_bytes, served / origin.model_bytes
    assert report.origin_bytes == served
    # Each node fetched a share from origin and the rest from its peers.
    assert all(n.bytes_from_peers > 0 for n in report.nodes)
    assert report.object_store_peak <= 16 * MiB + report.over_budget_claims * 2 * MiB
    # A re-run finds every node done: nothing fetched.
    origin.emu.reset_counters()
    again = await pull_cluster(source, str(tmp_path / "{node}" / "model"),
                               EngineConfig(connections=8, chunk_size=2 * MiB))
    assert again.ok
    assert origin.emu.total_bytes_served == 0


async def test_against_three_independent_pulls(
        ray_cluster: Any, origin: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's measurement: origin bytes over the model and wall time, --ray against three
    independent pulls of the same capped origin (printed; `pytest -m ray -s` shows them)."""
    source = resolve_local([str(origin.manifest_path)])
    config = EngineConfig(connections=8, chunk_size=2 * MiB)
    origin.emu.reset_counters()
    started = time.monotonic()
    results = await asyncio.gather(*(pull(source, tmp_path / f"alone-{i}", config)
                                     for i in range(3)))
    alone_seconds = time.monotonic() - started
    alone_ratio = origin.emu.total_bytes_served / origin.model_bytes
    assert all(r.ok for r in results)

    origin.emu.reset_counters()
    report = await pull_cluster(source, str(tmp_path / "ray-{node}"), config, budget=16 * MiB)
    assert report.ok, [n.error for n in report.nodes]
    ray_ratio = origin.emu.total_bytes_served / origin.model_bytes
    assert ray_ratio <= 1.1
    assert alone_ratio >= 2.99
    figures = {
        "model_bytes": origin.model_bytes, "origin_cap_mb_s": origin.emu.total_rate / 1e6,
        "independent": {"origin_over_model": round(alone_ratio, 3),
                        "seconds": round(alone_seconds, 2)},
        "ray": {"origin_over_model": round(ray_ratio, 3), "seconds": round(report.seconds, 2),
                "slowest_node_seconds": max(n.seconds for n in report.nodes),
                "object_store_peak": report.object_store_peak, "budget": report.budget,
                "over_budget_claims": report.over_budget_claims,
                "node_rss_peak_mb": [round((n.rss_peak or 0) / MiB) for n in report.nodes],
                "from_origin_mb": [round(n.bytes_from_origin / MiB, 1) for n in report.nodes],
                "from_peers_mb": [round(n.bytes_from_peers / MiB, 1) for n in report.nodes]},
    }
    with capsys.disabled():
        print("\nfan-out figures:", json.dumps(figures))


def _pull_task_pids() -> list[int]:
    """Ray workers running a node's pull right now (Ray titles them `ray::run_node`)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(b"ray::run_node"):
                pids.append(int(entry.name))
    return pids


async def test_a_killed_node_fails_alone_and_resumes(
        ray_cluster: Any, origin: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """kill -9 of one node's pull process mid-pull: the other nodes finish verified (its
    unfinished origin chunks go to them), the command reports that node failed (exit 3), and
    a re-run on that node resumes from its journal."""
    source = resolve_local([str(origin.manifest_path)])
    config = EngineConfig(connections=8, chunk_size=2 * MiB)
    template = str(tmp_path / "{node}")
    victim: list[int] = []

    def kill_one(done: int, total: int) -> None:
        if not victim and done >= total // 4:
            pids = _pull_task_pids()
            if pids:
                victim.append(pids[0])
                os.kill(pids[0], signal.SIGKILL)

    origin.emu.reset_counters()
    origin.emu.total_rate = 15e6  # slower, so that the kill lands mid-pull
    started = time.monotonic()
    try:
        report = await pull_cluster(source, template, config, budget=16 * MiB,
                                    on_progress=kill_one)
    finally:
        origin.emu.total_rate = 40e6
    first_run = {"seconds": round(time.monotonic() - started, 2),
                 "origin_over_model": round(origin.emu.total_bytes_served / origin.model_bytes, 3)}
    assert victim, "no pull process was found to kill"
    failed = [n for n in report.nodes if not n.ok]
    assert len(failed) == 1, [(n.name, n.ok, n.error) for n in report.nodes]
    assert failed[0].exit_code == 3
    assert report.exit_code == 3
    assert "run the same command again" in (failed[0].error or "")
    for node in report.nodes:
        if node.ok:
            assert_holds_model(Path(node.output), origin)
    # The re-run, on the failed node only: it resumes from what its journal vouches for.
    origin.emu.reset_counters()
    again = await pull_cluster(source, template, config,
                               nodes=ray_cluster.resource_of(failed[0].node))
    assert again.ok, [n.error for n in again.nodes]
    assert [n.node for n in again.nodes] == [failed[0].node]
    assert_holds_model(Path(again.nodes[0].output), origin)
    assert again.nodes[0].bytes_from_origin < origin.model_bytes
    assert origin.emu.total_bytes_served == again.nodes[0].bytes_from_origin
    with capsys.disabled():
        print("\nkill figures:", json.dumps({
            "killed_run": first_run, "rerun_seconds": round(again.seconds, 2),
            "rerun_origin_over_model": round(again.origin_bytes / origin.model_bytes, 3)}))


async def test_expiring_urls_are_refreshed_once_for_the_whole_cluster(
        ray_cluster: Any, origin: Any, tmp_path: Path) -> None:
    """URLs that live 1.5 s, a pull that takes longer: the nodes' refreshes reach the driver's
    source one at a time (single-flight for the cluster), and every node finishes."""
    lifetime = 1.5
    calls: list[float] = []
    endpoint = origin.endpoint

    def build() -> Manifest:
        return validate_manifest(endpoint.manifest(lifetime=lifetime))

    async def refresh() -> Manifest:
        calls.append(time.monotonic())
        return build()

    source = ResolvedSource(build(), refresh, origin.params, "expiring")
    origin.emu.reset_counters()
    origin.emu.total_rate = 20e6  # about 2.5 s for the model: past the URLs' lifetime
    try:
        report = await pull_cluster(source, str(tmp_path / "{node}"),
                                    EngineConfig(connections=8, chunk_size=2 * MiB),
                                    budget=16 * MiB)
    finally:
        origin.emu.total_rate = 40e6
    assert report.ok, [n.error for n in report.nodes]
    assert calls, "the pull outlived its URLs without a refresh"
    assert len(calls) == report.refreshes
    # One refresh per lifetime or so for the cluster, not one per node (or per worker).
    assert len(calls) <= report.seconds / (lifetime * 0.5) + 2
    assert origin.emu.total_bytes_served <= 1.1 * origin.model_bytes


async def test_nodes_of_one_host_without_the_placeholder_are_refused(
        ray_cluster: Any, origin: Any, tmp_path: Path) -> None:
    source = resolve_local([str(origin.manifest_path)])
    origin.emu.reset_counters()
    with pytest.raises(UsageError, match="3 of the selected Ray nodes run on one host"):
        await pull_cluster(source, str(tmp_path / "shared"), EngineConfig())
    assert not (tmp_path / "shared").exists()
    assert origin.emu.total_bytes_served == 0
