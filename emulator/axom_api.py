"""The emulated Axom Fusion Training Console API (shapes from shared/platform-apis.md).

Routes (under the `/api` prefix, Bearer `axom_live_…` on every one):

- `GET /jobs/{id}`: `{"id", "name", "status", "step", "total_steps", "progress", "retries",
  "error", "base_model_id", "model_id" (once completed, else null), "created_at", "updated_at",
  "started_at", "finished_at", "config"}`
- `GET /jobs/{id}/metrics?since_step=N`, `/logs?since=SEQ`, `/events`
- `GET /jobs/{id}/result`: 404 until completed
- `GET /models` (completed jobs' models, newest first), `GET /models/{id}/download`

Errors are FastAPI-shaped: `{"detail": "<message>"}`, or a list of objects for 422.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web

from weightlift.emulator.runs import iso

if TYPE_CHECKING:
    from weightlift.emulator.platforms import Job, PlatformEmulator

KEY_PREFIX = "axom_live_"
_REASONS = {400: "Bad Request", 401: "Invalid or missing API key",
            403: "API key lacks the required scope", 404: "Not Found",
            405: "Method Not Allowed", 409: "Conflict", 429: "Too Many Requests",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Timeout"}
GPUS = 8
TOKENS_PER_STEP = 8 * 2048 * 8  # 8 GPUs x batch 8 x 2048 tokens
GPU_HOUR_USD = 2.49


def error_response(status: int, message: str | None) -> web.Response:
    detail = message or _REASONS.get(status, "Error")
    return web.json_response({"detail": detail}, status=status)


def unauthorized() -> web.Response:
    resp = error_response(401, "Invalid or missing API key")
    resp.headers["WWW-Authenticate"] = "Bearer"
    return resp


def add_routes(app: web.Application, emu: PlatformEmulator, prefix: str) -> None:
    api = _AxomApi(emu)
    app.router.add_get(prefix + "/jobs/{job_id}", api.job)
    app.router.add_get(prefix + "/jobs/{job_id}/metrics", api.metrics)
    app.router.add_get(prefix + "/jobs/{job_id}/logs", api.logs)
    app.router.add_get(prefix + "/jobs/{job_id}/events", api.events)
    app.router.add_get(prefix + "/jobs/{job_id}/result", api.result)
    app.router.add_get(prefix + "/models", api.models)
    app.router.add_get(prefix + "/models/{model_id}/download", api.download)


def _int_query(request: web.Request, name: str) -> int | web.Response:
    """The non-negative integer query parameter `name` (0 when absent), or a 422 answer."""
    raw = request.rel_url.query.get(name)
    if raw is None or raw == "":
        return 0
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        return web.json_response({"detail": [{
            "loc": ["query", name], "msg": "value is not a valid non-negative integer",
            "type": "type_error.integer", "input": raw}]}, status=422)
    return value


class _AxomApi:
    def __init__(self, emu: PlatformEmulator) -> None:
        self.emu = emu

    def _job(self, request: web.Request) -> Job:
        if "read" not in self.emu.axom_scopes:
            raise _Forbidden("API key lacks the 'read' scope")
        job_id = request.match_info["job_id"]
        job = self.emu.job("axom", job_id)
        if job is None:
            raise _NotFound(f"Job not found: {job_id}")
        return job

    # --- runs ------------------------------------------------------------------------------
    async def job(self, request: web.Request) -> web.Response:
        try:
            job = self._job(request)
        except _Refused as nf:
            return error_response(nf.status, str(nf))
        t = self.emu.elapsed(job)
        tl = job.timeline
        st = tl.state(t)
        events = tl.events_at(t)
        s = job.script
        return web.json_response({
            "id": job.job_id,
            "name": job.name,
            "status": st.status,
            "step": st.step,
            "total_steps": s.total_steps,
            "progress": round(st.step / s.total_steps, 4),
            "retries": st.retries,
            "error": st.error,
            "base_model_id": "meta-llama/Meta-Llama-3-8B",
            "model_id": job.model_id if st.status == "completed" else None,
            "created_at": iso(job.created_wall),
            "updated_at": iso(job.wall(events[-1].t if events else 0.0)),
            "started_at": iso(job.wall(st.started_t)) if st.started_t is not None else None,
            "finished_at": iso(job.wall(st.finished_t)) if st.finished_t is not None else None,
            "config": {"total_steps": s.total_steps, "checkpoint_every": s.checkpoint_every,
                       "learning_rate": 2e-4, "gpus": GPUS, "seed": s.seed},
        })

    async def metrics(self, request: web.Request) -> web.Response:
        try:
            job = self._job(request)
        except _Refused as nf:
            return error_response(nf.status, str(nf))
        since = _int_query(request, "since_step")
        if isinstance(since, web.Response):
            return since
        seen = job.timeline.points_at(self.emu.elapsed(job))
        # after a requeue steps are replayed; the latest cycle's point for a step wins
        by_step = {p.step: p for p in seen}
        new = [by_step[k] for k in sorted(by_step) if k > since]
        return web.json_response({
            "job_id": job.job_id,
            "count": len(new),
            "latest_step": max(by_step, default=0),
            "points": [{"ts": iso(job.wall(p.t)), "step": p.step, "cycle": p.cycle,
                        "phase": p.phase, "loss": p.loss, "lr": p.lr,
                        "throughput": p.throughput, "vram_gb": p.vram_gb,
                        "grad_norm": p.grad_norm} for p in new],
        })

    async def logs(self, request: web.Request) -> web.Response:
        try:
            job = self._job(request)
        except _Refused as nf:
            return error_response(nf.status, str(nf))
        since = _int_query(request, "since")
        if isinstance(since, web.Response):
            return since
        lines = job.timeline.logs_at(self.emu.elapsed(job))
        return web.json_response({
            "job_id": job.job_id,
            "latest_seq": lines[-1].seq if lines else 0,
            "lines": [{"seq": g.seq, "ts": iso(job.wall(g.t)), "stream": g.stream,
                       "text": g.text} for g in lines if g.seq > since],
        })

    async def events(self, request: web.Request) -> web.Response:
        try:
            job = self._job(request)
        except _Refused as nf:
            return error_response(nf.status, str(nf))
        return web.json_response([
            {"ts": iso(job.wall(e.t)), "kind": e.kind, "payload": e.payload}
            for e in job.timeline.events_at(self.emu.elapsed(job))])

    async def result(self, request: web.Request) -> web.Response:
        try:
            job = self._job(request)
        except _Refused as nf:
            return error_response(nf.status, str(nf))
        t = self.emu.elapsed(job)
        st = job.timeline.state(t)
        if st.status != "completed":
            return error_response(
                404, f"Result not available: job {job.job_id} is {st.status}")
        gen = await self.emu.prepare_async(job)
        tl = job.timeline
        before = gen.params * 4 // 5  # Fusion grows the base model by a quarter
        ppl_base = 12.41
        loss = tl.final_loss if tl.final_loss is not None else 1.0
        ppl_final = round(ppl_base * (0.62 + 0.1 * loss / 2.5), 3)
        gpu_seconds = round(tl.running_seconds(t) * GPUS, 2)
        return web.json_response({
            "job_id": job.job_id,
            "ppl_baseline": ppl_base,
            "ppl_final": ppl_final,
            "ppl_delta_pct": round(100 * (ppl_final - ppl_base) / ppl_base, 2),
            "loss_final": loss,
            "params_before": before,
            "params_after": gen.params,
            "params_delta": gen.params - before,
            "function_preservation": 0.987,
            "gpu_seconds": gpu_seconds,
            "tokens_processed": job.script.total_steps * TOKENS_PER_STEP,
            "cost_usd": round(gpu_seconds / 3600 * GPU_HOUR_USD, 4),
        })

    # --- models ----------------------------------------------------------------------------
    def _completed(self) -> list[Job]:
        done = [j for j in self.emu.jobs("axom")
                if j.timeline.state(self.emu.elapsed(j)).status == "completed"]
        order = {id(j): n for n, j in enumerate(done)}
        # newest first: by completion time, later-added first on ties
        return sorted(done, key=lambda j: (j.wall(j.timeline.end_t), order[id(j)]),
                      reverse=True)

    async def _model_entry(self, job: Job) -> dict[str, Any]:
        gen = await self.emu.prepare_async(job)
        return {"id": job.model_id, "name": f"{job.name}-fused", "version": "1",
                "params": gen.params, "base_model_id": "meta-llama/Meta-Llama-3-8B",
                "lineage": {"job_id": job.job_id, "step": job.script.total_steps},
                "status": "ready", "created_at": iso(job.wall(job.timeline.end_t))}

    async def models(self, request: web.Request) -> web.Response:
        if "read" not in self.emu.axom_scopes:
            return error_response(403, "API key lacks the 'read' scope")
        return web.json_response([await self._model_entry(j) for j in self._completed()])

    async def download(self, request: web.Request) -> web.Response:
        if "models" not in self.emu.axom_scopes:
            return error_response(403, "API key lacks the 'models' scope")
        model_id = request.match_info["model_id"]
        job = next((j for j in self._completed() if j.model_id == model_id), None)
        if job is None:
            return error_response(404, f"Model not found: {model_id}")
        gen = await self.emu.prepare_async(job)
        files = []
        for rel in gen.files:
            key = f"{job.model_id}/{rel}"
            entry: dict[str, Any] = {"rel": rel, "size": self.emu.storage.size(key),
                                     "url": self.emu.presign(key, style="s3v4")}
            if self.emu.manifest_sha256:  # of the object as stored now (a replace changes it)
                entry["sha256"] = await asyncio.to_thread(self.emu.storage.sha256, key)
            files.append(entry)
        return web.json_response({"model_id": job.model_id, "name": f"{job.name}-fused",
                                  "version": "1", "files": files})


class _Refused(Exception):
    """A job route's early answer: the message becomes `detail`."""

    status = 400


class _NotFound(_Refused):
    status = 404


class _Forbidden(_Refused):
    status = 403
