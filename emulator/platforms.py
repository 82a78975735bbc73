"""The emulated training platforms: Axom and TensorOne jobs over one `StorageEmulator`.

`PlatformEmulator` holds the jobs (each a scripted `RunTimeline` started when it is added), makes
their weight files on demand (real safetensors checkpoints from `model_gen`, generated once per
job, thread-safe), signs storage URLs for them, and builds one aiohttp app serving both APIs:
Axom under `/api/...`, TensorOne under `/v2/...`. A middleware shared by both records every
request, applies injected faults, enforces Bearer auth and TensorOne's rate limit.

Storage and the APIs are served on different origins, so tests can check that an API key never
reaches storage. `ThreadedPlatforms` serves both from background threads for subprocess tests.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from aiohttp import web
from multidict import CIMultiDict

from weightlift.emulator import axom_api, tensorone_api
from weightlift.emulator.api_faults import ApiFault, ApiFaultPlan
from weightlift.emulator.model_gen import GeneratedCheckpoint, generate_checkpoint
from weightlift.emulator.runs import RunScript, RunTimeline
from weightlift.emulator.serve import ThreadedServer
from weightlift.emulator.storage import StorageEmulator

PlatformName = Literal["axom", "tensorone"]
_NS = uuid.UUID("6f1d1f7e-3c55-4a5e-9d0c-7a1e2b3c4d5e")  # for derived, stable ids
AXOM_PREFIX = "/api"
DEFAULT_SCRIPT = RunScript()
TENSORONE_PREFIX = "/v2"


@dataclass
class ApiRequest:
    """One API request as the emulator saw it; `status` is filled in when it is answered."""

    platform: PlatformName
    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    status: int = 0


@dataclass
class Job:
    """One emulated job: its script laid out in time, plus its files once generated."""

    platform: PlatformName
    job_id: str
    name: str
    script: RunScript
    timeline: RunTimeline
    created_clock: float  # emulator clock reading when added (the run's t=0)
    created_wall: float  # epoch seconds at t=0, for timestamps
    workdir: Path
    model_id: str  # Axom: the model the job produces; TensorOne: the model entry's id
    checkpoint_ids: tuple[str, ...]  # by checkpoint index - 1
    generated: GeneratedCheckpoint | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wall(self, t: float) -> float:
        return self.created_wall + t


@dataclass(frozen=True)
class PlatformEndpoints:
    """Where the emulated platforms are being served, and the env a client needs."""

    emu: PlatformEmulator
    axom_base: str
    tensorone_base: str
    storage_base: str

    def env(self) -> dict[str, str]:
        return _env(self.emu, self.axom_base, self.tensorone_base)


def _env(emu: PlatformEmulator, axom_base: str, tensorone_base: str) -> dict[str, str]:
    return {"AXOM_API_BASE": axom_base, "AXOM_KEY": emu.axom_key,
            "TENSORONE_API_BASE": tensorone_base, "TENSORONE_API_KEY": emu.tensorone_key}


class ClockFromFirstRequest:
    """An emulator clock that stands at 0 until the first API request arrives, so a run starts
    when someone first looks at it: a slow start-up (a child process on a busy machine, a
    person copying a command) cannot eat a short accelerated run. Bind it with `.emu = emu`."""

    def __init__(self) -> None:
        self.emu: PlatformEmulator | None = None
        self.t0: float | None = None

    def __call__(self) -> float:
        if self.t0 is None:
            if self.emu is None or not self.emu.api_requests:
                return 0.0
            self.t0 = time.monotonic()
        return time.monotonic() - self.t0


class PlatformEmulator:
    """Axom and TensorOne, emulated: add scripted jobs, serve `api_app()`, inject faults."""

    def __init__(
        self, workdir: Path, *, axom_key: str = "axom_live_emulator0000",
        tensorone_key: str = "tpo_test_emulator0000", url_lifetime: float = 600.0,
        clock: Callable[[], float] = time.monotonic, storage: StorageEmulator | None = None,
        tensorone_rate_limit: int = 10_000, tensorone_rate_window: int = 3600,
    ) -> None:
        self.workdir = Path(workdir)
        self.axom_key = axom_key
        self.axom_scopes: set[str] = {"read", "models"}  # drop "models" to get 403s on download
        self.tensorone_key = tensorone_key
        self.url_lifetime = url_lifetime
        # Presign style for every download URL (signing.STYLES); None: each platform's own
        # (Axom S3 SigV4, TensorOne `expires`).
        self.url_style: str | None = None
        self.manifest_sha256 = False  # Axom manifests carry each file's sha256 when set
        self.clock = clock
        self.storage = storage if storage is not None else StorageEmulator()
        self.storage_base_url = ""
        self.tensorone_rate_limit = tensorone_rate_limit
        self.tensorone_rate_window = tensorone_rate_window
        self.api_requests: list[ApiRequest] = []
        self.faults = ApiFaultPlan()
        self._jobs: dict[tuple[PlatformName, str], Job] = {}
        self._lock = threading.Lock()
        self._rate_used = 0
        self._rate_window_end: float | None = None  # emulator clock

    # --- jobs ------------------------------------------------------------------------------
    def add_axom_job(self, script: RunScript = DEFAULT_SCRIPT, *, job_id: str | None = None,
                     name: str = "llama-3-8b-sft") -> str:
        """Add an Axom job whose run starts now; returns its id."""
        return self._add("axom", script, job_id, name)

    def add_tensorone_job(self, script: RunScript = DEFAULT_SCRIPT, *, job_id: str | None = None,
                          name: str = "mistral-7b-lora") -> str:
        """Add a TensorOne job whose run starts now; returns its id."""
        return self._add("tensorone", script, job_id, name)

    def _add(self, platform: PlatformName, script: RunScript, job_id: str | None,
             name: str) -> str:
        jid = job_id if job_id is not None else str(uuid.uuid4())
        if not jid or "/" in jid:
            raise ValueError("job_id must be a non-empty path segment")
        timeline = RunTimeline(script, platform)
        if platform == "axom":
            model_id = str(uuid.uuid5(_NS, f"axom-model:{jid}"))
        else:
            model_id = "mdl_" + uuid.uuid5(_NS, f"tensorone-model:{jid}").hex[:16]
        ckpt_ids = tuple("ckpt_" + uuid.uuid5(_NS, f"{jid}:{c.index}").hex[:16]
                         for c in timeline.checkpoints)
        job = Job(platform, jid, name, script, timeline, self.clock(), time.time(),
                  self.workdir / platform / jid, model_id, ckpt_ids)
        with self._lock:
            if (platform, jid) in self._jobs:
                raise ValueError(f"{platform} job {jid} already exists")
            self._jobs[(platform, jid)] = job
        return jid

    def job(self, platform: PlatformName, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get((platform, job_id))

    def jobs(self, platform: PlatformName) -> list[Job]:
        """The platform's jobs in the order they were added."""
        with self._lock:
            return [j for (p, _), j in self._jobs.items() if p == platform]

    def _any_job(self, job_id: str) -> Job:
        platforms: tuple[PlatformName, ...] = ("axom", "tensorone")
        for platform in platforms:
            job = self.job(platform, job_id)
            if job is not None:
                return job
        raise KeyError(f"no job {job_id}")

    def elapsed(self, job: Job) -> float:
        """Seconds of (accelerated) run time since the job was added."""
        return max(0.0, self.clock() - job.created_clock)

    def axom_model_id(self, job_id: str) -> str:
        job = self.job("axom", job_id)
        if job is None:
            raise KeyError(f"no axom job {job_id}")
        return job.model_id

    def expected_params(self, job_id: str) -> int:
        """The exact parameter count of the job's checkpoint (generating it if needed)."""
        return self.prepare_job(self._any_job(job_id)).params

    def prepare(self, job_id: str) -> None:
        """Generate the job's files and store them now (else it happens on first need)."""
        self.prepare_job(self._any_job(job_id))

    def prepare_job(self, job: Job) -> GeneratedCheckpoint:
        """Generate once (per-job lock: concurrent callers wait for the first) and store."""
        with job.lock:
            if job.generated is None:
                s = job.script
                shards = s.shards if job.platform == "axom" else 1
                gen = generate_checkpoint(job.workdir, total_bytes=s.model_bytes,
                                          shards=shards, seed=s.seed)
                for rel in gen.files:
                    if job.platform == "axom":
                        self.storage.put_file(f"{job.model_id}/{rel}", job.workdir / rel)
                    elif rel == "model.safetensors":
                        # every checkpoint of the job serves the same file (same architecture)
                        for cid in job.checkpoint_ids:
                            self.storage.put_file(self.checkpoint_key(job, cid),
                                                  job.workdir / rel)
                job.generated = gen
            return job.generated

    async def prepare_async(self, job: Job) -> GeneratedCheckpoint:
        """`prepare_job` off the event loop: generating a big model must not stall answers."""
        if job.generated is not None:
            return job.generated
        return await asyncio.get_running_loop().run_in_executor(None, self.prepare_job, job)

    def checkpoint_key(self, job: Job, checkpoint_id: str) -> str:
        return f"tensorone/{job.job_id}/{checkpoint_id}/model.safetensors"

    def presign(self, key: str, *, style: str) -> str:
        if not self.storage_base_url:
            raise RuntimeError("storage_base_url is not set: serve the storage app first")
        return self.storage.presign(key, lifetime=self.url_lifetime,
                                    base_url=self.storage_base_url,
                                    style=self.url_style or style)

    # --- faults and rate limit -------------------------------------------------------------
    def inject_api(self, platform: Literal["axom", "tensorone"], path_prefix: str,
                   fault: ApiFault, *, times: int = 1) -> None:
        """Apply `fault` to the next `times` requests of `platform` whose path starts with
        `path_prefix` (the full path, e.g. "/api/jobs/" or "/v2/training/")."""
        self.faults.arm(platform, path_prefix, fault, times=times)

    def reset_rate_limit(self) -> None:
        with self._lock:
            self._rate_used = 0
            self._rate_window_end = None

    def rate_take(self) -> tuple[bool, dict[str, str], int]:
        """Count one TensorOne request: (allowed, X-RateLimit-* headers, seconds to reset)."""
        with self._lock:
            now = self.clock()
            if self._rate_window_end is None or now >= self._rate_window_end:
                self._rate_window_end = now + self.tensorone_rate_window
                self._rate_used = 0
            allowed = self._rate_used < self.tensorone_rate_limit
            if allowed:
                self._rate_used += 1
            return allowed, *self._rate_headers(now)

    def rate_peek(self) -> dict[str, str]:
        """The current X-RateLimit-* headers without counting a request."""
        with self._lock:
            now = self.clock()
            if self._rate_window_end is not None and now >= self._rate_window_end:
                self._rate_window_end = None
                self._rate_used = 0
            return self._rate_headers(now)[0]

    def _rate_headers(self, now: float) -> tuple[dict[str, str], int]:
        end = self._rate_window_end if self._rate_window_end is not None else (
            now + self.tensorone_rate_window)
        left = max(0, math.ceil(end - now))
        headers = {
            "X-RateLimit-Limit": str(self.tensorone_rate_limit),
            "X-RateLimit-Remaining": str(max(0, self.tensorone_rate_limit - self._rate_used)),
            "X-RateLimit-Reset": str(math.ceil(time.time() + left)),
            "X-RateLimit-Window": str(self.tensorone_rate_window),
        }
        return headers, left

    # --- the app ---------------------------------------------------------------------------
    def api_app(self) -> web.Application:
        """A fresh app serving both APIs: Axom under /api, TensorOne under /v2."""
        app = web.Application(middlewares=[self._middleware])
        axom_api.add_routes(app, self, AXOM_PREFIX)
        tensorone_api.add_routes(app, self, TENSORONE_PREFIX)
        return app

    @web.middleware
    async def _middleware(
        self, request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        path = request.rel_url.path
        platform: PlatformName
        if path == TENSORONE_PREFIX or path.startswith(TENSORONE_PREFIX + "/"):
            platform = "tensorone"
        else:
            platform = "axom"
        rec = ApiRequest(platform, request.method, path, dict(request.rel_url.query),
                         CIMultiDict(request.headers))
        self.api_requests.append(rec)
        api = axom_api if platform == "axom" else tensorone_api
        resp = await self._answer(request, handler, platform, api)
        rec.status = resp.status
        return resp

    async def _answer(
        self, request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        platform: PlatformName, api: Any,
    ) -> web.StreamResponse:
        fault = self.faults.take(platform, request.rel_url.path)
        rate_headers: dict[str, str] = self.rate_peek() if platform == "tensorone" else {}
        if fault is not None and fault.kind != "wrong_shape":
            resp = _fault_response(fault, api)
            resp.headers.update(rate_headers)
            return resp
        key = self.axom_key if platform == "axom" else self.tensorone_key
        if not _bearer_is(request, key, api.KEY_PREFIX):
            denied: web.Response = api.unauthorized()
            denied.headers.update(rate_headers)
            return denied
        if platform == "tensorone":
            allowed, rate_headers, left = self.rate_take()
            if not allowed:
                resp = tensorone_api.rate_limited(rate_headers, left)
                resp.headers.update(rate_headers)
                return resp
        answer: web.StreamResponse
        try:
            answer = await handler(request)
        except web.HTTPException as exc:  # unknown route or method: the platform's error shape
            answer = api.error_response(exc.status, exc.reason)
        if fault is not None and isinstance(answer, web.Response) and answer.status == 200:
            answer = _mangle(answer)
        answer.headers.update(rate_headers)
        return answer


def _bearer_is(request: web.Request, key: str, prefix: str) -> bool:
    """Whether the request carries ``Authorization: Bearer <key>`` (with the platform's key
    prefix, so a key of the other platform is refused like a wrong one)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return scheme.lower() == "bearer" and token.startswith(prefix) and token == key


def _fault_response(fault: ApiFault, api: Any) -> web.Response:
    if fault.kind == "status":
        if fault.body is not None:
            resp = web.Response(status=fault.code, body=fault.body,
                                content_type="application/json")
        else:
            resp = api.error_response(fault.code, None)
        if fault.retry_after is not None:
            resp.headers["Retry-After"] = fault.retry_after
        return resp
    if fault.kind == "malformed":
        return web.Response(status=200, body=b'{"id": "3f2c9a1e-77b0-4',
                            content_type="application/json")
    assert fault.location is not None
    return web.Response(status=fault.code, headers={"Location": fault.location})


def _mangle(resp: web.Response) -> web.Response:
    """The same answer with a required field missing (or an object where a list goes)."""
    import json

    assert isinstance(resp.body, bytes)
    data = json.loads(resp.body)
    if isinstance(data, dict):
        data.pop(next(iter(data)), None)  # the first field is the required id / list
    else:
        data = {"items": data}
    out = web.json_response(data, status=resp.status)
    for name, value in resp.headers.items():
        if name.lower().startswith("x-"):
            out.headers[name] = value
    return out


class ThreadedPlatforms:
    """Serve `emu`'s storage and API apps on two loopback ports from background threads.

    ``with ThreadedPlatforms(emu) as tp: subprocess.run([...], env={**os.environ, **tp.env()})``
    """

    def __init__(self, emu: PlatformEmulator) -> None:
        self.emu = emu
        self._storage = ThreadedServer(emu.storage.make_app())
        self._api = ThreadedServer(emu.api_app())
        self.axom_base = ""
        self.tensorone_base = ""
        self.storage_base = ""

    def start(self) -> ThreadedPlatforms:
        self._storage.start()
        try:
            self.storage_base = self._storage.base_url
            self.emu.storage_base_url = self.storage_base
            self._api.start()
        except BaseException:
            self._storage.stop()
            raise
        self.axom_base = self._api.base_url + AXOM_PREFIX
        self.tensorone_base = self._api.base_url + TENSORONE_PREFIX
        return self

    def stop(self) -> None:
        self._api.stop()
        self._storage.stop()

    @property
    def endpoints(self) -> PlatformEndpoints:
        return PlatformEndpoints(self.emu, self.axom_base, self.tensorone_base,
                                 self.storage_base)

    def env(self) -> dict[str, str]:
        return _env(self.emu, self.axom_base, self.tensorone_base)

    def __enter__(self) -> ThreadedPlatforms:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
