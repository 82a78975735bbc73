"""Summaries (median, min-max, throughput, ratio to weightlift, CPU, RSS), the stdout table,
and the check of the issue's targets."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

GiB = 1 << 30
MB = 1e6


@dataclass
class RowStats:
    scenario: str
    row: str
    bytes: int
    walls: list[float]
    cpus: list[float]
    rsss: list[int]
    verified: bool
    python_driven: bool
    note: str = ""
    # weightlift only: its own transfer time per run (download, hash, fsync, rename; without
    # the interpreter start and the post-pull validation)
    engine: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.walls)

    @property
    def cpu(self) -> float:
        return statistics.median(self.cpus)

    @property
    def rss(self) -> int:
        return max(self.rsss)

    def as_dict(self, ref: RowStats | None) -> dict[str, Any]:
        return {
            "scenario": self.scenario, "row": self.row, "bytes": self.bytes,
            "verified": self.verified, "median_s": round(self.median, 3),
            "min_s": round(min(self.walls), 3), "max_s": round(max(self.walls), 3),
            "throughput_mb_s": round(self.bytes / self.median / MB, 1),
            # weightlift's median time over this row's: < 1 means weightlift was faster.
            "weightlift_over_this": round(ref.median / self.median, 3) if ref else None,
            "cpu_s": round(self.cpu, 2),
            "cpu_s_per_gib": round(self.cpu / (self.bytes / GiB), 2) if self.bytes else None,
            "peak_rss_mb": round(self.rss / MB, 1),
            "walls_s": [round(w, 3) for w in self.walls],
            "cpus_s": [round(c, 3) for c in self.cpus],
            "rss_mb": [round(r / MB, 1) for r in self.rsss],
            **({"note": self.note} if self.note else {}),
            **({"transfer_median_s": round(statistics.median(self.engine), 3),
                "transfer_s": [round(e, 3) for e in self.engine]} if self.engine else {}),
        }


def table(rows: list[RowStats], ref_name: str = "weightlift") -> str:
    """One block per scenario. 'wl/x' is weightlift's median time over this row's: below 1.0
    means weightlift is faster."""
    lines: list[str] = []
    head = (f"{'scenario':<11} {'tool':<24} {'median s':>8} {'min-max s':>13} {'MB/s':>7} "
            f"{'wl/x':>6} {'CPU s':>6} {'CPU/GiB':>7} {'RSS MB':>7}")
    lines.append(head)
    lines.append("-" * len(head))
    last = None
    for r in rows:
        if last is not None and r.scenario != last:
            lines.append("")
        last = r.scenario
        ref = next((x for x in rows if x.scenario == r.scenario and x.row == ref_name), None)
        d = r.as_dict(ref)
        ratio = f"{d['weightlift_over_this']:.2f}" if ref else "-"
        span = f"{d['min_s']:.2f}-{d['max_s']:.2f}"
        lines.append(
            f"{r.scenario:<11} {r.row + ('' if r.verified else ' *'):<24} {d['median_s']:>8.2f} "
            f"{span:>13} {d['throughput_mb_s']:>7.0f} {ratio:>6} {d['cpu_s']:>6.2f} "
            f"{d['cpu_s_per_gib'] or 0:>7.2f} {d['peak_rss_mb']:>7.0f}")
    lines.append("")
    lines.append("* download only, nothing verified. wl/x = weightlift's median time / this "
                 "row's (< 1: weightlift faster). RSS = peak over the runs.")
    return "\n".join(lines)


def _find(rows: list[RowStats], scenario: str, row: str) -> RowStats | None:
    return next((r for r in rows if r.scenario == scenario and r.row == row), None)


def targets(rows: list[RowStats], *, rate: int, connections: int) -> list[dict[str, Any]]:
    """The issue's targets that this run can judge: [{target, value, limit, met}]."""
    out: list[dict[str, Any]] = []

    def ratio(scn: str, peer: str, limit: float, label: str) -> None:
        wl, other = _find(rows, scn, "weightlift"), _find(rows, scn, peer)
        if wl and other:
            v = wl.median / other.median
            out.append({"target": label, "value": round(v, 3), "limit": limit,
                        "met": v <= limit})

    ratio("plain", "aria2c", 0.5, "plain: weightlift <= 0.5x aria2c (with checksum)")
    ratio("plain", "hf_transfer (download)", 1.0,
          "plain: weightlift <= 1.0x hf_transfer download-only")
    ratio("plain", "curl (download)", 1.5, "plain: weightlift <= 1.5x curl download-only")
    wl_capped, wl_plain = _find(rows, "capped", "weightlift"), _find(rows, "plain", "weightlift")
    if wl_capped:
        cap = rate * connections
        ceiling = min(cap, wl_plain.bytes / wl_plain.median) if wl_plain else cap
        got = wl_capped.bytes / wl_capped.median
        out.append({"target": f"capped: weightlift >= 90% of min(cap x {connections} conns, "
                              "plain throughput)",
                    "value": round(got / ceiling, 3), "limit": 0.9, "met": got >= 0.9 * ceiling})
        if wl_capped.engine and wl_plain and wl_plain.engine:
            ceiling = min(cap, wl_plain.bytes / statistics.median(wl_plain.engine))
            got = wl_capped.bytes / statistics.median(wl_capped.engine)
            out.append({"target": "capped, transfer only (weightlift's own seconds, without "
                                  "interpreter start and post-pull validation): same",
                        "value": round(got / ceiling, 3), "limit": 0.9,
                        "met": got >= 0.9 * ceiling})
    ratio("capped", "aria2c", 0.5, "capped: weightlift <= 0.5x aria2c")
    ratio("capped", "hf_transfer (download)", 0.8,
          "capped: weightlift <= 0.8x hf_transfer download-only")
    ratio("small", "aria2c", 0.5, "small files: weightlift <= 0.5x aria2c")
    wl_rows = [r for r in rows if r.row == "weightlift" or r.row.startswith("weightlift ")]
    if wl_rows:
        peak = max(r.rss for r in wl_rows)
        out.append({"target": "memory: weightlift peak RSS <= 150 MB (all runs)",
                    "value": round(peak / MB, 1), "limit": 150, "met": peak <= 150 * MB})
    sizes = sorted((r for r in rows if r.scenario == "size"), key=lambda r: r.bytes)
    if len(sizes) >= 2:
        ref = next((r for r in sizes if r.bytes == (wl_plain.bytes if wl_plain else -1)), None)
        ref = ref or sizes[len(sizes) // 2]
        spread = max(abs(r.rss / ref.rss - 1) for r in sizes)
        out.append({"target": "memory: peak RSS flat with size (within 15% of the default "
                              "size's)", "value": round(spread, 3), "limit": 0.15,
                    "met": spread <= 0.15})
    plain = [r for r in rows if r.scenario == "plain" and r.verified]
    wl = _find(rows, "plain", "weightlift")
    if wl and plain:
        per = {r.row: r.cpu / (r.bytes / GiB) for r in plain}
        py = [v for k, v in per.items() if k != "weightlift" and k.startswith("hf_transfer")]
        if py:
            out.append({"target": "CPU: weightlift lowest CPU/GiB of the Python-driven "
                                  "(vs hf_transfer + sha256)",
                        "value": round(per["weightlift"], 2), "limit": round(min(py), 2),
                        "met": per["weightlift"] <= min(py)})
        if "aria2c" in per:
            v = per["weightlift"] / per["aria2c"]
            out.append({"target": "CPU: weightlift CPU/GiB <= 2x aria2c's", "value": round(v, 2),
                        "limit": 2.0, "met": v <= 2.0})
    return out


def transfer_text(rows: list[RowStats]) -> str:
    """weightlift's end-to-end median against its own transfer time, per scenario."""
    out = []
    for r in rows:
        if r.engine:
            t = statistics.median(r.engine)
            out.append(f"  {r.scenario:<8} {r.row:<22} end to end {r.median:6.2f} s, transfer "
                       f"{t:6.2f} s ({r.bytes / t / MB:5.0f} MB/s), "
                       f"outside it {r.median - t:5.2f} s")
    return "\n".join(out)


def targets_text(checks: list[dict[str, Any]]) -> str:
    return "\n".join(f"  [{'met ' if c['met'] else 'MISS'}] {c['target']}: {c['value']} "
                     f"(limit {c['limit']})" for c in checks)
