"""Redaction has one home, downloader/redact.py (issue 11: "one redaction module")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from weightlift.downloader import errors, redact
from weightlift.downloader.redact import LazyRedactedUrl, redact_untrusted, redact_url

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("downloader", "verify", "cli")


def test_errors_re_exports_the_same_objects() -> None:
    """Modules that import redact_url/LazyRedactedUrl from errors keep working, unchanged."""
    assert errors.redact_url is redact.redact_url
    assert errors.LazyRedactedUrl is redact.LazyRedactedUrl


@pytest.mark.parametrize(("url", "shown"), [
    ("https://b.s3.amazonaws.com/k/a.bin?X-Amz-Signature=abc&X-Amz-Date=1",
     "https://b.s3.amazonaws.com/k/a.bin?…"),
    ("http://user:pw@[::1]:8080/p#frag", "http://[::1]:8080/p"),
    ("https://h/plain", "https://h/plain"),
    ("http://h:99999/x", "<unparseable url>"),
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert str(LazyRedactedUrl(url)) == shown


def test_redact_untrusted_drops_urls_and_pairs_whole() -> None:
    text = ("denied for s3://b/k and https://h/p?X-Amz-Signature=abc; token=xyz "
            "?a=b x-amz-security-token=q")
    out = redact_untrusted(text)
    for secret in ("s3://", "https://", "abc", "xyz", "?a=b", "=q"):
        assert secret not in out
    assert out.startswith("denied for <redacted> and <redacted>")


# Callers, not implementations: the CLI's traceback hook passes the traceback to redact_text.
CALLERS = {"_redacted_excepthook"}


def test_no_other_module_defines_a_redaction_function() -> None:
    """A new `redact_*`/`scrub*` function outside redact.py is a second place that knows how."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "downloader" / "redact.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and \
                        node.name.lower().lstrip("_").startswith(("redact", "scrub")) and \
                        node.name not in CALLERS:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not found, found
