"""Keep secrets out of everything weightlift writes: logs, errors, reports (pure, plus a
logging formatter that applies it to every record, a library's or our own).

What is removed:

- the query string of every http(s) URL (presigned signatures live there), and any userinfo;
- ``name=value`` pairs whose name carries a signature or a credential, in every style we meet
  (S3 SigV4 ``X-Amz-Signature``, CloudFront ``Signature``/``Key-Pair-Id``/``Policy``, GCS
  ``X-Goog-Signature``, Azure SAS ``sig``/``se``/``sp``/``sv``/``st``, nginx ``md5``, tokens),
  also outside a URL, as JSON or Python-dict items, and as ``Authorization`` values;
- the literal value of every API key weightlift knows (``AXOM_KEY``, ``TENSORONE_API_KEY``, and
  keys registered with ``register_secret``).

This is the one module that knows how to redact; everything else calls it:

- ``redact_url`` / ``LazyRedactedUrl``: a URL we print ourselves (messages, logs, receipt);
- ``redact_text``: the safety net for text we did not write (library messages, tracebacks,
  platform error bodies), applied to every error message (``errors.WeightliftError``), every log
  record (``RedactingFormatter``), the CLI's traceback hook and last-resort lines, journals and
  the receipt;
- ``redact_obj``: the same over a JSON value (``--json`` reports and events);
- ``redact_untrusted``: stricter, for a storage server's own words quoted in a reason: every
  URL of any scheme, query string and credential-looking pair goes whole.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "KEY_ENV_VARS",
    "MASK",
    "SENSITIVE_PARAMS",
    "LazyRedactedUrl",
    "RedactingFormatter",
    "redact_obj",
    "redact_text",
    "redact_untrusted",
    "redact_url",
    "register_secret",
]

MASK = "…"
KEY_MASK = "<redacted>"
# The environment variables that hold API keys; their values are masked wherever they appear.
KEY_ENV_VARS = ("AXOM_KEY", "TENSORONE_API_KEY")
# Shorter values are not masked as literals (they would mangle ordinary text).
_MIN_SECRET = 6

SENSITIVE_PARAMS = frozenset(p.lower() for p in (
    # S3 SigV4 and SigV2, GCS V4 and V2
    "X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "AWSAccessKeyId",
    "X-Goog-Signature", "X-Goog-Credential", "GoogleAccessId",
    # CloudFront signed URLs
    "Signature", "Key-Pair-Id", "Policy",
    # Azure SAS
    "sig", "se", "sp", "sv", "st", "skoid", "sktid", "skt", "ske", "sks", "skv",
    # nginx secure_link, our emulator's plain style, and generic tokens
    "md5", "token", "access_token", "api_key", "apikey", "api-key", "x-api-key", "password",
    "secret",
))
_NAMES = "|".join(re.escape(p) for p in sorted(SENSITIVE_PARAMS, key=len, reverse=True))

# scheme://[userinfo@]host... ?query #fragment: up to whitespace, a quote or an angle bracket;
# closing brackets and punctuation at the very end belong to the text around the URL.
_END = r"(?=[)\].,;:!]*(?:[\s\"'<>]|$))"
_URL = re.compile(
    r"(?P<scheme>https?://)(?:[^\s/?#@\"'<>]*@)?(?P<rest>[^\s?#\"'<>]*)"
    rf"(?P<query>\?[^\s\"'<>#]*?{_END}|\?[^\s\"'<>#]*)?(?P<frag>#[^\s\"'<>]*?{_END})?",
    re.IGNORECASE)
# A sensitive pair inside a query string that is not part of a URL we recognised.
_QUERY_PAIR = re.compile(rf"(?P<lead>[?&;])(?:{_NAMES})=[^\s&;#\"'<>]*", re.IGNORECASE)
# A sensitive pair in free text: `sig=abc`, `Signature = abc`. Found from its separator
# (few per line) looking back for the name: much cheaper than trying every name everywhere.
_SEPARATOR = re.compile(r"\s?[=:]\s?")
_NAME_BEFORE = re.compile(r"[A-Za-z][\w\-]*$")
_VALUE = re.compile(r"(?![\s\"'])[^\s&;#\"'<>,)\]}]+")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-%")
_LONGEST_NAME = max(len(p) for p in SENSITIVE_PARAMS)
# `"sig": "abc"` (JSON) and `'sig': 'abc'` (a Python dict's repr).
_QUOTED_PAIR = re.compile(
    rf"(?P<head>(?P<q>[\"'])(?:{_NAMES}|authorization|proxy-authorization)(?P=q)\s*:\s*)"
    rf"(?P<q2>[\"'])[^\"']*(?P=q2)", re.IGNORECASE)
_BEARER = re.compile(r"\b(?:(?P<b>Bearer)\s+[A-Za-z0-9._~+/=\-]+"
                     r"|(?P<basic>Basic)\s+[A-Za-z0-9+/]{8,}=*)", re.IGNORECASE)
_AUTH_HEADER = re.compile(r"(?P<head>\b(?:Proxy-)?Authorization\s*[:=]\s*)(?![\"'\s])"
                          r"(?!(?:Bearer|Basic)\s)[^\s,;\"']+", re.IGNORECASE)

_lock = threading.Lock()
_registered: set[str] = set()


def register_secret(value: str | None) -> None:
    """Mask ``value`` (an API key, a token) wherever it appears from now on."""
    if value and len(value.strip()) >= _MIN_SECRET:
        with _lock:
            _registered.add(value.strip())


_cache: tuple[tuple[tuple[str, ...], int], list[str]] | None = None


def _known_secrets(extra: Iterable[str] = ()) -> list[str]:
    global _cache
    env = tuple(os.environ.get(name, "") for name in KEY_ENV_VARS)
    more = [s.strip() for s in extra if s]
    key = (env, len(_registered))
    if _cache is None or _cache[0] != key or more:
        with _lock:
            found = {v.strip() for v in env} | _registered | set(more)
        # Longest first: a key that contains another is masked whole.
        secrets = sorted((s for s in found if len(s) >= _MIN_SECRET), key=len, reverse=True)
        if more:
            return secrets
        _cache = (key, secrets)
    return _cache[1]


def _mask_text_pairs(text: str) -> str:
    out: list[str] = []
    cursor = 0
    for sep in _SEPARATOR.finditer(text):
        at = sep.start()
        if at < cursor:
            continue
        name = _NAME_BEFORE.search(text, max(0, at - _LONGEST_NAME - 1), at)
        if name is None or name.group().lower() not in SENSITIVE_PARAMS:
            continue
        if name.start() > 0 and text[name.start() - 1] in _NAME_CHARS:
            continue  # part of a longer word (`response=`), or cut by the window
        value = _VALUE.match(text, sep.end())
        if value is None:
            continue
        out.append(text[cursor:name.start()])
        out.append(f"{name.group()}={MASK}")
        cursor = value.end()
    if not out:
        return text
    out.append(text[cursor:])
    return "".join(out)


def _url_sub(m: re.Match[str]) -> str:
    query = "?" + MASK if m.group("query") else ""
    return m.group("scheme") + m.group("rest") + query


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with URL query strings, userinfo, signature-like pairs, authorization values and
    known API keys masked. Idempotent; never raises on odd input."""
    if not text:
        return text
    for secret in _known_secrets(secrets):
        if secret in text:
            text = text.replace(secret, KEY_MASK)
    if "://" in text:
        text = _URL.sub(_url_sub, text)
    if "=" not in text and text.count(":") == text.count("://"):
        return text  # no pair left to mask (e.g. a URL already redacted)
    if "?" in text or "&" in text or ";" in text:
        text = _QUERY_PAIR.sub(lambda m: m.group("lead") + MASK, text)
    if '"' in text or "'" in text:
        text = _QUOTED_PAIR.sub(lambda m: f"{m.group('head')}{m.group('q2')}{MASK}"
                                          f"{m.group('q2')}", text)
    text = _mask_text_pairs(text)
    low = text.lower()
    if "authorization" in low:
        text = _AUTH_HEADER.sub(lambda m: m.group("head") + MASK, text)
    if "bearer" in low or "basic" in low:
        text = _BEARER.sub(lambda m: f"{m.group('b') or m.group('basic')} {MASK}", text)
    return text


