"""`weightlift verify DIR`: validate a checkpoint, print the report, exit 0 or 1."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from weightlift.downloader.errors import EXIT_OK, EXIT_VERIFY_FAILED
from weightlift.verify.checkpoint import verify_directory


def run(args: argparse.Namespace) -> int:
    """Run the checks; the table (or JSON) goes to stdout, one line per problem to stderr."""
    show_progress = sys.stderr.isatty() and not args.quiet
    report = verify_directory(Path(args.directory), expect_params=args.expect_params,
                              deep=args.deep, check_hashes=not args.no_hash,
                              progress=show_progress)
    if args.json:
        print(report.model_dump_json(indent=1))
    elif not args.quiet or not report.ok:
        print(report.to_table())
    for line in report.problem_lines():
        print(f"weightlift: verification failed: {line}", file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_VERIFY_FAILED
