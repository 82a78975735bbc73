"""`--ray` on a 3-node local cluster: every node ends with the verified model, origin serving it
about once, the object store bounded by the budget."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from weightlift.downloader.engine import EngineConfig
from weightlift.downloader.fanout import pull_cluster
from weightlift.downloader.sources.local import resolve_local

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
