"""`weightlift` run as a child with a hard timeout, and judged from the outside only: exit
code, stderr lines, files on disk (the hostile-server suite, tests/hostile)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

EXIT_OK, EXIT_VERIFY, EXIT_USAGE, EXIT_TRANSFER = 0, 1, 2, 3

# Short budgets so that each misbehaving server costs seconds, not minutes. WEIGHTLIFT_RETRY_BASE
# and WEIGHTLIFT_STALL_TIMEOUT (s without a byte) exist on main; issue 11 §2.6 adds
# WEIGHTLIFT_HEADER_TIMEOUT (s to receive a response's status line and headers) and a minimum
# speed, WEIGHTLIFT_LOW_SPEED (bytes/s) over WEIGHTLIFT_LOW_SPEED_TIME (s), like curl's
# --speed-limit/--speed-time.
FAST_ENV = {"WEIGHTLIFT_RETRY_BASE": "0.01", "WEIGHTLIFT_STALL_TIMEOUT": "5"}
SLOW_LIMITS = {"WEIGHTLIFT_STALL_TIMEOUT": "1", "WEIGHTLIFT_HEADER_TIMEOUT": "1",
               "WEIGHTLIFT_LOW_SPEED": "1024", "WEIGHTLIFT_LOW_SPEED_TIME": "1"}
# Limits inherited from the caller's environment would change what these tests judge.
_NOT_INHERITED = ("WEIGHTLIFT_TRACEBACK", "WEIGHTLIFT_LOG", "WEIGHTLIFT_HEADER_TIMEOUT",
                  "WEIGHTLIFT_LOW_SPEED", "WEIGHTLIFT_LOW_SPEED_TIME")


def data_of(n: int, seed: int = 0) -> bytes:
    import random

    return random.Random(seed).randbytes(n)


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def errors(self) -> list[str]:
        """The failure lines the user reads (not log records)."""
        return [ln for ln in self.stderr.splitlines()
                if ln.startswith(("weightlift: error:", "weightlift: internal error"))]

    def report(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.stdout)
        except ValueError:
            return {}
        return doc if isinstance(doc, dict) else {}

    def tail(self) -> str:
        return f"exit {self.returncode} after {self.seconds:.1f}s\n{self.stderr[-2500:]}"


def weightlift(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> Run:
    """Run `weightlift ARGS` as a child; a run past ``timeout`` is killed and fails the test
    as a hang (with what it printed so far)."""
    cmd = [sys.executable, "-m", "weightlift.cli", *args]
    full_env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
    full_env.update({**FAST_ENV, **(env or {})})
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode("utf-8", "replace") if isinstance(exc.stderr, bytes) else ""
        pytest.fail(f"`weightlift {' '.join(args[:1])}` hung: still running after {timeout:.0f}s "
                    f"(killed)\n{err[-2500:]}")
    return Run(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - t0)


def write_manifest(path: Path, files: list[tuple[str, int, str]], **extra: Any) -> str:
    """A manifest of (rel, size, url) entries; ``extra`` per-file fields go to every entry."""
    path.write_text(json.dumps({"files": [
        {"rel": rel, "size": size, "url": url, **extra} for rel, size, url in files]}))
    return str(path)


def assert_sane_output(run: Run) -> None:
    """Output agrees with the exit code: no traceback, no internal error, no "failed" line
    after a success, exactly one error line after a failure."""
    assert "Traceback" not in run.stderr, run.tail()
    assert "AssertionError" not in run.stderr, run.tail()
    assert "internal error" not in run.stderr, run.tail()
    if run.returncode == EXIT_OK:
        assert not run.errors, run.tail()
        assert not re.search(r"\bfailed\b", run.stderr), run.tail()
    else:
        assert len(run.errors) == 1, f"expected one error line\n{run.tail()}"


def final_files(out: Path) -> list[str]:
    """Names under ``out`` outside the work folder: what a user would take as downloaded."""
    if not out.exists():
        return []
    return sorted(str(p.relative_to(out)) for p in out.rglob("*")
                  if p.is_file() and ".weightlift" not in p.relative_to(out).parts)




def run_cases(cases: dict[str, Callable[[], None]], workers: int = 2) -> None:
    """Run independent cases side by side and report every failing case by name, not just
    the first. Two at a time by default (a child's start is CPU-bound and CI has 2 cores);
    cases that mostly wait on timeouts may ask for more."""
    with ThreadPoolExecutor(min(workers, len(cases))) as pool:
        futures = {name: pool.submit(case) for name, case in cases.items()}
    problems = [f"--- {name}: {type(exc).__name__}: {exc}" for name, fut in futures.items()
                if (exc := fut.exception()) is not None]
    assert not problems, f"{len(problems)} of {len(cases)} cases failed\n" + "\n".join(problems)