def redact_url(url: str) -> str:
    """The URL without its query string and fragment: presigned signatures never leave us."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError:
        return "<unparseable url>"
    # No userinfo (user:password@); an IPv6 host keeps its brackets.
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if port:
        netloc += f":{port}"
    query = MASK if parts.query else ""
    return redact_text(urlunsplit((parts.scheme, netloc, parts.path, query, "")))


class LazyRedactedUrl:
    """``redact_url(url)`` computed only if a log record is really emitted (per-request DEBUG
    lines would otherwise pay for the redaction at every level)."""

    __slots__ = ("url",)

    def __init__(self, url: str) -> None:
        self.url = url

    def __str__(self) -> str:
        return redact_url(self.url)


# A storage server's own words (an error body's message or title) are quoted in one-line
# reasons: there, nothing that could be a URL, a query string or a credential survives.
_URLISH = re.compile(r"[a-z][a-z0-9+.\-]*://\S*|\?\S*=\S*|[\w\-]*(?:sig|signature|token|"
                     r"credential|key|x-amz-[\w\-]*|x-goog-[\w\-]*)=\S*", re.IGNORECASE)
UNTRUSTED_MASK = "<redacted>"


def redact_untrusted(text: str) -> str:
    """``text`` (a server's words) with every URL of any scheme, every query string and every
    credential-looking ``name=value`` replaced whole by ``<redacted>``. (The message it ends up
    in is passed through ``redact_text`` too, when its error is made.)"""
    return _URLISH.sub(UNTRUSTED_MASK, text)


def redact_obj(obj: Any) -> Any:
    """A copy of a JSON-like value (dicts, lists, strings, numbers) with every string passed
    through ``redact_text``: for reports and events printed as JSON."""
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, dict):
        return {redact_text(k) if isinstance(k, str) else k: redact_obj(v)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v) for v in obj]
    return obj


class RedactingFormatter(logging.Formatter):
    """A formatter whose whole output (message, arguments, traceback, stack) is redacted:
    holds for every logger behind the handler, aiohttp's and asyncio's included."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            return redact_text(super().format(record))
        except Exception:  # noqa: BLE001 - a broken record must not leak through the fallback
            return redact_text(f"{record.levelname} {record.name}: <unformattable log record>")

