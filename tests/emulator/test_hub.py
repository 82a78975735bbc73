"""The Hub stand-in, driven by the real `huggingface_hub` client: the calls it makes for model
info, file listing and `resolve` get the Hub's answers (headers, redirects, errors), for public,
private and gated repositories, revisions and datasets."""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

hf = pytest.importorskip("huggingface_hub")
hf_constants = pytest.importorskip("huggingface_hub.constants")
from huggingface_hub import errors as hf_errors  # noqa: E402

from weightlift.emulator.hub import ThreadedHub, git_blob_id  # noqa: E402
from weightlift.emulator.hub_demo import DemoHub, demo_hub  # noqa: E402


@pytest.fixture(autouse=True)
def _no_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    # The client otherwise asks huggingface.co (unreachable here) for a registry of agents.
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_TELEMETRY", True)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DemoHub, ThreadedHub]]:
    demo = demo_hub(tmp_path_factory.mktemp("hub"), model_bytes=256 << 10, url_lifetime=1.0)
    with ThreadedHub(demo.hub) as th:
        yield demo, th


@dataclass
class Raw:
    status: int
    headers: dict[str, str]
    body: bytes


def raw(method: str, url: str) -> Raw:
    """One request, no redirect followed (urllib would follow it)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.netloc, timeout=10)
    try:
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""))
        resp = conn.getresponse()
        return Raw(resp.status, dict(resp.getheaders()), resp.read())
    finally:
        conn.close()


def api(th: ThreadedHub, token: str | bool = False) -> Any:
    return hf.HfApi(endpoint=th.endpoint, token=token)


def test_model_info_lists_sizes_oids_lfs_and_params(served: tuple[DemoHub, ThreadedHub]) -> None:
    demo, th = served
    info = api(th).model_info(demo.model, files_metadata=True)
    assert info.sha == demo.main_commit
    assert info.safetensors.total == demo.params
    by_name = {s.rfilename: s for s in info.siblings}
    assert set(by_name) == {p.relative_to(demo.src).as_posix()
                            for p in demo.src.rglob("*") if p.is_file()}
    shard = by_name["model-00001-of-00002.safetensors"]
    import hashlib

    data = (demo.src / shard.rfilename).read_bytes()
    assert shard.lfs is not None
    assert shard.lfs.sha256 == hashlib.sha256(data).hexdigest()
    assert shard.size == len(data)
    config = by_name["config.json"]
    assert config.lfs is None
    assert config.blob_id == git_blob_id((demo.src / "config.json").read_bytes())


def test_revisions_branch_tag_commit(served: tuple[DemoHub, ThreadedHub]) -> None:
    demo, th = served
    a = api(th)
    assert a.model_info(demo.model, revision="v1").sha == demo.first_commit
    assert a.model_info(demo.model, revision=demo.first_commit).sha == demo.first_commit
    with pytest.raises(hf_errors.RevisionNotFoundError):
        a.model_info(demo.model, revision="nope")


def test_tree_listing(served: tuple[DemoHub, ThreadedHub]) -> None:
    demo, th = served
    entries = list(api(th).list_repo_tree(demo.model, recursive=True))
    files = {e.path: e for e in entries if isinstance(e, hf.hf_api.RepoFile)}
    assert "tokenizer/vocab.json" in files
    assert files["model-00002-of-00002.safetensors"].lfs is not None
    assert any(isinstance(e, hf.hf_api.RepoFolder) and e.path == "tokenizer" for e in entries)


def test_resolve_headers_and_expiring_redirect(served: tuple[DemoHub, ThreadedHub]) -> None:
    demo, th = served
    url = hf.hf_hub_url(demo.model, "model.safetensors.index.json", endpoint=th.endpoint)
    meta = hf.get_hf_file_metadata(url, token=False, endpoint=th.endpoint)
    assert meta.commit_hash == demo.main_commit
    # A regular file: the Hub sends it from a same-host cache URL the client follows to.
    assert meta.location.startswith(f"{th.endpoint}/api/resolve-cache/models/{demo.model}/")
    shard = "model-00001-of-00002.safetensors"
    meta = hf.get_hf_file_metadata(hf.hf_hub_url(demo.model, shard, endpoint=th.endpoint),
                                   token=False, endpoint=th.endpoint)
    assert meta.location.startswith(demo.hub.storage_base_url + "/")
    assert meta.size == (demo.src / shard).stat().st_size
    head = raw("HEAD", hf.hf_hub_url(demo.model, shard, endpoint=th.endpoint))
    assert head.status == 302
    assert head.headers["X-Linked-Etag"] == head.headers["ETag"] == f'"{meta.etag}"'
    assert head.headers["X-Linked-Size"] == str(meta.size)
    assert head.headers["X-Repo-Commit"] == demo.main_commit
    assert raw("GET", meta.location).body == (demo.src / shard).read_bytes()
    time.sleep(1.2)  # the presigned URL lives one second
    assert raw("GET", meta.location).status == 403


def test_download_with_the_real_client(served: tuple[DemoHub, ThreadedHub],
                                       tmp_path: Path) -> None:
    demo, th = served
    path = hf.snapshot_download(demo.model, endpoint=th.endpoint, token=False,
                                cache_dir=tmp_path / "cache")
    for rel in ("config.json", "model-00002-of-00002.safetensors", "tokenizer/vocab.json"):
        assert (Path(path) / rel).read_bytes() == (demo.src / rel).read_bytes()
    old = hf.hf_hub_download(demo.model, "config.json", revision="v1", endpoint=th.endpoint,
                             token=False, cache_dir=tmp_path / "cache")
    assert Path(old).read_bytes() == b'{"model_type": "draft"}\n'
    data = hf.hf_hub_download(demo.dataset, "data/train.parquet", repo_type="dataset",
                              endpoint=th.endpoint, token=False, cache_dir=tmp_path / "cache")
    assert Path(data).stat().st_size == 200_000


def test_private_and_gated_errors(served: tuple[DemoHub, ThreadedHub], tmp_path: Path) -> None:
    demo, th = served
    token = demo.hub.token
    with pytest.raises(hf_errors.RepositoryNotFoundError) as no_token:
        api(th).model_info(demo.private)
    assert no_token.value.response.status_code == 401
    assert api(th, token).model_info(demo.private).private is True
    with pytest.raises(hf_errors.RepositoryNotFoundError) as missing:
        api(th, token).model_info("weightlift/missing")
    assert missing.value.response.status_code == 404
    assert missing.value.response.headers["X-Error-Code"] == "RepoNotFound"
    assert api(th).model_info(demo.gated).gated == "manual"
    kw = {"endpoint": th.endpoint, "cache_dir": tmp_path / "c"}
    with pytest.raises(hf_errors.GatedRepoError) as anon:
        hf.hf_hub_download(demo.gated, "config.json", token=False, **kw)
    assert anon.value.response.status_code == 401
    with pytest.raises(hf_errors.GatedRepoError) as refused:
        hf.hf_hub_download(demo.gated, "config.json", token=token, **kw)
    assert refused.value.response.status_code == 403
    with pytest.raises(hf_errors.HfHubHTTPError) as bad:
        api(th, "hf_wrong_token").model_info(demo.model)
    assert bad.value.response.status_code == 401


def test_emulator_main_serves_the_hub_and_prints_how_to_try_it(tmp_path: Path) -> None:
    """`python -m weightlift.emulator` serves the Hub beside the platforms; the printed
    command's endpoint and token work with the real client."""
    import os
    import re
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "weightlift.emulator", "--port", "0", "--model-size", "256KB",
         "--workdir", str(tmp_path / "w")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        seen = ""
        deadline = time.monotonic() + 30
        while "curl " not in seen and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen += line
        cmd = re.search(r"HF_ENDPOINT=(\S+) HF_TOKEN=(\S+) weightlift pull "
                        r"hf://weightlift/tiny-model -o ", seen)
        assert cmd, seen
        assert "--hf-cache" in seen
        info = hf.HfApi(endpoint=cmd[1], token=cmd[2]).model_info(
            "weightlift/private-model", files_metadata=True)
        assert info.private is True
        assert info.safetensors.total > 0
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 130
    assert "Traceback" not in err
