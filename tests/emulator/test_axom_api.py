"""The emulated Axom API, driven with a plain aiohttp client (not weightlift's own clients)."""

import asyncio
import json
import struct
import threading
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from yarl import URL

from weightlift.emulator.api_faults import ApiFault
from weightlift.emulator.api_probe import ApiProbe as Api
from weightlift.emulator.api_probe import HandClock as Clock
from weightlift.emulator.platforms import PlatformEndpoints
from weightlift.emulator.runs import RunScript, RunTimeline

KEY = "axom_live_emulator0000"


@pytest.fixture
def clock(platforms: PlatformEndpoints) -> Clock:
    c = Clock(1000.0)
    platforms.emu.clock = c
    return c


@pytest.fixture
async def api(platforms: PlatformEndpoints) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as s:
        yield Api(s, platforms.axom_base, KEY)


def small(**kw: Any) -> RunScript:
    return RunScript(model_bytes=256 << 10, **kw)


def safetensors_params(blob: bytes) -> int:
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    total = 0
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for d in spec["shape"]:
            count *= d
        total += count
    return total


# --- auth and routing ---------------------------------------------------------------------
ROUTES = ["/jobs/{j}", "/jobs/{j}/metrics", "/jobs/{j}/logs", "/jobs/{j}/events",
          "/jobs/{j}/result", "/models", "/models/{m}/download"]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("key", [None, "axom_live_wrong", "tpo_test_emulator0000", ""])
async def test_every_route_needs_the_key(platforms: PlatformEndpoints, api: Api, route: str,
                                         key: str | None) -> None:
    job = platforms.emu.add_axom_job(RunScript.instant(model_bytes=256 << 10))
    path = route.format(j=job, m=platforms.emu.axom_model_id(job))
    r = await api.get(path, key=key)
    assert r.status == 401
    assert r.json() == {"detail": "Invalid or missing API key"}
    assert (await api.get(path)).status == 200


async def test_a_key_without_the_axom_live_prefix_is_refused(
        platforms: PlatformEndpoints, api: Api) -> None:
    platforms.emu.axom_key = "sk_live_emulator"  # equal to what is sent, wrong prefix
    job = platforms.emu.add_axom_job(small())
    assert (await api.get(f"/jobs/{job}", key="sk_live_emulator")).status == 401


async def test_missing_scopes_are_403(platforms: PlatformEndpoints, api: Api) -> None:
    emu = platforms.emu
    job = emu.add_axom_job(RunScript.instant(model_bytes=256 << 10))
    emu.axom_scopes = {"read"}
    r = await api.get(f"/models/{emu.axom_model_id(job)}/download")
    assert (r.status, r.json()) == (403, {"detail": "API key lacks the 'models' scope"})
    assert (await api.get(f"/jobs/{job}/result")).status == 200
    emu.axom_scopes = set()
    for path in (f"/jobs/{job}", f"/jobs/{job}/logs", "/models"):
        r = await api.get(path)
        assert (r.status, r.json()) == (403, {"detail": "API key lacks the 'read' scope"})


async def test_basic_scheme_is_not_bearer(platforms: PlatformEndpoints, api: Api) -> None:
    job = platforms.emu.add_axom_job(small())
    r = await api.get(f"/jobs/{job}", key=None, headers={"Authorization": f"Basic {KEY}"})
    assert r.status == 401


async def test_unknown_ids_and_routes(platforms: PlatformEndpoints, api: Api) -> None:
    r = await api.get("/jobs/nope")
    assert (r.status, r.json()) == (404, {"detail": "Job not found: nope"})
    for sub in ("metrics", "logs", "events", "result"):
        r = await api.get(f"/jobs/nope/{sub}")
        assert (r.status, r.json()) == (404, {"detail": "Job not found: nope"})
    r = await api.get("/models/m-404/download")
    assert (r.status, r.json()) == (404, {"detail": "Model not found: m-404"})
    r = await api.get("/no/such/route")
    assert (r.status, r.json()) == (404, {"detail": "Not Found"})
    t1 = platforms.emu.add_tensorone_job(small())
    assert (await api.get(f"/jobs/{t1}")).status == 404  # the other platform's job


