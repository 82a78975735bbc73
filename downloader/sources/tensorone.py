"""TensorOne: response models, a client with one method per endpoint, SOURCE resolution (a
job's latest checkpoint, or a named one) and the run follower.

A checkpoint is one artifact behind one signed `downloadUrl` that expires; a refresh re-lists
the checkpoints and takes the same checkpoint's fresh URL. Its byte size is not listed (only a
human string like "2.3GB"), so the manifest leaves `size` unknown and the engine probes it.
Rate limits are tight: the follower asks one request per poll and paces itself by the
X-RateLimit-* headers. Snapshot building is pure (`tensorone_snapshot`, `new_log_lines`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, TypeAdapter

from weightlift.downloader.errors import PlatformError, UsageError
from weightlift.downloader.manifest import Manifest, validate_manifest
from weightlift.downloader.resolver import RefreshFn
from weightlift.downloader.sources.api_session import ApiSession
from weightlift.downloader.sources.local import ResolvedSource
from weightlift.downloader.sources.platform_uri import PlatformRef
from weightlift.downloader.sources.run_status import LogLine, MetricPoint, Phase, RunSnapshot

__all__ = [
    "MAX_LOG_LINES",
    "TensorOneCheckpoint",
    "TensorOneCheckpoints",
    "TensorOneClient",
    "TensorOneFollower",
    "TensorOneJob",
    "TensorOneModel",
    "TensorOneModels",
    "checkpoint_manifest",
    "latest_checkpoint",
    "new_log_lines",
    "resolve_tensorone",
    "tensorone_phase",
    "tensorone_snapshot",
]

MAX_LOG_LINES = 1000  # the API refuses more (400 VALIDATION_ERROR)
FOLLOW_LOG_LINES = 200
# Enough to find the newest checkpoint and a named one in one listing; no paging is documented.
CHECKPOINT_LIST_LIMIT = 100


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class TensorOneProgress(_Model):
    currentEpoch: int | None = None
    totalEpochs: int | None = None
    currentStep: int | None = None
    totalSteps: int | None = None
    percentComplete: float | None = None
    estimatedTimeRemaining: str | None = None


class TensorOneThroughput(_Model):
    samplesPerSecond: float | None = None
    tokensPerSecond: float | None = None
    stepTime: float | None = None


class TensorOneMetrics(_Model):
    loss: float | None = None
    accuracy: float | None = None
    validationLoss: float | None = None
    validationAccuracy: float | None = None
    learningRate: float | None = None
    gradNorm: float | None = Field(default=None, validation_alias=AliasChoices(
        "gradNorm", "grad_norm", "gradientNorm"))
    throughput: TensorOneThroughput | None = None


class TensorOneJob(_Model):
    """GET /training/jobs/{id}. `logs` is assumed (undocumented): strings or objects."""

    jobId: str | None = Field(default=None, validation_alias=AliasChoices("jobId", "id"))
    name: str | None = None
    status: str
    progress: TensorOneProgress | None = None
    metrics: TensorOneMetrics | None = None
    logs: list[Any] | None = None
    error: Any = Field(default=None, validation_alias=AliasChoices(
        "error", "errorMessage", "failureReason"))


class TensorOneCheckpoint(_Model):
    checkpointId: str
    name: str | None = None
    epoch: int | None = None
    step: int | None = None
    size: str | None = None
    type: str | None = None
    downloadUrl: str | None = None
    deployable: bool | None = None
    createdAt: str | None = None


class TensorOneCheckpointRef(_Model):
    checkpointId: str | None = None
    createdAt: str | None = None


class TensorOneCheckpointSummary(_Model):
    latestCheckpoint: TensorOneCheckpointRef | None = None
    bestCheckpoint: TensorOneCheckpointRef | None = None
    totalSize: str | None = None


class TensorOneCheckpoints(_Model):
    checkpoints: list[TensorOneCheckpoint]
    totalCount: int | None = None
    summary: TensorOneCheckpointSummary | None = None


class TensorOneModelSize(_Model):
    parameters: int | None = None
    bytes: int | None = None
    compressed: int | None = None


class TensorOneModel(_Model):
    id: str | None = None
    name: str | None = None
    status: str | None = None
    trainingJobId: str | None = None
    size: TensorOneModelSize | None = None


class TensorOneModels(_Model):
    models: list[TensorOneModel]
    total: int | None = None


_JOB = TypeAdapter(TensorOneJob)
_CHECKPOINTS = TypeAdapter(TensorOneCheckpoints)
_MODELS = TypeAdapter(TensorOneModels)


def _seg(value: str) -> str:
    return quote(value, safe="")


class TensorOneClient:
    """One method per TensorOne endpoint weightlift uses; `session` is keyed for TensorOne."""

    def __init__(self, session: ApiSession) -> None:
        self.session = session

    async def job(self, job_id: str, *, include_metrics: bool = True,
                  include_logs: bool = False, log_lines: int = 100) -> TensorOneJob:
        if not 0 < log_lines <= MAX_LOG_LINES:
            raise ValueError(f"log_lines must be within 1..{MAX_LOG_LINES}, not {log_lines}")
        params: dict[str, str | int | bool] = {"includeMetrics": include_metrics,
                                               "includeLogs": include_logs}
        if include_logs:
            params["logLines"] = log_lines
        return await self.session.get(f"/training/jobs/{_seg(job_id)}", _JOB,
                                      what=f"job {job_id}", params=params)

    async def checkpoints(self, job_id: str, *, sort_by: str = "createdAt",
                          sort_order: str = "desc",
                          limit: int = CHECKPOINT_LIST_LIMIT) -> TensorOneCheckpoints:
        params: dict[str, str | int | bool] = {"sortBy": sort_by, "sortOrder": sort_order,
                                               "limit": limit}
        return await self.session.get(f"/training/jobs/{_seg(job_id)}/checkpoints",
                                      _CHECKPOINTS, what=f"job {job_id}", params=params)

    async def models(self, training_job_id: str | None = None) -> TensorOneModels:
        params: dict[str, str | int | bool] = {}
        if training_job_id is not None:
            params["trainingJobId"] = training_job_id
        return await self.session.get("/training/models", _MODELS, what="model list",
                                      params=params)


# ---------------------------------------------------------------------------------------------
# Sources (pure helpers first)


def latest_checkpoint(listing: TensorOneCheckpoints) -> TensorOneCheckpoint | None:
    """The newest checkpoint: the one the summary names, else the highest (step, createdAt)."""
    if not listing.checkpoints:
        return None
    summary = listing.summary
    if summary is not None and summary.latestCheckpoint is not None:
        named = summary.latestCheckpoint.checkpointId
        for c in listing.checkpoints:
            if c.checkpointId == named:
                return c
    return max(listing.checkpoints, key=lambda c: (c.step or -1, c.createdAt or ""))


def checkpoint_manifest(job_id: str, ckpt: TensorOneCheckpoint) -> Manifest:
    """A one-file manifest for a checkpoint; the file is named by the last segment of its URL
    path (or by the checkpoint id), checked like any manifest name. Size unknown: probed."""
    if not ckpt.downloadUrl:
        raise PlatformError(
            f"TensorOne gives no downloadUrl for checkpoint {ckpt.checkpointId} of job {job_id}",
            "it may still be uploading; try again in a minute",
        )
    try:
        path = urlsplit(ckpt.downloadUrl).path
    except ValueError:
        path = ""
    name = unquote(path.rstrip("/").rsplit("/", 1)[-1]) if path else ""
    return validate_manifest({
        "model_id": ckpt.checkpointId,
        "name": ckpt.name,
        "files": [{"rel": name or ckpt.checkpointId, "url": ckpt.downloadUrl}],
    })


def _find(listing: TensorOneCheckpoints, checkpoint_id: str) -> TensorOneCheckpoint | None:
    return next((c for c in listing.checkpoints if c.checkpointId == checkpoint_id), None)


async def resolve_tensorone(client: TensorOneClient, ref: PlatformRef) -> ResolvedSource:
    """`tensorone://jobs/<id>` (latest checkpoint) or `.../checkpoints/<id>` → manifest,
    refresh (same checkpoint, fresh URL) and the job's model's parameter count if known."""
    if ref.platform != "tensorone" or ref.job_id is None or ref.kind == "model":
        raise UsageError(f"not a TensorOne job or checkpoint: {ref}")
    job_id = ref.job_id
    listing = await client.checkpoints(job_id)
    if ref.checkpoint_id is not None:
        ckpt = _find(listing, ref.checkpoint_id)
        if ckpt is None:
            raise PlatformError(f"checkpoint {ref.checkpoint_id} not found in job {job_id}",
                                f"list them: weightlift ls tensorone://jobs/{job_id}")
    else:
        ckpt = latest_checkpoint(listing)
        if ckpt is None:
            job = await client.job(job_id, include_metrics=False)
            raise PlatformError(
                f"TensorOne job {job_id} has no checkpoint yet ({job.status}{_progress(job)})",
                f"weightlift watch tensorone://jobs/{job_id} --pull -o DIR waits for it",
            )
    manifest = checkpoint_manifest(job_id, ckpt)
    models = await client.models(job_id)
    model = next((m for m in models.models if m.trainingJobId == job_id), None)
    expected = model.size.parameters if model is not None and model.size is not None else None
    kind = f" ({ckpt.type})" if ckpt.type else ""
    return ResolvedSource(
        manifest, _refresher(client, job_id, ckpt.checkpointId), expected,
        f"tensorone://jobs/{job_id} → checkpoint {ckpt.checkpointId}{kind} at step {ckpt.step}",
    )


def _refresher(client: TensorOneClient, job_id: str, checkpoint_id: str) -> RefreshFn:
    async def refresh() -> Manifest:
        # Pinned to the checkpoint first resolved: "latest" may have moved on since, and its
        # bytes are not the ones already on disk.
        found = _find(await client.checkpoints(job_id), checkpoint_id)
        if found is None:
            raise PlatformError(
                f"checkpoint {checkpoint_id} of job {job_id} is no longer listed",
                "it was replaced or deleted on TensorOne; pull again",
            )
        return checkpoint_manifest(job_id, found)

    return refresh


def _progress(job: TensorOneJob) -> str:
    p = job.progress
    if p is None or p.currentStep is None:
        return ""
    return f", step {p.currentStep}/{p.totalSteps}" if p.totalSteps else f", step {p.currentStep}"


# ---------------------------------------------------------------------------------------------
# Following a run

_WAITING = frozenset({"queued", "initializing", "pending"})


def tensorone_phase(status: str) -> Phase:
    """The normalised phase of a TensorOne status word; unknown words count as running."""
    if status in _WAITING:
        return "waiting"
    if status == "paused":
        return "paused"
    if status == "completed":
        return "completed"
    if status == "failed":
        return "failed"
    if status == "cancelled":
        return "cancelled"
    return "running"  # running, cancelling (still winding down), and anything new


def _error_text(error: Any) -> str | None:
    """The platform's error text: a string, or the `message` of an error object."""
    if error is None or error == "":
        return None
    if isinstance(error, dict):
        for key in ("message", "detail", "code", "error"):
            if isinstance(error.get(key), str) and error[key]:
                return str(error[key])
    return error if isinstance(error, str) else str(error)


