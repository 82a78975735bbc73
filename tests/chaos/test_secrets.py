"""Secrets (issue 6, item 5): at DEBUG logging, no API key and no URL signature reaches stderr,
stdout (`--json` reports, watch events), receipts, journals, logs or exception messages.

Every child run goes through `wl` (tests/chaos/conftest.py), which checks its outputs against
`secrets`; signatures the storage emulator was shown are added after each run
(`secrets.add_served`) and the outputs checked again, so a value first seen on the wire still
counts. Each test also asserts that URLs *were* logged (in their redacted form): a quiet log
would pass the secret check for nothing.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from weightlift.emulator.faults import Fault
from weightlift.emulator.platforms import ThreadedPlatforms
from weightlift.emulator.runs import RunScript
from weightlift.emulator.signing import STYLES

pytestmark = pytest.mark.chaos

SMALL: dict[str, Any] = {"model_bytes": 2 << 20, "shards": 2}
FAST_RETRY = {"WEIGHTLIFT_RETRY_BASE": "0.005"}
REDACTED = "?…"  # what a URL's query string becomes


def _watch_platform(secrets: Any, tp: ThreadedPlatforms) -> dict[str, str]:
    secrets.add(tp.emu.axom_key, tp.emu.tensorone_key)
    return {**tp.env(), **FAST_RETRY}


def _recheck(secrets: Any, storage: Any, *results: Any, out: Path | None = None) -> None:
    """Watch every signature storage saw, then check the runs' outputs again."""
    secrets.add_served(storage)
    for res in results:
        secrets.check(res.stdout, "stdout")
        secrets.check(res.stderr, "stderr")
    if out is not None:
        secrets.check_tree(out)


def _manifest(tp: ThreadedPlatforms, secrets: Any, path: Path, keys: list[str], *,
              style: str = "s3v4", lifetime: float = 600.0) -> Path:
    doc = tp.emu.storage.manifest(keys, base_url=tp.storage_base, lifetime=lifetime,
                                  style=style)
    for entry in doc["files"]:
        secrets.add_url(entry["url"])
    path.write_text(json.dumps(doc))
    return path


# --- successful pulls: every URL style, with expiry and refresh through the platforms --------

@pytest.mark.parametrize("style", STYLES)
def test_pull_with_each_url_style_expiring_and_refreshed(
        wl, secrets, threaded_platforms: ThreadedPlatforms, tmp_path: Path, style: str) -> None:
    tp = threaded_platforms
    env = _watch_platform(secrets, tp)
    tp.emu.url_style = style
    tp.emu.url_lifetime = 1.0  # expires during the pull: proactive refreshes
    # Storage says "expired" early once (the reactive path, in the style's own dialect), and
    # is slow enough that the 1 s URLs run out mid-pull (the proactive path).
    tp.emu.storage.inject("*", Fault.expire(), times=1, from_offset=1)
    tp.emu.storage.inject("*", Fault.throttle(500_000), times=1_000_000)
    platform = "tensorone" if style == "expires" else "axom"
    job = (tp.emu.add_tensorone_job if platform == "tensorone" else tp.emu.add_axom_job)(
        RunScript.instant(**SMALL))
    out = tmp_path / "model"
    res = wl("pull", f"{platform}://jobs/{job}", "-o", str(out), "--json",
             "--connections", "4", "--chunk-size", "256K", env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout)
    assert report["ok"] is True
    assert report["totals"]["refreshes"] >= 1
    # The run really logged at DEBUG, URLs included (redacted), and refreshed mid-pull.
    for line in ("requesting bytes", "GET http", "refreshing the manifest", "finalized",
                 "API: GET http"):
        assert line in res.stderr, line
    assert REDACTED in res.stderr
    receipt = json.loads((out / ".weightlift" / "receipt.json").read_text())
    for entry in receipt["files"]:  # where it came from, without the signature
        assert entry["source"].startswith(tp.storage_base + "/")
        assert entry["source"].split("?", 1)[1:] in ([], ["…"])
    _recheck(secrets, tp.emu.storage, res, out=out)
    served = [r for r in tp.emu.storage.requests if r.status in (200, 206)]
    assert served, "storage served nothing: the style was not exercised"
    assert any(r.status == 403 for r in tp.emu.storage.requests)  # the expiry was met