async def test_post_is_not_allowed(platforms: PlatformEndpoints) -> None:
    job = platforms.emu.add_axom_job(small())
    async with aiohttp.ClientSession() as s, s.post(
            f"{platforms.axom_base}/jobs/{job}",
            headers={"Authorization": f"Bearer {KEY}"}) as resp:
        assert resp.status == 405
        assert await resp.json() == {"detail": "Method Not Allowed"}


# --- runs ---------------------------------------------------------------------------------
async def test_job_moves_through_preemption_to_completion(
        platforms: PlatformEndpoints, api: Api, clock: Clock) -> None:
    script = small(preempt_at_step=60)
    job = platforms.emu.add_axom_job(script, job_id="job-1", name="my-run")
    tl = RunTimeline(script, "axom")
    seen: list[tuple[str, int]] = []
    t = 0.0
    while t <= tl.end_t + 0.1:
        clock.now = 1000.0 + t
        body = await api.ok(f"/jobs/{job}")
        if not seen or seen[-1][0] != body["status"]:
            seen.append((body["status"], body["retries"]))
        t += 0.05
    assert [s for s, _ in seen] == [
        "queued", "provisioning", "staging", "running", "checkpointing", "running",
        "preempted", "queued", "provisioning", "staging", "running", "checkpointing",
        "running", "uploading", "completed"]
    assert seen[0][1] == 0
    assert seen[-1][1] == 1
    assert body["id"] == "job-1"
    assert body["name"] == "my-run"
    assert body["step"] == body["total_steps"] == 120
    assert body["error"] is None
    assert body["model_id"] == platforms.emu.axom_model_id(job)
    assert body["finished_at"].endswith("Z")


async def test_model_id_is_null_until_completed(
        platforms: PlatformEndpoints, api: Api, clock: Clock) -> None:
    job = platforms.emu.add_axom_job(small())
    assert (await api.ok(f"/jobs/{job}"))["model_id"] is None
    assert (await api.ok(f"/jobs/{job}"))["finished_at"] is None


async def test_failed_job_carries_the_error(
        platforms: PlatformEndpoints, api: Api, clock: Clock) -> None:
    script = small(fail_at_step=50)
    job = platforms.emu.add_axom_job(script)
    clock.now += 100
    body = await api.ok(f"/jobs/{job}")
    assert (body["status"], body["step"], body["error"]) == ("failed", 50, script.error)
    r = await api.get(f"/jobs/{job}/result")
    assert (r.status, r.json()) == (404, {"detail": f"Result not available: job {job} is failed"})


async def test_cancelled_job_is_failed_on_axom(
        platforms: PlatformEndpoints, api: Api, clock: Clock) -> None:
    job = platforms.emu.add_axom_job(small(cancel_at_step=30))
    clock.now += 100
    body = await api.ok(f"/jobs/{job}")
    assert (body["status"], body["error"]) == ("failed", "cancelled by user")


async def test_metrics_polled_since_latest_step_cover_every_step_once(
        platforms: PlatformEndpoints, api: Api, clock: Clock) -> None:
    job = platforms.emu.add_axom_job(small(preempt_at_step=60))
    first = await api.ok(f"/jobs/{job}/metrics")
    assert first == {"job_id": job, "count": 0, "latest_step": 0, "points": []}
    steps: list[int] = []
    since = 0
    for _ in range(60):
        clock.now += 0.1
        body = await api.ok(f"/jobs/{job}/metrics?since_step={since}")
        assert body["count"] == len(body["points"])
        steps += [p["step"] for p in body["points"]]
        since = body["latest_step"]
    assert steps == list(range(1, 121))
    clock.now += 100
    everything = await api.ok(f"/jobs/{job}/metrics?since_step=0")
    pts = everything["points"]
    assert [p["step"] for p in pts] == list(range(1, 121))
    assert {p["cycle"] for p in pts if 40 < p["step"] <= 60} == {1}  # the replay wins
    assert set(pts[0]) == {"ts", "step", "cycle", "phase", "loss", "lr", "throughput",
                           "vram_gb", "grad_norm"}
    assert pts[-1]["loss"] < pts[0]["loss"]
    tail = await api.ok(f"/jobs/{job}/metrics?since_step=118&unknown=1")
    assert [p["step"] for p in tail["points"]] == [119, 120]
    assert tail["latest_step"] == 120


