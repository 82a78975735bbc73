"""Issue 11 §2.5 and §2.6: servers that keep a pull alive without ever finishing it.

§2.5: a plain 200 (Range ignored) that always drops mid-body. On main every retry "made
progress", so the attempt count was reset although the file restarts from byte 0: it never
exits. §2.6: headers trickled at 1 byte/s, a body trickled at 1 byte/s, and headers plus 100
bytes then silence (each retry gains 100 bytes and resets the budget): nothing bounds them.

Expected: each pull ends in bounded time with exit 3 and one line naming the file, and nothing
under the final name. The limits the product is to read (small values keep these tests at
seconds; see hostile_run.SLOW_LIMITS): WEIGHTLIFT_HEADER_TIMEOUT (seconds for a response's
status line and headers), WEIGHTLIFT_LOW_SPEED (bytes/s) over WEIGHTLIFT_LOW_SPEED_TIME
(seconds), WEIGHTLIFT_STALL_TIMEOUT (seconds without a byte, exists) and WEIGHTLIFT_RETRY_BASE.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import behaviours as b
import pytest
from hostile_run import (
    EXIT_TRANSFER,
    SLOW_LIMITS,
    assert_sane_output,
    data_of,
    final_files,
    run_cases,
    weightlift,
    write_manifest,
)

pytestmark = pytest.mark.hostile

MAX_GETS = 50  # a generous cap on "not endless": main makes hundreds before the hang bound


def _fails_with_one_line(run: Any, out: Path, bound: float) -> None:
    assert run.returncode == EXIT_TRANSFER, run.tail()
    assert run.seconds < bound, run.tail()
    assert_sane_output(run)
    assert "model.bin" in run.errors[0], run.tail()
    assert final_files(out) == [], run.tail()


def test_a_200_that_always_drops_mid_body_gives_up(serve, tmp_path):
    data = data_of(1 << 20, 21)
    srv = serve(data, b.drops_mid_body(0.5))
    out = tmp_path / "out"
    run = weightlift("pull", srv.url("model.bin"), "-o", str(out), timeout=45)
    _fails_with_one_line(run, out, bound=30)
    assert len(srv.gets()) <= MAX_GETS, len(srv.gets())


SLOW = {
    "headers-1-byte-per-s": lambda: b.trickle_headers(1.0),
    "body-1-byte-per-s": lambda: b.trickle_body(1.0),
    "headers-100-bytes-then-silence": lambda: b.silent_after(100),
}


def test_slow_servers_end_with_exit_3_and_one_line(serve, tmp_path):
    """The three cases run side by side: each spends its retry budget in seconds of timeouts."""
    data = data_of(64 << 10, 22)

    def one(name: str) -> None:
        srv = serve(data, SLOW[name]())
        (tmp_path / name).mkdir()
        out = tmp_path / name / "out"
        manifest = write_manifest(tmp_path / name / "m.json",
                                  [("model.bin", len(data), srv.url("model.bin"))])
        run = weightlift("pull", manifest, "-o", str(out), "--connections", "1",
                         env=SLOW_LIMITS, timeout=60)
        _fails_with_one_line(run, out, bound=45)

    run_cases({name: (lambda name=name: one(name)) for name in SLOW}, workers=len(SLOW))
