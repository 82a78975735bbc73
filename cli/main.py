"""The `weightlift` command: parse arguments, run one command, map errors to exit codes.

Thin by design: commands live in their own modules and call into downloader/ and verify/.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from weightlift.downloader.errors import (
    EXIT_INTERRUPTED,
    EXIT_TRANSFER_FAILED,
    EXIT_USAGE,
    UsageError,
    WeightliftError,
)
from weightlift.downloader.redact import RedactingFormatter, redact_text


class _VersionAction(argparse.Action):
    """--version, reading the installed version only when asked (importlib.metadata costs
    ~15 ms of every start otherwise)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version("weightlift")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            text = "unknown"
        print(f"weightlift {text}")
        parser.exit()


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and our exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message}", f"see '{self.prog} --help'")


def parse_size(text: str) -> int:
    """'8M', '16MiB', '1g', '4096' → bytes (binary units)."""
    units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    suffix = t[-1:] if t[-1:] in ("k", "m", "g") else ""
    number = t[: len(t) - len(suffix)]
    try:
        value = int(float(number) * units[suffix])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 8M or 16MiB)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value > 0 and value < 86_400):
        raise argparse.ArgumentTypeError(f"must be between 0 and 86400 seconds: {text!r}")
    return value


SOURCE_HELP = ("axom://jobs/<id>, axom://models/<id>, tensorone://jobs/<id>[/checkpoints/<id>], "
               "hf://ORG/NAME[@REVISION], s3://BUCKET/KEY|PREFIX/, a manifest JSON file, or "
               "http(s) URLs")


def _add_pull_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--connections", type=_positive_int, default=None, metavar="N",
                   help="parallel requests across all files (default 32)")
    p.add_argument("--chunk-size", type=parse_size, default=None, metavar="SIZE",
                   help="bytes per ranged request (default: automatic, at most 16M)")
    p.add_argument("--expect-params", type=_count, default=None, metavar="N",
                   help="fail unless the checkpoint has exactly N parameters "
                        "(default: the platform's reported count)")
    p.add_argument("--no-verify", action="store_true", help="skip checkpoint validation")