# --- failures whose messages would carry a URL ---------------------------------------------

def test_expired_urls_without_a_refresh_fail_with_exit_3_in_every_style(
        wl, secrets, threaded_platforms: ThreadedPlatforms, tmp_path: Path) -> None:
    tp = threaded_platforms
    tp.emu.storage.put_bytes("w/a.bin", b"x" * 50_000)
    manifests = {style: _manifest(tp, secrets, tmp_path / f"{style}.json", ["w/a.bin"],
                                  style=style, lifetime=0.2) for style in STYLES}
    time.sleep(1.25)  # past the exact expiry and the whole second the URL states

    def pull(style: str) -> Any:
        return wl("pull", str(manifests[style]), "-o", str(tmp_path / f"out-{style}"),
                  "--json", env=FAST_RETRY)

    with ThreadPoolExecutor(3) as pool:  # children, each checked by `wl`
        results = dict(zip(STYLES, pool.map(pull, STYLES), strict=True))
    for style, res in results.items():
        out = tmp_path / f"out-{style}"
        assert res.returncode == 3, (style, res.stderr[-2000:])
        doc = json.loads(res.stdout)
        assert doc["ok"] is False
        assert "expired" in doc["files"][0]["error"], (style, doc)
        assert REDACTED in res.stderr, style
        _recheck(secrets, tp.emu.storage, res, out=out)


def test_not_found_and_server_errors_name_the_url_without_its_query(
        wl, secrets, threaded_platforms: ThreadedPlatforms, tmp_path: Path) -> None:
    tp = threaded_platforms
    storage = tp.emu.storage
    storage.put_bytes("w/flaky.bin", b"y" * 40_000)
    missing = storage.presign("w/missing.bin", lifetime=600, base_url=tp.storage_base,
                              style="cloudfront")
    secrets.add_url(missing)
    # A plain URL SOURCE (the signature is on the command line): 404 → exit 3, URL redacted.
    res = wl("pull", missing, "-o", str(tmp_path / "a"), "--json", env=FAST_RETRY)
    assert res.returncode == 3, res.stderr[-2000:]
    assert "404" in res.stderr
    assert f"{tp.storage_base}/weights/w/missing.bin{REDACTED}" in res.stderr
    doc = json.loads(res.stdout)
    assert doc["ok"] is False
    assert doc["exit_code"] == 3

    # 500 forever: gives up after the retries, exit 3, journal kept.
    storage.inject("w/flaky.bin", Fault.status(500), times=1_000)
    manifest = _manifest(tp, secrets, tmp_path / "m.json", ["w/flaky.bin"], style="azure")
    out = tmp_path / "b"
    res2 = wl("pull", str(manifest), "-o", str(out), "--chunk-size", "16K", env=FAST_RETRY)
    assert res2.returncode == 3, res2.stderr[-2000:]
    assert "gave up after" in res2.stderr
    assert "retrying in" in res2.stderr
    assert REDACTED in res2.stderr
    assert any((out / ".weightlift").rglob("*")), "no resumable state kept"
    _recheck(secrets, storage, res, res2, out=out)


def test_a_broken_checkpoint_fails_with_exit_1(
        wl, secrets, threaded_platforms: ThreadedPlatforms, tmp_path: Path) -> None:
    tp = threaded_platforms
    header = b'{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 99]}}'
    tp.emu.storage.put_bytes("w/model.safetensors", len(header).to_bytes(8, "little")
                             + header + b"\0" * 16)
    manifest = _manifest(tp, secrets, tmp_path / "m.json", ["w/model.safetensors"],
                         style="nginx")
    out = tmp_path / "out"
    res = wl("pull", str(manifest), "-o", str(out), "--json", env=FAST_RETRY)
    assert res.returncode == 1, res.stderr[-2000:]
    assert json.loads(res.stdout)["ok"] is False
    assert REDACTED in res.stderr
    _recheck(secrets, tp.emu.storage, res, out=out)


