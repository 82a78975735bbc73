"""The emulated TensorOne API, driven with a plain aiohttp client (not weightlift's own clients)."""

import json
import re
import struct
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from yarl import URL

from weightlift.emulator.api_faults import ApiFault
from weightlift.emulator.api_probe import ApiProbe as Api
from weightlift.emulator.api_probe import ApiReply as Reply
from weightlift.emulator.api_probe import HandClock as Clock
from weightlift.emulator.platforms import PlatformEndpoints
from weightlift.emulator.runs import RunScript, RunTimeline
from weightlift.emulator.tensorone_api import human_size

KEY = "tpo_test_emulator0000"
ERROR_FIELDS = {"error", "message", "code", "details", "request_id", "timestamp"}
RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset",
                "X-RateLimit-Window")


@pytest.fixture
def clock(platforms: PlatformEndpoints) -> Clock:
    c = Clock(500.0)
    platforms.emu.clock = c
    return c


@pytest.fixture
async def api(platforms: PlatformEndpoints) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as s:
        yield Api(s, platforms.tensorone_base, KEY)


def small(**kw: Any) -> RunScript:
    return RunScript(model_bytes=256 << 10, **kw)


def assert_error(r: Reply, status: int, code: str) -> dict[str, Any]:
    assert r.status == status, r.text
    body: dict[str, Any] = r.json()
    assert set(body) == ERROR_FIELDS
    assert (body["error"], body["code"]) == (code, status)
    assert body["request_id"].startswith("req_")
    return body


# --- auth, errors, rate limit -------------------------------------------------------------
@pytest.mark.parametrize("route", ["/training/jobs/{j}", "/training/jobs/{j}/checkpoints",
                                   "/training/models"])
@pytest.mark.parametrize("key", [None, "tpo_live_wrong", "axom_live_emulator0000"])
async def test_every_route_needs_the_key(platforms: PlatformEndpoints, api: Api, route: str,
                                         key: str | None) -> None:
    job = platforms.emu.add_tensorone_job(small())
    r = await api.get(route.format(j=job), key=key)
    body = assert_error(r, 401, "UNAUTHORIZED")
    assert body["message"] == "Invalid or missing API key"
    assert all(h in r.headers for h in RATE_HEADERS)
    assert (await api.get(route.format(j=job))).status == 200


async def test_a_key_without_the_tpo_prefix_is_refused(
        platforms: PlatformEndpoints, api: Api) -> None:
    platforms.emu.tensorone_key = "sk_test_x"
    job = platforms.emu.add_tensorone_job(small())
    assert_error(await api.get(f"/training/jobs/{job}", key="sk_test_x"), 401, "UNAUTHORIZED")


async def test_unknown_job_and_route(platforms: PlatformEndpoints, api: Api) -> None:
    body = assert_error(await api.get("/training/jobs/nope"), 404, "RESOURCE_NOT_FOUND")
    assert body["message"] == "Training job not found: nope"
    assert body["details"] == {"resource": "training_job", "id": "nope"}
    assert_error(await api.get("/training/jobs/nope/checkpoints"), 404, "RESOURCE_NOT_FOUND")
    assert_error(await api.get("/training/nothing"), 404, "RESOURCE_NOT_FOUND")
    axom = platforms.emu.add_axom_job(small())
    assert_error(await api.get(f"/training/jobs/{axom}"), 404, "RESOURCE_NOT_FOUND")


