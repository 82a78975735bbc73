#!/usr/bin/env python3
"""Benchmark weightlift against aria2c, hf_transfer and curl, all fetching the same files from
the same nginx on loopback. See bench/README.md.

    python bench/run.py                       # everything, default sizes (a while)
    python bench/run.py --size 256M --reps 1 --scenarios plain,small
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import data as datasets  # noqa: E402
from harness import report, tools  # noqa: E402
from harness.measure import Sample, StepFailed, reset_dir, run_measured  # noqa: E402
from harness.nginx import Nginx, find_nginx, sign  # noqa: E402

BENCH = Path(__file__).resolve().parent
ALL_SCENARIOS = ("plain", "capped", "signed", "small", "size", "conns")
ALL_TOOLS = ("weightlift", "aria2c", "hf_transfer", "curl")
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMG]?)(?:i?B)?", text.strip(), re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 2G, 512M, 100K)")
    return int(float(m.group(1)) * UNITS[m.group(2).upper()])


def human(n: float) -> str:
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:g} {unit}"
    return f"{n:g} B"


def csv(kind: Callable[[str], object]) -> Callable[[str], list[object]]:
    return lambda text: [kind(x) for x in text.split(",") if x]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="weightlift vs aria2c, hf_transfer and curl over a loopback nginx",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--size", type=parse_size, default=2 << 30,
                   help="checkpoint size (plain, capped, signed; the size scan uses x1/4..x2)")
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--small-count", type=int, default=1000, help="files in the small set")
    p.add_argument("--small-size", type=parse_size, default=100 << 10)
    p.add_argument("--reps", type=int, default=5, help="measured runs per tool and scenario")
    p.add_argument("--no-warmup", action="store_true", help="skip the unrecorded warm-up run")
    p.add_argument("--scenarios", type=csv(str), default=list(ALL_SCENARIOS),
                   help=f"comma list of {','.join(ALL_SCENARIOS)}")
    p.add_argument("--tools", type=csv(str), default=list(ALL_TOOLS),
                   help=f"comma list of {','.join(ALL_TOOLS)}")
    p.add_argument("--rate", type=parse_size, default=25_000_000,
                   help="per-connection cap of the capped location (bytes/s)")
    p.add_argument("--connections", type=int, default=None,
                   help="weightlift --connections in plain/capped/signed/small (default: its own)")
    p.add_argument("--conn-scan", type=csv(int), default=[1, 4, 16, 64],
                   help="weightlift connection counts for the conns scenario (capped)")
    p.add_argument("--conn-size", type=parse_size, default=None,
                   help="checkpoint size for the conns scenario (default: --size / 4)")
    p.add_argument("--signed-lifetime", type=float, default=2.0,
                   help="seconds weightlift's signed URLs live (peers get an hour)")
    p.add_argument("--wl-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for weightlift pull (repeatable), for A/B runs")
    p.add_argument("--wl-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for weightlift (repeatable), for A/B runs")
    p.add_argument("--work", type=Path, default=BENCH / "work",
                   help="data, nginx prefix, outputs, peer venv")
    p.add_argument("--results", type=Path, default=BENCH / "results")
    p.add_argument("--no-install", action="store_true",
                   help="skip peers that are missing instead of installing them")
    p.add_argument("--full-capped-curl", action="store_true",
                   help="run curl on the capped location every repetition (default: once)")
    p.add_argument("--timeout", type=float, default=900.0, help="per step, seconds")
    return p


@dataclass
class Variant:
    label: str  # row name for single-row tools
    tool: tools.Tool
    data: datasets.DataSet
    location: str  # plain | capped | signed
    steps: Callable[[tools.Job], list[tools.Step]]
    max_reps: int | None = None  # fewer runs for a tool whose time is known by construction
    note: str = ""

    def row_names(self) -> list[tools.Row]:
        if self.label == self.tool.name:
            return list(self.tool.rows)
        return [tools.Row(self.label, r.steps, r.verified) for r in self.tool.rows]


def _version(argv: list[str]) -> str:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (res.stdout or res.stderr).strip().splitlines()
    return text[0] if text else "?"


def machine_info(peers: dict[str, str | None], nginx: str) -> dict[str, object]:
    aria2c, curl, hf = peers.get("aria2c"), peers.get("curl"), peers.get("hf_transfer")
    cpu = "?"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in
                   Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    commit = _version(["git", "-C", str(BENCH.parent), "rev-parse", "--short", "HEAD"])
    dirty = _version(["git", "-C", str(BENCH.parent), "status", "--porcelain",
                      "--untracked-files=no"])
    return {
        "host": platform.node(), "kernel": platform.release(), "cpu": cpu,
        "cpus": os.cpu_count(), "memory_gib": round(mem / (1 << 30), 1),
        "python": platform.python_version(),
        "weightlift_commit": commit + (" (modified)" if dirty not in ("", "?") else ""),
        "nginx": _version([nginx, "-v"]),
        "aria2c": _version([aria2c, "--version"]) if aria2c else None,
        "curl": _version([curl, "--version"]) if curl else None,
        "hf_transfer": _version([hf, "-c",
                                 "import importlib.metadata as m; print(m.version('hf_transfer'))"])
        if hf else None,
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    unknown = set(args.scenarios) - set(ALL_SCENARIOS) | set(args.tools) - set(ALL_TOOLS)
    if unknown:
        print(f"unknown scenario/tool: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    work: Path = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    nginx_bin = find_nginx()
    if nginx_bin is None:
        print("nginx is not installed: apt-get install nginx-light (or nginx)", file=sys.stderr)
        return 2
    install = not args.no_install
    peers: dict[str, str | None] = {
        "aria2c": tools.find_or_install_aria2c(install, notes) if "aria2c" in args.tools
        else None,
        "hf_transfer": tools.find_or_install_hf_transfer(work, install, notes)
        if "hf_transfer" in args.tools else None,
        "curl": shutil.which("curl") if "curl" in args.tools else None,
    }
    if "curl" in args.tools and peers["curl"] is None:
        notes.append("curl: not installed: skipped")
    if "curl" in args.tools and peers["curl"] and shutil.which("sha256sum") is None:
        notes.append("curl: no sha256sum: skipped")
        peers["curl"] = None
    present = [t for t in args.tools if t == "weightlift" or peers.get(t)]

    data_dir = work / "data"
    print(f"preparing data in {data_dir} ...", file=sys.stderr)
    ckpt = datasets.checkpoint(data_dir, args.size, args.shards) if {
        "plain", "capped", "signed"} & set(args.scenarios) else None
    wl_env = dict(os.environ)
    for kv in args.wl_env:
        key, _, value = kv.partition("=")
        wl_env[key] = value
    wl_conn = args.connections
    wl_extra = tuple(args.wl_arg)

    def wl(conns: int | None = wl_conn, lifetime: float | None = None
           ) -> Callable[[tools.Job], list[tools.Step]]:
        def make(job: tools.Job) -> list[tools.Step]:
            steps = tools.weightlift_steps(job, connections=conns, signed_lifetime=lifetime,
                                           extra_args=wl_extra)
            return [tools.Step(s.name, s.argv, wl_env, s.expect) for s in steps]
        return make

    def peer_variants(data: datasets.DataSet, location: str) -> list[Variant]:
        out = []
        for name in present:
            tool = tools.TOOLS[name]
            if name == "weightlift":
                make = wl(lifetime=args.signed_lifetime if location == "signed" else None)
            else:
                binary = peers[name]
                assert binary is not None
                build = {"aria2c": tools.aria2c_steps, "hf_transfer": tools.hf_transfer_steps,
                         "curl": tools.curl_steps}[name]
                make = (lambda b, fn: lambda job: fn(job, b))(binary, build)
            v = Variant(name, tool, data, location, make)
            if name == "curl" and location == "capped" and not args.full_capped_curl:
                # One connection at the cap: its time is size / rate by construction (86 s
                # for 2 GiB at 25 MB/s), so one run, no warm-up.
                v.max_reps, v.note = 1, "one run (one connection: size / rate by construction)"
            out.append(v)
        return out

    plan: list[tuple[str, list[Variant]]] = []
    for scn in args.scenarios:
        if scn in ("plain", "capped", "signed"):
            assert ckpt is not None
            plan.append((scn, peer_variants(ckpt, scn)))
        elif scn == "small":
            small = datasets.small_files(data_dir, args.small_count, args.small_size)
            plan.append((scn, peer_variants(small, "plain")))
        elif scn == "size":
            variants = []
            for factor in (0.25, 0.5, 1, 2):
                d = datasets.checkpoint(data_dir, int(args.size * factor), args.shards)
                variants.append(Variant(f"weightlift {human(d.total_bytes)}", tools.WEIGHTLIFT,
                                        d, "plain", wl()))
            plan.append((scn, variants))
        elif scn == "conns":
            d = datasets.checkpoint(data_dir, args.conn_size or args.size // 4, args.shards)
            plan.append((scn, [Variant(f"weightlift -c{c}", tools.WEIGHTLIFT, d, "capped", wl(c))
                               for c in args.conn_scan]))

    # The launcher's own high-water mark is inherited by what it starts: a tool's peak RSS is
    # never reported below this floor (about 9 MB here).
    rss_floor = run_measured(["true"]).rss
    rows: list[report.RowStats] = []
    failures: list[str] = []
    started = datetime.datetime.now(datetime.timezone.utc)
    with Nginx(nginx_bin, work / "nginx", data_dir, rate=args.rate) as ng:
        for scn, variants in plan:
            samples: dict[str, list[dict[str, Sample]]] = {v.label: [] for v in variants}
            refreshes: dict[str, list[int]] = {v.label: [] for v in variants}
            engine_s: dict[str, list[float]] = {v.label: [] for v in variants}
            jobs = {}
            for v in variants:
                if v.location == "signed" and v.tool is not tools.WEIGHTLIFT:
                    urls = {f.rel: sign(ng.base, f"{v.data.name}/{f.rel}", 3600)
                            for f in v.data.files}
                else:
                    urls = {f.rel: ng.url(v.location, f"{v.data.name}/{f.rel}")
                            for f in v.data.files}
                scratch = work / "jobs" / scn / re.sub(r"[^\w.-]+", "_", v.label)
                scratch.mkdir(parents=True, exist_ok=True)
                jobs[v.label] = tools.Job(v.data, urls, work / "out", scratch,
                                          {"base": ng.base})
            broken: set[str] = set()
            reps = [("warm-up", 0)] * (0 if args.no_warmup else 1) + [
                (f"run {i + 1}/{args.reps}", i) for i in range(args.reps)]
            for what, i in reps:
                order = variants[i % len(variants):] + variants[:i % len(variants)]
                for v in order:
                    if v.label in broken:
                        continue
                    if v.max_reps is not None and (what == "warm-up"
                                                   or len(samples[v.label]) >= v.max_reps):
                        continue
                    job = jobs[v.label]
                    got: dict[str, Sample] = {}
                    try:
                        reset_dir(job.out)
                        for step in v.steps(job):
                            s = run_measured(step.argv, env=step.env, timeout=args.timeout)
                            tools.check_output(step, s.stdout, job)
                            got[step.name] = s
                            if step.expect == "weightlift-json" and what != "warm-up":
                                totals = json.loads(s.stdout).get("totals", {})
                                refreshes[v.label].append(int(totals.get("refreshes", 0)))
                                engine_s[v.label].append(float(totals.get("seconds", 0.0)))
                    except (StepFailed, RuntimeError, ValueError) as exc:
                        broken.add(v.label)
                        failures.append(f"{scn}/{v.label}: {exc}")
                        print(f"  {scn:<7} {v.label:<22} FAILED: {exc}", file=sys.stderr)
                        continue
                    total = sum(s.wall for s in got.values())
                    print(f"  {scn:<7} {what:<9} {v.label:<22} {total:7.2f} s", file=sys.stderr)
                    if what != "warm-up":
                        samples[v.label].append(got)
            shutil.rmtree(work / "out", ignore_errors=True)
            for v in variants:
                runs = samples[v.label]
                if not runs or v.label in broken:
                    continue
                if v.location == "signed" and refreshes[v.label]:
                    v.note = (f"URLs live {args.signed_lifetime:g} s; refreshes per run: "
                              + ", ".join(map(str, refreshes[v.label])))
                for r in v.row_names():
                    rows.append(report.RowStats(
                        scn, r.name, v.data.total_bytes,
                        walls=[sum(run[s].wall for s in r.steps) for run in runs],
                        cpus=[sum(run[s].cpu for s in r.steps) for run in runs],
                        rsss=[max(run[s].rss for s in r.steps) for run in runs],
                        verified=r.verified, python_driven=v.tool.python_driven,
                        note=v.note, engine=engine_s[v.label]))
    finished = datetime.datetime.now(datetime.timezone.utc)

    conns = args.connections or _weightlift_default_connections()
    checks = report.targets(rows, rate=args.rate, connections=conns)
    info = machine_info({**peers, "curl": peers.get("curl")}, nginx_bin)
    command = "python bench/run.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print()
    print(f"{info['cpu']}, {info['cpus']} CPUs, {info['memory_gib']} GiB; "
          f"{started:%Y-%m-%d %H:%M} UTC; weightlift {info['weightlift_commit']}")
    print(f"command: {command}")
    sizes = sorted({(r.scenario, r.bytes) for r in rows})
    print("data: " + "; ".join(f"{s} {human(b)}" for s, b in sizes if s not in ("size",)))
    print()
    print(report.table(rows))
    transfer = report.transfer_text(rows)
    if transfer:
        print("\nweightlift: end to end vs its own transfer time (the rest is the interpreter "
              "start, imports and the post-pull validation):")
        print(transfer)
    if checks:
        print("\ntargets:")
        print(report.targets_text(checks))
    print(f"RSS floor (the measuring launcher's own, inherited by every child): "
          f"{rss_floor / 1e6:.0f} MB")
    for stats in rows:
        if stats.note:
            print(f"note: {stats.scenario}/{stats.row}: {stats.note}")
    for note in notes + failures:
        print(f"note: {note}")
    args.results.mkdir(parents=True, exist_ok=True)
    dest = args.results / f"{started:%Y%m%dT%H%M%SZ}.json"
    doc = {
        "command": command, "started": started.isoformat(), "finished": finished.isoformat(),
        "machine": info, "settings": {k: (str(v) if isinstance(v, Path) else v)
                                      for k, v in vars(args).items()},
        "weightlift_connections": conns,
        "rows": [r.as_dict(next((x for x in rows if x.scenario == r.scenario
                                 and x.row == "weightlift"), None)) for r in rows],
        "rss_floor_mb": round(rss_floor / 1e6, 1),
        "targets": checks, "notes": notes, "failures": failures,
    }
    tmp = dest.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(dest)
    print(f"\nresults: {dest}")
    return 1 if failures else 0


def _weightlift_default_connections() -> int:
    from weightlift.downloader.planner import DEFAULT_CONNECTIONS

    return int(DEFAULT_CONNECTIONS)


if __name__ == "__main__":
    t0 = time.monotonic()
    code = main()
    print(f"({time.monotonic() - t0:.0f} s in all)", file=sys.stderr)
    sys.exit(code)