def test_a_wrong_api_key_is_exit_4_and_never_echoed(
        wl, secrets, threaded_platforms: ThreadedPlatforms, tmp_path: Path) -> None:
    tp = threaded_platforms
    env = _watch_platform(secrets, tp)
    wrong_axom, wrong_t1 = "axom_live_WRONGKEY0000secret", "tpo_test_WRONGKEY1111secret"
    secrets.add(wrong_axom, wrong_t1)
    job = tp.emu.add_axom_job(RunScript.instant(**SMALL))
    t1_job = tp.emu.add_tensorone_job(RunScript.instant(**SMALL))
    bad = {**env, "AXOM_KEY": wrong_axom, "TENSORONE_API_KEY": wrong_t1}
    pulled = wl("pull", f"axom://jobs/{job}", "-o", str(tmp_path / "a"), "--json", env=bad)
    assert pulled.returncode == 4, pulled.stderr[-2000:]
    assert json.loads(pulled.stdout)["exit_code"] == 4
    assert "rejected the API key" in pulled.stderr
    assert "API: GET http" in pulled.stderr  # the API requests were logged
    watched = wl("watch", f"tensorone://jobs/{t1_job}", "--json", env=bad)
    assert watched.returncode == 4, watched.stderr[-2000:]
    events = [json.loads(line) for line in watched.stdout.splitlines()]
    assert events[-1]["event"] == "error"
    assert events[-1]["exit_code"] == 4
    _recheck(secrets, tp.emu.storage, pulled, watched)


