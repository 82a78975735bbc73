"""--include/--exclude, --dry-run, ls, WEIGHTLIFT_CONNECTIONS and WEIGHTLIFT_OUTPUT_ROOT, as a
user runs them (children against the storage and platform emulators)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.api.conftest import Served, weightlift
from weightlift.emulator.platforms import ThreadedPlatforms
from weightlift.emulator.runs import RunScript
from weightlift.pulling import PullOptions, engine_config
from weightlift.selection import Selection
from weightlift.settings import env_settings


def test_include_exclude_fetch_only_the_matching_files(served: Served, tmp_path: Path) -> None:
    out = tmp_path / "m"
    run = weightlift("pull", str(served.manifest), "-o", str(out), "--json",
                     "--include", "*.safetensors", "--include", "config.json",
                     "--exclude", "*-00002-*")
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert {f["rel"] for f in doc["files"]} == {"model-00001-of-00002.safetensors",
                                                "config.json"}
    assert doc["skipped_files"] == 2
    assert sorted(p.name for p in out.iterdir() if p.name != ".weightlift") == [
        "config.json", "model-00001-of-00002.safetensors"]
    # A shard was left out: the checkpoint is not judged (and not failed) on a partial folder.
    assert doc["verification"] is None
    assert doc["warnings"][0].startswith("checkpoint checks skipped")
    # Nothing left: one line that says so, exit 2, nothing fetched.
    before = served.storage.emu.total_bytes_served
    none = weightlift("pull", str(served.manifest), "-o", str(tmp_path / "n"),
                      "--include", "*.bin")
    assert none.returncode == 2
    assert "leave(s) none of the 4 file(s)" in none.stderr
    assert len(none.stderr.strip().splitlines()) == 1
    assert served.storage.emu.total_bytes_served == before


def test_include_keeps_the_gate_when_only_non_weights_are_left_out(served: Served,
                                                                   tmp_path: Path) -> None:
    run = weightlift("pull", str(served.manifest), "-o", str(tmp_path / "m"), "--json",
                     "--exclude", "config.json", "--expect-params", str(served.gen.params + 1))
    assert run.returncode == 1  # the count is still checked
    assert json.loads(run.stdout)["params"] == served.gen.params


def test_dry_run_lists_what_is_here_and_fetches_nothing(served: Served, tmp_path: Path) -> None:
    out = tmp_path / "m"
    before = served.storage.emu.total_bytes_served
    run = weightlift("pull", str(served.manifest), "-o", str(out), "--dry-run", "--json")
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["dry_run"] is True
    assert {f["status"] for f in doc["files"]} == {"to-fetch"}
    assert doc["disk"]["needed_bytes"] == sum(map(len, served.files.values()))
    assert doc["disk"]["fits"] is True
    assert not out.exists()  # nothing written, not even the folder
    assert served.storage.emu.total_bytes_served == before
    # After a pull of one file, it is "present" and not counted as needed.
    assert weightlift("pull", str(served.manifest), "-o", str(out), "-q",
                      "--include", "config.json").returncode == 0
    table = weightlift("pull", str(served.manifest), "-o", str(out), "--dry-run")
    assert table.returncode == 0, table.stderr
    line = next(x for x in table.stdout.splitlines() if x.startswith("config.json"))
    assert line.endswith("present")
    assert "fits" in table.stdout


def test_dry_run_without_room_exits_3(served: Served, tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    doc = served.storage.manifest(sorted(served.files))
    doc["files"][0]["size"] = 1 << 60
    big.write_text(json.dumps(doc))
    run = weightlift("pull", str(big), "-o", str(tmp_path / "m"), "--dry-run", "--json")
    assert run.returncode == 3
    report = json.loads(run.stdout)
    assert report["disk"]["fits"] is False
    assert "not enough space" in report["error"]
    assert "DOES NOT FIT" not in run.stdout  # --json: the document only


def test_ls_lists_files_and_tensorone_checkpoints(served: Served,
                                                  threaded_platforms: ThreadedPlatforms) -> None:
    run = weightlift("ls", str(served.manifest))
    assert run.returncode == 0, run.stderr
    assert "model-00001-of-00002.safetensors" in run.stdout
    assert "4 file(s)" in run.stdout
    assert "model tiny-model" in run.stdout
    tp = threaded_platforms
    job = tp.emu.add_tensorone_job(RunScript.instant(model_bytes=1 << 20, shards=2))
    tp.emu.prepare(job)
    listed = weightlift("ls", f"tensorone://jobs/{job}", "--json", env=tp.env())
    assert listed.returncode == 0, listed.stderr
    doc = json.loads(listed.stdout)
    record = tp.emu.job("tensorone", job)
    assert record is not None
    assert [c["checkpoint_id"] for c in doc["checkpoints"]] == list(record.checkpoint_ids)
    assert sum(c["latest"] for c in doc["checkpoints"]) == 1
    # The "checkpoint not found" error points at ls, which shows the ids.
    missing = weightlift("pull", f"tensorone://jobs/{job}/checkpoints/nope", "-o", "unused",
                         env=tp.env())
    assert missing.returncode == 4
    assert f"weightlift ls tensorone://jobs/{job}" in missing.stderr


def test_env_connections_and_output_root(served: Served, tmp_path: Path) -> None:
    settings = env_settings({"WEIGHTLIFT_CONNECTIONS": "3"})
    assert engine_config(PullOptions(), settings).connections == 3
    assert engine_config(PullOptions(connections=5), settings).connections == 5  # option wins
    bad = weightlift("pull", str(served.manifest), "-o", str(tmp_path / "x"),
                     env={"WEIGHTLIFT_CONNECTIONS": "zero"})
    assert bad.returncode == 2
    assert "WEIGHTLIFT_CONNECTIONS" in bad.stderr
    root = tmp_path / "models"
    run = weightlift("pull", str(served.manifest), "--json",
                     env={"WEIGHTLIFT_OUTPUT_ROOT": str(root), "WEIGHTLIFT_CONNECTIONS": "2"})
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["output"] == str(root / "tiny-model")
    assert (root / "tiny-model" / "config.json").is_file()
    no_dir = weightlift("pull", str(served.manifest), env={"WEIGHTLIFT_OUTPUT_ROOT": ""})
    assert no_dir.returncode == 2
    assert "WEIGHTLIFT_OUTPUT_ROOT" in no_dir.stderr


@pytest.mark.parametrize(("patterns", "kept"), [
    ((("*.safetensors",), ()), {"a.safetensors", "sub/b.safetensors"}),
    ((("sub/*",), ("*.json",)), {"sub/b.safetensors"}),
    (((), ("*.safetensors",)), {"config.json", "sub/c.json"}),
])
def test_selection_globs_cross_folders_like_hf_download(patterns: tuple[tuple[str, ...], ...],
                                                        kept: set[str]) -> None:
    sel = Selection.of(list(patterns[0]) or None, list(patterns[1]) or None)
    names = ["a.safetensors", "sub/b.safetensors", "config.json", "sub/c.json"]
    assert {n for n in names if sel.keeps(n)} == kept
