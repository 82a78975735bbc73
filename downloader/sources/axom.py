"""Axom Labs (Fusion Training Console): response models, a client with one method per
endpoint, SOURCE resolution (jobs and models to manifests) and the run follower.

Models tolerate extra and missing optional fields (real answers drift from docs). Turning
answers into `RunSnapshot`s is pure (`axom_snapshot`), so it is tested with hand-made values.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, TypeAdapter

from weightlift.downloader.errors import PlatformError, UsageError
from weightlift.downloader.manifest import Manifest, validate_manifest
from weightlift.downloader.resolver import RefreshFn
from weightlift.downloader.sources.api_session import ApiNotFound, ApiSession
from weightlift.downloader.sources.local import ResolvedSource
from weightlift.downloader.sources.platform_uri import PlatformRef
from weightlift.downloader.sources.run_status import LogLine, MetricPoint, Phase, RunSnapshot

__all__ = [
    "AxomClient",
    "AxomEvent",
    "AxomFollower",
    "AxomJob",
    "AxomLogs",
    "AxomMetrics",
    "AxomModel",
    "AxomResult",
    "axom_phase",
    "axom_snapshot",
    "resolve_axom",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class AxomJob(_Model):
    """GET /jobs/{id}. Only `status` is required; progress fields have no documented name,
    so the common spellings are accepted."""

    id: str | None = Field(default=None, validation_alias=AliasChoices("id", "job_id"))
    name: str | None = None
    status: str
    error: str | None = None
    retries: int | None = None
    step: int | None = Field(default=None, validation_alias=AliasChoices(
        "step", "current_step", "currentStep"))
    total_steps: int | None = Field(default=None, validation_alias=AliasChoices(
        "total_steps", "max_steps", "totalSteps"))
    created_at: str | None = None


class AxomMetricPoint(_Model):
    step: int
    ts: str | None = None
    cycle: int | None = None
    phase: str | None = None
    loss: float | None = None
    lr: float | None = None
    throughput: float | None = None
    vram_gb: float | None = None
    grad_norm: float | None = None


class AxomMetrics(_Model):
    job_id: str | None = None
    count: int | None = None
    latest_step: int | None = None
    points: list[AxomMetricPoint] = []


class AxomLogLine(_Model):
    seq: int
    text: str
    ts: str | None = None
    stream: str | None = None


class AxomLogs(_Model):
    job_id: str | None = None
    latest_seq: int | None = None
    lines: list[AxomLogLine] = []


class AxomEvent(_Model):
    kind: str
    ts: str | None = None
    payload: dict[str, Any] = {}


class AxomResult(_Model):
    params_after: int
    job_id: str | None = None
    params_before: int | None = None
    params_delta: int | None = None
    loss_final: float | None = None
    ppl_final: float | None = None


class AxomLineage(_Model):
    job_id: str | None = None


class AxomModel(_Model):
    id: str
    name: str | None = None
    version: str | None = None
    params: int | None = None
    base_model_id: str | None = None
    lineage: AxomLineage | None = None
    status: str | None = None
    created_at: str | None = None


_JOB = TypeAdapter(AxomJob)
_METRICS = TypeAdapter(AxomMetrics)
_LOGS = TypeAdapter(AxomLogs)
_EVENTS = TypeAdapter(list[AxomEvent])
_RESULT = TypeAdapter(AxomResult)
_MODELS = TypeAdapter(list[AxomModel])


def _seg(value: str) -> str:
    """An id as one path segment, whatever it contains (ids may come from API answers)."""
    return quote(value, safe="")


class AxomClient:
    """One method per Axom endpoint weightlift uses; `session` is open and keyed for Axom."""

    def __init__(self, session: ApiSession) -> None:
        self.session = session

    async def job(self, job_id: str) -> AxomJob:
        return await self.session.get(f"/jobs/{_seg(job_id)}", _JOB, what=f"job {job_id}")

    async def metrics(self, job_id: str, since_step: int | None = None) -> AxomMetrics:
        params = {} if since_step is None else {"since_step": since_step}
        return await self.session.get(f"/jobs/{_seg(job_id)}/metrics", _METRICS,
                                      what=f"job {job_id}", params=params)

    async def logs(self, job_id: str, since: int | None = None) -> AxomLogs:
        params = {} if since is None else {"since": since}
        return await self.session.get(f"/jobs/{_seg(job_id)}/logs", _LOGS,
                                      what=f"job {job_id}", params=params)

    async def events(self, job_id: str) -> list[AxomEvent]:
        return await self.session.get(f"/jobs/{_seg(job_id)}/events", _EVENTS,
                                      what=f"job {job_id}")

    async def result(self, job_id: str) -> AxomResult | None:
        """The run's result, or None while it has none (Axom answers 404 until completion)."""
        try:
            return await self.session.get(f"/jobs/{_seg(job_id)}/result", _RESULT,
                                          what=f"result of job {job_id}")
        except ApiNotFound:
            return None

    async def models(self) -> list[AxomModel]:
        return await self.session.get("/models", _MODELS, what="model list")

    async def download(self, model_id: str) -> Manifest:
        """The model's download manifest (fresh presigned URLs), validated: a hostile manifest
        is refused here (BadManifest), before anything is written."""
        data = await self.session.get_json(f"/models/{_seg(model_id)}/download",
                                           what=f"model {model_id}")
        return validate_manifest(data)


