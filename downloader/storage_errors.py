"""Classify a storage error answer: refresh the URL, retry, give up, or not there (pure).

Bodies are read defensively: only the first 64 KiB, any encoding, XML (S3, GCS, Azure),
JSON (GCS JSON API and S3 look-alikes), HTML or nothing at all. Nothing here raises.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus

from weightlift.downloader.redact import redact_untrusted

__all__ = ["BODY_SCAN_LIMIT", "StorageErrorKind", "classify_response", "describe"]

BODY_SCAN_LIMIT = 64 * 1024


class StorageErrorKind(enum.Enum):
    EXPIRED = "expired"  # refresh the URL and retry the same range
    RETRYABLE = "retryable"  # back off and retry (the retry policy has the last word)
    FATAL = "fatal"  # retrying cannot help
    NOT_FOUND = "not-found"  # the object is not there (404/410)


# Codes that say the signature's lifetime (or its credentials') ran out.
_EXPIRY_CODES = frozenset({"expiredtoken", "tokenrefreshrequired", "requestexpired",
                           "expiredsignature", "signatureexpired", "urlexpired"})
# 403 codes a fresh signature cannot fix.
_FATAL_403_CODES = frozenset({
    "accountproblem", "allaccessdisabled", "invalidobjectstate", "requesttimetooskewed",
    "invalidpayer", "notsignedup", "userprojectaccountproblem", "accountisdisabled",
    "authorizationpermissionmismatch", "insufficientaccountpermissions",
})
_RETRYABLE_CODES = frozenset({"requesttimeout", "slowdown", "serverbusy", "internalerror",
                              "serviceunavailable", "operationtimedout"})
# Header names that carry the error code when the body is missing (HEAD) or unhelpful.
_CODE_HEADERS = frozenset({"x-ms-error-code", "x-amz-error-code", "x-goog-error-code"})
_RETRYABLE_4XX = frozenset({408, 425, 429})
# 5xx that no retry fixes.
_FATAL_5XX = frozenset({501, 505})

_EXPIRY_TEXT = re.compile(r"expired|signed expiry time", re.IGNORECASE)
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,63}")
_XML_CODE = re.compile(r"<Code>\s*([A-Za-z][A-Za-z0-9_.\-]{0,63})\s*</Code>", re.IGNORECASE)
# No closing tag required: an overlong message is simply cut at 2 KiB.
_XML_TEXT = re.compile(r"<(Message|Details|AuthenticationErrorDetail)>([^<]{0,2048})",
                       re.IGNORECASE)
_HTML_TITLE = re.compile(r"<title[^>]{0,200}>([^<]{0,512})</title>", re.IGNORECASE)
_MAX_REASON = 200


@dataclass(frozen=True)
class _Parsed:
    code: str | None  # as the server spelled it
    message: str  # first line of the human message, possibly empty
    text: str  # message and details, for phrase matching (whole body when no code)


def classify_response(status: int, body: bytes, headers: Mapping[str, str], *,
                      url_expired_by_clock: bool, can_refresh: bool) -> StorageErrorKind:
    """What to do about a non-2xx storage answer.

    ``url_expired_by_clock``: the URL's own expiry (see ``url_expiry``) has passed.
    ``can_refresh``: the source can hand out fresh URLs. EXPIRED may be returned even when it
    cannot (a clearly expired answer); the caller then fails with a "get fresh URLs" hint.
    """
    parsed = _parse(body)
    codes = {c.lower() for c in (parsed.code, *_header_codes(headers)) if c}
    if status in (404, 410):
        return StorageErrorKind.NOT_FOUND
    if codes & _RETRYABLE_CODES and status not in (401, 403):
        return StorageErrorKind.RETRYABLE  # e.g. S3 400 RequestTimeout
    if status in _RETRYABLE_4XX or (500 <= status <= 599 and status not in _FATAL_5XX):
        return StorageErrorKind.RETRYABLE
    if status not in (400, 401, 403):
        return StorageErrorKind.FATAL
    if codes & _EXPIRY_CODES or _EXPIRY_TEXT.search(parsed.text):
        return StorageErrorKind.EXPIRED
    if status != 403:
        # A 400/401 with nothing recognisable on a URL past its time: the time is the reason.
        unrecognised = not codes
        return (StorageErrorKind.EXPIRED if unrecognised and url_expired_by_clock
                else StorageErrorKind.FATAL)
    if "signaturedoesnotmatch" in codes:
        return StorageErrorKind.EXPIRED if can_refresh else StorageErrorKind.FATAL
    if codes & _FATAL_403_CODES:
        return StorageErrorKind.FATAL
    # AccessDenied without a reason, Azure AuthenticationFailed, a bare CDN 403, or HTML:
    # a fresh URL is the one cure worth trying (the resolver bounds how often).
    if url_expired_by_clock or can_refresh:
        return StorageErrorKind.EXPIRED
    return StorageErrorKind.FATAL


def describe(status: int, body: bytes) -> str:
    """A short reason such as ``403 AccessDenied: Request has expired``; never contains a URL,
    query string or signature."""
    parsed = _parse(body)
    head = f"{status} {parsed.code}" if parsed.code else f"{status} {_phrase(status)}"
    message = _clean(parsed.message)
    if message and message.lower() not in head.lower():
        return f"{head}: {message}"
    return head


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "HTTP error"


def _clean(text: str) -> str:
    text = redact_untrusted(text)  # never echo a URL, query string or credential
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    if len(text) > _MAX_REASON:
        text = text[: _MAX_REASON - 3].rstrip() + "..."
    return text


def _header_codes(headers: Mapping[str, str]) -> list[str]:
    found: list[str] = []
    try:
        for name, value in headers.items():
            if name.lower() in _CODE_HEADERS and _IDENTIFIER.fullmatch(value.strip()):
                found.append(value.strip())
    except (AttributeError, TypeError, ValueError):
        return found  # a malformed header mapping must not turn into a crash
    return found


def _parse(body: bytes) -> _Parsed:
    text = body[:BODY_SCAN_LIMIT].decode("utf-8-sig", errors="replace")
    stripped = text.lstrip()
    if stripped.startswith("{"):
        parsed = _parse_json(stripped)
        if parsed is not None:
            return parsed
    code_match = _XML_CODE.search(text)
    pieces = {m.group(1).lower(): m.group(2).strip() for m in _XML_TEXT.finditer(text)}
    if code_match is not None:
        message = pieces.get("message", "")
        first_line = message.splitlines()[0] if message else ""
        detail = " ".join(pieces.values())
        return _Parsed(code_match.group(1), first_line, detail)
    title = _HTML_TITLE.search(text)
    return _Parsed(None, title.group(1).strip() if title else "", text)


def _parse_json(text: str) -> _Parsed | None:
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    inner = doc.get("error")
    node: dict[str, object] = inner if isinstance(inner, dict) else doc
    code: str | None = None
    candidates: list[object] = [node.get(k) for k in ("reason", "status", "Code", "code")]
    errors = node.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        candidates.insert(0, errors[0].get("reason"))
    for candidate in candidates:
        if isinstance(candidate, str) and _IDENTIFIER.fullmatch(candidate):
            code = candidate
            break
    message = node.get("message", node.get("Message", ""))
    message_text = message if isinstance(message, str) else ""
    texts = [message_text]
    if isinstance(errors, list):
        texts += [e["message"] for e in errors[:8]
                  if isinstance(e, dict) and isinstance(e.get("message"), str)]
    first_line = message_text.splitlines()[0] if message_text else ""
    return _Parsed(code, first_line, " ".join(texts))
