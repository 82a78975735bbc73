"""`weightlift ls SOURCE`: what a source holds, without downloading."""

from __future__ import annotations

import argparse
import asyncio
import os

from weightlift.cli.progress import human_bytes
from weightlift.downloader.errors import WeightliftError
from weightlift.listing import list_source
from weightlift.pulling import shown_source
from weightlift.reports import ListReport


def render(report: ListReport) -> str:
    """Files (rel, size, sha256) or checkpoints (id, step, size, SOURCE to pull it)."""
    lines: list[str] = []
    if report.checkpoints:
        width = max(len(c.checkpoint_id) for c in report.checkpoints)
        lines.append(f"{'checkpoint':<{width}}  {'step':>7}  {'size':>8}  created"
                     "                    pull it with")
        for c in report.checkpoints:
            step = str(c.step) if c.step is not None else "-"
            mark = "  (latest)" if c.latest else ""
            lines.append(f"{c.checkpoint_id:<{width}}  {step:>7}  {c.size or '-':>8}  "
                         f"{c.created_at or '-':<25}  {c.source}{mark}")
        return "\n".join(lines)
    width = max([len(f.rel) for f in report.files] + [4])
    for f in report.files:
        size = human_bytes(f.size) if f.size is not None else "?"
        sha = f.sha256 or ""
        lines.append(f"{f.rel:<{width}}  {size:>10}  {sha}".rstrip()
                     + (f"  ({f.error})" if f.error else ""))
    total = sum(f.size or 0 for f in report.files)
    ids = ", ".join(f"{k} {v}" for k, v in (("model", report.model_id),
                                            ("checkpoint", report.checkpoint_id),
                                            ("expected params", report.expected_params))
                    if v is not None)
    lines.append(f"{len(report.files)} file(s), {human_bytes(total)}"
                 + (f"; {ids}" if ids else ""))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        report = asyncio.run(list_source(args.sources, os.environ))
    except WeightliftError as exc:
        if args.json:
            print(ListReport(ok=False, exit_code=exc.exit_code, error=exc.one_line(),
                             source=shown_source(args.sources)).to_json())
        raise
    print(report.to_json() if args.json else render(report))
    return report.exit_code