def test_watch_json_then_pull_reports_without_secrets(
        wl, secrets, threaded_platforms: ThreadedPlatforms, tmp_path: Path) -> None:
    tp = threaded_platforms
    env = _watch_platform(secrets, tp)
    tp.emu.url_style = "azure"
    job = tp.emu.add_axom_job(RunScript.instant(**SMALL))
    out = tmp_path / "model"
    res = wl("watch", f"axom://jobs/{job}", "--json", "--pull", "-o", str(out),
             "--interval", "0.2", env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    events = [json.loads(line) for line in res.stdout.splitlines()]
    pulls = [e for e in events if e.get("event") == "pull"]
    assert pulls
    assert pulls[0]["report"]["ok"] is True
    assert REDACTED in res.stderr
    _recheck(secrets, tp.emu.storage, res, out=out)


# --- in-process: the safety net itself ------------------------------------------------------

SIGNED = ("https://acct.blob.core.windows.net/c/model.safetensors?sv=2022-11-02"
          "&se=2026-11-24T20%3A00%3A00Z&sr=b&sp=r&sig=Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA%3D%3D")
KEY = "axom_live_s3cr3tKEY0123456789"


@pytest.mark.parametrize("text", [
    f"GET {SIGNED} -> 403",
    "<ClientResponse(https://d1.cloudfront.net/m.bin?Expires=1795550400&Signature=Zm9v~YmFy_"
    "&Key-Pair-Id=K2JCJMDEHXQW5F) [403 Forbidden]>",
    "url=URL('https://user:hunter2pass@cdn.example/m.bin?md5=AbCdEf0123456789xyz&expires=17')",
    "query only ?X-Amz-Credential=AKIAEXAMPLE%2F2026&X-Amz-Signature=0123456789abcdef; more",
    "params {'sig': 'Zm9vYmFyYmF6cXV4', 'se': '2026-11-24T20:00:00Z', 'sp': 'r'}",
    '{"Authorization": "Bearer axom_live_s3cr3tKEY0123456789", "md5": "AbCdEf0123456789xyz"}',
    "headers: Authorization: Bearer axom_live_s3cr3tKEY0123456789",
    "the key axom_live_s3cr3tKEY0123456789 was refused",
    "sig=Zm9vYmFyYmF6cXV4 and X-Amz-Signature = 0123456789abcdef",
], ids=["azure-url", "cloudfront-repr", "nginx-userinfo", "bare-query", "dict-repr", "json",
        "header", "bare-key", "free-pairs"])
def test_redact_text_masks_every_form(secrets, monkeypatch: pytest.MonkeyPatch,
                                      text: str) -> None:
    from weightlift.downloader.redact import redact_text

    monkeypatch.setenv("AXOM_KEY", KEY)
    secrets.add(KEY, "hunter2pass", "Zm9vYmFyYmF6cXV4", "0123456789abcdef", "AbCdEf0123456789xyz",
                "Zm9v~YmFy_", "AKIAEXAMPLE")
    secrets.add_url(SIGNED)
    out = redact_text(text)
    secrets.check(out, "redact_text output")
    assert redact_text(out) == out  # idempotent
    assert "https://" not in text or "://" in out  # the URL's place is still shown


def _formatter_output(monkeypatch: pytest.MonkeyPatch, emit: Any) -> str:
    from weightlift.downloader.redact import RedactingFormatter

    monkeypatch.setenv("AXOM_KEY", KEY)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("aiohttp.client")  # a third party's logger
    logger.addHandler(handler)
    old_level, old_propagate = logger.level, logger.propagate
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate
    return stream.getvalue()


def test_the_formatter_scrubs_a_third_party_logger_and_a_traceback(
        secrets, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets.add_url(SIGNED)
    secrets.add(KEY)

    def emit(logger: logging.Logger) -> None:
        logger.debug("GET %s headers=%r", SIGNED, {"Authorization": f"Bearer {KEY}"})
        logger.debug("signature %s", "X-Amz-Signature=deadbeefdeadbeef&Key-Pair-Id=K2JCJMD")
        try:
            raise ConnectionError(f"cannot reach {SIGNED} with key {KEY}")
        except ConnectionError:
            logger.exception("request failed")

    text = _formatter_output(monkeypatch, emit)
    assert "Traceback" in text  # the traceback was formatted, and redacted with the rest
    assert "https://acct.blob.core.windows.net/c/model.safetensors?…" in text
    secrets.check(text, "a third-party log record")
    assert "deadbeef" not in text


def test_the_cli_installs_the_redacting_formatter_and_traceback_hook(
        secrets, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from weightlift.cli import main as cli_main
    from weightlift.downloader.redact import RedactingFormatter

    secrets.add_url(SIGNED)
    secrets.add(KEY)
    monkeypatch.setenv("AXOM_KEY", KEY)
    root = logging.getLogger()
    saved, saved_level = root.handlers[:], root.level
    root.handlers.clear()
    try:
        cli_main._setup_logging(2)
        installed = [h for h in root.handlers if h not in saved]
        assert installed
        assert all(isinstance(h.formatter, RedactingFormatter) for h in installed)
    finally:
        for h in root.handlers[:]:
            root.removeHandler(h)
        root.handlers.extend(saved)
        root.setLevel(saved_level)
        logging.captureWarnings(False)
    try:
        raise RuntimeError(f"GET {SIGNED} failed (Authorization: Bearer {KEY})")
    except RuntimeError:
        cli_main._redacted_excepthook(*sys.exc_info())  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert "RuntimeError" in err
    secrets.check(err, "the WEIGHTLIFT_TRACEBACK hook")


def test_internal_errors_and_weightlift_errors_are_redacted(
        secrets, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI's last-resort line for a bug of ours, and every WeightliftError's message."""
    from weightlift.cli import main as cli_main
    from weightlift.cli import pull_cmd
    from weightlift.downloader.errors import TransferFailed

    secrets.add_url(SIGNED)
    secrets.add(KEY)
    monkeypatch.setenv("AXOM_KEY", KEY)
    monkeypatch.delenv("WEIGHTLIFT_TRACEBACK", raising=False)

    def boom(args: Any) -> int:
        raise KeyError(f"no such thing at {SIGNED}; md5=AbCdEf0123456789xyz&expires=1")

    monkeypatch.setattr(pull_cmd, "run", boom)
    assert cli_main.run(["pull", "x", "-o", "y"]) == 3
    err = capsys.readouterr().err
    assert "internal error" in err
    secrets.check(err, "the internal-error line")
    exc = TransferFailed(f"storage said: {SIGNED} (key {KEY})", f"retry with {SIGNED}")
    secrets.check(exc.one_line(), "a WeightliftError message")
    secrets.check(str(exc), "str() of a WeightliftError")