@pytest.mark.parametrize("bad", ["x", "-1", "1.5"])
async def test_bad_since_step_is_a_422_with_a_list_detail(
        platforms: PlatformEndpoints, api: Api, bad: str) -> None:
    job = platforms.emu.add_axom_job(small())
    r = await api.get(f"/jobs/{job}/metrics?since_step={bad}")
    assert r.status == 422
    detail = r.json()["detail"]
    assert isinstance(detail, list)
    assert detail[0]["loc"] == ["query", "since_step"]


async def test_logs_grow_and_since_returns_only_new_lines(
        platforms: PlatformEndpoints, api: Api, clock: Clock) -> None:
    job = platforms.emu.add_axom_job(small(preempt_at_step=60))
    got: list[dict[str, Any]] = []
    since = 0
    for _ in range(60):
        body = await api.ok(f"/jobs/{job}/logs?since={since}")
        assert body["job_id"] == job
        got += body["lines"]
        since = body["latest_seq"]
        clock.now += 0.1
    assert [g["seq"] for g in got] == list(range(1, len(got) + 1))
    texts = [g["text"] for g in got]
    assert any("reclaimed" in t for t in texts)
    assert any(t.startswith("requeued (retry 1)") for t in texts)
    assert any("saved checkpoint" in t for t in texts)
    assert {g["stream"] for g in got} == {"stdout", "stderr"}
    again = await api.ok(f"/jobs/{job}/logs?since={since}")
    assert again["lines"] == []
    assert again["latest_seq"] == since


async def test_events_list_the_history(
        platforms: PlatformEndpoints, api: Api, clock: Clock) -> None:
    job = platforms.emu.add_axom_job(small(preempt_at_step=60))
    early = await api.ok(f"/jobs/{job}/events")
    assert [e["kind"] for e in early] == ["submitted", "queued"]
    clock.now += 100
    events = await api.ok(f"/jobs/{job}/events")
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "submitted"
    assert kinds[-1] == "completed"
    assert kinds.count("checkpoint") == 3
    assert "preempted" in kinds
    requeued = next(e for e in events if e["kind"] == "requeued")
    assert requeued["payload"] == {"retries": 1, "resume_step": 40}
    assert all(set(e) == {"ts", "kind", "payload"} for e in events)


async def test_result_is_404_until_completed_then_matches_the_files(
        platforms: PlatformEndpoints, api: Api, clock: Clock) -> None:
    job = platforms.emu.add_axom_job(small(shards=3))
    for status in ("queued", "running"):
        if status == "running":
            clock.now += 1.0
        r = await api.get(f"/jobs/{job}/result")
        assert r.status == 404
        assert r.json() == {"detail": f"Result not available: job {job} is {status}"}
    clock.now += 100
    res = await api.ok(f"/jobs/{job}/result")
    assert res["params_after"] == platforms.emu.expected_params(job)
    assert res["params_before"] + res["params_delta"] == res["params_after"]
    for field in ("ppl_baseline", "ppl_final", "ppl_delta_pct", "loss_final",
                  "function_preservation", "gpu_seconds", "tokens_processed", "cost_usd"):
        assert field in res
    assert res["gpu_seconds"] > 0


# --- models -------------------------------------------------------------------------------
async def test_models_list_only_completed_jobs_newest_first(
        platforms: PlatformEndpoints, api: Api, clock: Clock) -> None:
    emu = platforms.emu
    slow = emu.add_axom_job(small())
    assert await api.ok("/models") == []
    clock.now += 1.0
    a = emu.add_axom_job(RunScript.instant(model_bytes=256 << 10, seed=1))
    clock.now += 1.0
    b = emu.add_axom_job(RunScript.instant(model_bytes=256 << 10, seed=2))
    models = await api.ok("/models")
    assert [m["lineage"]["job_id"] for m in models] == [b, a]
    assert [m["id"] for m in models] == [emu.axom_model_id(b), emu.axom_model_id(a)]
    assert models[0]["params"] == emu.expected_params(b)
    assert models[0]["status"] == "ready"
    clock.now += 100
    models = await api.ok("/models")
    assert models[0]["lineage"]["job_id"] == slow  # completed last: newest
    assert len(models) == 3
    r = await api.get(f"/models/{emu.axom_model_id(slow)}/download")
    assert r.status == 200


