"""`weightlift watch SOURCE`: follow a training run to its end; with --pull, then pull and verify.

The wording lives in `watch_view` (pure); this module polls (through `follow`), sends the view's
output where it belongs (stderr for a person, a tqdm bar on a TTY, JSON lines on stdout), and
turns the run's end into an exit code: completed 0, failed/cancelled 4 with the platform's text.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from weightlift.cli.progress import Progress
from weightlift.cli.watch_view import (
    LogText,
    StatusLine,
    StepProgress,
    Update,
    WatchView,
    clean_text,
    fmt_step,
)
from weightlift.downloader.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    PlatformError,
    WeightliftError,
)
from weightlift.downloader.redact import redact_obj, redact_text
from weightlift.downloader.sources.run_status import RunSnapshot
from weightlift.reports import PullReport

# A fixed-width bar: the metrics after it change length, and tqdm would squeeze the bar instead.
BAR_FORMAT = "{desc}: {n_fmt}/{total_fmt} |{bar:20}| {percentage:3.0f}%{postfix}"


def _local_now() -> datetime:
    return datetime.now().astimezone()


class WatchOutput:
    """Where the view's output goes: JSON lines on stdout (--json), else lines on stderr, with
    the step progress as a tqdm bar on a TTY; -q keeps only status lines and errors."""

    def __init__(self, *, json_mode: bool, quiet: bool, stdout: TextIO | None = None,
                 stderr: TextIO | None = None, source: str = "") -> None:
        self.json_mode = json_mode
        self.source = source
        self.job_id: str | None = None
        self.quiet = quiet
        self.stdout = stdout if stdout is not None else sys.stdout
        self.stderr = stderr if stderr is not None else sys.stderr
        self.tty = self.stderr.isatty() and not quiet and not json_mode
        self._bar: Any = None
        self.done_sent = False

    def event(self, event: dict[str, Any]) -> None:
        if event.get("job_id"):
            self.job_id = str(event["job_id"])
        if not self.json_mode:
            return
        from weightlift.reports import WatchEvent

        # Every line is a schema-1 document: the source and job id on each, then the view's
        # own fields for that event.
        doc = WatchEvent.model_validate(
            {"source": self.source, "job_id": self.job_id, **event}).to_dict()
        # allow_nan=False: the view already turned NaN into null; a stray one must not
        # produce a line that strict JSON parsers reject.
        print(json.dumps(redact_obj(doc), allow_nan=False), file=self.stdout, flush=True)
        if event.get("event") == "done":
            self.done_sent = True

    def say(self, text: str, *, status: bool = True) -> None:
        """A line for the person (nothing in --json mode; only status lines with -q)."""
        if self.json_mode or (self.quiet and not status):
            return
        text = redact_text(text)  # platform text (run errors, log lines) is quoted here
        if self._bar is not None:
            self._bar.write(text, file=self.stderr)
        else:
            print(text, file=self.stderr, flush=True)

    def show(self, update: Update) -> None:
        for event in update.events:
            self.event(event)
        for item in update.items:
            if isinstance(item, StatusLine):
                if update.terminal:
                    self.close()  # the bar stays on screen above the verdict, not below it
                self.say(item.text)
            elif isinstance(item, LogText):
                self.say(item.text, status=False)
            elif isinstance(item, StepProgress):
                self._progress(item)
        if update.terminal:
            self.close()

    def _progress(self, p: StepProgress) -> None:
        if not self.tty:
            self.say(p.line(), status=False)
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=p.total, initial=p.step or 0, desc="step", unit="step",
                             file=self.stderr, dynamic_ncols=True, leave=True,
                             postfix=p.summary() or None,
                             bar_format=BAR_FORMAT if p.total else None)
        bar = self._bar
        if p.total and bar.total != p.total:
            bar.total = p.total
        # Absolute position, not an increment: a resume from a checkpoint moves it back.
        bar.n = p.step or 0
        bar.set_postfix_str(p.summary(), refresh=False)
        bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@dataclass
class WatchStage:
    pulling: bool = False


def run(args: argparse.Namespace, *, env: Mapping[str, str] | None = None,
        stdout: TextIO | None = None, stderr: TextIO | None = None,
        now: Callable[[], datetime] = _local_now) -> int:
    """Watch (and maybe pull); returns the exit code, raises WeightliftError for main to print."""
    from weightlift.cli.pull_cmd import run_cancellable

    out = WatchOutput(json_mode=args.json, quiet=args.quiet, stdout=stdout, stderr=stderr,
                      source=args.source)
    stage = WatchStage()
    try:
        code, _report = asyncio.run(
            run_cancellable(watch_then_pull(args, out, stage, env=env, now=now)))
        return code
    except KeyboardInterrupt:
        out.close()
        if stage.pulling:
            raise  # main says: progress is kept, run the same command to resume
        # Watching is read-only: stopping it does nothing to the run.
        print("weightlift: stopped watching; the run itself goes on (run the same command to "
              "watch it again)", file=out.stderr)
        return EXIT_INTERRUPTED
    except WeightliftError as exc:
        out.close()
        if not out.done_sent:  # a failed run already said so in its "done" line
            out.event({"event": "error", "error": exc.one_line(), "exit_code": exc.exit_code})
        raise
    finally:
        out.close()


async def watch_then_pull(args: argparse.Namespace, out: WatchOutput, stage: WatchStage, *,
                          env: Mapping[str, str] | None = None,
                          now: Callable[[], datetime] = _local_now
                          ) -> tuple[int, PullReport | None]:
    """Follow the run; when it completed and --pull was given, pull and verify it. Returns the
    exit code and the pull's report (None without --pull)."""
    last = await watch_run(args.source, out, interval=args.interval, env=env, now=now)
    if last.phase != "completed":
        raise run_failed_error(last, pulling=bool(args.pull))
    if not args.pull:
        return EXIT_OK, None
    from weightlift.cli.pull_cmd import pull_options, tell
    from weightlift.downloader.sources.resolve import open_source
    from weightlift.pulling import pull_resolved
    from weightlift.settings import env_settings

    stage.pulling = True
    progress = Progress(quiet=args.quiet or args.json, stream=out.stderr)
    settings = env_settings(os.environ if env is None else env)
    async with open_source([args.source], env) as source:
        out.say(f"pulling {source.description} into {args.output}", status=False)
        report = await pull_resolved([args.source], source, Path(args.output),
                                     pull_options(args), progress, settings=settings)
    tell(report, progress)
    out.event({"event": "pull", "report": report.to_dict(), "exit_code": report.exit_code,
               "error": report.error})
    return report.exit_code, report


