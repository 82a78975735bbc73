import json

import pytest

from weightlift.downloader.storage_errors import (
    BODY_SCAN_LIMIT,
    StorageErrorKind,
    classify_response,
    describe,
)

K = StorageErrorKind

S3_EXPIRED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Request has expired</Message><X-Amz-Expires>3600</X-Amz-Expires>"
    b"<Expires>2026-11-24T20:00:00Z</Expires><ServerTime>2026-11-24T20:00:07Z</ServerTime>"
    b"<RequestId>4442587FB7D0A2F9</RequestId><HostId>abc=</HostId></Error>"
)
S3_ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message><RequestId>1</RequestId></Error>"
)
S3_EXPIRED_TOKEN = (
    b"<Error><Code>ExpiredToken</Code><Message>The provided token has expired.</Message>"
    b"<Token-0>FwoGZXIvYXdzEJr//////////wEaDOp</Token-0><RequestId>1</RequestId></Error>"
)
S3_SIG_MISMATCH = (
    b"<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated "
    b"does not match the signature you provided. Check your key and signing method.</Message>"
    b"<AWSAccessKeyId>AKIAIOSFODNN7EXAMPLE</AWSAccessKeyId><StringToSign>AWS4-HMAC-SHA256"
    b"</StringToSign><CanonicalRequest>GET /k X-Amz-Security-Token=SECRET</CanonicalRequest>"
    b"</Error>"
)
S3_NO_SUCH_KEY = (
    b"<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message>"
    b"<Key>llama/model.safetensors</Key></Error>"
)
S3_SLOW_DOWN = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
S3_REQUEST_TIMEOUT = (
    b"<Error><Code>RequestTimeout</Code><Message>Your socket connection to the server was not "
    b"read from or written to within the timeout period.</Message></Error>"
)
S3_GLACIER = (
    b"<Error><Code>InvalidObjectState</Code><Message>The operation is not valid for the "
    b"object's storage class</Message></Error>"
)
GCS_EXPIRED_XML = (
    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>ExpiredToken</Code>"
    b"<Message>Invalid argument.</Message><Details>The provided token has expired. Request "
    b"signature expired at: 2026-11-24T20:00:00+00:00</Details></Error>"
)
GCS_EXPIRED_JSON = json.dumps({"error": {
    "code": 400, "message": "The provided token has expired.",
    "errors": [{"message": "The provided token has expired.", "domain": "global",
                "reason": "ExpiredToken"}],
}}).encode()
GCS_JSON_FORBIDDEN = json.dumps({"error": {
    "code": 403, "message": "sa@p.iam does not have storage.objects.get access.",
    "errors": [{"message": "denied", "domain": "global", "reason": "forbidden"}],
}}).encode()
AZURE_EXPIRED = (
    "\ufeff<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthenticationFailed</Code>"
    "<Message>Server failed to authenticate the request. Make sure the value of Authorization "
    "header is formed correctly including the signature.\nRequestId:8b1e-001e\n"
    "Time:2026-11-24T20:00:07.1234567Z</Message><AuthenticationErrorDetail>Signed expiry time "
    "[Tue, 24 Nov 2026 20:00:00 GMT] must be after signed start time [Tue, 24 Nov 2026 20:00:07 "
    "GMT]</AuthenticationErrorDetail></Error>"
).encode("utf-8")
AZURE_AUTH_FAILED = (
    b"<Error><Code>AuthenticationFailed</Code><Message>Server failed to authenticate the "
    b"request.</Message><AuthenticationErrorDetail>Signature did not match. String to sign used "
    b"was r</AuthenticationErrorDetail></Error>"
)
AZURE_PERMISSION = (
    b"<Error><Code>AuthorizationPermissionMismatch</Code><Message>This request is not "
    b"authorized to perform this operation using this permission.</Message></Error>"
)
CDN_HTML = (
    b"<html><head><title>403 Forbidden</title></head><body><center><h1>403 Forbidden</h1>"
    b"</center><hr><center>nginx</center></body></html>"
)
CDN_HTML_EXPIRED = b"<html><head><title>Link expired</title></head><body>Sorry</body></html>"
BINARY = bytes(range(256)) * 4
HUGE_JUNK = b"<p>" + b"x" * (5 * 1024 * 1024)
LATE_CODE = b" " * (BODY_SCAN_LIMIT + 10) + b"<Error><Code>ExpiredToken</Code></Error>"
DEEP_JSON = b"[" * 100_000 + b"]" * 100_000
OBJ_DEEP_JSON = b'{"error": ' + b'{"a":' * 50_000 + b"1" + b"}" * 50_001
TRUNCATED_JSON = b'{"error": {"code": 403, "message": "Access den'