async def test_download_before_completion_is_model_not_found(
        platforms: PlatformEndpoints, api: Api, clock: Clock) -> None:
    job = platforms.emu.add_axom_job(small())
    mid = platforms.emu.axom_model_id(job)
    r = await api.get(f"/models/{mid}/download")
    assert (r.status, r.json()) == (404, {"detail": f"Model not found: {mid}"})


async def test_download_manifest_serves_a_real_checkpoint_from_storage(
        platforms: PlatformEndpoints, api: Api) -> None:
    emu = platforms.emu
    job = emu.add_axom_job(RunScript.instant(model_bytes=512 << 10, shards=2))
    mid = emu.axom_model_id(job)
    manifest = await api.ok(f"/models/{mid}/download")
    assert manifest["model_id"] == mid
    rels = [f["rel"] for f in manifest["files"]]
    assert rels == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                    "model.safetensors.index.json", "config.json"]
    api_origin = urlsplit(platforms.axom_base)
    params = 0
    async with aiohttp.ClientSession() as s:
        for f in manifest["files"]:
            url = urlsplit(f["url"])
            assert (url.hostname, url.port) != (api_origin.hostname, api_origin.port)
            assert f["url"].startswith(platforms.storage_base + "/")
            assert url.path.endswith(f"/{mid}/{f['rel']}")
            assert "X-Amz-Signature" in parse_qs(url.query)
            async with s.get(URL(f["url"], encoded=True)) as resp:
                assert resp.status == 200
                blob = await resp.read()
            assert len(blob) == f["size"]
            if f["rel"].endswith(".safetensors"):
                params += safetensors_params(blob)
            if f["rel"] == "model.safetensors.index.json":
                assert set(json.loads(blob)["weight_map"].values()) == set(rels[:2])
    res = await api.ok(f"/jobs/{job}/result")
    assert params == res["params_after"] == emu.expected_params(job)
    assert all("authorization" not in r.headers for r in emu.storage.requests)


async def test_download_urls_live_url_lifetime_and_fresh_ones_work(
        platforms: PlatformEndpoints, api: Api) -> None:
    emu = platforms.emu
    emu.url_lifetime = 0.3
    job = emu.add_axom_job(RunScript.instant(model_bytes=256 << 10))
    mid = emu.axom_model_id(job)
    first = (await api.ok(f"/models/{mid}/download"))["files"][0]["url"]
    async with aiohttp.ClientSession() as s:
        async with s.get(URL(first, encoded=True)) as resp:
            assert resp.status == 200
        await asyncio.sleep(0.4)
        async with s.get(URL(first, encoded=True)) as resp:
            assert resp.status == 403
            assert "Request has expired" in await resp.text()
        fresh = (await api.ok(f"/models/{mid}/download"))["files"][0]["url"]
        assert fresh != first
        async with s.get(URL(fresh, encoded=True)) as resp:
            assert resp.status == 200


def test_expected_params_generates_once_across_threads(platforms: PlatformEndpoints) -> None:
    emu = platforms.emu
    job = emu.add_axom_job(RunScript(model_bytes=1 << 20))
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(emu.expected_params(job)))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    assert results[0] > 0
    mid = emu.axom_model_id(job)
    assert sorted(k for k in emu.storage.keys() if k.startswith(mid)) == sorted(
        f"{mid}/{rel}" for rel in ("model-00001-of-00002.safetensors",
                                   "model-00002-of-00002.safetensors",
                                   "model.safetensors.index.json", "config.json"))
    before = {k: emu.storage.etag(k) for k in emu.storage.keys()}
    emu.prepare(job)  # cached: nothing regenerated or re-stored
    assert {k: emu.storage.etag(k) for k in emu.storage.keys()} == before