def _log_line(raw: Any) -> LogLine | None:
    if isinstance(raw, str):
        return LogLine(text=raw)
    if not isinstance(raw, dict):
        return None
    text = next((raw[k] for k in ("text", "message", "line", "msg") if isinstance(raw.get(k), str)),
                None)
    if text is None:
        return None
    seq = next((raw[k] for k in ("seq", "lineNumber", "sequence") if k in raw), None)
    ts = raw.get("ts", raw.get("timestamp"))
    stream = raw.get("stream", raw.get("level"))
    return LogLine(text=text, seq=seq if isinstance(seq, int) else None,
                   ts=ts if isinstance(ts, str) else None,
                   stream=stream if isinstance(stream, str) else None)


def parse_log_lines(raw: Sequence[Any] | None) -> list[LogLine]:
    """Log lines from the job's `logs` field, whatever each entry's shape; unknown ones are
    skipped."""
    return [ln for ln in (_log_line(r) for r in raw or ()) if ln is not None]


def _key(line: LogLine) -> tuple[int | None, str | None, str]:
    return line.seq, line.ts, line.text


def new_log_lines(previous: Sequence[LogLine], current: Sequence[LogLine]) -> list[LogLine]:
    """The lines of ``current`` (the API's latest-N window) not shown from ``previous``.

    With sequence numbers: those past the last one seen. Without: the window slid, so the
    longest tail of ``previous`` that starts ``current`` is the overlap; the rest is new.
    """
    if not previous:
        return list(current)
    last_seqs = [ln.seq for ln in previous if ln.seq is not None]
    if last_seqs and all(ln.seq is not None for ln in current):
        last = max(last_seqs)
        return [ln for ln in current if ln.seq is not None and ln.seq > last]
    prev = [_key(ln) for ln in previous]
    cur = [_key(ln) for ln in current]
    for k in range(min(len(prev), len(cur)), 0, -1):
        if prev[-k:] == cur[:k]:
            return list(current[k:])
    return list(current)