async def test_rate_limit_headers_count_down_then_429_until_the_window_resets(
        platforms: PlatformEndpoints, api: Api, clock: Clock) -> None:
    emu = platforms.emu
    emu.tensorone_rate_limit = 3
    emu.tensorone_rate_window = 60
    job = emu.add_tensorone_job(small())
    remaining = []
    for _ in range(3):
        r = await api.get(f"/training/jobs/{job}")
        assert r.status == 200
        assert r.headers["X-RateLimit-Limit"] == "3"
        assert r.headers["X-RateLimit-Window"] == "60"
        reset = int(r.headers["X-RateLimit-Reset"])
        assert time.time() + 55 < reset <= time.time() + 62
        remaining.append(r.headers["X-RateLimit-Remaining"])
    assert remaining == ["2", "1", "0"]
    clock.now += 20
    r = await api.get(f"/training/jobs/{job}/checkpoints")
    body = assert_error(r, 429, "RATE_LIMIT_EXCEEDED")
    assert r.headers["Retry-After"] == "40"
    assert r.headers["X-RateLimit-Remaining"] == "0"
    assert body["details"]["retry_after"] == 40
    assert (body["details"]["limit"], body["details"]["remaining"]) == (3, 0)
    assert body["details"]["reset_at"] == int(r.headers["X-RateLimit-Reset"])
    clock.now += 40
    r = await api.get(f"/training/jobs/{job}")
    assert r.status == 200
    assert r.headers["X-RateLimit-Remaining"] == "2"


async def test_unauthorized_requests_do_not_use_the_quota(
        platforms: PlatformEndpoints, api: Api) -> None:
    platforms.emu.tensorone_rate_limit = 2
    job = platforms.emu.add_tensorone_job(small())
    for _ in range(3):
        assert (await api.get(f"/training/jobs/{job}", key=None)).status == 401
    r = await api.get(f"/training/jobs/{job}")
    assert (r.status, r.headers["X-RateLimit-Remaining"]) == (200, "1")


# --- jobs ---------------------------------------------------------------------------------
async def test_job_lifecycle_with_pause_and_requeue(
        platforms: PlatformEndpoints, api: Api, clock: Clock) -> None:
    script = small(preempt_at_step=60)
    job = platforms.emu.add_tensorone_job(script, job_id="tj-1", name="lora")
    tl = RunTimeline(script, "tensorone")
    seen: list[str] = []
    t = 0.0
    while t <= tl.end_t + 0.1:
        clock.now = 500.0 + t
        body = await api.ok(f"/training/jobs/{job}")
        if not seen or seen[-1] != body["status"]:
            seen.append(body["status"])
        t += 0.05
    assert seen == ["queued", "initializing", "running", "paused", "queued", "initializing",
                    "running", "completed"]
    assert body["jobId"] == "tj-1"
    assert body["name"] == "lora"
    p = body["progress"]
    assert (p["currentStep"], p["totalSteps"], p["percentComplete"]) == (120, 120, 100.0)
    assert (p["currentEpoch"], p["totalEpochs"]) == (3, 3)
    assert body["error"] is None
    for field in ("metrics", "resourceUsage", "configuration", "checkpoints", "costs",
                  "timestamps"):
        assert field in body
    assert "logs" not in body


async def test_job_progress_and_eta_while_running(
        platforms: PlatformEndpoints, api: Api, clock: Clock) -> None:
    job = platforms.emu.add_tensorone_job(small())
    body = await api.ok(f"/training/jobs/{job}")
    assert body["status"] == "queued"
    assert body["metrics"] is None
    assert body["progress"]["currentStep"] == 0
    clock.now += 1.0
    body = await api.ok(f"/training/jobs/{job}")
    assert body["status"] == "running"
    assert 0 < body["progress"]["currentStep"] < 120
    assert re.fullmatch(r"\d+[smh].*", body["progress"]["estimatedTimeRemaining"])
    m = body["metrics"]
    assert set(m["throughput"]) == {"samplesPerSecond", "tokensPerSecond", "stepTime"}
    assert m["loss"] > 0
    assert m["learningRate"] > 0


