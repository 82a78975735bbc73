"""Presigned-URL signing and checking, in the forms real storage uses: S3 SigV4 query auth, a
plain `expires`+`sig` form, CloudFront (`Expires`, `Signature`, `Key-Pair-Id`), Azure SAS
(`sv`, `st`, `se`, `sr`, `sp`, `sig`) and nginx secure_link (`md5`, `expires`).

Pure: every function takes the clock reading it needs and returns values.

Expiry precision. SigV4 carries the expiry as `X-Amz-Date` (whole seconds) + `X-Amz-Expires`
(whole seconds), which cannot express the ~1 s lifetimes tests need. So both styles also carry
the exact instant in a signed, non-standard `X-Emu-Expires-At` (float epoch), and that instant
is what the emulator enforces. The standard fields are rounded *up* to the next whole second, so
a client reading them believes the URL lives up to 1 s longer than it does and may meet the
reactive "Request has expired" path, as it would with clock skew against real storage. Every
style carries (and signs) it.

The signatures are HMACs with the emulator's secret shaped like the real ones (CloudFront's
RSA-SHA1 becomes an HMAC in CloudFront's URL-safe base64, nginx's md5 is md5 over the expiry,
the path and the secret as `secure_link_md5 "$secure_link_expires$uri secret"` computes it).
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import math
import time
from dataclasses import dataclass
from enum import Enum
from urllib.parse import quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"
EXACT_EXPIRY = "X-Emu-Expires-At"
SIGNATURE = "X-Amz-Signature"
PLAIN_SIGNATURE = "sig"
CLOUDFRONT_SIGNATURE = "Signature"
CLOUDFRONT_KEY_PAIR = "K2JCJMDEHXQW5F"
AZURE_VERSION = "2022-11-02"
NGINX_SIGNATURE = "md5"
STYLES = ("s3v4", "expires", "cloudfront", "azure", "nginx")


class Verdict(Enum):
    OK = "ok"
    FORGED = "forged"  # missing, malformed or wrong signature
    EXPIRED = "expired"


@dataclass(frozen=True)
class Checked:
    """The outcome of checking one request's query auth."""

    verdict: Verdict
    expires_at: float | None = None  # the exact instant, when the URL carried a valid one
    lifetime: int | None = None  # X-Amz-Expires, for the S3 error body
    style: str = "s3v4"  # which form the URL had (shapes the "expired" answer)


def uri_encode(text: str, *, keep_slash: bool = False) -> str:
    """S3's UriEncode: everything but unreserved characters (and '/' in paths) is %-encoded."""
    return quote(text, safe="/" if keep_slash else "")


def host_of(base_url: str) -> str:
    """The Host header a client sends for `base_url` (default ports dropped)."""
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return host if port is None or port == default else f"{host}:{port}"


def amz_date(epoch: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(int(epoch)))


def _canonical_query(pairs: list[tuple[str, str]]) -> str:
    encoded = sorted((uri_encode(k), uri_encode(v)) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def _fmt_exact(expires_at: float) -> str:
    return f"{expires_at:.6f}"


def iso_utc(epoch: float) -> str:
    """`2026-11-24T20:00:00Z` (Azure's `st`/`se` form), whole seconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch)))


def _parse_iso_utc(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))


def cloudfront_b64(digest: bytes) -> str:
    """CloudFront's URL-safe base64: `+` → `-`, `=` → `_`, `/` → `~`."""
    return base64.b64encode(digest).decode().translate(str.maketrans("+=/", "-_~"))


def nginx_md5(secret: bytes, raw_path: str, expires: str, exact: str) -> str:
    """secure_link_md5 "$secure_link_expires$uri$exact secret": base64url md5, no padding."""
    msg = f"{expires}{raw_path}{exact} ".encode() + secret
    digest = hashlib.md5(msg, usedforsecurity=False).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True)
