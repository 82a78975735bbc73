"""The `weightlift` command: parse arguments, run one command, map errors to exit codes.

Commands live in their own modules and call the Python API (`weightlift.pull_async`, ...).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

from weightlift.downloader.errors import (
    EXIT_INTERRUPTED,
    EXIT_TRANSFER_FAILED,
    EXIT_USAGE,
    UsageError,
    WeightliftError,
)
from weightlift.downloader.redact import RedactingFormatter, redact_text

T = TypeVar("T")

DESCRIPTION = """\
Fast, resumable, verified downloads of model weights: parallel ranged requests, resume after
any interruption, sha256 while downloading, and a safetensors check of the exact parameter
count before you deploy."""

EPILOG = """\
examples:
  weightlift pull axom://jobs/<job-id> -o ./model
  weightlift pull tensorone://jobs/<job-id> -o ./ckpt --expect-params 2_360_000_000
  weightlift pull https://host/model.safetensors https://host/config.json -o ./model
  weightlift pull hf://ORG/NAME --include '*.safetensors' --include config.json -o ./model
  weightlift pull manifest.json -o ./model --dry-run
  weightlift ls tensorone://jobs/<job-id>           # checkpoints and their ids
  weightlift verify ./model --expect-params 2.36e9 --json
  weightlift watch axom://jobs/<job-id> --pull -o ./model

environment:
  AXOM_KEY, AXOM_API_BASE              Axom API key and base URL
  TENSORONE_API_KEY, TENSORONE_API_BASE TensorOne API key and base URL
  WEIGHTLIFT_CONNECTIONS               default for --connections (32)
  WEIGHTLIFT_OUTPUT_ROOT               pull into ROOT/<model id> when -o is not given
  WEIGHTLIFT_LOG                       DEBUG, INFO, WARNING or ERROR
  WEIGHTLIFT_STALL_TIMEOUT             seconds without a byte before a connection is cut (30)
  WEIGHTLIFT_RETRY_BASE                base of the retry backoff, seconds (0.25)
  WEIGHTLIFT_HEADER_TIMEOUT            seconds for a response's status line and headers (30)
  WEIGHTLIFT_LOW_SPEED, _LOW_SPEED_TIME  a body slower than this many bytes/s over that many
                                       seconds is cut and retried (1024, 30; 0 turns it off)

exit codes:
  0 ok, 1 verification failed, 2 usage error or bad input, 3 transfer failed (state kept: run
  again to resume), 4 platform error, 130 interrupted (state kept)"""


class _VersionAction(argparse.Action):
    """-V/--version, reading the installed version only when asked (importlib.metadata costs
    ~15 ms of every start otherwise)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        import weightlift

        print(f"weightlift {weightlift.__version__}")
        parser.exit()


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and our exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message}", f"see '{self.prog} --help'")


