"""The benchmark harness, run tiny (one repetition, a few MiB, only the tools present), so it
cannot rot. CI times nothing: it only checks that every scenario ran and reported."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None)

# .ci/run installs nginx and sets WEIGHTLIFT_REQUIRE_NGINX, so in CI a missing nginx fails the
# run instead of silently skipping the only test of the harness.
pytestmark = pytest.mark.skipif(
    NGINX is None and not os.environ.get("WEIGHTLIFT_REQUIRE_NGINX"),
    reason="nginx is not installed (apt-get install nginx-light)")


def test_harness_runs_every_scenario_tiny(tmp_path):
    assert NGINX is not None, "nginx is required here (WEIGHTLIFT_REQUIRE_NGINX is set)"
    tool_list = ["weightlift"] + [t for t in ("curl", "aria2c") if shutil.which(t)]
    results = tmp_path / "results"
    cmd = [sys.executable, str(ROOT / "bench" / "run.py"),
           "--size", "4M", "--shards", "2", "--small-count", "12", "--small-size", "8K",
           "--reps", "1", "--no-warmup", "--no-install", "--tools", ",".join(tool_list),
           "--rate", "50M", "--conn-scan", "2,8", "--conn-size", "2M",
           "--signed-lifetime", "2", "--work", str(tmp_path / "work"),
           "--results", str(results), "--timeout", "60"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "targets:" in proc.stdout
    (out,) = results.glob("*.json")
    doc = json.loads(out.read_text())
    assert not doc["failures"]
    rows = {(r["scenario"], r["row"]) for r in doc["rows"]}
    for scenario in ("plain", "capped", "signed", "small"):
        assert (scenario, "weightlift") in rows
        if "curl" in tool_list:
            assert (scenario, "curl (download)") in rows
            assert (scenario, "curl + sha256sum") in rows
    assert sum(1 for s, _ in rows if s == "size") == 4
    assert {r for s, r in rows if s == "conns"} == {"weightlift -c2", "weightlift -c8"}
    for r in doc["rows"]:
        assert r["median_s"] > 0
        assert r["peak_rss_mb"] > 0
        assert r["cpu_s"] >= 0
    # Nothing of a presigned URL's query (the signature) reaches the report.
    assert "md5=" not in out.read_text()
    assert "md5=" not in proc.stdout
