"""Issue 11 §2.9: `weightlift verify DIR` while a pull into DIR is running. On main it says
"no .safetensors files" (exit 1), judging a folder that is still being filled.

Expected: a non-zero exit with one line saying that a pull is in progress. The exit code is 2
(usage / bad input in the README's table: it is the code a second `pull` into a locked folder
gets, "another weightlift is already pulling into DIR"; nothing was verified, so it is not 1).
Once that pull is gone (killed: the OS releases its lock), verify no longer claims one runs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import behaviours as b
import pytest
from hostile_run import EXIT_USAGE, data_of, weightlift, write_manifest

pytestmark = pytest.mark.hostile

IN_PROGRESS = re.compile(r"pull.*(in progress|running)", re.IGNORECASE)


def test_verify_during_a_pull_says_a_pull_is_in_progress(serve, tmp_path):
    data = data_of(1 << 20, 41)
    srv = serve(data, b.silent_after(100))  # the pull holds its lock, waiting for bytes
    out = tmp_path / "out"
    manifest = write_manifest(tmp_path / "m.json",
                              [("model.safetensors", len(data), srv.url("model.safetensors"))])
    # --no-verify: the 100 bytes are no safetensors header, and the pull must not fail fast.
    log = tmp_path / "pull.log"
    with open(log, "wb") as err:
        pull = subprocess.Popen(
            [sys.executable, "-m", "weightlift.cli", "pull", manifest, "-o", str(out), "-q",
             "--no-verify"], stdout=subprocess.DEVNULL, stderr=err,
            env={**os.environ, "WEIGHTLIFT_STALL_TIMEOUT": "60"})
    try:
        deadline = time.monotonic() + 20
        while not srv.gets() and time.monotonic() < deadline:
            assert pull.poll() is None, f"the pull ended early\n{log.read_text()}"
            time.sleep(0.05)
        assert srv.gets(), "the pull sent no request within 20 s"
        assert (out / ".weightlift" / "lock").exists()

        run = weightlift("verify", str(out), timeout=30)
        assert pull.poll() is None, f"the pull ended while verify ran\n{log.read_text()}"
        assert run.returncode == EXIT_USAGE, run.tail()
        lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1, run.tail()
        assert IN_PROGRESS.search(lines[0]), run.tail()
        assert "no .safetensors" not in run.stderr, run.tail()
    finally:
        pull.kill()
        pull.wait(timeout=10)

    after = weightlift("verify", str(out), timeout=30)
    assert not IN_PROGRESS.search(after.stderr), f"a dead pull blocks verify\n{after.tail()}"
    assert "Traceback" not in after.stderr, after.tail()
