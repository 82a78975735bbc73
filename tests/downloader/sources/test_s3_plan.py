"""The pure half of the S3 source: URIs, what a listing becomes, which checksums count, and the
error line for each answer S3 gives."""

from __future__ import annotations

import base64
import hashlib

import pytest

from weightlift.downloader.errors import EXIT_PLATFORM, EXIT_USAGE, UsageError
from weightlift.downloader.sources import s3_errors
from weightlift.downloader.sources.s3_plan import (
    S3Object,
    S3Ref,
    full_object_sha256,
    is_s3_uri,
    needs_restore,
    objects_to_files,
    parse_s3_uri,
    signing_region,
    url_lifetime,
)


@pytest.mark.parametrize(("uri", "bucket", "key", "is_prefix"), [
    ("s3://bkt", "bkt", "", True),
    ("s3://bkt/", "bkt", "", True),
    ("S3://bkt/run-7/final/", "bkt", "run-7/final/", True),
    ("s3://bkt/run-7/model.safetensors", "bkt", "run-7/model.safetensors", False),
    ("s3://bkt/a%20b?x#y", "bkt", "a%20b?x#y", False),  # literal, as the AWS CLI reads it
])
def test_uris_parse_literally(uri: str, bucket: str, key: str, is_prefix: bool) -> None:
    ref = parse_s3_uri(uri)
    assert (ref.bucket, ref.key, ref.is_prefix) == (bucket, key, is_prefix)
    assert is_s3_uri(uri)


@pytest.mark.parametrize("uri", ["s3://", "s3:///key", "s3://bkt//x", "s3://b k/x",
                                 "s3://bkt/a\nb", "s3://user:pw@bkt/x"])
def test_bad_uris_are_usage_errors(uri: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_s3_uri(uri)
    assert "\n" not in info.value.one_line()


def test_a_prefix_keeps_paths_below_it_and_skips_folder_markers() -> None:
    ref = S3Ref("bkt", "runs/7/")
    objs = [S3Object("runs/7/", 0), S3Object("runs/7/sub/", 0),
            S3Object("runs/7/model-00002.safetensors", 5), S3Object("runs/7/sub/b.json", 2),
            S3Object("runs/7/config.json", 1)]
    assert [rel for rel, _ in objects_to_files(ref, objs)] == [
        "config.json", "model-00002.safetensors", "sub/b.json"]


def test_a_single_key_is_named_by_its_last_segment() -> None:
    ref = S3Ref("bkt", "runs/7/model.safetensors")
    assert objects_to_files(ref, [S3Object(ref.key, 9)]) == [
        ("model.safetensors", S3Object(ref.key, 9))]


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


DIGEST = hashlib.sha256(b"weights").digest()


@pytest.mark.parametrize(("checksum", "kind", "expected"), [
    (_b64(DIGEST), None, DIGEST.hex()),
    (_b64(DIGEST), "FULL_OBJECT", DIGEST.hex()),
    (_b64(DIGEST), "COMPOSITE", None),  # a multipart upload: hash of the parts' hashes
    (_b64(DIGEST) + "-3", None, None),  # the older way S3 shows a composite checksum
    (_b64(DIGEST[:20]), None, None),  # not a sha256
    ("not base64!", None, None),
    (None, None, None),
    ("", None, None),
])
def test_only_a_full_object_sha256_is_used(checksum: str | None, kind: str | None,
                                           expected: str | None) -> None:
    assert full_object_sha256(checksum, kind) == expected


@pytest.mark.parametrize(("etag", "kind", "expected"), [
    ('"9b2cf535f27731c974343645a3985328"', None, DIGEST.hex()),
    ('"9b2cf535f27731c974343645a3985328-2"', None, None),  # multipart, unmarked checksum
    ("9b2cf535f27731c974343645a3985328-12", None, None),
    ('"9b2cf535f27731c974343645a3985328-2"', "FULL_OBJECT", DIGEST.hex()),
])
def test_a_multipart_etag_rules_out_an_unmarked_sha256(etag: str, kind: str | None,
                                                       expected: str | None) -> None:
    assert full_object_sha256(_b64(DIGEST), kind, etag) == expected


@pytest.mark.parametrize(("raw", "seconds"), [("", 3600), ("2", 2), ("604800", 604800)])
def test_url_lifetime(raw: str, seconds: int) -> None:
    assert url_lifetime({"WEIGHTLIFT_S3_URL_EXPIRES": raw}) == seconds


@pytest.mark.parametrize("raw", ["0", "-5", "1.5", "604801", "soon"])
def test_bad_url_lifetime_is_a_usage_error(raw: str) -> None:
    with pytest.raises(UsageError, match="WEIGHTLIFT_S3_URL_EXPIRES"):
        url_lifetime({"WEIGHTLIFT_S3_URL_EXPIRES": raw})


REF = S3Ref("bkt", "runs/7/")
WHO = "access key …KEY4 from the environment (AWS_ACCESS_KEY_ID)"


@pytest.mark.parametrize(("code", "status", "exit_code", "needles"), [
    ("NoSuchBucket", 404, EXIT_PLATFORM, ["bucket 'bkt' does not exist", "AWS_ENDPOINT_URL"]),
    ("AccessDenied", 403, EXIT_PLATFORM, ["access denied to s3://bkt/runs/7/", WHO,
                                          "s3:ListBucket", "s3:GetObject"]),
    ("403", 403, EXIT_PLATFORM, ["access denied", WHO]),  # a HEAD has no body to say more
    ("InvalidAccessKeyId", 403, EXIT_PLATFORM, ["S3 rejected", "AWS_SECRET_ACCESS_KEY"]),
    ("SignatureDoesNotMatch", 403, EXIT_PLATFORM, ["S3 rejected", "AWS_ACCESS_KEY_ID"]),
    ("ExpiredToken", 400, EXIT_PLATFORM, ["session token", "has expired"]),
    ("PermanentRedirect", 301, EXIT_PLATFORM, ["another region", "AWS_REGION"]),
    ("InvalidBucketName", 400, EXIT_USAGE, ["not a valid bucket name"]),
    ("SlowDown", 503, EXIT_PLATFORM, ["S3 refused s3://bkt/runs/7/: SlowDown"]),
])
def test_each_s3_answer_is_one_line_saying_what_to_set(code: str, status: int, exit_code: int,
                                                       needles: list[str]) -> None:
    err = s3_errors.client_error(code, status, "some\nmessage", REF, credentials=WHO,
                                 endpoint="http://127.0.0.1:9000")
    assert err.exit_code == exit_code
    line = err.one_line()
    assert "\n" not in line
    for needle in needles:
        assert needle in line


def test_missing_credentials_empty_prefix_and_missing_extra() -> None:
    creds = s3_errors.no_credentials()
    assert creds.exit_code == EXIT_PLATFORM
    assert "AWS_ACCESS_KEY_ID" in creds.one_line()
    assert "AWS_PROFILE" in creds.one_line()
    empty = s3_errors.empty(REF)
    assert empty.exit_code == EXIT_USAGE
    assert "no objects under s3://bkt/runs/7/" in empty.message
    extra = s3_errors.missing_extra()
    assert extra.exit_code == EXIT_USAGE
    assert "pip install 'weightlift[s3]'" in extra.one_line()


@pytest.mark.parametrize(("storage_class", "restore", "archive_status", "expected"), [
    (None, None, None, False),
    ("STANDARD", None, None, False),
    ("GLACIER_IR", None, None, False),  # instant retrieval: readable as is
    ("GLACIER", None, None, True),
    ("DEEP_ARCHIVE", 'ongoing-request="true"', None, True),  # restore still running
    ("GLACIER", 'ongoing-request="false", expiry-date="Fri, 04 Dec 2026 00:00:00 GMT"', None,
     False),
    ("INTELLIGENT_TIERING", None, "ARCHIVE_ACCESS", True),
])
def test_needs_restore(storage_class: str | None, restore: str | None,
                       archive_status: str | None, expected: bool) -> None:
    assert needs_restore(storage_class, restore, archive_status) is expected


@pytest.mark.parametrize(("bucket", "client", "endpoint_set", "expected"), [
    ("eu-west-1", "us-east-1", False, "eu-west-1"),  # found from S3's answer
    ("eu-west-1", "aws-global", False, "eu-west-1"),
    ("us-east-1", "us-east-1", False, None),
    (None, "us-east-1", False, None),  # S3 did not say
    ("eu-west-1", "us-east-1", True, None),  # MinIO/R2: their own regions
])
def test_signing_region(bucket: str | None, client: str, endpoint_set: bool,
                        expected: str | None) -> None:
    assert signing_region(bucket, client, endpoint_set=endpoint_set) == expected