async def watch_run(source: str, out: WatchOutput, *, interval: float | None = None,
                    env: Mapping[str, str] | None = None,
                    now: Callable[[], datetime] = _local_now) -> RunSnapshot:
    """Follow the run behind ``source`` until it is terminal; returns its last snapshot."""
    from weightlift.downloader.sources.follow import follow
    from weightlift.downloader.sources.resolve import open_run

    view = WatchView()
    last: RunSnapshot | None = None
    async with open_run(source, env) as follower:
        every = interval if interval is not None else follower.default_interval
        out.say(f"watching {follower.platform} job {follower.job_id}: polling every "
                f"{every:g}s, slower while nothing changes (Ctrl-C stops watching, "
                "not the run)", status=False)
        async for snap in follow(follower, interval=interval):
            out.show(view.update(snap, now()))
            last = snap
    if last is None or not last.terminal:  # pragma: no cover - follow ends only on terminal
        raise PlatformError(f"stopped following {source} before the run ended")
    return last


def run_failed_error(snap: RunSnapshot, *, pulling: bool) -> PlatformError:
    """Exit 4 with the platform's own words for why the run ended badly."""
    at = fmt_step(snap.step, snap.total_steps)
    what = f"{snap.platform} job {snap.job_id} {snap.phase}" + (f" at {at}" if at else "")
    if snap.error:
        what += f": {clean_text(snap.error)}"
    return PlatformError(what, "nothing to pull" if pulling else None)
