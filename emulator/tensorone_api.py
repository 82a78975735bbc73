"""The emulated TensorOne training API (shapes from shared/platform-apis.md).

Routes (under the `/v2` prefix, Bearer `tpo_…`; rate-limit headers on every answer):

- `GET /training/jobs/{jobId}?includeMetrics=true&includeLogs=false&logLines=100`. Besides the
  documented fields: `logs` (with includeLogs) is `[{"lineNumber", "timestamp", "level",
  "message"}]`, the last `logLines` lines; `error` is null, or `{"code", "message"}` once the
  job failed or was cancelled.
- `GET /training/jobs/{jobId}/checkpoints?includeMetrics&sortBy&sortOrder&limit`
- `GET /training/models?trainingJobId=…` (a job's model appears once it completed)

Errors: `{"error", "message", "code", "details", "request_id", "timestamp"}`.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from weightlift.emulator.runs import Checkpoint, iso

if TYPE_CHECKING:
    from weightlift.emulator.platforms import Job, PlatformEmulator

KEY_PREFIX = "tpo_"
MAX_LOG_LINES = 1000
TOTAL_EPOCHS = 3
_CODES = {400: "VALIDATION_ERROR", 401: "UNAUTHORIZED", 403: "FORBIDDEN",
          404: "RESOURCE_NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 409: "STATE_CONFLICT",
          422: "UNPROCESSABLE_ENTITY", 429: "RATE_LIMIT_EXCEEDED", 500: "INTERNAL_ERROR",
          502: "BAD_GATEWAY", 503: "SERVICE_UNAVAILABLE", 504: "GATEWAY_TIMEOUT"}
_MESSAGES = {401: "Invalid or missing API key", 403: "API key lacks permission",
             404: "Resource not found", 429: "Rate limit exceeded",
             500: "Internal server error", 502: "Bad gateway",
             503: "Service temporarily unavailable"}
_SORT_KEYS = ("createdAt", "step", "epoch", "loss", "validationLoss")


def error_response(status: int, message: str | None,
                   details: dict[str, Any] | None = None) -> web.Response:
    return web.json_response({
        "error": _CODES.get(status, "ERROR"),
        "message": message or _MESSAGES.get(status, "Request failed"),
        "code": status,
        "details": details or {},
        "request_id": "req_" + secrets.token_hex(8),
        "timestamp": iso(time.time()),
    }, status=status)


def unauthorized() -> web.Response:
    return error_response(401, "Invalid or missing API key",
                          {"hint": "send Authorization: Bearer tpo_..."})


def rate_limited(headers: dict[str, str], retry_after: int) -> web.Response:
    resp = error_response(429, "Rate limit exceeded", {
        "limit": int(headers["X-RateLimit-Limit"]),
        "remaining": int(headers["X-RateLimit-Remaining"]),
        "reset_at": int(headers["X-RateLimit-Reset"]),
        "retry_after": retry_after})
    resp.headers["Retry-After"] = str(retry_after)
    return resp


def human_size(n: int) -> str:
    """Bytes as TensorOne prints them: "2.1MB", "27.6GB" (decimal units)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n}B"


def add_routes(app: web.Application, emu: PlatformEmulator, prefix: str) -> None:
    api = _TensorOneApi(emu)
    app.router.add_get(prefix + "/training/jobs/{job_id}", api.job)
    app.router.add_get(prefix + "/training/jobs/{job_id}/checkpoints", api.checkpoints)
    app.router.add_get(prefix + "/training/models", api.models)


