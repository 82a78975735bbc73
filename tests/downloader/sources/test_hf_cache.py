"""The Hugging Face cache layout from a finished staging folder (no network): blobs named by
etag (LFS sha256, else git blob id) holding the same inode, relative symlinks, refs, only the
files that were pulled, and idempotent."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from weightlift.downloader.errors import UsageError
from weightlift.downloader.manifest import validate_manifest
from weightlift.downloader.sources.hf_cache import STAGING, TMP, HfCachePlan
from weightlift.downloader.sources.local import ResolvedSource
from weightlift.emulator.hub import git_blob_id

COMMIT = "c" * 40
WEIGHTS = b"\x08" * 1000
CONFIG = b'{"a": 1}\n'


def plan_for(tmp_path: Path, revision: str = "main") -> HfCachePlan:
    manifest = validate_manifest({"model_id": "org/m", "version": COMMIT, "files": [
        {"rel": "w.safetensors", "size": len(WEIGHTS), "url": "https://cdn.example/x",
         "sha256": hashlib.sha256(WEIGHTS).hexdigest()},
        {"rel": "sub/config.json", "size": len(CONFIG), "url": "https://hub.example/c"},
        {"rel": "README.md", "size": 2, "url": "https://hub.example/r"}]})
    source = ResolvedSource(manifest, None, None, "test")
    plan = HfCachePlan.of([f"hf://org/m@{revision}"], source, str(tmp_path / "cache"))
    (plan.staging / "sub").mkdir(parents=True)
    (plan.staging / "w.safetensors").write_bytes(WEIGHTS)
    (plan.staging / "sub" / "config.json").write_bytes(CONFIG)
    return plan


def test_layout_of_what_was_pulled(tmp_path: Path) -> None:
    plan = plan_for(tmp_path)
    assert plan.staging == tmp_path / "cache" / "models--org--m" / STAGING
    snapshot = plan.link(["w.safetensors", "sub/config.json"])  # README.md was filtered out
    repo = tmp_path / "cache" / "models--org--m"
    assert snapshot == repo / "snapshots" / COMMIT
    assert (repo / "refs" / "main").read_text() == COMMIT
    blob_w = repo / "blobs" / hashlib.sha256(WEIGHTS).hexdigest()
    blob_c = repo / "blobs" / git_blob_id(CONFIG)
    assert os.readlink(snapshot / "w.safetensors") == f"../../blobs/{blob_w.name}"
    assert os.readlink(snapshot / "sub" / "config.json") == f"../../../blobs/{blob_c.name}"
    assert (snapshot / "sub" / "config.json").read_bytes() == CONFIG
    # A hard link: the blob is the staged file itself, no second copy on disk.
    assert blob_w.stat().st_ino == (plan.staging / "w.safetensors").stat().st_ino
    assert not (snapshot / "README.md").exists()
    assert not (repo / TMP).exists()
    assert plan.link(["w.safetensors", "sub/config.json"]) == snapshot  # again: no change
    assert sorted(p.name for p in (repo / "blobs").iterdir()) == sorted([blob_w.name,
                                                                         blob_c.name])


def test_a_commit_revision_writes_no_ref(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, revision=COMMIT)
    plan.link(["w.safetensors"])
    assert not (plan.repo_dir / "refs").exists()


def test_plan_needs_an_hf_source_with_a_commit(tmp_path: Path) -> None:
    manifest = validate_manifest({"files": [{"rel": "a", "url": "https://h/a", "size": 1}]})
    source = ResolvedSource(manifest, None, None, "test")
    with pytest.raises(UsageError, match="needs one hf:// SOURCE"):
        HfCachePlan.of(["https://h/a"], source, str(tmp_path))
    with pytest.raises(UsageError, match="needs the commit"):
        HfCachePlan.of(["hf://org/m"], source, str(tmp_path))