async def test_include_metrics_false_and_logs_with_line_limit(
        platforms: PlatformEndpoints, api: Api, clock: Clock) -> None:
    job = platforms.emu.add_tensorone_job(small())
    clock.now += 100
    body = await api.ok(f"/training/jobs/{job}?includeMetrics=false&includeLogs=true&logLines=4")
    assert body["metrics"] is None
    logs = body["logs"]
    assert len(logs) == 4
    assert set(logs[0]) == {"lineNumber", "timestamp", "level", "message"}
    assert logs[-1]["message"] == "upload complete"
    nums = [g["lineNumber"] for g in logs]
    assert nums == list(range(nums[0], nums[0] + 4))
    every = await api.ok(f"/training/jobs/{job}?includeLogs=true&logLines=1000")
    assert every["logs"][0]["lineNumber"] == 1
    assert every["logs"][-1] == logs[-1]


async def test_logs_grow(platforms: PlatformEndpoints, api: Api, clock: Clock) -> None:
    job = platforms.emu.add_tensorone_job(small())
    counts = []
    for _ in range(5):
        counts.append(len((await api.ok(f"/training/jobs/{job}?includeLogs=1&logLines=1000"))
                          ["logs"]))
        clock.now += 0.7
    assert counts == sorted(counts)
    assert counts[-1] > counts[0] >= 1


@pytest.mark.parametrize("query", ["logLines=1001", "logLines=0", "logLines=ten",
                                   "includeMetrics=maybe", "includeLogs=2"])
async def test_bad_query_values_are_validation_errors(
        platforms: PlatformEndpoints, api: Api, query: str) -> None:
    job = platforms.emu.add_tensorone_job(small())
    body = assert_error(await api.get(f"/training/jobs/{job}?{query}"), 400, "VALIDATION_ERROR")
    assert body["details"]["field"] == query.split("=")[0]


async def test_unknown_query_params_are_ignored(platforms: PlatformEndpoints, api: Api) -> None:
    job = platforms.emu.add_tensorone_job(small())
    assert (await api.get(f"/training/jobs/{job}?foo=bar&logLines=1000")).status == 200


async def test_failed_and_cancelled_jobs(
        platforms: PlatformEndpoints, api: Api, clock: Clock) -> None:
    script = small(fail_at_step=30)
    failed = platforms.emu.add_tensorone_job(script)
    cancelled = platforms.emu.add_tensorone_job(small(cancel_at_step=50))
    clock.now += 100
    body = await api.ok(f"/training/jobs/{failed}")
    assert body["status"] == "failed"
    assert body["error"] == {"code": "TRAINING_FAILED", "message": script.error}
    body = await api.ok(f"/training/jobs/{cancelled}")
    assert body["status"] == "cancelled"
    assert body["error"] == {"code": "CANCELLED", "message": "cancelled by user"}
    cks = await api.ok(f"/training/jobs/{cancelled}/checkpoints")
    assert cks["checkpoints"][0]["type"] == "final"
    assert cks["checkpoints"][0]["step"] == 50
    assert (await api.ok(f"/training/models?trainingJobId={cancelled}"))["models"] == []


# --- checkpoints --------------------------------------------------------------------------
async def test_checkpoints_appear_as_the_run_passes_them(
        platforms: PlatformEndpoints, api: Api, clock: Clock) -> None:
    job = platforms.emu.add_tensorone_job(small())
    tl = RunTimeline(small(), "tensorone")
    empty = await api.ok(f"/training/jobs/{job}/checkpoints")
    assert empty["checkpoints"] == []
    assert empty["totalCount"] == 0
    assert empty["summary"]["latestCheckpoint"] is None
    counts = []
    for c in tl.checkpoints:
        clock.now = 500.0 + c.t + 0.001
        body = await api.ok(f"/training/jobs/{job}/checkpoints?sortBy=createdAt&sortOrder=asc")
        counts.append(body["totalCount"])
        assert body["checkpoints"][-1]["step"] == c.step
        assert body["summary"]["latestCheckpoint"]["checkpointId"] == \
            body["checkpoints"][-1]["checkpointId"]
        in_job = (await api.ok(f"/training/jobs/{job}"))["checkpoints"]
        assert [x["checkpointId"] for x in in_job] == \
            [x["checkpointId"] for x in body["checkpoints"]]
        assert all("downloadUrl" not in x for x in in_job)
    assert counts == [1, 2, 3]
    assert [x["type"] for x in body["checkpoints"]] == ["automatic", "automatic", "final"]


