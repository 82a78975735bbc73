"""`weightlift verify DIR`: validate a checkpoint, print the report, exit 0 or 1.

Each problem is said once, as one line on stderr; the table (or JSON) on stdout only counts
them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from weightlift.checking import check_folder, table
from weightlift.downloader.errors import WeightliftError
from weightlift.reports import VerifyReport


def run(args: argparse.Namespace) -> int:
    show_progress = sys.stderr.isatty() and not args.quiet and not args.json
    try:
        report = check_folder(Path(args.directory), args.expect_params, args.deep,
                              not args.no_hash, show_progress)
    except WeightliftError as exc:
        if args.json:  # a document even when there was nothing to check
            print(VerifyReport(ok=False, exit_code=exc.exit_code, error=exc.one_line(),
                               directory=str(args.directory),
                               expected_params=args.expect_params).to_json())
        raise
    if args.json:
        print(report.to_json())
    elif not args.quiet:
        print(table(report))
    for line in report.problems:
        print(f"weightlift: verification failed: {line}", file=sys.stderr)
    return report.exit_code
