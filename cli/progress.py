"""Render engine events for a person: tqdm bars on a TTY, a few plain lines otherwise."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from weightlift.downloader.events import (
    BytesReceived,
    Event,
    FileFailed,
    FileFinished,
    FileRestarted,
    FileStarted,
    ManifestRefreshed,
    PullStarted,
    Retrying,
)
from weightlift.downloader.redact import redact_text

PER_FILE_BARS_MAX = 6


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"  # pragma: no cover


class Progress:
    """Callable sink for engine events."""

    def __init__(self, *, quiet: bool, stream: TextIO | None = None) -> None:
        # sys.stderr as it is now, not at import: a caller (or pytest) may have replaced it.
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.tty = self.stream.isatty() and not quiet
        self._total: Any = None
        self._bars: dict[str, Any] = {}
        self._file_count = 0

    def say(self, text: str) -> None:
        if self.quiet:
            return
        text = redact_text(text)  # reasons may quote a server's words
        if self._total is not None:
            self._total.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def __call__(self, event: Event) -> None:
        if self.quiet:
            return
        if isinstance(event, PullStarted):
            self._file_count = event.files
            if self.tty:
                if event.resumed_bytes:  # the bar starts part-full: say why, once
                    self.say(f"resuming: {human_bytes(event.resumed_bytes)} of "
                             f"{human_bytes(event.total_bytes)} already here")
                from tqdm import tqdm

                self._total = tqdm(total=event.total_bytes, initial=event.resumed_bytes,
                                   unit="B", unit_scale=True, unit_divisor=1024,
                                   desc="total", file=self.stream, dynamic_ncols=True,
                                   position=0, leave=True)
            else:
                resumed = (f", {human_bytes(event.resumed_bytes)} already here"
                           if event.resumed_bytes else "")
                self.say(f"pulling {event.files} file(s), "
                         f"{human_bytes(event.total_bytes)}{resumed}")
        elif isinstance(event, FileStarted):
            if self.tty and self._file_count <= PER_FILE_BARS_MAX:
                from tqdm import tqdm

                self._bars[event.rel] = tqdm(
                    total=event.size, initial=event.resumed_bytes, unit="B", unit_scale=True,
                    unit_divisor=1024, desc=event.rel[-32:], file=self.stream,
                    dynamic_ncols=True, position=len(self._bars) + 1, leave=False)
        elif isinstance(event, BytesReceived):
            if self._total is not None:
                self._total.update(event.nbytes)
            bar = self._bars.get(event.rel)
            if bar is not None:
                bar.update(event.nbytes)
        elif isinstance(event, FileFinished):
            bar = self._bars.pop(event.rel, None)
            if bar is not None:
                bar.close()
        elif isinstance(event, FileRestarted):
            self.say(f"{event.rel}: starting over ({event.reason})")
            for target in (self._total, self._bars.get(event.rel)):
                if target is not None:
                    target.update(-event.lost_bytes)
        elif isinstance(event, FileFailed):
            pass  # said once, with the other failures, when the pull ends
        elif isinstance(event, ManifestRefreshed):
            if event.proactive:
                self.say("presigned URLs about to expire: manifest refreshed ahead of time")
            else:
                self.say("storage said the URLs had expired: manifest refreshed")
        elif isinstance(event, Retrying):
            pass  # logged at INFO; a bar line per retry would drown the bars

    def close(self, *, interrupted: bool = False) -> None:
        """Close the bars. After Ctrl-C the terminal has echoed "^C" into the bar's line:
        the total bar is redrawn over it and the line erased past it, so no stray "^" is
        left, and the next message starts on a fresh line."""
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
        if self._total is not None:
            if interrupted and self.tty:
                self._total.refresh()  # "\r" + the bar: over the echoed ^C
                self.stream.write("\x1b[K")  # erase anything the echo left past the bar
            self._total.close()
            self._total = None
        elif interrupted and self.tty:
            self.stream.write("\r\x1b[K")
        if interrupted and self.tty:
            self.stream.flush()