def tensorone_snapshot(job_id: str, job: TensorOneJob, new_logs: Sequence[LogLine],
                       last_point: MetricPoint | None) -> tuple[RunSnapshot, MetricPoint | None]:
    """A RunSnapshot from one job answer, and the metric point it reports. TensorOne gives
    the current metrics only: a point counts as new when its step or loss differs from the
    last one reported."""
    progress = job.progress or TensorOneProgress()
    m = job.metrics
    point: MetricPoint | None = None
    if m is not None and (m.loss is not None or m.learningRate is not None):
        point = MetricPoint(
            step=progress.currentStep, loss=m.loss, lr=m.learningRate,
            throughput=m.throughput.tokensPerSecond if m.throughput is not None else None,
            grad_norm=m.gradNorm)
    fresh = point is not None and (
        last_point is None or (point.step, point.loss) != (last_point.step, last_point.loss))
    phase = tensorone_phase(job.status)
    error = _error_text(job.error) if phase in ("failed", "cancelled") else None
    if phase == "failed" and not error:
        error = "the run failed (TensorOne gave no reason)"
    snap = RunSnapshot(
        platform="tensorone",
        job_id=job_id,
        status=job.status,
        phase=phase,
        name=job.name,
        step=progress.currentStep,
        total_steps=progress.totalSteps,
        error=error,
        eta=progress.estimatedTimeRemaining,
        new_metrics=(point,) if fresh and point is not None else (),
        new_logs=tuple(new_logs),
    )
    return snap, (point if fresh else last_point)


class TensorOneFollower:
    """Follows one TensorOne run with one request per poll (job with metrics and logs)."""

    platform = "tensorone"
    default_interval = 30.0
    requests_per_poll = 1

    def __init__(self, client: TensorOneClient, job_id: str, *,
                 log_lines: int = FOLLOW_LOG_LINES) -> None:
        self.client = client
        self.job_id = job_id
        self.log_lines = log_lines
        self._window: list[LogLine] = []
        self._last_point: MetricPoint | None = None

    async def poll(self) -> RunSnapshot:
        job = await self.client.job(self.job_id, include_metrics=True, include_logs=True,
                                    log_lines=self.log_lines)
        window = parse_log_lines(job.logs)
        fresh = new_log_lines(self._window, window)
        if window:
            self._window = window
        snap, self._last_point = tensorone_snapshot(self.job_id, job, fresh, self._last_point)
        return snap

    def min_delay(self) -> float:
        return self.client.session.min_interval(cost=self.requests_per_poll)
