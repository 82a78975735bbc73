"""Run one child process and measure it: wall time, CPU (user+sys) and peak RSS, from
``os.wait4``'s resource usage of that child (no ``/usr/bin/time`` parsing)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

LAUNCHER = Path(__file__).resolve().parent / "launch.py"


@dataclass
class Sample:
    wall: float
    cpu: float  # user + sys seconds
    rss: int  # peak resident set size, bytes
    stdout: str = ""


class StepFailed(RuntimeError):
    pass


def run_measured(argv: list[str], *, env: dict[str, str] | None = None,
                 cwd: Path | None = None, timeout: float = 3600.0) -> Sample:
    """Run ``argv`` to completion through the small launcher; raise StepFailed (with its
    stderr tail) on a non-zero exit.

    stdout and stderr go to temporary files, not pipes, so the child never blocks on a full
    pipe and the parent does no work while it runs.
    """
    tmp = Path(tempfile.gettempdir())
    out_path = tmp / f"bench-{os.getpid()}.out"
    err_path = out_path.with_suffix(".err")
    read_fd, write_fd = os.pipe()
    launcher = [sys.executable, "-S", "-I", str(LAUNCHER), str(write_fd), "--", *argv]
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(launcher, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                env=env, cwd=cwd, pass_fds=(write_fd,),
                                start_new_session=True)
        os.close(write_fd)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher and the tool under it
            proc.wait()
            os.close(read_fd)
            raise StepFailed(f"{Path(argv[0]).name}: timed out after {timeout:.0f} s") from None
    with os.fdopen(read_fd, "rb") as fh:
        raw = fh.read()
    stdout = out_path.read_text(errors="replace")
    stderr = err_path.read_text(errors="replace")
    out_path.unlink(missing_ok=True)
    err_path.unlink(missing_ok=True)
    if proc.returncode != 0 or not raw:
        raise StepFailed(f"launcher failed ({proc.returncode}): {stderr.strip()[-300:]}")
    usage = json.loads(raw)
    if usage["code"] != 0:
        tail = " | ".join(stderr.strip().splitlines()[-3:])
        raise StepFailed(f"{Path(argv[0]).name} exited {usage['code']}: {tail}")
    return Sample(wall=usage["wall"], cpu=usage["utime"] + usage["stime"],
                  rss=usage["maxrss_kib"] * 1024, stdout=stdout)


def reset_dir(path: Path) -> None:
    """Remove ``path`` and flush dirty pages, so one run's writeback never bills the next."""
    shutil.rmtree(path, ignore_errors=True)
    os.sync()
    path.mkdir(parents=True)