class _Invalid(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _bool(request: web.Request, name: str, default: bool) -> bool:
    raw = request.rel_url.query.get(name)
    if raw is None:
        return default
    low = raw.lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise _Invalid(name, f"{name} must be true or false")


def _int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.rel_url.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _Invalid(name, f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise _Invalid(name, f"{name} must be between {lo} and {hi}")
    return value


def _invalid(exc: _Invalid) -> web.Response:
    return error_response(400, exc.args[0], {"field": exc.field})


def _epoch(step: int, total: int) -> int:
    """The epoch a step belongs to (1-based; the last step of an epoch still counts to it)."""
    return max(1, min(TOTAL_EPOCHS, math.ceil(step * TOTAL_EPOCHS / total)))


class _TensorOneApi:
    def __init__(self, emu: PlatformEmulator) -> None:
        self.emu = emu

    def _job(self, job_id: str) -> Job | web.Response:
        job = self.emu.job("tensorone", job_id)
        if job is None:
            return error_response(404, f"Training job not found: {job_id}",
                                  {"resource": "training_job", "id": job_id})
        return job

    async def _checkpoint_entries(self, job: Job, t: float,
                                  include_metrics: bool) -> list[dict[str, Any]]:
        marks = job.timeline.checkpoints_at(t)
        if not marks:
            return []
        gen = await self.emu.prepare_async(job)
        size = human_size(self.emu.storage.size(
            self.emu.checkpoint_key(job, job.checkpoint_ids[0])) if gen.files else 0)
        return [self._checkpoint(job, c, size, include_metrics) for c in marks]

    def _checkpoint(self, job: Job, c: Checkpoint, size: str,
                    include_metrics: bool) -> dict[str, Any]:
        cid = job.checkpoint_ids[c.index - 1]
        entry: dict[str, Any] = {
            "checkpointId": cid,
            "name": f"{job.name}-step-{c.step}" + ("-final" if c.kind == "final" else ""),
            "epoch": _epoch(c.step, job.script.total_steps),
            "step": c.step,
            "size": size,
            "type": c.kind,
            "downloadUrl": self.emu.presign(self.emu.checkpoint_key(job, cid), style="expires"),
            "deployable": c.kind == "final",
            "createdAt": iso(job.wall(c.t)),
        }
        if include_metrics:
            entry["metrics"] = {"loss": c.loss, "validationLoss": c.validation_loss}
        return entry

    async def job(self, request: web.Request) -> web.Response:
        found = self._job(request.match_info["job_id"])
        if isinstance(found, web.Response):
            return found
        job = found
        try:
            include_metrics = _bool(request, "includeMetrics", True)
            include_logs = _bool(request, "includeLogs", False)
            log_lines = _int(request, "logLines", 100, 1, MAX_LOG_LINES)
        except _Invalid as exc:
            return _invalid(exc)
        t = self.emu.elapsed(job)
        tl = job.timeline
        st = tl.state(t)
        s = job.script
        points = tl.points_at(t)
        last = points[-1] if points else None
        events = tl.events_at(t)
        eta = tl.eta_seconds(t)
        gpu_s = tl.running_seconds(t) * 8
        body: dict[str, Any] = {
            "jobId": job.job_id,
            "name": job.name,
            "status": st.status,
            "progress": {
                "currentEpoch": _epoch(st.step, s.total_steps) if st.step else 0,
                "totalEpochs": TOTAL_EPOCHS,
                "currentStep": st.step,
                "totalSteps": s.total_steps,
                "percentComplete": round(100.0 * st.step / s.total_steps, 1),
                "estimatedTimeRemaining": None if st.terminal else _human_eta(eta),
            },
            "metrics": None,
            "resourceUsage": {
                "gpuUtilization": [97.5, 96.8, 98.1, 97.2] if st.status == "running"
                else [0.0, 0.0, 0.0, 0.0],
                "memoryUsage": {"gpuMemory": [last.vram_gb if last else 0.0] * 4,
                                "systemMemory": 61.3},
                "storageUsage": human_size(len(tl.checkpoints_at(t)) * s.model_bytes),
            },
            "configuration": {"baseModel": "mistralai/Mistral-7B-v0.1", "method": "lora",
                              "totalSteps": s.total_steps, "learningRate": 2e-4,
                              "checkpointEvery": s.checkpoint_every, "seed": s.seed},
            "checkpoints": [{k: v for k, v in c.items() if k != "downloadUrl"}
                            for c in await self._checkpoint_entries(job, t, True)],
            "costs": {"currentCost": round(gpu_s / 3600 * 2.1, 4),
                      "estimatedTotalCost": round(tl.running_seconds(tl.end_t) * 8 / 3600
                                                  * 2.1, 4),
                      "costBreakdown": {"compute": round(gpu_s / 3600 * 2.1, 4),
                                        "storage": 0.0}},
            "timestamps": {
                "createdAt": iso(job.created_wall),
                "startedAt": iso(job.wall(st.started_t)) if st.started_t is not None else None,
                "lastUpdated": iso(job.wall(events[-1].t if events else 0.0)),
                "completedAt": iso(job.wall(st.finished_t))
                if st.finished_t is not None else None,
            },
            "error": {"code": "CANCELLED" if st.status == "cancelled" else "TRAINING_FAILED",
                      "message": st.error} if st.error else None,
        }
        if include_metrics and last is not None:
            body["metrics"] = {
                "loss": last.loss, "accuracy": round(max(0.0, 1.0 - last.loss / 3.2), 4),
                "validationLoss": round(last.loss * 1.04 + 0.01, 5),
                "validationAccuracy": round(max(0.0, 1.0 - last.loss * 1.04 / 3.2), 4),
                "learningRate": last.lr,
                "gradNorm": last.grad_norm,
                "throughput": {"samplesPerSecond": last.samples_per_second,
                               "tokensPerSecond": last.throughput,
                               "stepTime": last.step_time},
            }
        if include_logs:
            lines = tl.logs_at(t)[-log_lines:]
            body["logs"] = [{"lineNumber": g.seq, "timestamp": iso(job.wall(g.t)),
                             "level": "ERROR" if g.stream == "stderr" else "INFO",
                             "message": g.text} for g in lines]
        return web.json_response(body)

    async def checkpoints(self, request: web.Request) -> web.Response:
        found = self._job(request.match_info["job_id"])
        if isinstance(found, web.Response):
            return found
        job = found
        q = request.rel_url.query
        try:
            include_metrics = _bool(request, "includeMetrics", True)
            limit = _int(request, "limit", 10, 1, 100)
            sort_by = q.get("sortBy", "createdAt")
            if sort_by not in _SORT_KEYS:
                raise _Invalid("sortBy", f"sortBy must be one of {', '.join(_SORT_KEYS)}")
            order = q.get("sortOrder", "desc").lower()
            if order not in ("asc", "desc"):
                raise _Invalid("sortOrder", "sortOrder must be asc or desc")
        except _Invalid as exc:
            return _invalid(exc)
        t = self.emu.elapsed(job)
        marks = job.timeline.checkpoints_at(t)
        entries = await self._checkpoint_entries(job, t, True)
        key_of: Callable[[Checkpoint], float] = {
            "createdAt": lambda c: c.t, "step": lambda c: c.step,
            "epoch": lambda c: _epoch(c.step, job.script.total_steps),
            "loss": lambda c: c.loss, "validationLoss": lambda c: c.validation_loss}[sort_by]
        ranked = sorted(zip(marks, entries, strict=True),
                        key=lambda ce: (key_of(ce[0]), ce[0].index), reverse=order == "desc")
        listed = [e for _, e in ranked[:limit]]
        if not include_metrics:
            for e in listed:
                e.pop("metrics", None)
        best = min(zip(marks, entries, strict=True), key=lambda ce: ce[0].validation_loss,
                   default=None)
        latest = entries[-1] if entries else None
        unit = self.emu.storage.size(self.emu.checkpoint_key(job, job.checkpoint_ids[0])) \
            if marks else 0
        return web.json_response({
            "checkpoints": listed,
            "totalCount": len(entries),
            "summary": {
                "bestCheckpoint": None if best is None else {
                    "checkpointId": best[1]["checkpointId"], "step": best[0].step,
                    "validationLoss": best[0].validation_loss},
                "latestCheckpoint": None if latest is None else {
                    "checkpointId": latest["checkpointId"], "createdAt": latest["createdAt"]},
                "totalSize": human_size(unit * len(entries)),
            },
        })

    async def models(self, request: web.Request) -> web.Response:
        wanted = request.rel_url.query.get("trainingJobId")
        out = []
        for job in reversed(self.emu.jobs("tensorone")):
            if wanted is not None and job.job_id != wanted:
                continue
            t = self.emu.elapsed(job)
            if job.timeline.state(t).status != "completed":
                continue
            gen = await self.emu.prepare_async(job)
            size = self.emu.storage.size(self.emu.checkpoint_key(job, job.checkpoint_ids[-1]))
            last = job.timeline.checkpoints[-1]
            out.append({
                "id": job.model_id, "name": f"{job.name}-final", "type": "fine-tuned",
                "status": "ready", "baseModel": "mistralai/Mistral-7B-v0.1", "version": "1.0",
                "trainingJobId": job.job_id, "checkpointId": job.checkpoint_ids[-1],
                "size": {"parameters": gen.params, "bytes": size,
                         "compressed": int(size * 0.93)},
                "metrics": {"loss": last.loss, "validationLoss": last.validation_loss},
                "createdAt": iso(job.wall(job.timeline.end_t)),
            })
        return web.json_response({"models": out, "total": len(out)})


def _human_eta(seconds: float) -> str:
    if seconds < 60:
        return f"{max(1, round(seconds))}s"
    if seconds < 3600:
        return f"{round(seconds / 60)}m"
    return f"{int(seconds // 3600)}h{round(seconds % 3600 / 60)}m"
