"""Pure pieces: API answers → RunSnapshots, log de-duplication, checkpoint choice and the
one-file manifest, rate-limit parsing and pacing, error-body details."""

from __future__ import annotations

import pytest

from weightlift.downloader.errors import BadManifest, PlatformError
from weightlift.downloader.sources.api_session import (
    RateLimit,
    error_detail,
    pacing_delay,
    parse_rate_limit,
)
from weightlift.downloader.sources.axom import (
    AxomJob,
    AxomLogLine,
    AxomMetricPoint,
    axom_phase,
    axom_snapshot,
)
from weightlift.downloader.sources.run_status import LogLine, MetricPoint
from weightlift.downloader.sources.tensorone import (
    TensorOneCheckpoint,
    TensorOneCheckpoints,
    TensorOneJob,
    checkpoint_manifest,
    latest_checkpoint,
    new_log_lines,
    parse_log_lines,
    tensorone_phase,
    tensorone_snapshot,
)

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("status", "phase"),
    [("queued", "waiting"), ("provisioning", "waiting"), ("staging", "waiting"),
     ("preempted", "waiting"), ("running", "running"), ("checkpointing", "running"),
     ("uploading", "running"), ("completed", "completed"), ("failed", "failed"),
     ("cancelled", "cancelled"), ("something-new", "waiting")],
)
def test_axom_phases(status: str, phase: str) -> None:
    assert axom_phase(status) == phase


@pytest.mark.parametrize(
    ("status", "phase"),
    [("queued", "waiting"), ("initializing", "waiting"), ("running", "running"),
     ("paused", "paused"), ("cancelling", "running"), ("completed", "completed"),
     ("failed", "failed"), ("cancelled", "cancelled"), ("something-new", "running")],
)
def test_tensorone_phases(status: str, phase: str) -> None:
    assert tensorone_phase(status) == phase


def test_axom_snapshot_tolerates_extra_and_missing_fields() -> None:
    job = AxomJob.model_validate({"id": "j", "status": "preempted", "retries": 1, "step": 40,
                                  "total_steps": 120, "progress": 0.33, "new_field": [1]})
    point = AxomMetricPoint.model_validate({"step": 41, "loss": 2.5, "lr": 1e-4, "cycle": 1,
                                            "throughput": 9000.0, "grad_norm": 0.9})
    line = AxomLogLine.model_validate({"seq": 7, "text": "requeued", "stream": "stdout"})
    snap = axom_snapshot("j", job, [point], [line])
    assert (snap.phase, snap.status, snap.step, snap.total_steps, snap.retries) == (
        "waiting", "preempted", 40, 120, 1)
    assert snap.error is None
    assert not snap.terminal
    assert snap.new_metrics == (MetricPoint(step=41, loss=2.5, lr=1e-4, throughput=9000.0,
                                            grad_norm=0.9),)
    assert snap.new_logs == (LogLine("requeued", seq=7, stream="stdout"),)


def test_axom_snapshot_step_falls_back() -> None:
    job = AxomJob.model_validate({"status": "running"})
    point = AxomMetricPoint.model_validate({"step": 12})
    assert axom_snapshot("j", job, [point], []).step == 12
    assert axom_snapshot("j", job, [], [], last_step=9).step == 9


def test_axom_failed_without_reason_still_says_something() -> None:
    snap = axom_snapshot("j", AxomJob.model_validate({"status": "failed"}), [], [])
    assert snap.terminal
    assert snap.error == "the run failed (Axom gave no reason)"


def _t1_job(**extra: object) -> TensorOneJob:
    data: dict[str, object] = {
        "jobId": "job_1", "name": "m", "status": "running",
        "progress": {"currentStep": 50, "totalSteps": 120, "estimatedTimeRemaining": "32m"},
        "metrics": {"loss": 1.5, "learningRate": 2e-4, "gradNorm": 0.7,
                    "throughput": {"tokensPerSecond": 12000.0}},
    }
    data.update(extra)
    return TensorOneJob.model_validate(data)