# --- faults and the request log -----------------------------------------------------------
async def test_status_fault_with_retry_after_then_normal(
        platforms: PlatformEndpoints, api: Api) -> None:
    job = platforms.emu.add_axom_job(small())
    platforms.emu.inject_api("axom", "/api/jobs/", ApiFault.status(503, retry_after="2"),
                             times=2)
    for _ in range(2):
        r = await api.get(f"/jobs/{job}")
        assert r.status == 503
        assert r.headers["Retry-After"] == "2"
        assert isinstance(r.json()["detail"], str)
    assert (await api.get(f"/jobs/{job}")).status == 200
    assert platforms.emu.faults.pending() == 0


async def test_fault_prefix_only_hits_matching_paths(
        platforms: PlatformEndpoints, api: Api) -> None:
    job = platforms.emu.add_axom_job(small())
    platforms.emu.inject_api("axom", "/api/models", ApiFault.status(500))
    platforms.emu.inject_api("tensorone", "/", ApiFault.status(500))
    assert (await api.get(f"/jobs/{job}")).status == 200
    assert (await api.get("/models")).status == 500
    assert (await api.get("/models")).status == 200


async def test_status_fault_with_custom_body_and_before_auth(
        platforms: PlatformEndpoints, api: Api) -> None:
    platforms.emu.inject_api("axom", "/api", ApiFault.status(403, body=b'{"detail": "no scope"}'))
    r = await api.get("/models", key=None)
    assert (r.status, r.json()) == (403, {"detail": "no scope"})


async def test_malformed_fault(platforms: PlatformEndpoints, api: Api) -> None:
    job = platforms.emu.add_axom_job(small())
    platforms.emu.inject_api("axom", f"/api/jobs/{job}", ApiFault.malformed())
    r = await api.get(f"/jobs/{job}")
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        r.json()


async def test_redirect_fault(platforms: PlatformEndpoints, api: Api) -> None:
    platforms.emu.inject_api("axom", "/api/models",
                             ApiFault.redirect("http://127.0.0.2:9/elsewhere", status=302))
    r = await api.get("/models")
    assert (r.status, r.headers["Location"]) == (302, "http://127.0.0.2:9/elsewhere")


async def test_wrong_shape_fault(platforms: PlatformEndpoints, api: Api) -> None:
    job = platforms.emu.add_axom_job(RunScript.instant(model_bytes=256 << 10))
    platforms.emu.inject_api("axom", "/api/jobs/", ApiFault.wrong_shape())
    platforms.emu.inject_api("axom", "/api/models", ApiFault.wrong_shape())
    body = await api.ok(f"/jobs/{job}")
    assert "id" not in body
    assert body["status"] == "completed"
    models = await api.ok("/models")
    assert isinstance(models, dict)
    assert (await api.get(f"/jobs/{job}")).json()["id"] == job


async def test_wrong_shape_does_not_touch_errors(platforms: PlatformEndpoints, api: Api) -> None:
    platforms.emu.inject_api("axom", "/api/jobs/", ApiFault.wrong_shape())
    r = await api.get("/jobs/nope")
    assert (r.status, r.json()) == (404, {"detail": "Job not found: nope"})


def test_fault_constructors_validate() -> None:
    with pytest.raises(ValueError, match="HTTP status"):
        ApiFault.status(42)
    with pytest.raises(ValueError, match="redirect"):
        ApiFault.redirect("http://x/", status=200)


async def test_requests_are_recorded(platforms: PlatformEndpoints, api: Api) -> None:
    job = platforms.emu.add_axom_job(small())
    await api.get(f"/jobs/{job}/metrics?since_step=3&x=y")
    await api.get(f"/jobs/{job}", key=None)
    a, b = platforms.emu.api_requests[-2:]
    assert (a.platform, a.method, a.path, a.query, a.status) == (
        "axom", "GET", f"/api/jobs/{job}/metrics", {"since_step": "3", "x": "y"}, 200)
    assert a.headers["authorization"] == f"Bearer {KEY}"
    assert (b.status, "Authorization" in b.headers) == (401, False)
