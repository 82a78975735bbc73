"""Every platform SOURCE form against the emulated platforms: manifest, expected params,
refresh; the error paths a user meets; and one pull end to end with the key kept off storage."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from weightlift.downloader.engine import EngineConfig
from weightlift.downloader.errors import (
    EXIT_PLATFORM,
    EXIT_USAGE,
    PlatformError,
    UsageError,
    WeightliftError,
)
from weightlift.downloader.pull import pull
from weightlift.downloader.sources.api_session import ApiNotFound, ApiUnavailable
from weightlift.downloader.sources.resolve import open_run, open_source
from weightlift.emulator.api_faults import ApiFault
from weightlift.emulator.platforms import PlatformEndpoints
from weightlift.emulator.runs import RunScript
from weightlift.verify.checkpoint import verify_directory

SMALL: dict[str, Any] = {"model_bytes": 256 << 10}
AXOM_FILES = {"config.json", "model.safetensors.index.json",
              "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}


def queries(urls: list[str]) -> list[str]:
    return [urlsplit(u).query for u in urls]


def one_line(err: WeightliftError, *secrets: str) -> str:
    line = err.one_line()
    assert "\n" not in line
    for s in secrets:
        assert s not in line
    return line


async def test_axom_job_resolves_and_refreshes(platforms: PlatformEndpoints) -> None:
    emu = platforms.emu
    job = emu.add_axom_job(RunScript.instant(**SMALL))
    async with open_source([f"axom://jobs/{job}"], platforms.env()) as src:
        assert {f.rel for f in src.manifest.files} == AXOM_FILES
        assert all(f.size and f.size > 0 for f in src.manifest.files)
        assert src.manifest.model_id == emu.axom_model_id(job)
        assert src.expected_params == emu.expected_params(job)
        assert job in src.description
        assert "llama-3-8b-sft" in src.description
        before = [f.url for f in src.manifest.files]
        assert all(u.startswith(platforms.storage_base) for u in before)
        assert src.refresh is not None
        emu.url_lifetime = 300.0  # a different lifetime: a visibly different signature
        fresh = await src.refresh()
        assert {f.rel: f.size for f in fresh.files} == {f.rel: f.size for f in
                                                        src.manifest.files}
        assert set(queries([f.url for f in fresh.files])).isdisjoint(queries(before))


async def test_axom_model_resolves_with_its_params(platforms: PlatformEndpoints) -> None:
    emu = platforms.emu
    job = emu.add_axom_job(RunScript.instant(**SMALL))
    model = emu.axom_model_id(job)
    async with open_source([f"axom://models/{model}"], platforms.env()) as src:
        assert {f.rel for f in src.manifest.files} == AXOM_FILES
        assert src.expected_params == emu.expected_params(job)
        assert src.refresh is not None
        assert len((await src.refresh()).files) == 4


async def test_axom_job_not_completed_says_how_to_wait(platforms: PlatformEndpoints) -> None:
    job = platforms.emu.add_axom_job(RunScript(total_steps=1000, **SMALL))
    with pytest.raises(PlatformError) as info:
        async with open_source([f"axom://jobs/{job}"], platforms.env()):
            pass
    err = info.value
    assert err.exit_code == EXIT_PLATFORM
    assert err.message.startswith(f"job {job} is queued (step 0/1000); not completed yet")
    assert err.hint == f"weightlift watch axom://jobs/{job} --pull -o DIR waits for it"


async def test_axom_job_failed_gives_the_platform_error(platforms: PlatformEndpoints) -> None:
    job = platforms.emu.add_axom_job(RunScript.instant(fail_at_step=30, **SMALL))
    with pytest.raises(PlatformError) as info:
        async with open_source([f"axom://jobs/{job}"], platforms.env()):
            pass
    assert f"Axom job {job} failed: CUDA error: out of memory" in info.value.one_line()


async def test_unknown_ids_are_named(platforms: PlatformEndpoints) -> None:
    platforms.emu.add_tensorone_job(RunScript.instant(**SMALL), job_id="job_1")
    cases = [("axom://jobs/nope", "job nope not found on Axom"),
             ("axom://models/nope", "model nope not found on Axom"),
             ("tensorone://jobs/nope", "job nope not found on TensorOne"),
             ("tensorone://jobs/job_1/checkpoints/nope",
              "checkpoint nope not found in job job_1")]
    for source, says in cases:
        with pytest.raises(PlatformError) as info:
            async with open_source([source], platforms.env()):
                pass
        assert says in one_line(info.value), source
        assert info.value.exit_code == EXIT_PLATFORM


async def test_keys_missing_or_wrong(platforms: PlatformEndpoints) -> None:
    env = platforms.env()
    job = platforms.emu.add_axom_job(RunScript.instant(**SMALL))
    no_key = {k: v for k, v in env.items() if k != "AXOM_KEY"}
    with pytest.raises(PlatformError) as info:
        async with open_source([f"axom://jobs/{job}"], no_key):
            pass
    assert info.value.one_line() == "AXOM_KEY is not set (export AXOM_KEY=axom_live_…)"

    wrong = {**env, "AXOM_KEY": "axom_live_wrongwrongwrong"}
    with pytest.raises(PlatformError) as info:
        async with open_source([f"axom://jobs/{job}"], wrong):
            pass
    line = one_line(info.value, "wrongwrong")
    assert line.startswith("Axom rejected the API key (401: Invalid or missing API key)")
    assert "check AXOM_KEY" in line

    wrong_t1 = {**env, "TENSORONE_API_KEY": "tpo_test_nottherightone"}
    with pytest.raises(PlatformError) as info:
        async with open_source(["tensorone://jobs/x"], wrong_t1):
            pass
    line = one_line(info.value, "nottheright")
    assert "TensorOne rejected the API key (401: UNAUTHORIZED: Invalid or missing API key)" in line
    assert "check TENSORONE_API_KEY" in line


async def test_plain_http_base_off_loopback_is_refused() -> None:
    env = {"AXOM_KEY": "axom_live_x", "AXOM_API_BASE": "http://console.axomlabs.ai/api"}
    with pytest.raises(UsageError) as info:
        async with open_source(["axom://jobs/1"], env):
            pass
    assert info.value.exit_code == EXIT_USAGE
    assert "plain http://" in info.value.message


async def test_one_platform_source_per_pull(tmp_path: Path) -> None:
    for sources in (["axom://jobs/1", "axom://jobs/2"],
                    ["axom://jobs/1", str(tmp_path / "m.json")],
                    ["tensorone://jobs/1", "https://x/a.bin"]):
        with pytest.raises(UsageError, match="one platform source per pull"):
            async with open_source(sources, {}):
                pass
    with pytest.raises(UsageError, match="unknown kind 'runs'"):
        async with open_source(["axom://runs/1"], {}):
            pass


async def test_local_sources_pass_through(tmp_path: Path) -> None:
    async with open_source(["https://example.com/a/model.safetensors?sig=1"], {}) as src:
        assert [f.rel for f in src.manifest.files] == ["model.safetensors"]
        assert src.refresh is None


async def test_tensorone_latest_checkpoint(platforms: PlatformEndpoints) -> None:
    emu = platforms.emu
    job = emu.add_tensorone_job(RunScript.instant(**SMALL))
    async with open_source([f"tensorone://jobs/{job}"], platforms.env()) as src:
        (only,) = src.manifest.files
        assert only.rel == "model.safetensors"
        assert only.size is None  # TensorOne lists "2.1MB" only: the engine probes it
        final_id = emu.job("tensorone", job).checkpoint_ids[-1]  # type: ignore[union-attr]
        assert src.manifest.model_id == final_id
        assert "(final)" in src.description
        assert src.expected_params == emu.expected_params(job)
        assert src.refresh is not None
        fresh = await src.refresh()
        assert fresh.model_id == final_id
        assert fresh.files[0].url != only.url


async def test_tensorone_named_checkpoint_mid_run(platforms: PlatformEndpoints) -> None:
    """A checkpoint of a run still going: pullable; no model yet, so no expected params."""
    emu = platforms.emu
    t = [0.0]
    emu.clock = lambda: t[0]
    script = RunScript(total_steps=400, checkpoint_every=40, **SMALL)
    job = emu.add_tensorone_job(script)
    t[0] = 2.0  # past the first automatic checkpoint, long before the end
    first = emu.job("tensorone", job).checkpoint_ids[0]  # type: ignore[union-attr]
    async with open_source([f"tensorone://jobs/{job}/checkpoints/{first}"],
                           platforms.env()) as src:
        assert src.manifest.model_id == first
        assert src.expected_params is None
        assert "(automatic)" in src.description
        t[0] = 4.0  # a newer checkpoint now exists: a refresh stays on the one resolved
        assert src.refresh is not None
        assert (await src.refresh()).model_id == first


async def test_tensorone_no_checkpoint_yet(platforms: PlatformEndpoints) -> None:
    job = platforms.emu.add_tensorone_job(RunScript(total_steps=1000, **SMALL))
    with pytest.raises(PlatformError) as info:
        async with open_source([f"tensorone://jobs/{job}"], platforms.env()):
            pass
    assert f"TensorOne job {job} has no checkpoint yet (queued" in info.value.message
    assert info.value.hint == f"weightlift watch tensorone://jobs/{job} --pull -o DIR waits for it"


async def test_transient_faults_are_retried(platforms: PlatformEndpoints) -> None:
    emu = platforms.emu
    job = emu.add_axom_job(RunScript.instant(**SMALL))
    t1 = emu.add_tensorone_job(RunScript.instant(**SMALL))
    emu.inject_api("axom", "/api/jobs/", ApiFault.status(503), times=2)
    emu.inject_api("axom", "/api/models", ApiFault.status(429, retry_after="0"), times=1)
    emu.inject_api("tensorone", "/v2/training/", ApiFault.status(502), times=1)
    emu.inject_api("tensorone", "/v2/training/models", ApiFault.status(429, retry_after="0"))
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async with open_source([f"axom://jobs/{job}"], platforms.env(), sleep=sleep) as src:
        assert src.expected_params == emu.expected_params(job)
    async with open_source([f"tensorone://jobs/{t1}"], platforms.env(), sleep=sleep) as src:
        assert src.expected_params == emu.expected_params(t1)
    assert len(waits) == 5
    assert 0.0 in waits
    statuses = [r.status for r in emu.api_requests]
    assert statuses.count(503) == 2
    assert statuses.count(429) == 2
    assert statuses.count(502) == 1


@pytest.mark.parametrize(
    ("fault", "prefix", "says"),
    [
        (ApiFault.malformed(), "/api/jobs/", "unexpected answer from Axom (GET /jobs/"),
        (ApiFault.wrong_shape(), "/api/models", "unexpected answer from Axom (GET /models)"),
        (ApiFault.status(400, body=b'{"detail": "bad since_step"}'), "/api/jobs/",
         "Axom refused GET /jobs/"),
    ],
)
async def test_bad_answers_are_one_line(platforms: PlatformEndpoints, fault: ApiFault,
                                        prefix: str, says: str) -> None:
    job = platforms.emu.add_axom_job(RunScript.instant(**SMALL))
    platforms.emu.inject_api("axom", prefix, fault)
    with pytest.raises(PlatformError) as info:
        async with open_source([f"axom://jobs/{job}"], platforms.env()):
            pass
    assert says in one_line(info.value, platforms.emu.axom_key)


async def test_tensorone_wrong_shape_checkpoints(platforms: PlatformEndpoints) -> None:
    job = platforms.emu.add_tensorone_job(RunScript.instant(**SMALL))
    platforms.emu.inject_api("tensorone", "/v2/training/jobs/", ApiFault.wrong_shape())
    with pytest.raises(PlatformError) as info:
        async with open_source([f"tensorone://jobs/{job}"], platforms.env()):
            pass
    assert "unexpected answer from TensorOne" in info.value.message
    assert "checkpoints: Field required" in info.value.message


async def test_redirect_to_storage_host_never_carries_the_key(
        platforms: PlatformEndpoints) -> None:
    emu = platforms.emu
    job = emu.add_axom_job(RunScript.instant(**SMALL))
    emu.inject_api("axom", f"/api/jobs/{job}", ApiFault.redirect(
        f"{platforms.storage_base}/somewhere/jobs/{job}"))
    with pytest.raises(PlatformError) as info:
        async with open_source([f"axom://jobs/{job}"], platforms.env()):
            pass
    line = one_line(info.value, emu.axom_key)
    assert f"redirected GET /jobs/{job} to {platforms.storage_base}" in line
    seen = [r for r in emu.storage.requests if "somewhere" in r.path]
    assert len(seen) == 1
    assert "authorization" not in seen[0].headers


async def test_rate_limit_that_asks_too_long_fails_fast(platforms: PlatformEndpoints) -> None:
    emu = platforms.emu
    emu.tensorone_rate_limit = 1
    job = emu.add_tensorone_job(RunScript.instant(**SMALL))
    with pytest.raises(ApiUnavailable) as info:
        async with open_source([f"tensorone://jobs/{job}"], platforms.env()):
            pass
    assert "TensorOne rate limit exceeded: it asks to wait 1 h (until" in info.value.message


async def test_open_run_takes_job_uris_only(platforms: PlatformEndpoints) -> None:
    for source, says in [("axom://models/m", "watch follows a training run"),
                         ("tensorone://jobs/j/checkpoints/c", "watch follows a training run"),
                         ("manifest.json", "watch follows a training run"),
                         ("axom://jobs/a/b", "unexpected path")]:
        with pytest.raises(UsageError, match=says):
            async with open_run(source, platforms.env()):
                pass
    async with open_run("axom://jobs/missing", platforms.env()) as follower:
        with pytest.raises(ApiNotFound, match="job missing not found on Axom"):
            await follower.poll()


@pytest.mark.parametrize("platform", ["axom", "tensorone"])
async def test_pull_end_to_end_keeps_the_key_off_storage(
        platforms: PlatformEndpoints, tmp_path: Path, platform: str) -> None:
    emu = platforms.emu
    emu.url_lifetime = 1.0  # URLs expire during the pull: refresh goes through the API
    if platform == "axom":
        job = emu.add_axom_job(RunScript.instant(**SMALL))
        source, key = f"axom://jobs/{job}", emu.axom_key
    else:
        job = emu.add_tensorone_job(RunScript.instant(**SMALL))
        source, key = f"tensorone://jobs/{job}", emu.tensorone_key
    out = tmp_path / "out"
    async with open_source([source], platforms.env()) as src:
        result = await pull(src, out, EngineConfig(connections=4, chunk_size=64 << 10,
                                                   durable=False, check_free_space=False))
    assert result.ok
    report = verify_directory(out)
    assert report.ok, report.problems
    assert report.params == report.expected_params == emu.expected_params(job)
    assert emu.storage.requests
    for rec in emu.storage.requests:
        assert "authorization" not in rec.headers
        assert key not in str(dict(rec.headers))
    assert all(r.headers.get("Authorization") == f"Bearer {key}" for r in emu.api_requests)