def test_tensorone_snapshot_reports_a_point_once() -> None:
    snap, last = tensorone_snapshot("job_1", _t1_job(), [], None)
    assert (snap.step, snap.total_steps, snap.eta, snap.phase) == (50, 120, "32m", "running")
    assert snap.new_metrics == (MetricPoint(step=50, loss=1.5, lr=2e-4, throughput=12000.0,
                                            grad_norm=0.7),)
    again, last2 = tensorone_snapshot("job_1", _t1_job(), [], last)
    assert again.new_metrics == ()
    assert last2 == last


def test_tensorone_error_object_and_string() -> None:
    failed = _t1_job(status="failed", error={"code": "TRAINING_FAILED", "message": "OOM"})
    assert tensorone_snapshot("job_1", failed, [], None)[0].error == "OOM"
    cancelled = _t1_job(status="cancelled", errorMessage="cancelled by user")
    assert tensorone_snapshot("job_1", cancelled, [], None)[0].error == "cancelled by user"
    bare = _t1_job(status="failed")
    assert "gave no reason" in (tensorone_snapshot("job_1", bare, [], None)[0].error or "")
    running = _t1_job(error={"message": "stale"})
    assert tensorone_snapshot("job_1", running, [], None)[0].error is None


def test_parse_log_lines_shapes() -> None:
    lines = parse_log_lines([
        "plain",
        {"lineNumber": 3, "timestamp": "t", "level": "INFO", "message": "obj"},
        {"seq": 4, "text": "axom-like", "stream": "stderr"},
        {"nothing": "useful"},
        42,
    ])
    assert lines == [LogLine("plain"), LogLine("obj", seq=3, ts="t", stream="INFO"),
                     LogLine("axom-like", seq=4, stream="stderr")]


def _lines(*texts: str, seq0: int | None = None) -> list[LogLine]:
    return [LogLine(t, seq=None if seq0 is None else seq0 + i) for i, t in enumerate(texts)]


@pytest.mark.parametrize(
    ("prev", "cur", "new"),
    [
        ([], ["a", "b"], ["a", "b"]),
        (["a", "b"], ["a", "b", "c"], ["c"]),  # window grew
        (["a", "b", "c"], ["c", "d", "e"], ["d", "e"]),  # window slid
        (["a", "b", "b"], ["b", "b", "c"], ["c"]),  # repeated lines
        (["a", "b"], ["x", "y"], ["x", "y"]),  # slid by more than a window
        (["a", "b"], ["a", "b"], []),
    ],
)
def test_new_log_lines_without_numbers(prev: list[str], cur: list[str], new: list[str]) -> None:
    assert [ln.text for ln in new_log_lines(_lines(*prev), _lines(*cur))] == new


def test_new_log_lines_with_numbers() -> None:
    prev = _lines("a", "b", "c", seq0=1)
    cur = _lines("same", "same", "d", seq0=3)
    assert [ln.text for ln in new_log_lines(prev, cur)] == ["same", "d"]


def _ckpt(cid: str, step: int, url: str | None = "https://s/x/model.safetensors?expires=1&sig=2",
          created: str = "") -> TensorOneCheckpoint:
    return TensorOneCheckpoint(checkpointId=cid, step=step, downloadUrl=url, createdAt=created)


def test_latest_checkpoint() -> None:
    assert latest_checkpoint(TensorOneCheckpoints(checkpoints=[])) is None
    listing = TensorOneCheckpoints.model_validate({
        "checkpoints": [_ckpt("a", 40).model_dump(), _ckpt("b", 80).model_dump()],
        "summary": {"latestCheckpoint": {"checkpointId": "a"}}})
    assert latest_checkpoint(listing).checkpointId == "a"  # type: ignore[union-attr]
    no_summary = TensorOneCheckpoints(checkpoints=[_ckpt("a", 40), _ckpt("b", 80)])
    assert latest_checkpoint(no_summary).checkpointId == "b"  # type: ignore[union-attr]


