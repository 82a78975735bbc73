"""The contenders: how each one fetches a job's files, as a list of measured steps.

Each tool yields one or two result rows: weightlift and aria2c verify as they go (one row);
hf_transfer and curl do not, so they get a download-only row and a download + sha256 row.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from harness.data import DataSet

HERE = Path(__file__).resolve().parent
HF_CHUNK = 10 << 20  # huggingface_hub's DOWNLOAD_CHUNK_SIZE for hf_transfer
HF_CONNECTIONS = 16  # per file, as the issue asks
HF_PARALLEL_FILES = 8  # huggingface_hub snapshot_download's default max_workers


@dataclass(frozen=True)
class Step:
    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    # The stdout must list these "<sha256>  <path>" lines (hash steps), or be weightlift's JSON.
    expect: str = ""  # "" | "sha256-lines" | "weightlift-json"


@dataclass(frozen=True)
class Row:
    name: str
    steps: tuple[str, ...]  # the steps whose wall/CPU add up to this row (RSS: the max)
    verified: bool


@dataclass
class Job:
    """What to fetch: the data set's files at these URLs, into ``out``."""

    data: DataSet
    urls: dict[str, str]  # rel -> URL
    out: Path
    work: Path  # scratch folder for manifests, input lists
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Tool:
    name: str
    rows: tuple[Row, ...]
    python_driven: bool


WEIGHTLIFT = Tool("weightlift", (Row("weightlift", ("pull",), True),), True)
ARIA2C = Tool("aria2c", (Row("aria2c", ("download",), True),), False)
HF_TRANSFER = Tool("hf_transfer", (
    Row("hf_transfer (download)", ("download",), False),
    Row("hf_transfer + sha256", ("download", "sha256"), True),
), True)
CURL = Tool("curl", (
    Row("curl (download)", ("download",), False),
    Row("curl + sha256sum", ("download", "sha256"), True),
), False)
TOOLS = {t.name: t for t in (WEIGHTLIFT, ARIA2C, HF_TRANSFER, CURL)}


def weightlift_argv() -> list[str]:
    """``weightlift`` from the interpreter running the harness (the current checkout)."""
    return [sys.executable, "-m", "weightlift.cli"]


def weightlift_steps(job: Job, *, connections: int | None = None,
                     signed_lifetime: float | None = None,
                     extra_args: tuple[str, ...] = ()) -> list[Step]:
    files = [{"rel": f.rel, "size": f.size, "url": job.urls[f.rel], "sha256": f.sha256}
             for f in job.data.files]
    opts = list(extra_args)
    if connections:
        opts += ["--connections", str(connections)]
    if signed_lifetime is not None:
        # URLs that expire mid-pull: a driver re-signs them when weightlift asks to refresh.
        spec = job.work / "signed.json"
        spec.write_text(json.dumps({
            "files": [{k: v for k, v in f.items() if k != "url"} for f in files],
            "base": job.extra["base"], "data_name": job.data.name,
            "lifetime": signed_lifetime, "params": job.data.params,
        }))
        argv = [sys.executable, str(HERE / "signed_pull.py"), str(spec), str(job.out), *opts]
        return [Step("pull", argv, expect="weightlift-json")]
    manifest = job.work / "manifest.json"
    manifest.write_text(json.dumps({"model_id": "bench", "files": files}))
    argv = [*weightlift_argv(), "pull", str(manifest), "-o", str(job.out), "-q", "--json", *opts]
    return [Step("pull", argv, expect="weightlift-json")]


def aria2c_steps(job: Job, binary: str) -> list[Step]:
    lines = []
    for f in job.data.files:
        lines += [job.urls[f.rel], f"  out={f.rel}", f"  checksum=sha-256={f.sha256}"]
    inp = job.work / "aria2c.txt"
    inp.write_text("\n".join(lines) + "\n")
    argv = [binary, "-x16", "-s16", "-k8M", "-j4", "-i", str(inp), "-d", str(job.out), "-q",
            "--allow-overwrite=true", "--auto-file-renaming=false", "--max-tries=1"]
    return [Step("download", argv)]


