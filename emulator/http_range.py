"""Pure HTTP Range / If-Range decisions, the way S3 answers them."""

from __future__ import annotations

import re
from dataclasses import dataclass

_SINGLE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Selection:
    """What to send: `[start, end)` of the object; `partial` means 206; `satisfiable` False
    means 416 (`Content-Range: bytes */size`)."""

    start: int
    end: int
    partial: bool
    satisfiable: bool = True

    @property
    def length(self) -> int:
        return self.end - self.start

    def content_range(self, size: int) -> str:
        if not self.satisfiable:
            return f"bytes */{size}"
        return f"bytes {self.start}-{self.end - 1}/{size}"


def whole(size: int) -> Selection:
    return Selection(0, size, partial=False)


def select(range_header: str | None, size: int) -> Selection:
    """Resolve a Range header against an object of `size` bytes.

    One range only, as S3: absent, syntactically invalid, multi-range or non-`bytes` headers
    are ignored (200, whole object), as RFC 9110 allows; a valid range no byte of which
    exists is 416.
    """
    if range_header is None:
        return whole(size)
    m = _SINGLE.match(range_header)
    if m is None:
        return whole(size)
    first, last = m.group(1), m.group(2)
    if first == "" and last == "":
        return whole(size)
    unsatisfiable = Selection(size, size, partial=False, satisfiable=False)
    if first == "":  # suffix: the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            return unsatisfiable
        return Selection(max(0, size - n), size, partial=True)
    start = int(first)
    if last != "" and int(last) < start:
        return whole(size)  # invalid: ignored
    if start >= size:
        return unsatisfiable
    end = size if last == "" else min(int(last) + 1, size)
    return Selection(start, end, partial=True)


def if_range_holds(if_range: str | None, etag: str, last_modified: str) -> bool:
    """RFC 9110 §13.1.5: the Range applies only if If-Range names the current representation
    (strong ETag comparison, or the exact Last-Modified date)."""
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith('"') or value.startswith("W/"):
        return not value.startswith("W/") and value == etag
    return value == last_modified


def shifted(sel: Selection, size: int) -> Selection:
    """A satisfiable range different from `sel`, the same length where the object allows."""
    if sel.start > 0:
        return Selection(sel.start - 1, sel.end - 1, partial=True)
    if sel.end < size:
        return Selection(sel.start + 1, sel.end + 1, partial=True)
    if sel.length > 1:
        return Selection(sel.start, sel.end - 1, partial=True)
    return Selection(sel.start, sel.end, partial=True)  # a 1-byte object: the header will lie
