"""JSON parsing that refuses what lenient parsers let through: duplicate keys and the
non-standard constants NaN/Infinity. One parser for manifests, safetensors headers and indexes;
each caller turns ``StrictJSONError`` into its own error type and wording."""

from __future__ import annotations

import json
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