def _add_ray_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("many nodes (Ray; pip install 'weightlift[ray]')")
    g.add_argument("--ray", action="store_true",
                   help="pull onto every node of a Ray cluster, origin serving the model once; "
                        "DIR may hold {node}, the node's id")
    g.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="the cluster to join (default: $RAY_ADDRESS)")
    g.add_argument("--ray-nodes", default=None, metavar="RESOURCE|LABEL=VALUE",
                   help="only the nodes with this custom resource or label (default: all)")
    g.add_argument("--ray-budget", type=parse_size, default=None, metavar="SIZE",
                   help="object-store bytes the cluster may hold at once (default 1G)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="weightlift", description=__doc__)
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    pull = sub.add_parser("pull", help="download (and verify) a model")
    pull.add_argument("sources", nargs="+", metavar="SOURCE", help=SOURCE_HELP)
    pull.add_argument("-o", "--output", default=None, metavar="DIR",
                      help="output folder (required unless --hf-cache)")
    _add_pull_options(pull)
    pull.add_argument("--hf-cache", nargs="?", const="", default=None, metavar="DIR",
                      help="hf:// only: write into the Hugging Face cache layout in DIR "
                           "(default: the cache huggingface_hub uses) instead of -o DIR")
    pull.add_argument("--json", action="store_true", help="print one JSON report on stdout")
    pull.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    _add_ray_options(pull)

    watch = sub.add_parser("watch", help="follow a training run; with --pull, then download it")
    watch.add_argument("source", metavar="SOURCE",
                       help="axom://jobs/<job-id> or tensorone://jobs/<job-id>")
    watch.add_argument("--interval", type=_positive_float, default=None, metavar="S",
                       help="seconds between polls (default: Axom 5, TensorOne 30; "
                            "slower when nothing changes or the rate limit asks)")
    watch.add_argument("--pull", action="store_true",
                       help="when the run completes, pull and verify its model into -o DIR")
    watch.add_argument("-o", "--output", default=None, metavar="DIR",
                       help="output folder for --pull")
    _add_pull_options(watch)
    watch.add_argument("--json", action="store_true",
                       help="one JSON object per event on stdout, for machines")
    watch.add_argument("-q", "--quiet", action="store_true", help="only transitions and errors")

    ver = sub.add_parser("verify", help="validate a downloaded checkpoint")
    ver.add_argument("directory", metavar="DIR")
    ver.add_argument("--expect-params", type=_count, default=None, metavar="N")
    ver.add_argument("--deep", action="store_true", help="also scan tensor values for NaN/Inf")
    ver.add_argument("--no-hash", action="store_true",
                     help="skip re-hashing files against the pull receipt")
    ver.add_argument("--json", action="store_true", help="print one JSON report on stdout")
    ver.add_argument("-q", "--quiet", action="store_true", help="no progress output")

    demo = sub.add_parser("demo", help="the whole flow against a local emulator, no account")
    demo.add_argument("-o", "--output", default=None, metavar="DIR",
                      help="where to put the model (default: a temporary folder)")
    demo.add_argument("--size", type=parse_size, default=parse_size("256M"), metavar="SIZE",
                      help="size of the generated model (default 256M)")
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    return parser


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING
    if verbosity == 1:
        level = logging.INFO
    elif verbosity >= 2:
        level = logging.DEBUG
    env = os.environ.get("WEIGHTLIFT_LOG", "").upper()
    if env in ("DEBUG", "INFO", "WARNING", "ERROR"):
        level = getattr(logging, env)
    if logging.getLogger().handlers:
        return  # the embedding program (or a test harness) configured logging already
    # Every record, ours or a library's (aiohttp, asyncio), with its traceback, is redacted:
    # no URL query string (signatures), Authorization value or API key reaches stderr.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("weightlift: %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    logging.captureWarnings(True)  # warnings (ResourceWarning & co.) go through it too


def _redacted_excepthook(exc_type: type[BaseException], exc: BaseException,
                         tb: TracebackType | None) -> None:
    """WEIGHTLIFT_TRACEBACK=1 shows the traceback, redacted like the log."""
    sys.stderr.write(redact_text("".join(traceback.format_exception(exc_type, exc, tb))))


def run(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code; never lets a traceback out for known errors."""
    try:
        args = build_parser().parse_args(argv)
        _setup_logging(args.verbose)
        if args.command == "pull":
            if args.output is None and args.hf_cache is None:
                raise UsageError("pull needs -o DIR", "where should the model go?")
            if args.output is not None and args.hf_cache is not None:
                raise UsageError("--hf-cache replaces -o DIR", "pass one of them")
            if args.hf_cache is not None and (args.ray or args.ray_address):
                raise UsageError("--hf-cache is not taken with --ray",
                                 "pull onto the nodes with -o DIR")
            if args.hf_cache is not None:
                from weightlift.downloader.sources.hf_cache import check_hf_cache_sources

                check_hf_cache_sources(args.sources)
            from weightlift.cli.pull_cmd import run as run_pull

            return run_pull(args)
        if args.command == "watch":
            if args.pull and not args.output:
                raise UsageError("--pull needs -o DIR", "where should the model go?")
            if args.output and not args.pull:
                raise UsageError("-o DIR is only used with --pull", "add --pull, or drop -o")
            from weightlift.cli.watch_cmd import run as run_watch

            return run_watch(args)
        if args.command == "verify":
            from weightlift.cli.verify_cmd import run as run_verify

            return run_verify(args)
        if args.command == "demo":
            from weightlift.cli.demo_cmd import run as run_demo

            return run_demo(args)
        build_parser().print_help(sys.stderr)
        return EXIT_USAGE
    except WeightliftError as exc:
        # Its message and hint were redacted when the error was made.
        print(f"weightlift: error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("weightlift: interrupted; progress is kept, run the same command to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - a bug of ours still gets one clean line
        if os.environ.get("WEIGHTLIFT_TRACEBACK"):
            raise
        print(f"weightlift: internal error: {type(exc).__name__}: {redact_text(str(exc))[:300]} "
              "(progress is kept; run again to resume, and please report this with "
              "WEIGHTLIFT_TRACEBACK=1 output)", file=sys.stderr)
        return EXIT_TRANSFER_FAILED


def main() -> None:
    sys.excepthook = _redacted_excepthook
    sys.exit(run())