async def test_checkpoint_download_url_serves_the_single_file_model(
        platforms: PlatformEndpoints, api: Api) -> None:
    emu = platforms.emu
    emu.url_lifetime = 3600
    job = emu.add_tensorone_job(RunScript.instant(model_bytes=300_000))
    body = await api.ok(f"/training/jobs/{job}/checkpoints")
    ck = body["checkpoints"][0]
    assert ck["type"] == "final"  # newest first by default
    url = urlsplit(ck["downloadUrl"])
    assert url.path.endswith(f"/{ck['checkpointId']}/model.safetensors")
    q = parse_qs(url.query)
    assert "sig" in q
    assert time.time() + 3500 < int(q["expires"][0]) <= time.time() + 3602
    assert ck["downloadUrl"].startswith(platforms.storage_base + "/")
    assert re.fullmatch(r"\d+\.\dKB", ck["size"])
    assert set(ck) >= {"checkpointId", "name", "epoch", "step", "metrics", "size", "type",
                       "downloadUrl", "deployable", "createdAt"}
    async with aiohttp.ClientSession() as s, s.get(URL(ck["downloadUrl"], encoded=True)) as r:
        assert r.status == 200
        blob = await r.read()
    assert ck["size"] == human_size(len(blob))
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    params = 0
    for name, spec in header.items():
        if name != "__metadata__":
            count = 1
            for d in spec["shape"]:
                count *= d
            params += count
    models = await api.ok(f"/training/models?trainingJobId={job}")
    assert models["total"] == 1
    assert models["models"][0]["size"]["parameters"] == params == emu.expected_params(job)
    assert models["models"][0]["size"]["bytes"] == len(blob)
    assert all("authorization" not in r.headers for r in emu.storage.requests)


async def test_checkpoint_urls_are_fresh_each_listing_and_expire(
        platforms: PlatformEndpoints, api: Api) -> None:
    import asyncio

    platforms.emu.url_lifetime = 0.3
    job = platforms.emu.add_tensorone_job(RunScript.instant(model_bytes=256 << 10))
    first = (await api.ok(f"/training/jobs/{job}/checkpoints"))["checkpoints"][0]["downloadUrl"]
    await asyncio.sleep(0.4)
    second = (await api.ok(f"/training/jobs/{job}/checkpoints"))["checkpoints"][0]["downloadUrl"]
    assert first != second
    async with aiohttp.ClientSession() as s:
        async with s.get(URL(first, encoded=True)) as r:
            assert r.status == 403
        async with s.get(URL(second, encoded=True)) as r:
            assert r.status == 200


async def test_checkpoint_sorting_limit_and_summary(
        platforms: PlatformEndpoints, api: Api) -> None:
    job = platforms.emu.add_tensorone_job(RunScript.instant(model_bytes=256 << 10))
    base = f"/training/jobs/{job}/checkpoints"
    by_step = await api.ok(f"{base}?sortBy=step&sortOrder=asc")
    assert [c["step"] for c in by_step["checkpoints"]] == [40, 80, 120]
    desc = await api.ok(f"{base}?sortBy=step&sortOrder=desc&limit=2")
    assert [c["step"] for c in desc["checkpoints"]] == [120, 80]
    assert desc["totalCount"] == 3
    by_val = await api.ok(f"{base}?sortBy=validationLoss&sortOrder=asc&includeMetrics=true")
    losses = [c["metrics"]["validationLoss"] for c in by_val["checkpoints"]]
    assert losses == sorted(losses)
    assert by_val["summary"]["bestCheckpoint"]["checkpointId"] == \
        by_val["checkpoints"][0]["checkpointId"]
    no_metrics = await api.ok(f"{base}?includeMetrics=false")
    assert all("metrics" not in c for c in no_metrics["checkpoints"])
    assert re.fullmatch(r"\d+\.\dKB", by_step["summary"]["totalSize"])
    for bad in ("sortBy=size", "sortOrder=up", "limit=0", "limit=x"):
        assert_error(await api.get(f"{base}?{bad}"), 400, "VALIDATION_ERROR")


