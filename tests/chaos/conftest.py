"""Shared by the reliability suite: a `weightlift` child run at DEBUG logging whose every output
is checked for secrets (`wl`, `wl_popen`), and the watch list of secrets itself (`secrets`).

Every module here sets `pytestmark = pytest.mark.chaos`; sizes come from the options declared
in tests/conftest.py (`--trials`, `--kills`, `--tiny-files`, `--chaos-seed`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

# Query parameters that carry a signature or a credential, in every style we meet: S3 SigV4,
# CloudFront (`Signature`, `Key-Pair-Id`), GCS, Azure SAS (`sig`, `se`, `sp`, ...), nginx
# secure_link (`md5`), and our emulator's plain style (`sig`).
SENSITIVE_PARAMS = frozenset(p.lower() for p in (
    "X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "X-Goog-Signature",
    "X-Goog-Credential", "Signature", "Key-Pair-Id", "Policy", "sig", "se", "sp", "sv", "st",
    "md5",
))
_PARAM_IN_TEXT = re.compile(
    r"[?&;](" + "|".join(re.escape(p) for p in sorted(SENSITIVE_PARAMS, key=len, reverse=True))
    + r")=", re.IGNORECASE)


@dataclass
class SecretWatch:
    """What must never appear in anything weightlift writes: API keys, signature values, and
    any `?X-Amz-Signature=`-like query parameter at all."""

    literals: set[str] = field(default_factory=set)

    def add(self, *values: str) -> None:
        self.literals.update(v for v in values if v and len(v) >= 6)

    def add_url(self, url: str) -> None:
        """Watch the sensitive query values of a presigned URL (and its whole query)."""
        query = urlsplit(url).query
        if not query:
            return
        self.add(query)
        for name, value in parse_qsl(query, keep_blank_values=True):
            if name.lower() in SENSITIVE_PARAMS:
                self.add(value)

    def add_served(self, storage_emulator: object) -> None:
        """Watch every signature the storage emulator was presented with so far."""
        for rec in getattr(storage_emulator, "requests", []):
            for name, value in rec.query.items():
                if name.lower() in SENSITIVE_PARAMS:
                    self.add(value)

    def leaks(self, text: str) -> list[str]:
        found = [f"param {m.group(0)!r}" for m in _PARAM_IN_TEXT.finditer(text)]
        found += [f"secret {v[:4]}…" for v in self.literals if v in text]
        return found

    def check(self, text: str, where: str) -> None:
        leaks = self.leaks(text)
        assert not leaks, f"secret leaked into {where}: {leaks}"

    def check_tree(self, root: Path) -> None:
        """Every small file weightlift wrote under `root`: receipts, journals, logs, reports.
        Model data (large, random bytes) is skipped; its names are checked."""
        if not root.exists():
            return
        for path in root.rglob("*"):
            self.check(str(path.relative_to(root)), f"a file name under {root}")
            # A part file holds model bytes as storage sent them (random data in which a
            # `;sT=` or `;Md5=` turns up by chance): like the finished files, not ours to read.
            if path.is_file() and not path.is_symlink() and path.stat().st_size <= 4 << 20 \
                    and path.suffix != ".part" \
                    and (".weightlift" in path.parts or path.suffix in (".json", ".log")):
                self.check(path.read_bytes().decode("utf-8", "replace"), str(path))


@pytest.fixture
def secrets() -> SecretWatch:
    return SecretWatch()


@dataclass(frozen=True)
class WlResult:
    returncode: int
    stdout: str
    stderr: str


def debug_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child run: DEBUG logging everywhere, no traceback escape hatch."""
    env = {k: v for k, v in os.environ.items() if k != "WEIGHTLIFT_TRACEBACK"}
    env.update({"WEIGHTLIFT_LOG": "DEBUG", **(extra or {})})
    return env


def wl_command(args: Iterable[str]) -> list[str]:
    return [sys.executable, "-m", "weightlift.cli", "-vv", *args]