def _arg(parse: Callable[[str], T]) -> Callable[[str], T]:
    """A settings parser (ValueError) as an argparse type (ArgumentTypeError: one line)."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


def parse_size(text: str) -> int:
    """'8M', '16MiB', '1g', '4096' → bytes (binary units)."""
    from weightlift.settings import parse_size as parse

    return _arg(parse)(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value > 0 and value < 86_400):
        raise argparse.ArgumentTypeError(f"must be between 0 and 86400 seconds: {text!r}")
    return value


SOURCE_HELP = ("axom://jobs/<id>, axom://models/<id>, tensorone://jobs/<id>[/checkpoints/<id>], "
               "hf://ORG/NAME[@REV], s3://BUCKET/KEY|PREFIX/, a manifest JSON file, or "
               "http(s) URLs")


def _add_pull_options(p: argparse.ArgumentParser) -> None:
    from weightlift.settings import parse_connections, parse_count, parse_rate

    p.add_argument("--connections", type=_arg(parse_connections), default=None, metavar="N",
                   help="parallel requests across all files (default 32, or "
                        "$WEIGHTLIFT_CONNECTIONS)")
    p.add_argument("--chunk-size", type=parse_size, default=None, metavar="SIZE",
                   help="bytes per ranged request, e.g. 8M (default: automatic, at most 16M)")
    p.add_argument("--expect-params", type=_arg(parse_count), default=None, metavar="N",
                   help="fail (exit 1) unless the checkpoint has exactly N parameters, e.g. "
                        "2360000000, 2_360_000_000 or 2.36e9 (default: the platform's count)")
    p.add_argument("--no-verify", action="store_true", help="skip checkpoint validation")
    p.add_argument("--include", action="append", default=None, metavar="GLOB",
                   help="fetch only files whose path matches GLOB (repeatable), e.g. "
                        "'*.safetensors'")
    p.add_argument("--exclude", action="append", default=None, metavar="GLOB",
                   help="skip files whose path matches GLOB (repeatable)")
    p.add_argument("--max-rate", type=_arg(parse_rate), default=None, metavar="RATE",
                   help="bandwidth cap for the whole pull, bytes/s in binary units "
                        "(e.g. 20M = 20 MiB/s)")


def _common() -> _Parser:
    """-v, accepted after the subcommand too (`weightlift pull -v ...`)."""
    common = _Parser(add_help=False)
    # SUPPRESS: a subcommand that is not given -v leaves the top-level count alone.
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="log more (-vv: debug)")
    return common


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
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(prog="weightlift", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=fmt)
    parser.add_argument("-V", "--version", action=_VersionAction)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    common = [_common()]

    pull = sub.add_parser("pull", help="download (and verify) a model", parents=common,
                          description="Download SOURCE into DIR, resumably, and verify it.",
                          epilog=EPILOG, formatter_class=fmt)
    pull.add_argument("sources", nargs="+", metavar="SOURCE", help=SOURCE_HELP)
    pull.add_argument("-o", "--output", default=None, metavar="DIR",
                      help="output folder (default: $WEIGHTLIFT_OUTPUT_ROOT/<model id>)")
    _add_pull_options(pull)
    pull.add_argument("--dry-run", action="store_true",
                      help="fetch nothing: list what would be fetched, what is already here and "
                           "whether the disk has room (exit 0, or 3 when it does not fit)")
    pull.add_argument("--hf-cache", nargs="?", const="", default=None, metavar="DIR",
                      help="hf:// only: write into the Hugging Face cache layout in DIR "
                           "(default: the cache huggingface_hub uses) instead of -o DIR")
    pull.add_argument("--json", action="store_true", help="print one JSON report on stdout")
    pull.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    _add_ray_options(pull)

    ls = sub.add_parser("ls", help="list a source's files, or a TensorOne job's checkpoints",
                        parents=common, epilog=EPILOG, formatter_class=fmt,
                        description="List what SOURCE holds (files with sizes and sha256, or a "
                                    "TensorOne job's checkpoints with their ids) without "
                                    "downloading.")
    ls.add_argument("sources", nargs="+", metavar="SOURCE", help=SOURCE_HELP)
    ls.add_argument("--json", action="store_true", help="print one JSON report on stdout")

    watch = sub.add_parser("watch", help="follow a training run; with --pull, then download it",
                           parents=common, epilog=EPILOG, formatter_class=fmt)
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

    from weightlift.settings import parse_count

    ver = sub.add_parser("verify", help="validate a downloaded checkpoint", parents=common,
                         epilog=EPILOG, formatter_class=fmt,
                         description="Check the checkpoint in DIR offline: shards well-formed, "
                                     "index consistent, sha256 against the pull receipt, "
                                     "exact parameter count. Exit 0 only if all of it holds.")
    ver.add_argument("directory", metavar="DIR", help="the folder a model was pulled into")
    ver.add_argument("--expect-params", type=_arg(parse_count), default=None, metavar="N",
                     help="fail unless the shards hold exactly N parameters (default: the "
                          "count in the pull receipt), e.g. 2_360_000_000 or 2.36e9")
    ver.add_argument("--deep", action="store_true", help="also scan tensor values for NaN/Inf")
    ver.add_argument("--no-hash", action="store_true",
                     help="skip re-hashing files against the pull receipt")
    ver.add_argument("--json", action="store_true", help="print one JSON report on stdout")
    ver.add_argument("-q", "--quiet", action="store_true",
                     help="no table: only problems (on stderr) and the exit code")

    demo = sub.add_parser("demo", help="the whole flow against a local emulator, no account",
                          parents=common)
    demo.add_argument("-o", "--output", default=None, metavar="DIR",
                      help="where to put the model (default: a temporary folder)")
    demo.add_argument("--size", type=parse_size, default=256 << 20, metavar="SIZE",
                      help="size of the generated model (default 256M)")
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    return parser


def _setup_logging(verbosity: int, quiet: bool = False) -> None:
    """Log to stderr, redacted; WEIGHTLIFT_LOG wins over -v/-q (a bad value: exit 2)."""
    from weightlift.settings import env_settings

    level = logging.ERROR if quiet else logging.WARNING
    if verbosity == 1:
        level = logging.INFO
    elif verbosity >= 2:
        level = logging.DEBUG
    env_level = env_settings(os.environ).log_level
    if env_level is not None:
        level = getattr(logging, env_level)
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
        _setup_logging(args.verbose, getattr(args, "quiet", False))
        if args.command == "pull":
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
        if args.command == "ls":
            from weightlift.cli.ls_cmd import run as run_ls

            return run_ls(args)
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