# (status, body, headers, expired_by_clock, can_refresh) -> kind
CASES = [
    # S3 and S3 look-alikes (MinIO, R2)
    pytest.param(403, S3_EXPIRED, {}, False, False, K.EXPIRED, id="s3-request-has-expired"),
    pytest.param(403, S3_EXPIRED, {}, False, True, K.EXPIRED, id="s3-expired-refreshable"),
    pytest.param(400, S3_EXPIRED_TOKEN, {}, False, False, K.EXPIRED, id="s3-expired-token"),
    pytest.param(403, S3_ACCESS_DENIED, {}, False, False, K.FATAL, id="s3-access-denied"),
    pytest.param(403, S3_ACCESS_DENIED, {}, True, False, K.EXPIRED,
                 id="s3-access-denied-past-expiry"),
    pytest.param(403, S3_ACCESS_DENIED, {}, False, True, K.EXPIRED,
                 id="s3-access-denied-refreshable"),
    pytest.param(403, S3_SIG_MISMATCH, {}, False, True, K.EXPIRED, id="s3-sig-mismatch-refresh"),
    pytest.param(403, S3_SIG_MISMATCH, {}, False, False, K.FATAL, id="s3-sig-mismatch-fatal"),
    pytest.param(403, S3_SIG_MISMATCH, {}, True, False, K.FATAL,
                 id="s3-sig-mismatch-past-expiry-no-refresh"),
    pytest.param(403, S3_GLACIER, {}, True, True, K.FATAL, id="s3-glacier-never-refresh"),
    pytest.param(404, S3_NO_SUCH_KEY, {}, False, True, K.NOT_FOUND, id="s3-no-such-key"),
    pytest.param(410, b"", {}, False, False, K.NOT_FOUND, id="gone"),
    pytest.param(503, S3_SLOW_DOWN, {"Retry-After": "2"}, False, False, K.RETRYABLE,
                 id="s3-slow-down"),
    pytest.param(400, S3_REQUEST_TIMEOUT, {}, False, False, K.RETRYABLE, id="s3-400-timeout"),
    pytest.param(500, b"<Error><Code>InternalError</Code></Error>", {}, False, False,
                 K.RETRYABLE, id="s3-internal-error"),
    # GCS
    pytest.param(400, GCS_EXPIRED_XML, {}, False, False, K.EXPIRED, id="gcs-expired-xml"),
    pytest.param(400, GCS_EXPIRED_JSON, {}, False, False, K.EXPIRED, id="gcs-expired-json"),
    pytest.param(403, GCS_JSON_FORBIDDEN, {}, False, False, K.FATAL, id="gcs-json-forbidden"),
    pytest.param(429, GCS_JSON_FORBIDDEN, {}, False, False, K.RETRYABLE, id="gcs-429"),
    # Azure
    pytest.param(403, AZURE_EXPIRED, {"x-ms-error-code": "AuthenticationFailed"}, False, False,
                 K.EXPIRED, id="azure-signed-expiry"),
    pytest.param(403, AZURE_AUTH_FAILED, {}, False, True, K.EXPIRED,
                 id="azure-auth-failed-refreshable"),
    pytest.param(403, AZURE_AUTH_FAILED, {}, False, False, K.FATAL, id="azure-auth-failed-fatal"),
    pytest.param(403, b"", {"X-MS-Error-Code": "AuthorizationPermissionMismatch"}, True, True,
                 K.FATAL, id="azure-head-permission-header"),
    pytest.param(403, AZURE_PERMISSION, {}, False, True, K.FATAL, id="azure-permission"),
    pytest.param(503, b"<Error><Code>ServerBusy</Code></Error>", {}, False, False, K.RETRYABLE,
                 id="azure-server-busy"),
    # Bare CDN answers (CloudFront, R2 custom domains, nginx)
    pytest.param(403, b"", {}, False, False, K.FATAL, id="bare-403"),
    pytest.param(403, b"", {}, True, False, K.EXPIRED, id="bare-403-past-expiry"),
    pytest.param(403, b"", {}, False, True, K.EXPIRED, id="bare-403-refreshable"),
    pytest.param(403, CDN_HTML, {}, False, False, K.FATAL, id="html-403"),
    pytest.param(403, CDN_HTML, {}, False, True, K.EXPIRED, id="html-403-refreshable"),
    pytest.param(403, CDN_HTML_EXPIRED, {}, False, False, K.EXPIRED, id="html-link-expired"),
    pytest.param(403, BINARY, {}, False, False, K.FATAL, id="binary-403"),
    pytest.param(403, HUGE_JUNK, {}, False, True, K.EXPIRED, id="huge-403-refreshable"),
    pytest.param(400, LATE_CODE, {}, False, False, K.FATAL, id="code-after-64k-not-read"),
    pytest.param(400, b"", {}, True, True, K.EXPIRED, id="bare-400-past-expiry"),
    pytest.param(400, b"", {}, False, True, K.FATAL, id="bare-400"),
    pytest.param(401, b"", {}, False, False, K.FATAL, id="bare-401"),
    pytest.param(403, DEEP_JSON, {}, False, False, K.FATAL, id="deep-json-array"),
    pytest.param(403, OBJ_DEEP_JSON, {}, False, True, K.EXPIRED, id="deep-json-object"),
    pytest.param(403, TRUNCATED_JSON, {}, False, False, K.FATAL, id="truncated-json"),
    # Plain statuses
    pytest.param(408, b"", {}, False, False, K.RETRYABLE, id="408"),
    pytest.param(425, b"", {}, False, False, K.RETRYABLE, id="425"),
    pytest.param(502, CDN_HTML, {}, False, False, K.RETRYABLE, id="502-html"),
    pytest.param(504, BINARY, {}, False, False, K.RETRYABLE, id="504-binary"),
    pytest.param(501, b"", {}, False, False, K.FATAL, id="501-not-implemented"),
    pytest.param(416, b"", {}, False, True, K.FATAL, id="416"),
    pytest.param(409, b"", {}, True, True, K.FATAL, id="409"),
    pytest.param(301, b"", {"Location": "https://elsewhere/"}, False, True, K.FATAL,
                 id="redirect"),
]


