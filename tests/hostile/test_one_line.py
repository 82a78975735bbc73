"""Issue 11 §2.11: a failed file printed two lines (`X: failed: …` from the progress output and
`weightlift: error: …`), and an expired plain URL advised "get a fresh manifest".

Expected: the failure is said once (its text appears in exactly one line of stderr), and the
advice fits the SOURCE form: a URL pull is not told about a manifest it never had.
"""

from __future__ import annotations

import behaviours as b
import pytest
from hostile_run import (
    EXIT_TRANSFER,
    assert_sane_output,
    final_files,
    weightlift,
    write_manifest,
)

pytestmark = pytest.mark.hostile

EXPIRED = (b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>"
           b"<Message>Request has expired</Message><Expires>2026-01-01T00:00:00Z</Expires>"
           b"</Error>")


def test_a_failed_file_is_reported_in_one_line(serve, tmp_path):
    srv = serve(b"", b.fixed_status(500, b"<Error><Code>InternalError</Code></Error>"))
    out = tmp_path / "out"
    manifest = write_manifest(tmp_path / "m.json", [("model.bin", 1000, srv.url("model.bin"))])
    run = weightlift("pull", manifest, "-o", str(out), timeout=45)
    assert run.returncode == EXIT_TRANSFER, run.tail()
    assert_sane_output(run)
    reason = run.errors[0].split("error: ", 1)[1]
    said = [ln for ln in run.stderr.splitlines() if reason[:60] in ln]
    assert len(said) == 1, f"the failure is said {len(said)} times\n{run.tail()}"
    assert final_files(out) == []


def test_an_expired_url_gets_advice_for_its_source_form(serve, tmp_path):
    srv = serve(b"", b.fixed_status(403, EXPIRED))
    url = srv.url("model.bin")
    by_url = weightlift("pull", url, "-o", str(tmp_path / "a"), timeout=45)
    manifest = write_manifest(tmp_path / "m.json", [("model.bin", 1000, url)])
    by_manifest = weightlift("pull", manifest, "-o", str(tmp_path / "b"), timeout=45)
    for run in (by_url, by_manifest):
        assert run.returncode == EXIT_TRANSFER, run.tail()
        assert_sane_output(run)
        assert "expired" in run.errors[0], run.tail()
    assert "manifest" not in by_url.errors[0], by_url.tail()
    assert "URL" in by_url.errors[0], by_url.tail()
    assert "manifest" in by_manifest.errors[0], by_manifest.tail()