# ---------------------------------------------------------------------------------------------
# Sources


def _progress(job: AxomJob) -> str:
    if job.step is None:
        return ""
    return f" (step {job.step}/{job.total_steps})" if job.total_steps else f" (step {job.step})"


async def resolve_axom(client: AxomClient, ref: PlatformRef) -> ResolvedSource:
    """`axom://models/<id>` or `axom://jobs/<id>` → manifest, refresh and expected params."""
    if ref.platform != "axom" or (ref.kind == "model") == (ref.model_id is None):
        raise UsageError(f"not an Axom job or model: {ref}")
    if ref.model_id is not None:
        model_id = ref.model_id
        manifest = await client.download(model_id)
        listed = next((m for m in await client.models() if m.id == model_id), None)
        expected = listed.params if listed is not None else None
        label = _model_label(listed, model_id)
        return ResolvedSource(manifest, _refresher(client, model_id), expected,
                              f"axom://models/{model_id} ({label})")
    if ref.kind != "job" or ref.job_id is None:
        raise UsageError(f"not an Axom job or model: {ref}")
    job_id = ref.job_id
    job = await client.job(job_id)
    if job.status == "failed":
        raise PlatformError(f"Axom job {job_id} failed: {job.error or 'no reason given'}",
                            "there is no model to pull")
    if job.status != "completed":
        raise PlatformError(
            f"job {job_id} is {job.status}{_progress(job)}; not completed yet",
            f"weightlift watch axom://jobs/{job_id} --pull -o DIR waits for it",
        )
    result = await client.result(job_id)
    if result is None:
        raise PlatformError(f"job {job_id} is completed but its result is not available yet",
                            "try again in a minute")
    model = next((m for m in await client.models()
                  if m.lineage is not None and m.lineage.job_id == job_id), None)
    if model is None:
        raise PlatformError(f"Axom lists no model produced by job {job_id}",
                            "it may still be registering; try again in a minute")
    manifest = await client.download(model.id)
    return ResolvedSource(manifest, _refresher(client, model.id), result.params_after,
                          f"axom://jobs/{job_id} → {_model_label(model, model.id)}")


def _model_label(model: AxomModel | None, model_id: str) -> str:
    if model is None or not model.name:
        return f"model {model_id}"
    version = model.version or ""
    version = f" v{version}" if version[:1].isdigit() else f" {version}" if version else ""
    return f"model {model.name}{version} ({model_id})"


def _refresher(client: AxomClient, model_id: str) -> RefreshFn:
    async def refresh() -> Manifest:
        return await client.download(model_id)

    return refresh