# --- models -------------------------------------------------------------------------------
async def test_models_appear_only_once_completed_and_filter_by_job(
        platforms: PlatformEndpoints, api: Api, clock: Clock) -> None:
    emu = platforms.emu
    a = emu.add_tensorone_job(small())
    b = emu.add_tensorone_job(RunScript.instant(model_bytes=256 << 10, seed=5))
    body = await api.ok(f"/training/models?trainingJobId={a}")
    assert body == {"models": [], "total": 0}
    everything = await api.ok("/training/models")
    assert [m["trainingJobId"] for m in everything["models"]] == [b]
    clock.now += 100
    mine = await api.ok(f"/training/models?trainingJobId={a}")
    assert mine["total"] == 1
    m = mine["models"][0]
    assert m["trainingJobId"] == a
    assert m["size"]["parameters"] == emu.expected_params(a)
    assert set(m) >= {"id", "name", "type", "status", "baseModel", "version", "trainingJobId",
                      "size", "metrics", "createdAt"}
    assert (await api.ok("/training/models?trainingJobId=unknown"))["models"] == []


# --- faults -------------------------------------------------------------------------------
async def test_injected_429_with_retry_after(platforms: PlatformEndpoints, api: Api) -> None:
    job = platforms.emu.add_tensorone_job(small())
    platforms.emu.inject_api("tensorone", "/v2/training/jobs/",
                             ApiFault.status(429, retry_after="3"))
    r = await api.get(f"/training/jobs/{job}")
    assert_error(r, 429, "RATE_LIMIT_EXCEEDED")
    assert r.headers["Retry-After"] == "3"
    assert all(h in r.headers for h in RATE_HEADERS)
    assert (await api.get(f"/training/jobs/{job}")).status == 200


@pytest.mark.parametrize(("code", "word"), [(500, "INTERNAL_ERROR"), (502, "BAD_GATEWAY"),
                                            (503, "SERVICE_UNAVAILABLE"), (403, "FORBIDDEN")])
async def test_injected_status_uses_the_error_shape(
        platforms: PlatformEndpoints, api: Api, code: int, word: str) -> None:
    platforms.emu.inject_api("tensorone", "/v2/", ApiFault.status(code))
    assert_error(await api.get("/training/models"), code, word)


async def test_injected_malformed_redirect_and_wrong_shape(
        platforms: PlatformEndpoints, api: Api) -> None:
    job = platforms.emu.add_tensorone_job(RunScript.instant(model_bytes=256 << 10))
    emu = platforms.emu
    emu.inject_api("tensorone", "/v2/training/models", ApiFault.malformed())
    r = await api.get("/training/models")
    assert r.status == 200
    with pytest.raises(json.JSONDecodeError):
        r.json()
    emu.inject_api("tensorone", "/v2/training/jobs/", ApiFault.redirect("https://cdn.example/x"))
    r = await api.get(f"/training/jobs/{job}")
    assert (r.status, r.headers["Location"]) == (307, "https://cdn.example/x")
    emu.inject_api("tensorone", f"/v2/training/jobs/{job}/checkpoints", ApiFault.wrong_shape())
    body = await api.ok(f"/training/jobs/{job}/checkpoints")
    assert "checkpoints" not in body
    assert "totalCount" in body
    r = await api.get(f"/training/jobs/{job}/checkpoints")
    assert "checkpoints" in r.json()
    assert all(h in r.headers for h in RATE_HEADERS)


def test_human_size() -> None:
    assert [human_size(n) for n in (512, 2_100_000, 2_097_152, 27_600_000_000)] == [
        "512B", "2.1MB", "2.1MB", "27.6GB"]