def test_checkpoint_manifest_names() -> None:
    m = checkpoint_manifest("j", _ckpt("ckpt_1", 40))
    assert [(f.rel, f.size) for f in m.files] == [("model.safetensors", None)]
    assert m.model_id == "ckpt_1"
    bare = checkpoint_manifest("j", _ckpt("ckpt_2", 40, url="https://s/?expires=1"))
    assert bare.files[0].rel == "ckpt_2"
    encoded = checkpoint_manifest("j", _ckpt("c", 1, url="https://s/a/my%20model.bin?x=1"))
    assert encoded.files[0].rel == "my model.bin"
    with pytest.raises(BadManifest):
        checkpoint_manifest("j", _ckpt("c", 1, url="https://s/a/..%2F..%2Fetc?x=1"))
    with pytest.raises(BadManifest):
        checkpoint_manifest("j", _ckpt("c", 1, url="file:///etc/passwd"))
    with pytest.raises(PlatformError, match="no downloadUrl for checkpoint c of job j"):
        checkpoint_manifest("j", _ckpt("c", 1, url=None))


def test_parse_rate_limit() -> None:
    assert parse_rate_limit({}, NOW) is None
    rate = parse_rate_limit({"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "42",
                             "X-RateLimit-Reset": str(int(NOW) + 600),
                             "X-RateLimit-Window": "3600"}, NOW)
    assert rate == RateLimit(100, 42, NOW + 600, 3600.0, NOW)
    relative = parse_rate_limit({"X-RateLimit-Remaining": "5", "X-RateLimit-Reset": "30"}, NOW)
    assert relative is not None
    assert relative.reset_at == NOW + 30
    junk = parse_rate_limit({"X-RateLimit-Remaining": "lots", "X-RateLimit-Limit": "-1",
                             "X-RateLimit-Reset": "nan"}, NOW)
    assert junk is None  # nothing usable: as if absent


@pytest.mark.parametrize(
    ("remaining", "reset_in", "window", "cost", "expected"),
    [
        (100, 3600, None, 1, 3600 / 95),  # free tier, fresh window: ~38 s per poll
        (500, 3600, None, 1, 3600 / 495),
        (20, 600, None, 3, 600 * 3 / 15),
        (5, 600, None, 1, 601.0),  # only the reserve left: wait the window out
        (0, 10, None, 1, 11.0),
        (100, None, 3600.0, 1, 3600 / 95),  # no reset time: assume a whole window
        (100, None, None, 1, 0.0),
        (None, 3600, None, 1, 0.0),
        (100, -5, None, 1, 0.0),  # reset already passed
    ],
)
def test_pacing_delay(remaining: int | None, reset_in: float | None, window: float | None,
                      cost: int, expected: float) -> None:
    rate = RateLimit(limit=100, remaining=remaining,
                     reset_at=None if reset_in is None else NOW + reset_in, window=window,
                     seen_at=NOW)
    assert pacing_delay(rate, NOW, cost=cost) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"detail": "Job not found: 1"}', "Job not found: 1"),
        (b'{"detail": [{"loc": ["body", "x"], "msg": "field required"}, "odd"]}',
         "body.x: field required; odd"),
        (b'{"error": "RATE_LIMIT_EXCEEDED", "message": "Rate limit exceeded", "code": 429}',
         "RATE_LIMIT_EXCEEDED: Rate limit exceeded"),
        (b'{"message": "only a message"}', "only a message"),
        (b'{"something": "else"}', ""),
        (b"[1, 2]", ""),
        (b"<html><body>502 Bad Gateway</body></html>", ""),
        (b"upstream timed out\nsecond line", "upstream timed out"),
        (b"", ""),
        (b'{"detail": "see https://h/k?X-Amz-Signature=s3cret"}', "see https://h/k?…"),
        (b'{"detail": "key axom_live_TOPSECRET was revoked"}', "key … was revoked"),
        (b'{"detail": "' + b"x" * 1000 + b'"}', "x" * 299 + "…"),
    ],
)
def test_error_detail(body: bytes, detail: str) -> None:
    assert error_detail(body, ("axom_live_TOPSECRET",)) == detail
