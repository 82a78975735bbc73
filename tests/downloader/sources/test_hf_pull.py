"""`weightlift pull hf://…` end to end, as a child process against the Hub stand-in: files
byte-identical, LFS sha256 checked, a re-run fetches nothing, kill -9 resumes, expiring storage
URLs are resolved again, no token or signature anywhere, and `--hf-cache` is what
`huggingface_hub.snapshot_download(local_files_only=True)` finds offline."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("huggingface_hub")

from weightlift.emulator.faults import Fault  # noqa: E402
from weightlift.emulator.hub import ThreadedHub  # noqa: E402
from weightlift.emulator.hub_demo import DemoHub, demo_hub  # noqa: E402

MODEL_BYTES = 2 << 20
SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
# A signature or key in a query string that was not masked ("…" is the mask).
_SIGNED = re.compile(r"(?i)[?&](x-amz-signature|x-amz-credential|sig|token)=(?!…)[^&\s\"']+")


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[DemoHub, ThreadedHub]]:
    demo = demo_hub(tmp_path / "hub", model_bytes=MODEL_BYTES)
    with ThreadedHub(demo.hub) as th:
        yield demo, th


def run_env(th: ThreadedHub, home: Path, token: bool = True, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HF_") and k != "WEIGHTLIFT_TRACEBACK"}
    # HF_HOME in tmp: the client caches a registry there; nothing lands in the real home.
    env.update({"HF_ENDPOINT": th.endpoint, "HF_HOME": str(home), "WEIGHTLIFT_LOG": "DEBUG",
                **({"HF_TOKEN": th.hub.token} if token else {}), **extra})
    return env


def wl(*args: str, env: dict[str, str], timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "weightlift.cli", "-vv", *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


def no_secrets(demo: DemoHub, *texts: str, tree: Path | None = None) -> None:
    """Neither the token nor an unmasked signature in any text or small file under ``tree``;
    and storage never saw an Authorization header."""
    files = [p for p in tree.rglob("*") if p.is_file() and p.stat().st_size < 1 << 20] \
        if tree is not None and tree.exists() else []
    for where, text in [*(("output", t) for t in texts),
                        *((str(p), p.read_text(errors="replace")) for p in files)]:
        assert demo.hub.token not in text, f"token leaked into {where}"
        assert not _SIGNED.search(text), f"signature leaked into {where}: {_SIGNED.search(text)}"
    assert all("authorization" not in r.headers for r in demo.hub.storage.requests)


def same_files(demo: DemoHub, out: Path) -> None:
    for src in demo.src.rglob("*"):
        if src.is_file():
            rel = src.relative_to(demo.src)
            assert (out / rel).read_bytes() == src.read_bytes(), rel


def report(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def test_public_pull_then_rerun_fetches_nothing(hub: tuple[DemoHub, ThreadedHub],
                                                tmp_path: Path) -> None:
    demo, th = hub
    env = run_env(th, tmp_path / "home")
    out = tmp_path / "out"
    first = wl("pull", f"hf://{demo.model}", "-o", str(out), "--json", env=env)
    rep = report(first)
    same_files(demo, out)
    assert rep["verification"]["params"] == rep["expected_params"] == demo.params
    receipt = json.loads((out / ".weightlift" / "receipt.json").read_text())
    assert receipt["model_id"] == demo.model
    assert receipt["revision"] == demo.main_commit  # the commit the pull was pinned to
    assert receipt["expected_params"] == demo.params
    served = demo.hub.storage.total_bytes_served
    assert served >= sum((demo.src / s).stat().st_size for s in SHARDS)
    again = wl("pull", f"hf://{demo.model}", "-o", str(out), "--json", env=env)
    assert report(again)["totals"]["bytes_fetched"] == 0
    assert demo.hub.storage.total_bytes_served == served
    no_secrets(demo, first.stdout, first.stderr, again.stdout, again.stderr, tree=out)
    home = tmp_path / "home"
    assert not home.exists() or not any(home.iterdir())  # nothing written outside -o DIR


def test_private_pull_token_stays_on_the_hub(hub: tuple[DemoHub, ThreadedHub],
                                             tmp_path: Path) -> None:
    demo, th = hub
    out = tmp_path / "out"
    refused = wl("pull", f"hf://{demo.private}", "-o", str(out),
                 env=run_env(th, tmp_path / "home", token=False))
    assert refused.returncode == 4
    errors = [ln for ln in refused.stderr.splitlines() if ln.startswith("weightlift: error:")]
    assert errors == [
        f"weightlift: error: hf://{demo.private}@main: repository not found, or private and "
        "needs a token (the Hub answered 401 RepoNotFound: Invalid username or password.) "
        "(set HF_TOKEN or run `hf auth login`; check the name)"]
    # The token `hf auth login` saved (HF_HOME/token) is used when HF_TOKEN is not set.
    home = tmp_path / "home"
    home.mkdir()
    (home / "token").write_text(demo.hub.token)
    proc = wl("pull", f"hf://{demo.private}", "-o", str(out), "--json",
              env=run_env(th, home, token=False))
    report(proc)
    same_files(demo, out)
    relayed = [r for r in demo.hub.requests if r[0] == "GET" and "/resolve/" in r[1]]
    assert relayed  # the config and tokenizer came from the Hub, with the token ...
    assert all(had_auth for _, _, had_auth in relayed)
    no_secrets(demo, refused.stderr, proc.stdout, proc.stderr, tree=out)  # ... and only there


def test_corrupted_lfs_blob_fails_the_pull(hub: tuple[DemoHub, ThreadedHub],
                                           tmp_path: Path) -> None:
    demo, th = hub
    data = bytearray((demo.src / SHARDS[1]).read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte off: only the sha256 can tell
    key = next(k for k in demo.hub.storage.keys()
               if demo.hub.storage.size(k) == len(data) and k.startswith("lfs/"))
    demo.hub.storage.replace(key, bytes(data))
    out = tmp_path / "out"
    proc = wl("pull", f"hf://{demo.model}", "-o", str(out), env=run_env(th, tmp_path / "home"))
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "sha256" in proc.stderr
    assert not (out / SHARDS[1]).exists()  # never under its final name
    assert (out / SHARDS[0]).read_bytes() == (demo.src / SHARDS[0]).read_bytes()


def test_kill9_mid_pull_resumes(hub: tuple[DemoHub, ThreadedHub], tmp_path: Path) -> None:
    demo, th = hub
    storage = demo.hub.storage
    storage.inject("*", Fault.throttle(256 << 10), times=1 << 20)  # ~2 MiB takes seconds
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "weightlift.cli", "pull", f"hf://{demo.model}", "-o", str(out),
           "--connections", "2", "--chunk-size", "256K", "-q"]
    child = subprocess.Popen(cmd, env=run_env(th, tmp_path / "home"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while storage.total_bytes_served < 600 << 10:
            assert child.poll() is None, "the pull ended before it could be killed"
            assert time.monotonic() < deadline, "storage served too little in 60 s"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
    assert not all((out / s).exists() for s in SHARDS)  # it was killed mid-pull
    storage.clear_faults()
    proc = wl("pull", f"hf://{demo.model}", "-o", str(out), "--json",
              env=run_env(th, tmp_path / "home"))
    rep = report(proc)
    same_files(demo, out)
    model = sum((demo.src / s).stat().st_size for s in SHARDS)
    assert 0 < rep["totals"]["bytes_fetched"] < model  # resumed, not restarted
    assert storage.total_bytes_served <= model * 1.25  # what the kill cost: little


def test_expiring_urls_are_resolved_again(tmp_path: Path) -> None:
    demo = demo_hub(tmp_path / "hub", model_bytes=MODEL_BYTES, url_lifetime=1.0)
    demo.hub.storage.inject("*", Fault.throttle(512 << 10), times=1 << 20)
    with ThreadedHub(demo.hub) as th:
        out = tmp_path / "out"
        proc = wl("pull", f"hf://{demo.model}", "-o", str(out), "--json", "--connections", "2",
                  "--chunk-size", "256K", env=run_env(th, tmp_path / "home"))
        rep = report(proc)
        same_files(demo, out)
        assert rep["totals"]["refreshes"] >= 1
        heads = [r for r in demo.hub.requests if r[0] == "HEAD" and r[1].endswith(SHARDS[0])]
        assert len(heads) >= 2  # the redirect was asked for again
        no_secrets(demo, proc.stdout, proc.stderr, tree=out)


OFFLINE_CHECK = """
import sys
from huggingface_hub import hf_hub_download, scan_cache_dir, snapshot_download
repo, cache, *revisions = sys.argv[1:]
scan = scan_cache_dir(cache)  # `hf cache ls` finds nothing odd in what weightlift wrote
assert not scan.warnings, scan.warnings
refs = sorted(ref for r in scan.repos for rev in r.revisions for ref in rev.refs)
assert refs == sorted(revisions), refs
for revision in revisions:
    print(snapshot_download(repo, revision=revision, cache_dir=cache, local_files_only=True))
    print(hf_hub_download(repo, "config.json", revision=revision, cache_dir=cache,
                          local_files_only=True))