def hf_transfer_steps(job: Job, python: str) -> list[Step]:
    spec = job.work / "hf.json"
    spec.write_text(json.dumps({
        "files": [[job.urls[f.rel], str(job.out / f.rel)] for f in job.data.files],
        "max_files": HF_CONNECTIONS, "chunk_size": HF_CHUNK, "parallel_files": HF_PARALLEL_FILES,
    }))
    paths = [str(job.out / f.rel) for f in job.data.files]
    return [
        Step("download", [python, str(HERE / "hf_pull.py"), str(spec)]),
        Step("sha256", [python, str(HERE / "hash_files.py"), *_listfile(job, paths)],
             expect="sha256-lines"),
    ]


def curl_steps(job: Job, binary: str) -> list[Step]:
    cfg = job.work / "curl.cfg"
    lines = []
    for f in job.data.files:
        lines += [f'url = "{job.urls[f.rel]}"', f'output = "{job.out / f.rel}"']
    cfg.write_text("\n".join(lines) + "\n")
    argv = [binary, "-sS", "--fail", "--create-dirs", "-K", str(cfg)]
    paths = [str(job.out / f.rel) for f in job.data.files]
    return [
        Step("download", argv),
        Step("sha256", [shutil.which("sha256sum") or "sha256sum", *paths], expect="sha256-lines"),
    ]


def _listfile(job: Job, paths: list[str]) -> list[str]:
    lst = job.work / "paths.txt"
    lst.write_text("\n".join(paths) + "\n")
    return ["@" + str(lst)]


def check_output(step: Step, stdout: str, job: Job) -> None:
    """Fail loudly when a tool did not deliver the right bytes."""
    if step.expect == "weightlift-json":
        doc = json.loads(stdout)
        if not doc.get("ok"):
            raise RuntimeError(f"weightlift reported failure: exit {doc.get('exit_code')}")
    elif step.expect == "sha256-lines":
        got = {}
        for line in stdout.splitlines():
            digest, _, path = line.partition("  ")
            got[Path(path).resolve()] = digest
        for f in job.data.files:
            if got.get((job.out / f.rel).resolve()) != f.sha256:
                raise RuntimeError(f"{f.rel}: sha256 mismatch after {step.name}")


# ---- installing the peers ---------------------------------------------------------------

def find_or_install_aria2c(install: bool, notes: list[str]) -> str | None:
    found = shutil.which("aria2c")
    if found or not install:
        if not found:
            notes.append("aria2c: not installed (skipped; install with apt-get install aria2)")
        return found
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        notes.append("aria2c: not installed and cannot apt-get here (not root): skipped")
        return None
    print("installing aria2 (apt-get install -y aria2) ...", file=sys.stderr)
    res = subprocess.run([apt, "install", "-y", "-q", "aria2"], capture_output=True, text=True)
    if res.returncode != 0:
        subprocess.run([apt, "update", "-q"], capture_output=True)
        res = subprocess.run([apt, "install", "-y", "-q", "aria2"], capture_output=True,
                             text=True)
    found = shutil.which("aria2c")
    if found is None:
        notes.append("aria2c: apt-get install aria2 failed: skipped")
    return found


def find_or_install_hf_transfer(work: Path, install: bool, notes: list[str]) -> str | None:
    """A python with hf_transfer: the bench's own venv (bench/work/venv-peers)."""
    venv = work / "venv-peers"
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import hf_transfer"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return str(python)
    if not install:
        notes.append(f"hf_transfer: not in {venv} (skipped; run without --no-install)")
        return None
    print(f"installing hf_transfer into {venv} ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    res = subprocess.run([str(python), "-m", "pip", "install", "-q", "hf_transfer"],
                         capture_output=True, text=True)
    if res.returncode != 0 or subprocess.run(probe, capture_output=True).returncode != 0:
        notes.append("hf_transfer: pip install failed: skipped")
        return None
    return str(python)
