"""hf:// as a SOURCE, in process, against the Hub stand-in: the manifest (commit pinned, LFS
sha256, storage URLs for LFS files, Hub URLs or the relay for the rest), the refresh, the
expected count, the URI forms, and every error a user meets as one line with exit 4."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
from yarl import URL

hf = pytest.importorskip("huggingface_hub")
hf_constants = pytest.importorskip("huggingface_hub.constants")

from weightlift.downloader.errors import (  # noqa: E402
    EXIT_PLATFORM,
    PlatformError,
    UsageError,
)
from weightlift.downloader.sources.hf_uri import HfRef, parse_hf_uri  # noqa: E402
from weightlift.downloader.sources.resolve import open_source  # noqa: E402
from weightlift.emulator.hub import ThreadedHub  # noqa: E402
from weightlift.emulator.hub_demo import DemoHub, demo_hub  # noqa: E402


@pytest.fixture(autouse=True)
def _no_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    # The client otherwise asks huggingface.co (unreachable here) for a registry of agents.
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_TELEMETRY", True)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DemoHub, ThreadedHub]]:
    demo = demo_hub(tmp_path_factory.mktemp("hub"), model_bytes=256 << 10)
    with ThreadedHub(demo.hub) as th:
        yield demo, th


def origin(url: str) -> str:
    p = urlsplit(url)
    return f"{p.scheme}://{p.netloc}"


@pytest.mark.parametrize(("text", "ref"), [
    ("hf://org/name", HfRef("model", "org/name", "main")),
    ("hf://org/name@v1.0", HfRef("model", "org/name", "v1.0")),
    ("hf://models/org/name@refs/pr/3", HfRef("model", "org/name", "refs/pr/3")),
    ("hf://datasets/org/data", HfRef("dataset", "org/data", "main")),
    ("hf://Org-1/Name_2.x@" + "a" * 40, HfRef("model", "Org-1/Name_2.x", "a" * 40)),
])
def test_uri_forms(text: str, ref: HfRef) -> None:
    assert parse_hf_uri(text) == ref


@pytest.mark.parametrize("text", [
    "hf://name", "hf://a/b/c", "hf://org/..", "hf://org/na--me", "hf://org/name@",
    "hf://org/name@../x", "hf://org/name@a b", "hf://spaces/org/app", "hf://org/-x",
    "hf://org/name@v1\nx", "hf://datasets/org",
])
def test_bad_uris_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_hf_uri(text)
    assert "\n" not in err.value.one_line()


async def test_public_model_manifest(served: tuple[DemoHub, ThreadedHub]) -> None:
    demo, th = served
    async with open_source([f"hf://{demo.model}"], env=th.env) as src:
        m = src.manifest
        assert m.model_id == demo.model
        assert m.version == demo.main_commit
        assert src.expected_params == demo.params
        assert demo.main_commit[:12] in src.description
        files = m.by_rel()
        assert set(files) == {p.relative_to(demo.src).as_posix()
                              for p in demo.src.rglob("*") if p.is_file()}
        for rel, f in files.items():
            assert f.size == (demo.src / rel).stat().st_size
            if rel.endswith(".safetensors"):  # LFS: checked, fetched from storage
                assert f.sha256 is not None
                assert len(f.sha256) == 64
                assert origin(f.url) == demo.hub.storage_base_url
            else:  # public: straight from the Hub, at the pinned commit
                assert f.sha256 is None
                assert f.url.startswith(f"{th.endpoint}/{demo.model}/resolve/{demo.main_commit}/")
        assert src.refresh is not None
        fresh = await src.refresh()
        shard = "model-00001-of-00002.safetensors"
        assert fresh.by_rel()[shard].url != files[shard].url  # signed again
        assert [(f.rel, f.size, f.sha256) for f in fresh.files] == \
            [(f.rel, f.size, f.sha256) for f in m.files]


async def test_tag_and_dataset(served: tuple[DemoHub, ThreadedHub]) -> None:
    demo, th = served
    async with open_source([f"hf://{demo.model}@v1"], env=th.env) as src:
        assert src.manifest.version == demo.first_commit
        assert f"v1, commit {demo.first_commit[:12]}" in src.description
    async with open_source([f"hf://datasets/{demo.dataset}"], env=th.env) as src:
        assert src.expected_params is None
        assert src.manifest.model_id == f"datasets/{demo.dataset}"
        readme = src.manifest.by_rel()["README.md"]
        assert urlsplit(readme.url).path.startswith(f"/datasets/{demo.dataset}/resolve/")


async def test_private_repo_files_come_through_the_relay(
        served: tuple[DemoHub, ThreadedHub]) -> None:
    demo, th = served
    async with open_source([f"hf://{demo.private}"], env=th.env) as src:
        config = src.manifest.by_rel()["config.json"]
        relay = origin(config.url)
        assert relay.startswith("http://127.0.0.1:")
        assert relay != th.endpoint
        expected = (demo.src / "config.json").read_bytes()
        async with aiohttp.ClientSession() as session:
            async with session.get(URL(config.url, encoded=True),
                                   headers={"Range": "bytes=2-9"}) as resp:
                assert resp.status == 206
                assert await resp.read() == expected[2:10]
                assert resp.headers["Content-Range"] == f"bytes 2-9/{len(expected)}"
            bare = config.url.split("?", 1)[0]  # without the per-pull key: nothing
            async with session.get(URL(bare, encoded=True)) as resp:
                assert resp.status == 404
            other = config.url.replace("config.json", "README.md.bak")  # not in the manifest
            async with session.get(URL(other, encoded=True)) as resp:
                assert resp.status == 404
        shard = src.manifest.by_rel()["model-00001-of-00002.safetensors"]
        assert origin(shard.url) == demo.hub.storage_base_url
        commit = src.manifest.version
    assert ("GET", f"/{demo.private}/resolve/{commit}/config.json", True) in demo.hub.requests


@pytest.mark.parametrize(("who", "token", "said"), [
    ("private", None, "repository not found, or private and needs a token (the Hub answered "
                      "401 RepoNotFound"),
    ("gated", None, "is a gated repository and needs a token (the Hub answered 401 GatedRepo"),
    ("gated", "ok", "is a gated repository this token may not read (the Hub answered 403 "
                    "GatedRepo"),
    ("weightlift/missing", "ok", "repository not found (the Hub answered 404 RepoNotFound"),
    ("model@no-such-tag", "ok", "revision 'no-such-tag' not found (the Hub answered 404 "
                                "RevisionNotFound"),
    ("model", "hf_wrong_token_123", "the Hub refused the token (it answered 401"),
])
async def test_errors_are_one_line_exit_4(served: tuple[DemoHub, ThreadedHub], who: str,
                                          token: str | None, said: str) -> None:
    demo, th = served
    name = {"private": demo.private, "gated": demo.gated, "model": demo.model}
    repo, _, rev = who.partition("@")
    source = f"hf://{name.get(repo, repo)}" + (f"@{rev}" if rev else "")
    env = {"HF_ENDPOINT": th.endpoint}
    if token is not None:
        env["HF_TOKEN"] = demo.hub.token if token == "ok" else token
    with pytest.raises(PlatformError) as err:
        async with open_source([source], env=env):
            pass
    line = err.value.one_line()
    assert said in line
    assert "\n" not in line
    assert err.value.exit_code == EXIT_PLATFORM
    assert demo.hub.token not in line
    assert "hf_wrong_token_123" not in line


def test_without_the_extra_one_line_exit_2(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['huggingface_hub'] = None; "
            "from weightlift.cli.main import run; "
            f"sys.exit(run(['pull', 'hf://org/name', '-o', {str(tmp_path / 'out')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "weightlift: error: hf:// sources need the Hugging Face Hub client, which is not "
        "installed (pip install 'weightlift[hf]')"]
    assert not (tmp_path / "out").exists()


async def test_gated_repo_once_granted(served: tuple[DemoHub, ThreadedHub]) -> None:
    demo, th = served
    repo = "weightlift/gated-granted"
    demo.hub.create_repo(repo, gated="auto")
    commit = demo.hub.commit(repo, {"config.json": b"{}\n", "w.safetensors": b"x" * 100})
    demo.hub.grant(repo)
    async with open_source([f"hf://{repo}"], env=th.env) as src:
        assert src.manifest.version == commit
        assert src.expected_params is None  # the Hub reports no count for this one
        config = src.manifest.by_rel()["config.json"]
        assert config.url.startswith("http://127.0.0.1:")  # through the relay: needs the token
        assert not config.url.startswith(th.endpoint)


async def test_offline_mode_is_one_line(served: tuple[DemoHub, ThreadedHub],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    demo, th = served
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PlatformError) as err:
        async with open_source([f"hf://{demo.model}"], env=th.env):
            pass
    assert err.value.one_line() == (f"hf://{demo.model}@main: HF_HUB_OFFLINE is set, so the "
                                    "Hub cannot be asked (unset HF_HUB_OFFLINE to pull)")


async def test_unreachable_hub_is_one_line() -> None:
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "hf_unused_token_x"}
    with pytest.raises(PlatformError) as err:
        async with open_source(["hf://org/name"], env=env):
            pass
    line = err.value.one_line()
    assert line.startswith("cannot reach the Hub at http://127.0.0.1:9: ")
    assert line.endswith("(check HF_ENDPOINT and the network)")
    assert "\n" not in line