"""


def test_hf_cache_is_found_offline(hub: tuple[DemoHub, ThreadedHub], tmp_path: Path) -> None:
    demo, th = hub
    cache = tmp_path / "cache"
    env = run_env(th, tmp_path / "home")
    proc = wl("pull", f"hf://{demo.model}", "--hf-cache", str(cache), "--json", env=env)
    rep = report(proc)
    repo = cache / "models--weightlift--tiny-model"
    snapshot = repo / "snapshots" / demo.main_commit
    assert rep["output"] == str(snapshot)  # where the model is, to load it
    assert (repo / "refs" / "main").read_text() == demo.main_commit
    for link in (snapshot / SHARDS[0], snapshot / "tokenizer" / "vocab.json"):
        assert link.is_symlink()
        assert not os.readlink(link).startswith("/")  # relative, as huggingface_hub makes them
    same_files(demo, snapshot)
    again = wl("pull", f"hf://{demo.model}", "--hf-cache", str(cache), "--json", env=env)
    assert report(again)["totals"]["bytes_fetched"] == 0
    # Another revision: only what differs is fetched (the staging folder is per repository),
    # it lands as refs/v1, and main's snapshot is untouched (blobs are content-addressed).
    draft = b'{"model_type": "draft"}\n'
    tagged = wl("pull", f"hf://{demo.model}@v1", "--hf-cache", str(cache), "--json", env=env)
    assert report(tagged)["totals"]["bytes_fetched"] == len(draft)
    assert (repo / "refs" / "v1").read_text() == demo.first_commit
    same_files(demo, snapshot)
    offline = {**env, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    check = subprocess.run([sys.executable, "-c", OFFLINE_CHECK, demo.model, str(cache), "main",
                            "v1"], capture_output=True, text=True, env=offline, timeout=60)
    assert check.returncode == 0, check.stderr[-2000:]
    main_path, main_config, v1_path, v1_config = check.stdout.split()
    assert Path(main_path) == snapshot
    assert Path(main_config).read_bytes() == (demo.src / "config.json").read_bytes()
    assert Path(v1_path) == repo / "snapshots" / demo.first_commit
    assert Path(v1_config).read_bytes() == draft
    no_secrets(demo, proc.stdout, proc.stderr, tagged.stderr, tree=cache)


@pytest.mark.parametrize(("args", "line"), [
    (["hf://o/n", "-o", "x", "--hf-cache"],
     "weightlift: error: --hf-cache replaces -o DIR (pass one of them)"),
    (["hf://o/n", "--ray", "--hf-cache"],
     "weightlift: error: --hf-cache is not taken with --ray (pull onto the nodes with -o DIR)"),
])
def test_output_arguments(args: list[str], line: str, capsys: pytest.CaptureFixture[str],
                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from weightlift.cli.main import run

    monkeypatch.chdir(tmp_path)
    assert run(["pull", *args]) == 2
    assert capsys.readouterr().err.strip() == line
    assert list(tmp_path.iterdir()) == []


def test_hf_cache_needs_an_hf_source(tmp_path: Path) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"files": [{"rel": "a", "size": 1,
                                               "url": "http://127.0.0.1:9/a"}]}))
    proc = subprocess.run([sys.executable, "-m", "weightlift.cli", "pull", str(manifest),
                           "--hf-cache", str(tmp_path / "cache")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "weightlift: error: --hf-cache needs one hf:// SOURCE"
    assert not (tmp_path / "cache").exists()
