"""What to do with a storage response, decided before a single byte is written. Pure.

pip's `_FileDownload` lesson: one small decision from status and headers, tested as a table.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


class Verdict(enum.Enum):
    WRITE = "write"  # the body is exactly the bytes asked for
    OBJECT_CHANGED = "object-changed"  # different object than the one partly on disk: restart
    SIZE_MISMATCH = "size-mismatch"  # the object is not the size the manifest says
    NO_RANGE_SUPPORT = "no-range-support"  # a 200 to a Range request with the same object
    BAD_RESPONSE = "bad-response"  # wrong Content-Range, compressed body, bad length: retry
    ERROR_STATUS = "error-status"  # not a 200/206: classify as expired/retryable/fatal


@dataclass(frozen=True)
class Asked:
    """The request we made: bytes [start, end) of an object we believe is ``size`` long."""

    start: int
    end: int
    size: int | None
    ranged: bool
    validator: str | None = None  # the ETag we sent as If-Match, if any
    # A 200 (the whole object) is an acceptable answer: the file's first Range request, sent
    # alone while Range support is unproven. A server that ignores Range then costs one GET.
    may_be_whole: bool = False


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str = ""
    total: int | None = None  # object size the server states, when it states one
    etag: str | None = None
    whole: bool = False  # the body is the whole object from byte 0 (a 200 to a Range request)


def parse_content_range(value: str) -> tuple[int, int, int | None] | None:
    """'bytes 0-99/1000' → (0, 100, 1000), half-open; None when malformed."""
    m = _CONTENT_RANGE.match(value)
    if not m:
        return None
    first, last = int(m.group(1)), int(m.group(2))
    if last < first:
        return None
    total = None if m.group(3) == "*" else int(m.group(3))
    if total is not None and last >= total:
        return None
    return first, last + 1, total


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        for key, val in headers.items():
            if key.lower() == lowered:
                return val
    return value


def decide(status: int, headers: Mapping[str, str], asked: Asked) -> Decision:
    """Judge a response's status and headers against what was asked."""
    etag = _header(headers, "ETag")
    if status == 412 and asked.validator:
        return Decision(Verdict.OBJECT_CHANGED, "the object's ETag changed (412 to If-Match)",
                        etag=etag)
    if status not in (200, 206):
        return Decision(Verdict.ERROR_STATUS, f"HTTP {status}", etag=etag)
    encoding = (_header(headers, "Content-Encoding") or "identity").strip().lower()
    if encoding not in ("identity", ""):
        return Decision(Verdict.BAD_RESPONSE, f"body is {encoding}-encoded, asked for identity",
                        etag=etag)
    if asked.validator and etag and etag != asked.validator:
        return Decision(Verdict.OBJECT_CHANGED, "the object's ETag changed", etag=etag)
    length_text = _header(headers, "Content-Length")
    length = int(length_text) if length_text and length_text.strip().isdigit() else None

    if status == 200:
        total = length
        if asked.size is not None and total is not None and total != asked.size:
            return Decision(Verdict.SIZE_MISMATCH,
                            f"object is {total} bytes, manifest says {asked.size}",
                            total=total, etag=etag)
        if asked.ranged:
            if asked.validator and not etag:
                return Decision(Verdict.OBJECT_CHANGED,
                                "200 without an ETag to a conditional Range request", etag=etag)
            if asked.may_be_whole and asked.start == 0:
                return Decision(Verdict.WRITE, total=total, etag=etag, whole=True)
            return Decision(Verdict.NO_RANGE_SUPPORT, "server answered 200 to a Range request",
                            total=total, etag=etag)
        return Decision(Verdict.WRITE, total=total, etag=etag)

    # 206
    cr_text = _header(headers, "Content-Range")
    parsed = parse_content_range(cr_text) if cr_text else None
    if parsed is None:
        return Decision(Verdict.BAD_RESPONSE, "206 without a valid Content-Range", etag=etag)
    first, end, total = parsed
    if total is not None and asked.size is not None and total != asked.size:
        return Decision(Verdict.SIZE_MISMATCH,
                        f"object is {total} bytes, manifest says {asked.size}",
                        total=total, etag=etag)
    if not asked.ranged:
        # We asked for the whole object and got a partial answer: only fine if it is all of it.
        if first != 0 or (total is not None and end != total):
            return Decision(Verdict.BAD_RESPONSE, "partial answer to a whole-object GET",
                            etag=etag)
    elif (first, end) != (asked.start, asked.end):
        return Decision(
            Verdict.BAD_RESPONSE,
            f"Content-Range {first}-{end - 1} does not match "
            f"the {asked.start}-{asked.end - 1} asked",
            etag=etag,
        )
    if length is not None and length != end - first:
        return Decision(Verdict.BAD_RESPONSE, "Content-Length disagrees with Content-Range",
                        etag=etag)
    return Decision(Verdict.WRITE, total=total, etag=etag)


@dataclass(frozen=True)
class Probed:
    """What a 1-byte probe of an object of unknown size learned."""

    size: int | None  # None: the server does not state it (stream one GET to its end)
    ranged: bool  # the server answers Range requests


def judge_probe(status: int, headers: Mapping[str, str]) -> Probed | str:
    """Judge the answer to ``Range: bytes=0-0`` (a 2xx or 416); other statuses: a string.

    A 416 means an empty object only when it says so (``Content-Range: bytes */0``)."""
    cr_text = _header(headers, "Content-Range") or ""
    if status == 206:
        parsed = parse_content_range(cr_text)
        if parsed is not None and parsed[0] == 0 and parsed[2] is not None:
            return Probed(parsed[2], True)
        return Probed(None, False)  # no total stated (bytes 0-0/*), multipart, ...: one GET
    if status == 200:
        length = (_header(headers, "Content-Length") or "").strip()
        return Probed(int(length) if length.isdigit() else None, False)
    if status == 416:
        m = _UNSATISFIED.match(cr_text)
        if m is None:
            return Probed(None, False)  # says nothing of the size: one whole GET tells
        stated = int(m.group(1))
        # "bytes */1000000" to a request for byte 0 is nonsense, not an empty object: fetch it
        # whole (without Range) and hold it to that size.
        return Probed(0, True) if stated == 0 else Probed(stated, False)
    return f"HTTP {status}"


_UNSATISFIED = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.IGNORECASE)


def storage_sha256(headers: Mapping[str, str]) -> str | None:
    """A whole-object sha256 the store vouches for (S3 ``x-amz-checksum-sha256``), hex."""
    value = _header(headers, "x-amz-checksum-sha256")
    if not value or "-" in value:  # "-N" marks a composite (multipart) checksum: not the file's
        return None
    ctype = (_header(headers, "x-amz-checksum-type") or "FULL_OBJECT").upper()
    if ctype != "FULL_OBJECT":
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 32 else None