class Signer:
    """Signs and checks presigned URLs with one secret (a fake AWS secret access key)."""

    secret: bytes
    access_key: str = "EMULATORACCESSKEY"
    region: str = "us-east-1"
    service: str = "s3"

    # --- SigV4 -----------------------------------------------------------------------------
    def _signing_key(self, day: str) -> bytes:
        key = b"AWS4" + self.secret
        for part in (day, self.region, self.service, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        return key

    def _s3v4_signature(
        self, method: str, host: str, raw_path: str, pairs: list[tuple[str, str]], date: str
    ) -> str:
        canonical = "\n".join([
            method, raw_path, _canonical_query(pairs), f"host:{host}", "", "host",
            "UNSIGNED-PAYLOAD",
        ])
        scope = f"{date[:8]}/{self.region}/{self.service}/aws4_request"
        to_sign = "\n".join([
            ALGORITHM, date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        return hmac.new(self._signing_key(date[:8]), to_sign.encode(), hashlib.sha256).hexdigest()

    def _plain_signature(self, raw_path: str, pairs: list[tuple[str, str]]) -> str:
        # CloudFront-like: the method is not signed, so GET and HEAD share one URL.
        msg = f"{raw_path}\n{_canonical_query(pairs)}".encode()
        return hmac.new(self.secret, msg, hashlib.sha256).hexdigest()

    def _cloudfront_signature(self, raw_path: str, pairs: list[tuple[str, str]]) -> str:
        msg = f"cloudfront\n{raw_path}\n{_canonical_query(pairs)}".encode()
        return cloudfront_b64(hmac.new(self.secret, msg, hashlib.sha1).digest())

    def _azure_signature(self, raw_path: str, pairs: list[tuple[str, str]]) -> str:
        # Azure signs a newline-joined string-to-sign with HMAC-SHA256, base64 (standard).
        msg = f"azure\n{raw_path}\n{_canonical_query(pairs)}".encode()
        return base64.b64encode(hmac.new(self.secret, msg, hashlib.sha256).digest()).decode()

    def presign_query(
        self, *, raw_path: str, host: str, now: float, lifetime: float, style: str = "s3v4",
        method: str = "GET",
    ) -> str:
        """The query string (already encoded) that makes `raw_path` a presigned URL."""
        if lifetime <= 0:
            raise ValueError("lifetime must be positive")
        expires_at = now + lifetime
        if style == "s3v4":
            date = amz_date(now)
            whole = max(1, math.ceil(expires_at - int(now)))
            pairs = [
                ("X-Amz-Algorithm", ALGORITHM),
                ("X-Amz-Credential",
                 f"{self.access_key}/{date[:8]}/{self.region}/{self.service}/aws4_request"),
                ("X-Amz-Date", date),
                ("X-Amz-Expires", str(whole)),
                ("X-Amz-SignedHeaders", "host"),
                (EXACT_EXPIRY, _fmt_exact(expires_at)),
            ]
            sig = self._s3v4_signature(method.upper(), host, raw_path, pairs, date)
            pairs.append((SIGNATURE, sig))
        elif style == "expires":
            pairs = [("expires", str(math.ceil(expires_at))),
                     (EXACT_EXPIRY, _fmt_exact(expires_at))]
            pairs.append((PLAIN_SIGNATURE, self._plain_signature(raw_path, pairs)))
        elif style == "cloudfront":
            pairs = [("Expires", str(math.ceil(expires_at))),
                     (EXACT_EXPIRY, _fmt_exact(expires_at))]
            pairs.append((CLOUDFRONT_SIGNATURE, self._cloudfront_signature(raw_path, pairs)))
            pairs.append(("Key-Pair-Id", CLOUDFRONT_KEY_PAIR))
        elif style == "azure":
            pairs = [("sv", AZURE_VERSION), ("st", iso_utc(now - 300)),
                     ("se", iso_utc(math.ceil(expires_at))), ("sr", "b"), ("sp", "r"),
                     (EXACT_EXPIRY, _fmt_exact(expires_at))]
            pairs.append((PLAIN_SIGNATURE, self._azure_signature(raw_path, pairs)))
        elif style == "nginx":
            expires, exact = str(math.ceil(expires_at)), _fmt_exact(expires_at)
            pairs = [(NGINX_SIGNATURE, nginx_md5(self.secret, raw_path, expires, exact)),
                     ("expires", expires), (EXACT_EXPIRY, exact)]
        else:
            raise ValueError(f"unknown presign style {style!r}; use one of {STYLES}")
        return "&".join(f"{uri_encode(k)}={uri_encode(v)}" for k, v in pairs)

    def check(
        self, *, method: str, host: str, raw_path: str, pairs: list[tuple[str, str]], now: float
    ) -> Checked:
        """Judge a request's query auth: the signature first, then the expiry."""
        standard: float
        names = [k for k, _ in pairs]
        if len(set(names)) != len(names):
            return Checked(Verdict.FORGED)
        params = dict(pairs)
        if SIGNATURE in params:
            unsigned = [(k, v) for k, v in pairs if k != SIGNATURE]
            date = params.get("X-Amz-Date", "")
            if params.get("X-Amz-Algorithm") != ALGORITHM or len(date) != 16:
                return Checked(Verdict.FORGED)
            want = self._s3v4_signature(method.upper(), host, raw_path, unsigned, date)
            if not hmac.compare_digest(want, params[SIGNATURE]):
                return Checked(Verdict.FORGED)
            try:
                lifetime: int | None = int(params["X-Amz-Expires"])
                start = calendar.timegm(time.strptime(date, "%Y%m%dT%H%M%SZ"))
            except (KeyError, ValueError):
                return Checked(Verdict.FORGED)
            assert lifetime is not None
            standard = start + lifetime
            style = "s3v4"
        elif CLOUDFRONT_SIGNATURE in params:
            unsigned = [(k, v) for k, v in pairs if k not in (CLOUDFRONT_SIGNATURE, "Key-Pair-Id")]
            want = self._cloudfront_signature(raw_path, unsigned)
            if params.get("Key-Pair-Id") != CLOUDFRONT_KEY_PAIR or not hmac.compare_digest(
                    want, params[CLOUDFRONT_SIGNATURE]):
                return Checked(Verdict.FORGED)
            try:
                standard = float(params["Expires"])
            except (KeyError, ValueError):
                return Checked(Verdict.FORGED)
            style, lifetime = "cloudfront", None
        elif NGINX_SIGNATURE in params:
            want = nginx_md5(self.secret, raw_path, params.get("expires", ""),
                             params.get(EXACT_EXPIRY, ""))
            if set(params) - {NGINX_SIGNATURE, "expires", EXACT_EXPIRY} or \
                    not hmac.compare_digest(want, params[NGINX_SIGNATURE]):
                return Checked(Verdict.FORGED)
            try:
                standard = float(params["expires"])
            except (KeyError, ValueError):
                return Checked(Verdict.FORGED)
            style, lifetime = "nginx", None
        elif PLAIN_SIGNATURE in params and "sv" in params:
            unsigned = [(k, v) for k, v in pairs if k != PLAIN_SIGNATURE]
            want = self._azure_signature(raw_path, unsigned)
            if not hmac.compare_digest(want, params[PLAIN_SIGNATURE]):
                return Checked(Verdict.FORGED)
            try:
                standard = _parse_iso_utc(params["se"])
                not_before = _parse_iso_utc(params["st"])
            except (KeyError, ValueError):
                return Checked(Verdict.FORGED)
            if params.get("sp") != "r" or now < not_before:
                return Checked(Verdict.FORGED)
            style, lifetime = "azure", None
        elif PLAIN_SIGNATURE in params:
            unsigned = [(k, v) for k, v in pairs if k != PLAIN_SIGNATURE]
            want = self._plain_signature(raw_path, unsigned)
            if not hmac.compare_digest(want, params[PLAIN_SIGNATURE]):
                return Checked(Verdict.FORGED)
            lifetime = None
            try:
                standard = float(params["expires"])
            except (KeyError, ValueError):
                return Checked(Verdict.FORGED)
            style = "expires"
        else:
            return Checked(Verdict.FORGED)
        try:
            expires_at = float(params[EXACT_EXPIRY])
        except (KeyError, ValueError):
            expires_at = standard
        verdict = Verdict.EXPIRED if now >= expires_at else Verdict.OK
        return Checked(verdict, expires_at, lifetime, style)