def _output_dir(args: list[str]) -> Path | None:
    for flag in ("-o", "--output"):
        if flag in args[:-1]:
            return Path(args[args.index(flag) + 1])
    return None


@pytest.fixture
def wl(secrets: SecretWatch):
    """Run `weightlift ARGS` as a child at DEBUG logging; its stdout, stderr and the output
    folder's receipts and journals are checked for secrets before the result is returned."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 110) -> WlResult:
        argv = list(args)
        proc = subprocess.run(wl_command(argv), capture_output=True, text=True,
                              env=debug_env(env), timeout=timeout)
        secrets.check(proc.stdout, "stdout")
        secrets.check(proc.stderr, "stderr")
        out = _output_dir(argv)
        if out is not None:
            secrets.check_tree(out)
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        return WlResult(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture
def wl_popen(secrets: SecretWatch) -> Iterator[object]:
    """Start `weightlift ARGS` as a child at DEBUG logging (for kills); stderr goes to a file
    that is checked for secrets when the test ends, with every output folder it named."""
    started: list[tuple[subprocess.Popen[bytes], Path, Path | None]] = []

    def start(*args: str, env: dict[str, str] | None = None, log: Path) -> subprocess.Popen[bytes]:
        argv = list(args)
        with open(log, "ab") as err:
            proc = subprocess.Popen(wl_command(argv), stdout=subprocess.DEVNULL, stderr=err,
                                    env=debug_env(env))
        started.append((proc, log, _output_dir(argv)))
        return proc

    yield start
    for proc, log, out in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        secrets.check(log.read_text("utf-8", "replace"), str(log))
        if out is not None:
            secrets.check_tree(out)


@pytest.fixture
def chaos_report(request: pytest.FixtureRequest):
    """`chaos_report(kind, **figures)` appends one JSON line to `--chaos-report PATH` (if given)
    and prints it, so larger runs leave their figures behind."""
    import json

    path = request.config.getoption("--chaos-report")

    def report(kind: str, **figures: object) -> None:
        line = json.dumps({"kind": kind, "test": request.node.nodeid, **figures}, sort_keys=True)
        print(line)
        if path:
            with open(path, "a", encoding="utf-8") as f:
                f.write(line + "\n")

    return report


# A child's own peak RSS. Not os.wait4's ru_maxrss: Linux carries the high-water mark of the
# memory a child had before exec into it, so a child of this pytest process starts with the
# parent's RSS (a 500-file and a 5,000-file pull both read 226 MB; a 100,000-entry manifest read
# 199 MB alone and 426 MB after tests/downloader had grown the parent). VmHWM belongs to the
# exec'd image alone: a sitecustomize on the child's PYTHONPATH writes it at exit. It changes
# nothing else.
RSS_HOOK = """
import atexit, os
_report = os.environ.get("WL_RSS_REPORT")
def _write_hwm():
    with open("/proc/self/status") as status:
        hwm = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(_report, "w") as out:
        out.write(hwm)
if _report:
    atexit.register(_write_hwm)  # first registered, so it runs last
"""


@dataclass(frozen=True)
class RssProbe:
    """Give ``env`` to one child; after it exits, ``peak_mb()`` is its own peak RSS."""

    env: dict[str, str]
    report: Path

    def peak_mb(self) -> float:
        assert self.report.exists(), "the child reported no peak RSS (did it exit normally?)"
        return int(self.report.read_text()) / 1024


@pytest.fixture
def rss_probe(tmp_path: Path):
    """``rss_probe(name)`` -> an RssProbe for one child run (names must differ per child)."""
    hook = tmp_path / "rss-hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(RSS_HOOK)
    path = os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH", "")) if p)

    def make(name: str) -> RssProbe:
        report = tmp_path / f"{name}.hwm"
        return RssProbe({"PYTHONPATH": path, "WL_RSS_REPORT": str(report)}, report)

    return make
