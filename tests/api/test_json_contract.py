"""One JSON contract: real outputs of `pull --json` (and `pull --ray --json`), `verify --json`,
`watch --json` and `ls --json`, on success and on failure, validate against the published JSON
Schema file (api/schema/report.schema.json), which must be what the models generate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.api.conftest import Served, weightlift
from weightlift.emulator.faults import Fault
from weightlift.emulator.platforms import ThreadedPlatforms
from weightlift.emulator.runs import RunScript
from weightlift.reports import SCHEMA_PATH, parse_document, schema_text

COMMON = ("schema", "kind", "ok", "exit_code", "error", "source", "model_id", "checkpoint_id")


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def check(validator: Any, doc: dict[str, Any]) -> dict[str, Any]:
    """Valid against the published file and against the models; the common keys present."""
    validator.validate(doc)
    parse_document(json.dumps(doc))
    kind_keys = COMMON if doc["kind"] != "watch" else ("schema", "kind", "source", "job_id",
                                                       "exit_code", "error", "event")
    assert all(k in doc for k in kind_keys), sorted(set(kind_keys) - set(doc))
    assert doc["schema"] == 1
    return doc


def test_published_schema_is_up_to_date() -> None:
    # Regenerate with: python -m weightlift.reports
    assert SCHEMA_PATH.read_text() == schema_text(), "run: python -m weightlift.reports"


def test_pull_success_and_failure_share_one_shape(served: Served, tmp_path: Path,
                                                  validator: Any) -> None:
    ok = weightlift("pull", str(served.manifest), "-o", str(tmp_path / "ok"), "--json")
    assert ok.returncode == 0, ok.stderr
    good = check(validator, json.loads(ok.stdout))
    assert good["model_id"] == "tiny-model"
    assert good["params"] == served.gen.params
    wrong = weightlift("pull", str(served.manifest), "-o", str(tmp_path / "ok"), "--json",
                       "--expect-params", str(served.gen.params + 1))
    assert wrong.returncode == 1
    bad_count = check(validator, json.loads(wrong.stdout))
    assert bad_count["problems"]
    assert bad_count["error"].startswith("verification failed")
    rel = sorted(served.files)[0]
    served.storage.emu.inject(rel, Fault.status(500), times=10_000)
    failed = weightlift("pull", str(served.manifest), "-o", str(tmp_path / "f"), "--json",
                        env={"WEIGHTLIFT_RETRY_BASE": "0.001"})
    assert failed.returncode == 3
    doc = check(validator, json.loads(failed.stdout))
    assert doc["ok"] is False
    assert doc["exit_code"] == 3
    assert rel in doc["error"]
    assert {f["rel"]: f["status"] for f in doc["files"]}[rel] == "failed"
    unsupported = weightlift("pull", "axon://models/x", "-o", str(tmp_path / "u"), "--json")
    assert unsupported.returncode == 2
    doc = check(validator, json.loads(unsupported.stdout))
    assert set(doc) == set(good)  # the same keys on success and failure
    assert doc["source"] == "axon://models/x"
    assert "axom://" in doc["error"]


def test_verify_json_ok_failed_and_missing_folder(served: Served, tmp_path: Path,
                                                  validator: Any) -> None:
    out = tmp_path / "m"
    assert weightlift("pull", str(served.manifest), "-o", str(out), "-q").returncode == 0
    docs = []
    for args, code in (([str(out)], 0), ([str(out), "--expect-params", "7"], 1),
                       ([str(tmp_path / "nope")], 2)):
        run = weightlift("verify", *args, "--json")
        assert run.returncode == code, run.stderr
        docs.append(check(validator, json.loads(run.stdout)))
    assert docs[0]["ok"]
    assert docs[0]["model_id"] == "tiny-model"
    assert docs[0]["source"] == str(served.manifest)
    assert docs[1]["problems"]
    assert isinstance(docs[1]["problems"][0], str)
    assert docs[2]["error"]
    assert "does not exist" in docs[2]["error"]
    assert set(docs[0]) == set(docs[2])


def test_watch_json_lines_and_pull_report(watched_platforms: ThreadedPlatforms, tmp_path: Path,
                                          validator: Any) -> None:
    tp = watched_platforms
    job = tp.emu.add_axom_job(RunScript(model_bytes=256 << 10).scaled(3.0))
    import os
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-m", "weightlift.cli", "watch", f"axom://jobs/{job}", "--interval",
         "0.05", "--pull", "-o", str(tmp_path / "m"), "--json"],
        capture_output=True, text=True, env={**os.environ, **tp.env()}, timeout=90, check=False)
    assert run.returncode == 0, run.stderr
    events = [check(validator, json.loads(line)) for line in run.stdout.splitlines()]
    assert {e["event"] for e in events} >= {"status", "progress", "done", "pull"}
    assert all(e["source"] == f"axom://jobs/{job}" for e in events)
    assert all(e["job_id"] == job for e in events)
    pulled = events[-1]
    assert pulled["exit_code"] == 0
    assert pulled["report"]["ok"] is True
    assert pulled["report"]["params"] == tp.emu.expected_params(job)


def test_ls_json(served: Served, validator: Any) -> None:
    run = weightlift("ls", str(served.manifest), "--json")
    assert run.returncode == 0, run.stderr
    doc = check(validator, json.loads(run.stdout))
    assert {f["rel"]: f["size"] for f in doc["files"]} == {
        r: len(d) for r, d in served.files.items()}


def test_cluster_pull_failure_is_one_document(served: Served, tmp_path: Path,
                                              validator: Any) -> None:
    # A real `--ray --json` success is validated by the ray suite (tests/fanout/test_ray_cli.py,
    # pytest -m ray): it needs a 3-node local cluster.
    out = tmp_path / "n-{node}"
    run = weightlift("pull", str(served.manifest), "-o", str(out), "--ray", "--json",
                     "--ray-address", "127.0.0.1:1")
    assert run.returncode == 4, run.stderr
    doc = check(validator, json.loads(run.stdout))
    assert doc["kind"] == "cluster-pull"
    assert doc["output"] == str(out)
    assert doc["source"] == str(served.manifest)
    assert "cannot reach the Ray cluster" in doc["error"]
