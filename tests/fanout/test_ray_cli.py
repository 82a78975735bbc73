"""`weightlift pull --ray` as a user runs it: the usage errors (quick suite) and one cluster pull
through the command, its --json cluster-pull document validated against the published schema
(marker ray)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

NO_RAY = "import sys; sys.modules['ray'] = None; from weightlift.cli.main import main; main()"


def weightlift(*args: str, env: dict[str, str] | None = None, without_ray: bool = False,
               timeout: float = 100) -> subprocess.CompletedProcess[str]:
    head = ["-c", NO_RAY] if without_ray else ["-m", "weightlift.cli"]
    environ = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, *head, *args], capture_output=True, text=True,
                          env={**environ, **(env or {})}, timeout=timeout)


def _manifest(tmp_path: Path) -> str:
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"files": [
        {"rel": "a.bin", "size": 10, "url": "http://127.0.0.1:9/a.bin"}]}))
    return str(path)


@pytest.mark.parametrize(("args", "without_ray", "says"), [
    (["--ray-nodes", "gpu"], False, "go with --ray"),
    (["--ray"], False, "--ray needs a cluster: pass --ray-address or set RAY_ADDRESS"),
    (["--ray", "--ray-address", "auto"], True, "pip install 'weightlift[ray]'"),
])
def test_usage_errors_exit_2_in_one_line_writing_nothing(
        tmp_path: Path, args: list[str], without_ray: bool, says: str) -> None:
    out = tmp_path / "out"
    proc = weightlift("pull", _manifest(tmp_path), "-o", str(out / "{node}"), *args,
                      without_ray=without_ray)
    assert proc.returncode == 2, proc.stderr
    assert says in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_an_unreachable_cluster_exits_4_at_once(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = weightlift("pull", _manifest(tmp_path), "-o", str(out), "--ray",
                      "--ray-address", "127.0.0.1:1", timeout=60)
    assert proc.returncode == 4, proc.stderr
    assert "weightlift: error: cannot reach the Ray cluster at 127.0.0.1:1" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_a_bad_placeholder_exits_2(tmp_path: Path) -> None:
    proc = weightlift("pull", _manifest(tmp_path), "-o", str(tmp_path / "{host}"), "--ray",
                      "--ray-address", "auto")
    assert proc.returncode == 2
    assert "the only placeholder is {node}" in proc.stderr


@pytest.mark.ray
def test_the_command_pulls_onto_every_node_with_per_node_json(
        ray_cluster: Any, origin: Any, tmp_path: Path) -> None:
    origin.emu.reset_counters()
    proc = weightlift("pull", str(origin.manifest_path), "-o", str(tmp_path / "n-{node}"),
                      "--ray", "--chunk-size", "4M", "--connections", "8", "--json",
                      env={"RAY_ADDRESS": ray_cluster.address})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    validate_against_published_schema(report)
    assert report["kind"] == "cluster-pull"
    assert report["ok"] is True
    assert report["exit_code"] == 0
    assert report["error"] is None
    assert report["source"] == str(origin.manifest_path)
    assert report["output"] == str(tmp_path / "n-{node}")
    assert len(report["nodes"]) == 3
    for node in report["nodes"]:
        assert node["ok"] is True
        assert node["params"] == origin.params
        assert node["output"] == str(tmp_path / f"n-{node['name']}")
        assert node["bytes_from_origin"] + node["bytes_from_peers"] == origin.model_bytes
    assert report["origin_bytes"] == origin.emu.total_bytes_served
    assert report["origin_bytes"] <= 1.1 * report["model_bytes"]
    assert report["object_store_peak"] <= report["object_store_budget"]


def validate_against_published_schema(doc: dict[str, Any]) -> None:
    import jsonschema

    from weightlift.reports import SCHEMA_PATH, parse_document

    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(doc)
    parse_document(json.dumps(doc))
    for key in ("schema", "kind", "ok", "exit_code", "error", "source", "model_id",
                "checkpoint_id"):
        assert key in doc, key


@pytest.mark.parametrize(("args", "code", "says"), [
    (["--ray"], 2, "--ray needs a cluster"),
    (["--ray", "--ray-address", "127.0.0.1:1"], 4, "cannot reach the Ray cluster"),
    (["--ray", "--ray-address", "auto", "--include", "*.json"], 2, "not taken with ray"),
])
def test_json_on_failure_is_one_cluster_report(tmp_path: Path, args: list[str], code: int,
                                               says: str) -> None:
    out = tmp_path / "out"
    proc = weightlift("pull", _manifest(tmp_path), "-o", str(out / "{node}"), *args, "--json",
                      timeout=60)
    assert proc.returncode == code, proc.stderr
    doc = json.loads(proc.stdout)  # exactly one document
    validate_against_published_schema(doc)
    assert doc["kind"] == "cluster-pull"
    assert doc["ok"] is False
    assert doc["exit_code"] == code
    assert says in doc["error"]
    assert doc["nodes"] == []
    from weightlift.reports import ClusterPullReport

    assert set(doc) == set(ClusterPullReport(ok=True, exit_code=0, source="s",
                                             output="o").to_dict())
    assert not out.exists()


def test_ray_is_imported_only_for_a_cluster_pull() -> None:
    code = ("import sys, weightlift.cli.main, weightlift.cli.pull_cmd, weightlift.downloader.pull, "
            "weightlift.downloader.fanout; print('ray' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr
