import base64
import hashlib

import pytest

from weightlift.downloader.response_check import (
    Asked,
    Probed,
    Verdict,
    decide,
    judge_probe,
    parse_content_range,
    storage_sha256,
)

R = Asked(start=100, end=200, size=1000, ranged=True, validator='"e1"')
W = Asked(start=0, end=1000, size=1000, ranged=False)


@pytest.mark.parametrize(("status", "headers", "asked", "verdict"), [
    (206, {"Content-Range": "bytes 100-199/1000", "ETag": '"e1"'}, R, Verdict.WRITE),
    (206, {"Content-Range": "bytes 100-199/1000", "Content-Length": "100"}, R, Verdict.WRITE),
    (206, {"Content-Range": "bytes 0-99/1000"}, R, Verdict.BAD_RESPONSE),
    (206, {"Content-Range": "bytes 100-198/1000"}, R, Verdict.BAD_RESPONSE),
    (206, {"Content-Range": "garbage"}, R, Verdict.BAD_RESPONSE),
    (206, {}, R, Verdict.BAD_RESPONSE),
    (206, {"Content-Range": "bytes 100-199/1000", "Content-Length": "150"}, R,
     Verdict.BAD_RESPONSE),
    (206, {"Content-Range": "bytes 100-199/2000"}, R, Verdict.SIZE_MISMATCH),
    (206, {"Content-Range": "bytes 100-199/1000", "ETag": '"e2"'}, R, Verdict.OBJECT_CHANGED),
    (206, {"Content-Range": "bytes 100-199/1000", "Content-Encoding": "gzip"}, R,
     Verdict.BAD_RESPONSE),
    (200, {"Content-Length": "1000", "ETag": '"e2"'}, R, Verdict.OBJECT_CHANGED),
    (200, {"Content-Length": "1000", "ETag": '"e1"'}, R, Verdict.NO_RANGE_SUPPORT),
    (200, {"Content-Length": "1000"}, Asked(100, 200, 1000, True), Verdict.NO_RANGE_SUPPORT),
    (200, {"Content-Length": "1000"}, W, Verdict.WRITE),
    (200, {"Content-Length": "999"}, W, Verdict.SIZE_MISMATCH),
    (200, {}, W, Verdict.WRITE),
    (206, {"Content-Range": "bytes 0-999/1000"}, W, Verdict.WRITE),
    (206, {"Content-Range": "bytes 0-499/1000"}, W, Verdict.BAD_RESPONSE),
    (403, {}, R, Verdict.ERROR_STATUS),
    (503, {"Retry-After": "1"}, R, Verdict.ERROR_STATUS),
    (304, {}, R, Verdict.ERROR_STATUS),
])
def test_decision_table(status, headers, asked, verdict):
    assert decide(status, headers, asked).verdict is verdict


def test_header_names_are_case_insensitive():
    d = decide(206, {"content-range": "bytes 100-199/1000", "etag": '"e1"'}, R)
    assert d.verdict is Verdict.WRITE
    assert d.total == 1000


@pytest.mark.parametrize(("text", "parsed"), [
    ("bytes 0-0/1", (0, 1, 1)),
    ("bytes 5-9/*", (5, 10, None)),
    ("bytes 9-5/10", None),
    ("bytes 0-10/10", None),
    ("bits 0-1/2", None),
])
def test_parse_content_range(text, parsed):
    assert parse_content_range(text) == parsed


def test_storage_sha256_only_for_whole_object_checksums():
    digest = hashlib.sha256(b"x").digest()
    b64 = base64.b64encode(digest).decode()
    assert storage_sha256({"x-amz-checksum-sha256": b64}) == digest.hex()
    assert storage_sha256({"x-amz-checksum-sha256": b64 + "-3"}) is None
    assert storage_sha256({"x-amz-checksum-sha256": b64,
                           "x-amz-checksum-type": "COMPOSITE"}) is None
    assert storage_sha256({"x-amz-checksum-sha256": "!!"}) is None
    assert storage_sha256({}) is None


FIRST = Asked(start=0, end=100, size=1000, ranged=True, may_be_whole=True)


@pytest.mark.parametrize(("status", "headers", "asked", "verdict", "whole"), [
    # A file's first Range request, alone while Range support is unproven: a 200 is the object.
    (200, {"Content-Length": "1000"}, FIRST, Verdict.WRITE, True),
    (200, {}, FIRST, Verdict.WRITE, True),
    (200, {"Content-Length": "999"}, FIRST, Verdict.SIZE_MISMATCH, False),
    (206, {"Content-Range": "bytes 0-99/1000"}, FIRST, Verdict.WRITE, False),
    # Any other Range request: a 200 is not what was asked.
    (200, {"Content-Length": "1000"}, Asked(0, 100, 1000, True), Verdict.NO_RANGE_SUPPORT,
     False),
    (200, {"Content-Length": "1000"}, Asked(100, 200, 1000, True, may_be_whole=True),
     Verdict.NO_RANGE_SUPPORT, False),
])
def test_first_request_may_be_answered_whole(status, headers, asked, verdict, whole):
    decision = decide(status, headers, asked)
    assert decision.verdict is verdict
    assert decision.whole is whole


@pytest.mark.parametrize(("status", "headers", "expected"), [
    (206, {"Content-Range": "bytes 0-0/1000"}, Probed(1000, True)),
    (206, {"Content-Range": "bytes 0-0/*"}, Probed(None, False)),  # size unstated: one GET
    (206, {"Content-Type": "multipart/byteranges; boundary=x"}, Probed(None, False)),
    (200, {"Content-Length": "1000"}, Probed(1000, False)),
    (200, {"Transfer-Encoding": "chunked"}, Probed(None, False)),
    # 416 is an empty object only when it says the total is 0.
    (416, {"Content-Range": "bytes */0"}, Probed(0, True)),
    (416, {"Content-Range": "bytes */1000000"}, Probed(1000000, False)),
    (416, {}, Probed(None, False)),
    (403, {}, "HTTP 403"),
])
def test_probe_table(status, headers, expected):
    assert judge_probe(status, headers) == expected
