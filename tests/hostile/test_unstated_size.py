"""Issue 11 §2.2: a server that never states the object's size (a chunked 200, an HTTP/1.0
close-delimited body, `206 Content-Range: bytes 0-9/*`, multipart/byteranges).

Expected: the pull streams the one GET to its end and finishes (never hangs), byte-identical,
exit 0; when a manifest states the size and the body differs, a non-zero exit and no file under
its final name; a chunked body cut before its last chunk (no length known) is exit 3, never a
success, and no final file.
"""

from __future__ import annotations

import hashlib
import json
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

SIZE = 1 << 20
HANG = 45  # the child is killed (and the test fails as a hang) after this many seconds
QUICK = 30  # a pull of 1 MiB from loopback (or its retries) ends well inside the hang bound

UNSTATED = {
    "chunked-200": b.chunked,
    "http10-close-delimited": b.close_delimited,
    "206-total-star": b.unknown_total,
    "multipart-byteranges": b.multipart,
}


def test_a_url_whose_size_is_never_stated_is_streamed_to_its_end(serve, tmp_path):
    def case(name: str) -> Callable[[], None]:
        def run_it() -> None:
            data = data_of(SIZE, 2)
            srv = serve(data, UNSTATED[name]())
            out = tmp_path / name
            run = weightlift("pull", srv.url("model.bin"), "-o", str(out), "--json",
                             timeout=HANG)
            assert run.returncode == EXIT_OK, run.tail()
            assert run.seconds < QUICK, run.tail()
            assert_sane_output(run)
            assert (out / "model.bin").read_bytes() == data
            files = run.report()["files"]
            assert [(f["rel"], f["sha256"]) for f in files] == [
                ("model.bin", hashlib.sha256(data).hexdigest())]
        return run_it

    run_cases({name: case(name) for name in UNSTATED})


def test_a_manifest_size_is_checked_against_an_unstated_body(serve, tmp_path):
    """The manifest states a size, the server never does: the body is streamed and checked
    against it; a mismatch fails and leaves nothing under the final name."""

    def case(name: str, delta: int) -> Callable[[], None]:
        def run_it() -> None:
            data = data_of(SIZE // 4, 3)  # a short body may be retried: keep each try small
            srv = serve(data, UNSTATED[name]())
            folder = tmp_path / f"{name}{delta:+d}"
            folder.mkdir()
            out = folder / "out"
            manifest = write_manifest(folder / "m.json", [("model.bin", len(data) + delta,
                                                           srv.url("model.bin"))])
            run = weightlift("pull", manifest, "-o", str(out), timeout=HANG)
            assert run.seconds < QUICK, run.tail()
            assert_sane_output(run)
            if delta == 0:
                assert run.returncode == EXIT_OK, run.tail()
                assert (out / "model.bin").read_bytes() == data
            else:
                assert run.returncode != EXIT_OK, run.tail()
                assert final_files(out) == [], run.tail()
        return run_it

    run_cases({f"{name}, manifest size {delta:+d}": case(name, delta)
               for name in ("chunked-200", "http10-close-delimited") for delta in (-10, 0, 10)})


def test_a_chunked_body_cut_before_its_last_chunk_is_an_error(serve, tmp_path):
    """No length is known, so only the zero-size last chunk says the body is whole: a
    connection closed before it is a transfer failure (exit 3), however many bytes came."""

    def case(cut: str) -> Callable[[], None]:
        def run_it() -> None:
            data = data_of(SIZE, 4)
            srv = serve(data, b.chunked(cut=cut))
            out = tmp_path / cut
            run = weightlift("pull", srv.url("model.bin"), "-o", str(out), "--json",
                             timeout=HANG)
            assert run.returncode == EXIT_TRANSFER, run.tail()
            assert run.seconds < QUICK, run.tail()
            assert_sane_output(run)
            assert final_files(out) == [], run.tail()
            assert json.loads(run.stdout)["ok"] is False
        return run_it

    run_cases({f"cut at the {cut}": case(cut) for cut in ("terminator", "mid-body")})


def test_an_honest_server_is_pulled_with_ranges(serve, tmp_path):
    """The control case: the same harness against a correct server passes today."""
    data = data_of(4 * SIZE, 5)
    srv = serve(data, b.honest())
    out = tmp_path / "out"
    run = weightlift("pull", srv.url("model.bin"), "-o", str(out), "--chunk-size", "1M",
                     timeout=HANG)
    assert run.returncode == EXIT_OK, run.tail()
    assert_sane_output(run)
    assert (out / "model.bin").read_bytes() == data
    ranged = [r for r in srv.gets() if r.status == 206 and r.body_sent > 1]
    assert len(ranged) >= 4, [(r.range, r.status) for r in srv.gets()]