# ---------------------------------------------------------------------------------------------
# Following a run

_WAITING = frozenset({"queued", "provisioning", "staging", "preempted", "pending", "submitted"})
_RUNNING = frozenset({"running", "checkpointing", "uploading"})


def axom_phase(status: str) -> Phase:
    """The normalised phase of an Axom status word; unknown words count as waiting."""
    if status in _RUNNING:
        return "running"
    if status == "completed":
        return "completed"
    if status == "failed":
        return "failed"
    if status == "cancelled":  # not documented for Axom; honoured if it ever appears
        return "cancelled"
    if status == "paused":
        return "paused"
    return "waiting"


def axom_snapshot(job_id: str, job: AxomJob, points: list[AxomMetricPoint],
                  lines: list[AxomLogLine], *, last_step: int | None = None) -> RunSnapshot:
    """A RunSnapshot from one poll's answers (``points``/``lines``: only the new ones).
    The step is the job's own, else the newest metric point's, else ``last_step``."""
    step = job.step
    if step is None and points:
        step = points[-1].step
    if step is None:
        step = last_step
    phase = axom_phase(job.status)
    error = job.error
    if phase == "failed" and not error:
        error = "the run failed (Axom gave no reason)"
    return RunSnapshot(
        platform="axom",
        job_id=job_id,
        status=job.status,
        phase=phase,
        name=job.name,
        step=step,
        total_steps=job.total_steps,
        retries=job.retries,
        error=error if phase in ("failed", "cancelled") else None,
        new_metrics=tuple(
            MetricPoint(step=p.step, loss=p.loss, lr=p.lr, throughput=p.throughput,
                        grad_norm=p.grad_norm, ts=p.ts) for p in points),
        new_logs=tuple(LogLine(text=ln.text, seq=ln.seq, ts=ln.ts, stream=ln.stream)
                       for ln in lines),
    )


class AxomFollower:
    """Follows one Axom run: each poll asks for the job, the metrics since the last step seen
    and the logs since the last sequence number seen (three requests)."""

    platform = "axom"
    default_interval = 5.0
    requests_per_poll = 3

    def __init__(self, client: AxomClient, job_id: str) -> None:
        self.client = client
        self.job_id = job_id
        self._since_step: int | None = None
        self._since_seq: int | None = None
        # After a preemption the run replays steps from its last checkpoint under a new
        # `cycle`: points are new when (cycle, step) is past the last one shown.
        self._last_point: tuple[int, int] | None = None
        self._last_step: int | None = None

    async def poll(self) -> RunSnapshot:
        job = await self.client.job(self.job_id)
        metrics = await self.client.metrics(self.job_id, self._since_step)
        logs = await self.client.logs(self.job_id, self._since_seq)
        points = self._new_points(metrics)
        lines = self._new_lines(logs)
        snap = axom_snapshot(self.job_id, job, points, lines, last_step=self._last_step)
        self._last_step = snap.step
        return snap

    def min_delay(self) -> float:
        return self.client.session.min_interval(cost=self.requests_per_poll)

    def _new_points(self, metrics: AxomMetrics) -> list[AxomMetricPoint]:
        fresh = []
        for p in metrics.points:
            key = (p.cycle or 0, p.step)
            if self._last_point is None or key > self._last_point:
                fresh.append(p)
                self._last_point = key
        if metrics.latest_step is not None:
            self._since_step = metrics.latest_step
        elif metrics.points:
            self._since_step = max(p.step for p in metrics.points)
        return fresh

    def _new_lines(self, logs: AxomLogs) -> list[AxomLogLine]:
        last = self._since_seq
        fresh = [ln for ln in sorted(logs.lines, key=lambda ln: ln.seq)
                 if last is None or ln.seq > last]
        seqs = [ln.seq for ln in logs.lines]
        if logs.latest_seq is not None:
            seqs.append(logs.latest_seq)
        if seqs:
            self._since_seq = max([*seqs, last if last is not None else -1])
        return fresh
