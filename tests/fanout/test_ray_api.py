"""``weightlift.pull(..., ray=True)``: the usage errors before any node runs (quick suite) and
one cluster pull through the Python API returning a ClusterPullReport (marker ray)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import weightlift


@pytest.fixture
def manifest(tmp_path: Path) -> str:
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"files": [
        {"rel": "a.bin", "size": 10, "url": "http://127.0.0.1:9/a.bin"}]}))
    return str(path)


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"ray_nodes": "gpu"}, "go with ray=True"),
    ({"ray": True, "env": {}}, "--ray needs a cluster"),
    ({"ray": True, "ray_address": "auto", "dry_run": True}, "dry_run is not taken with ray"),
    ({"ray": True, "ray_address": "auto", "ray_budget": "lots"}, "ray_budget: not a size"),
])
def test_usage_errors_before_any_node_runs(manifest: str, tmp_path: Path,
                                           kwargs: dict[str, Any], says: str) -> None:
    out = tmp_path / "out"
    with pytest.raises(weightlift.UsageError, match=says.replace("-", r"\-")) as caught:
        weightlift.pull(manifest, str(out / "{node}"), **kwargs)
    assert caught.value.exit_code == 2
    assert not out.exists()


def test_an_unreachable_cluster_raises_platform_error(manifest: str, tmp_path: Path) -> None:
    with pytest.raises(weightlift.PlatformError, match="cannot reach the Ray cluster"):
        weightlift.pull(manifest, str(tmp_path / "{node}"), ray=True,
                        ray_address="127.0.0.1:1")


def test_without_the_extra_one_line_names_it(manifest: str, tmp_path: Path) -> None:
    code = ("import sys; sys.modules['ray'] = None; import weightlift\n"
            "try:\n"
            f"    weightlift.pull({manifest!r}, {str(tmp_path / '{node}')!r}, ray=True,"
            " ray_address='auto')\n"
            "except weightlift.UsageError as e:\n"
            "    print(e.exit_code, e.one_line())\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env={k: v for k, v in os.environ.items()
                                           if k != "RAY_ADDRESS"})
    assert proc.stdout.startswith("2 "), proc.stderr
    assert "pip install 'weightlift[ray]'" in proc.stdout
    assert len(proc.stdout.strip().splitlines()) == 1


@pytest.mark.ray
async def test_the_api_pulls_onto_every_node(ray_cluster: Any, origin: Any,
                                             tmp_path: Path) -> None:
    origin.emu.reset_counters()
    report = await weightlift.pull_async(
        str(origin.manifest_path), str(tmp_path / "api-{node}"), ray=True,
        ray_address=ray_cluster.address, chunk_size=4 << 20, ray_budget="64M")
    assert isinstance(report, weightlift.ClusterPullReport)
    assert report.ok, report.to_json()
    assert report.exit_code == 0
    assert report.object_store_budget == 64 << 20
    assert [n.output for n in report.nodes] == [str(tmp_path / f"api-{n.name}")
                                                for n in report.nodes]
    assert all(n.params == origin.params for n in report.nodes)
    assert report.origin_bytes == origin.emu.total_bytes_served
    assert json.loads(report.to_json())["kind"] == "cluster-pull"
