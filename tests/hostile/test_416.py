"""Issue 11 §2.3: a 416 answer to the size probe. A 416 means an empty object only when the
server says the total is 0 (`Content-Range: bytes */0`).

Expected: `bytes */1000000` (or no Content-Range at all) is never a 0-byte success: either a
non-zero exit with one line and no final file, or (if the product then fetches the object
whole, which this server answers with a 200) a byte-identical file and exit 0; `bytes */0` is
a 0-byte file and exit 0.
"""

from __future__ import annotations

from collections.abc import Callable

import behaviours as b
import pytest
from hostile_run import (
    EXIT_OK,
    assert_sane_output,
    data_of,
    final_files,
    run_cases,
    weightlift,
)

pytestmark = pytest.mark.hostile

HANG = 30


def test_a_416_for_a_non_empty_object_is_never_a_0_byte_success(serve, tmp_path):
    data = data_of(1_000_000, 7)

    def case(content_range: str | None) -> Callable[[], None]:
        def run_it() -> None:
            srv = serve(data, b.status_416(content_range))
            out = tmp_path / str(content_range).replace(" ", "").replace("/", "of")
            run = weightlift("pull", srv.url("model.bin"), "-o", str(out), timeout=HANG)
            assert_sane_output(run)
            final = out / "model.bin"
            if run.returncode == EXIT_OK:
                got = final.stat().st_size if final.exists() else None
                assert got == 1_000_000, (
                    f"exit 0 with a {got}-byte file for a 1,000,000-byte object\n{run.tail()}")
                assert final.read_bytes() == data
            else:
                assert final_files(out) == [], run.tail()
        return run_it

    run_cases({"416 bytes */1000000": case("bytes */1000000"),
               "416 without Content-Range": case(None)})


def test_a_416_that_says_the_total_is_0_is_an_empty_file(serve, tmp_path):
    srv = serve(b"", b.status_416("bytes */0"))
    out = tmp_path / "out"
    run = weightlift("pull", srv.url("empty.bin"), "-o", str(out), timeout=HANG)
    assert run.returncode == EXIT_OK, run.tail()
    assert_sane_output(run)
    assert (out / "empty.bin").read_bytes() == b""
