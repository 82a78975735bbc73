"""JSON parsing that refuses what lenient parsers let through: duplicate keys and the
non-standard constants NaN/Infinity. One parser for manifests, safetensors headers and indexes;
each caller turns ``StrictJSONError`` into its own error type and wording."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any


class StrictJSONError(ValueError):
    """Valid for Python's json module, but not strict JSON. ``key``: the duplicated key, or
    ``constant``: the rejected constant (exactly one is set)."""

    def __init__(self, message: str, *, key: str | None = None,
                 constant: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.constant = constant


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise StrictJSONError(f"duplicate key {key!r}", key=key)
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise StrictJSONError(f"{name} is not valid JSON", constant=name)


def loads_strict(text: str) -> Any:
    """``json.loads`` rejecting duplicate keys and NaN/Infinity (raises StrictJSONError;
    json.JSONDecodeError and RecursionError as json.loads does)."""
    return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)


_STRICT = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
_WS = re.compile(r"[ \t\n\r]*")  # JSON's whitespace, no more
_WS_CHARS = frozenset(" \t\n\r")


def _skip(text: str, idx: int) -> int:
    """The index of the first non-whitespace character at or after ``idx``."""
    if text[idx:idx + 1] not in _WS_CHARS:  # the common case, without a regex call
        return idx
    match = _WS.match(text, idx)
    return match.end() if match else idx


def iter_object_strict(text: str) -> Iterator[tuple[str, Any]]:
    """The members of the JSON object ``text``, one ``(key, value)`` at a time, as strict as
    :func:`loads_strict` (same errors, positions relative to ``text``).

    Only one member's value is alive at a time, so memory follows the largest member, not the
    whole document (a 99 MB safetensors header of a million tensors would otherwise build a
    million dicts at once). The caller sees members before a later syntax error is found.
    """
    end = len(text)
    idx = _skip(text, 0)
    if text[idx:idx + 1] != "{":
        raise json.JSONDecodeError("Expecting '{'", text, idx)
    idx = _skip(text, idx + 1)
    seen: set[str] = set()
    if text[idx:idx + 1] == "}":
        idx += 1
    else:
        while True:
            if text[idx:idx + 1] != '"':
                raise json.JSONDecodeError(
                    "Expecting property name enclosed in double quotes", text, idx)
            key, idx = scanstring(text, idx + 1, True)
            idx = _skip(text, idx)
            if text[idx:idx + 1] != ":":
                raise json.JSONDecodeError("Expecting ':' delimiter", text, idx)
            idx = _skip(text, idx + 1)
            value, idx = _STRICT.raw_decode(text, idx)
            if key in seen:
                raise StrictJSONError(f"duplicate key {key!r}", key=key)
            seen.add(key)
            yield key, value
            del value
            idx = _skip(text, idx)
            sep = text[idx:idx + 1]
            idx += 1
            if sep == "}":
                break
            if sep != ",":
                raise json.JSONDecodeError("Expecting ',' delimiter", text, idx - 1)
            idx = _skip(text, idx)
    idx = _skip(text, idx)
    if idx != end:
        raise json.JSONDecodeError("Extra data", text, idx)
