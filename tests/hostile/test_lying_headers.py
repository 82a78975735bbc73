"""Responses whose headers are wrong: issue 11 §2.10 (a 1 MB response header, reported on main
as "bad HTTP response (400)" although the server sent a 206), a Content-Range for other bytes
than asked, and a Content-Length longer or shorter than the body.

Expected: the 1 MB header ends with exit 3 and one line saying the response headers were too
large; the others never leave a wrong file under its final name (either exit 0 with the right
bytes, or a non-zero exit, one line, and no final file).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import behaviours as b
import pytest
from hostile_run import (
    EXIT_OK,
    EXIT_TRANSFER,
    assert_sane_output,
    data_of,
    final_files,
    run_cases,
    weightlift,
    write_manifest,
)

pytestmark = pytest.mark.hostile

SIZE = 4 << 20
RANGED = ("--connections", "2", "--chunk-size", "1M")  # four ranged requests, never one whole


def _pull(srv, tmp_path):
    out = tmp_path / "out"
    manifest = write_manifest(tmp_path / "m.json", [("model.bin", SIZE, srv.url("model.bin"))])
    return weightlift("pull", manifest, "-o", str(out), *RANGED, timeout=45), out


def test_a_1_mb_response_header_is_reported_as_too_large(serve, tmp_path):
    srv = serve(data_of(SIZE, 31), b.huge_header(1 << 20))
    run, out = _pull(srv, tmp_path)
    assert run.returncode == EXIT_TRANSFER, run.tail()
    assert_sane_output(run)
    assert re.search(r"header.*(too large|too long)", run.errors[0], re.IGNORECASE), run.tail()
    assert "(400)" not in run.errors[0], run.tail()
    assert final_files(out) == []
    assert {r.status for r in srv.gets()} == {206}  # what the server really said


LIARS = {
    "Content-Range 4096 bytes further": lambda: b.lying_content_range(4096),
    "Content-Range 4096 bytes before": lambda: b.lying_content_range(-4096),
    "Content-Length longer than the body": lambda: b.wrong_content_length(+1000),
    "Content-Length shorter than the body": lambda: b.wrong_content_length(-1000),
}


def test_lying_headers_never_leave_a_wrong_final_file(serve, tmp_path):
    data = data_of(SIZE, 32)

    def case(name: str) -> Callable[[], None]:
        def run_it() -> None:
            srv = serve(data, LIARS[name]())
            folder = tmp_path / name.replace(" ", "-")
            folder.mkdir()
            run, out = _pull(srv, folder)
            assert run.seconds < 30, run.tail()
            assert_sane_output(run)
            if run.returncode == EXIT_OK:
                assert (out / "model.bin").read_bytes() == data, "exit 0 with wrong bytes"
            else:
                assert final_files(out) == [], run.tail()
        return run_it

    run_cases({name: case(name) for name in LIARS})
