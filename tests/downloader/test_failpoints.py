"""The failpoint seam (weightlift.downloader.failpoints): its parser, its placement, and that an
armed failpoint kills the process with SIGKILL on exactly the arrival it names."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from weightlift.downloader import failpoints
from weightlift.downloader.failpoints import ENV, NAMES, parse

A, B = "finalize.before_rename", "journal.before_write"


@pytest.mark.parametrize(("spec", "armed"), [
    ("", {}),
    (" , ", {}),
    (f"{A}=3", {A: 3}),
    (f"{A}", {A: 1}),
    (f" {A} = 2 ,{B}=7, ", {A: 2, B: 7}),
])
def test_parse_accepts(spec, armed):
    assert parse(spec) == armed


@pytest.mark.parametrize(("spec", "why"), [
    ("nope=1", "unknown failpoint 'nope'"),
    (f"{A}=0", "at least 1"),
    (f"{A}=-2", "at least 1"),
    (f"{A}=x", "must be an integer"),
    (f"{A}=", "must be an integer"),
    (f"{A}=1,{A}=2", "named twice"),
    ("=3", "unknown failpoint ''"),
])
def test_parse_rejects(spec, why):
    with pytest.raises(ValueError, match=re.escape(why)):
        parse(spec)


def test_unarmed_failpoint_is_a_bool_check():
    assert ENV not in os.environ
    assert failpoints._ENABLED is False
    failpoints.failpoint(A)  # returns at once: nothing counted
    assert failpoints._arrivals == {}


def test_every_failpoint_is_placed_exactly_once():
    src = Path(failpoints.__file__).parent
    calls: dict[str, int] = {}
    for path in src.rglob("*.py"):
        if path.name == "failpoints.py":
            continue
        for name in re.findall(r'\bfailpoint\("([^"]+)"\)', path.read_text("utf-8")):
            calls[name] = calls.get(name, 0) + 1
    assert calls == dict.fromkeys(NAMES, 1)


def _child(env_value: str | None, body: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if env_value is not None:
        env[ENV] = env_value
    return subprocess.run([sys.executable, "-c", body], capture_output=True, text=True, env=env,
                          timeout=60)


ARRIVE_FIVE = (
    "from weightlift.downloader.failpoints import failpoint\n"
    "for i in range(1, 6):\n"
    f"    failpoint({B!r})\n"
    f"    failpoint({A!r})\n"
    "    print(i, flush=True)\n"
)


def test_armed_failpoint_sigkills_on_its_arrival():
    out = _child(f"{A}=3", ARRIVE_FIVE)
    assert out.returncode == -signal.SIGKILL
    assert out.stdout.split() == ["1", "2"]  # the 3rd arrival never printed
    assert f"weightlift failpoint {A}: SIGKILL at arrival 3" in out.stderr


def test_first_armed_arrival_wins_and_others_are_counted_apart():
    out = _child(f"{A}=4,{B}=2", ARRIVE_FIVE)
    assert out.returncode == -signal.SIGKILL
    assert out.stdout.split() == ["1"]
    assert f"failpoint {B}: SIGKILL at arrival 2" in out.stderr


def test_arrival_never_reached_runs_to_the_end():
    out = _child(f"{A}=9", ARRIVE_FIVE)
    assert out.returncode == 0
    assert out.stdout.split() == ["1", "2", "3", "4", "5"]


def test_malformed_variable_fails_at_import():
    out = _child("finalize.before_renam=1", "import weightlift.downloader.failpoints")
    assert out.returncode != 0
    assert "unknown failpoint 'finalize.before_renam'" in out.stderr


def test_arrivals_are_counted_across_threads():
    body = (
        "import threading\n"
        "from weightlift.downloader.failpoints import failpoint\n"
        f"ts = [threading.Thread(target=lambda: [failpoint({A!r}) for _ in range(50)])"
        " for _ in range(4)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "print('survived', flush=True)\n"
    )
    assert _child(f"{A}=200", body).returncode == -signal.SIGKILL
    assert _child(f"{A}=201", body).stdout.strip() == "survived"