@pytest.mark.parametrize(("status", "body", "headers", "clock", "refresh", "kind"), CASES)
def test_classify_response(status: int, body: bytes, headers: dict[str, str], clock: bool,
                           refresh: bool, kind: StorageErrorKind) -> None:
    got = classify_response(status, body, headers, url_expired_by_clock=clock,
                            can_refresh=refresh)
    assert got is kind


@pytest.mark.parametrize(("status", "body", "expected"), [
    pytest.param(403, S3_EXPIRED, "403 AccessDenied: Request has expired", id="s3-expired"),
    pytest.param(400, S3_EXPIRED_TOKEN, "400 ExpiredToken: The provided token has expired.",
                 id="s3-expired-token"),
    pytest.param(404, S3_NO_SUCH_KEY, "404 NoSuchKey: The specified key does not exist.",
                 id="no-such-key"),
    pytest.param(400, GCS_EXPIRED_XML, "400 ExpiredToken: Invalid argument.", id="gcs-xml"),
    pytest.param(400, GCS_EXPIRED_JSON, "400 ExpiredToken: The provided token has expired.",
                 id="gcs-json"),
    pytest.param(403, AZURE_EXPIRED, "403 AuthenticationFailed: Server failed to authenticate "
                 "the request. Make sure the value of Authorization header is formed correctly "
                 "including the signature.", id="azure-first-line-only"),
    pytest.param(403, b"", "403 Forbidden", id="empty"),
    pytest.param(403, CDN_HTML, "403 Forbidden", id="html-title-same-as-status"),
    pytest.param(403, CDN_HTML_EXPIRED, "403 Forbidden: Link expired", id="html-title"),
    pytest.param(403, BINARY, "403 Forbidden", id="binary"),
    pytest.param(599, b"", "599 HTTP error", id="unknown-status"),
    pytest.param(500, b"<Error><Code>InternalError</Code></Error>", "500 InternalError",
                 id="code-without-message"),
])
def test_describe(status: int, body: bytes, expected: str) -> None:
    assert describe(status, body) == expected


@pytest.mark.parametrize("message", [
    "Denied for https://b.s3.amazonaws.com/k?X-Amz-Signature=deadbeef",
    "bad query ?X-Amz-Credential=AKIA%2F&X-Amz-Signature=deadbeef",
    "sig=deadbeef was rejected",
    "X-Goog-Signature=deadbeef rejected",
])
def test_describe_never_echoes_urls_or_signatures(message: str) -> None:
    body = f"<Error><Code>AccessDenied</Code><Message>{message}</Message></Error>".encode()
    reason = describe(403, body)
    assert reason.startswith("403 AccessDenied: ")
    assert "deadbeef" not in reason
    assert "://" not in reason
    assert "<redacted>" in reason


def test_describe_is_short_and_single_line() -> None:
    body = b"<Error><Code>AccessDenied</Code><Message>" + b"word " * 5000 + b"</Message></Error>"
    reason = describe(403, body)
    assert len(reason) <= 220
    assert reason.endswith("...")
    weird = b"<Error><Code>AccessDenied</Code><Message>a\tb\x00c\x1bd</Message></Error>"
    assert describe(403, weird) == "403 AccessDenied: a b c d"


def test_header_mapping_that_misbehaves_is_survived() -> None:
    class Broken(dict[str, str]):
        def items(self):  # type: ignore[no-untyped-def]
            raise TypeError("boom")

    got = classify_response(403, b"", Broken(), url_expired_by_clock=False, can_refresh=False)
    assert got is K.FATAL
