from datetime import datetime, timedelta, timezone

import pytest

from weightlift.downloader.url_expiry import earliest_expiry, expiry_of, seconds_left

UTC = timezone.utc
T20 = datetime(2026, 11, 24, 20, 0, 0, tzinfo=UTC)  # 1795550400
SIG = "X-Amz-Signature=3b1f0c2a9d5e4b7f8a6c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a"
S3_V4 = (
    "https://weights.s3.us-east-1.amazonaws.com/llama/model-00001-of-00002.safetensors"
    "?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20261124%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Date=20261124T190000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&" + SIG
)


@pytest.mark.parametrize(("url", "expected"), [
    pytest.param(S3_V4, T20, id="s3-sigv4"),
    pytest.param("https://b.s3.amazonaws.com/k?x-amz-date=20261124T195959Z&x-amz-expires=1",
                 T20, id="s3-sigv4-lowercase-names"),
    pytest.param("https://b.s3.amazonaws.com/k?X-Amz-Date=20261124T190000Z&X-Amz-Expires=%33600",
                 T20, id="s3-sigv4-percent-encoded-value"),
    pytest.param("https://b.s3.amazonaws.com/k?X%2DAmz%2DDate=20261124T200000Z&X-Amz-Expires=0",
                 T20, id="s3-sigv4-percent-encoded-name-zero-lifetime"),
    pytest.param("https://minio.local:9000/b/k?X-Amz-Date=20261124T190000Z&X-Amz-Expires=3600"
                 "#frag", T20, id="s3-sigv4-with-fragment"),
    pytest.param("https://b.s3.amazonaws.com/k?AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE"
                 "&Expires=1795550400&Signature=vjbyPxybdZaNmGa%2ByT272YEAiv4%3D",
                 T20, id="s3-sigv2"),
    pytest.param("https://d111111abcdef8.cloudfront.net/w/model.safetensors?Expires=1795550400"
                 "&Signature=nitfHRCrtziwO2HwPfWw~yYDhUF5EwRunQA-j19DzZrvDh6hQ73lDx~-ar3UocvvRQVw"
                 "&Key-Pair-Id=K2JCJMDEHXQW5F", T20, id="cloudfront-canned"),
    pytest.param("https://storage.googleapis.com/bkt/model.safetensors"
                 "?X-Goog-Algorithm=GOOG4-RSA-SHA256"
                 "&X-Goog-Credential=sa%40proj.iam.gserviceaccount.com%2F20261124%2Fauto"
                 "%2Fstorage%2Fgoog4_request&X-Goog-Date=20261124T194500Z&X-Goog-Expires=900"
                 "&X-Goog-SignedHeaders=host&X-Goog-Signature=8a1b2c", T20, id="gcs-v4"),
    pytest.param("https://storage.googleapis.com/b/o?GoogleAccessId=sa%40p.iam"
                 "&Expires=1795550400&Signature=abc%2Bdef%3D", T20, id="gcs-v2"),
    pytest.param("https://acct.blob.core.windows.net/models/model.safetensors?sv=2022-11-02"
                 "&ss=b&srt=o&sp=r&se=2026-11-24T20%3A00%3A00Z&st=2026-11-24T12%3A00%3A00Z"
                 "&spr=https&sig=abc%2Bdef%3D", T20, id="azure-sas-encoded"),
    pytest.param("https://acct.blob.core.windows.net/c/b?sp=r&se=2026-11-24T20:00:00Z&sig=x",
                 T20, id="azure-sas-raw"),
    pytest.param("https://acct.blob.core.windows.net/c/b?se=2026-11-24T20:00Z&sig=x",
                 T20, id="azure-sas-no-seconds"),
    pytest.param("https://acct.blob.core.windows.net/c/b?se=2026-11-24T20:00:00.0000000Z&sig=x",
                 T20, id="azure-sas-7-digit-fraction"),
    pytest.param("https://acct.blob.core.windows.net/c/b?se=2026-11-24T21:00:00%2B01:00&sig=x",
                 T20, id="azure-sas-offset-encoded"),
    pytest.param("https://acct.blob.core.windows.net/c/b?se=2026-11-24T21:00:00+01:00&sig=x",
                 T20, id="azure-sas-offset-plus-decoded-as-space"),
    pytest.param("https://acct.blob.core.windows.net/c/b?se=2026-11-24&sig=x",
                 datetime(2026, 11, 24, tzinfo=UTC), id="azure-sas-date-only"),
    pytest.param("https://cdn.tensorone.ai/ckpt/7/model.safetensors?expires=1764000000&sig=ab",
                 datetime(2025, 11, 24, 16, 0, tzinfo=UTC), id="tensorone-expires"),
    pytest.param("https://cdn.tensorone.ai/c?expires=1795550399.5",
                 T20 - timedelta(seconds=0.5), id="float-epoch"),
    pytest.param("https://h/x?X-Amz-Date=20261124T190000Z&X-Amz-Expires=7200&Expires=1795550400",
                 T20, id="two-forms-earliest-wins"),
    # Unknown, incomplete or malformed: None, never an exception.
    pytest.param("https://huggingface.co/org/m/resolve/main/model.safetensors", None,
                 id="no-query"),
    pytest.param("https://host/x?download=1&token=abc", None, id="unknown-params"),
    pytest.param("https://h/x?X-Amz-Date=20261124T190000Z", None, id="sigv4-missing-expires"),
    pytest.param("https://h/x?X-Amz-Expires=3600", None, id="sigv4-missing-date"),
    pytest.param("https://h/x?X-Amz-Date=2026-11-24T19:00:00Z&X-Amz-Expires=3600", None,
                 id="sigv4-iso-date-wrong-form"),
    pytest.param("https://h/x?X-Amz-Date=20261324T190000Z&X-Amz-Expires=3600", None,
                 id="sigv4-month-13"),
    pytest.param("https://h/x?X-Amz-Date=20261124T190000Z&X-Amz-Expires=-5", None,
                 id="sigv4-negative-expires"),
    pytest.param("https://h/x?X-Amz-Date=20261124T190000Z&X-Amz-Expires=1e3", None,
                 id="sigv4-exponent-expires"),
    pytest.param("https://h/x?X-Amz-Date=20261124T190000Z&X-Amz-Expires=%D9%A3", None,
                 id="sigv4-non-ascii-digit"),
    pytest.param("https://h/x?X-Amz-Date=99991231T235959Z&X-Amz-Expires=999999999999", None,
                 id="sigv4-overflow"),
    pytest.param("https://h/x?X-Goog-Date=20261124T190000Z&X-Goog-Expires=", None,
                 id="gcs-empty-expires"),
    pytest.param("https://h/x?Expires=tomorrow", None, id="expires-word"),
    pytest.param("https://h/x?expires=-1764000000", None, id="expires-negative"),
    pytest.param("https://h/x?expires=nan", None, id="expires-nan"),
    pytest.param("https://h/x?expires=999999999999", None, id="expires-year-overflow"),
    pytest.param("https://h/x?expires=1795550400&expires=1", None, id="expires-conflicting"),
    pytest.param("https://h/x?se=2026-02-30T00:00:00Z", None, id="azure-feb-30"),
    pytest.param("https://h/x?se=2026-11-24T25:00:00Z", None, id="azure-hour-25"),
    pytest.param("https://h/x?se=2026-11-24T20:00:00%2B25:00", None, id="azure-bad-offset"),
    pytest.param("https://h/x?se=soon", None, id="azure-garbage"),
    pytest.param("http://[::1/x?expires=1795550400", None, id="unparseable-url"),
    pytest.param("", None, id="empty"),
    pytest.param("not a url at all ?%%%&&==", None, id="garbage"),
])
def test_expiry_of(url: str, expected: datetime | None) -> None:
    got = expiry_of(url)
    assert got == expected
    if got is not None:
        assert got.utcoffset() == timedelta(0)


def test_earliest_expiry_ignores_urls_without_expiry() -> None:
    urls = [
        "https://h/a?expires=1795550500",
        "https://huggingface.co/x/resolve/main/b",
        S3_V4,
        "https://h/c?se=garbage",
    ]
    assert earliest_expiry(urls) == T20
    assert earliest_expiry(iter(urls)) == T20  # any iterable, consumed once
    assert earliest_expiry(["https://h/a", "https://h/b?se=x"]) is None
    assert earliest_expiry([]) is None


@pytest.mark.parametrize(("now", "left"), [
    (T20 - timedelta(minutes=10), 600.0),
    (T20, 0.0),
    (T20 + timedelta(seconds=90), -90.0),
    (datetime(2026, 11, 24, 21, 0, tzinfo=timezone(timedelta(hours=1))), 0.0),
])
def test_seconds_left(now: datetime, left: float) -> None:
    assert seconds_left(S3_V4, now) == left


def test_seconds_left_without_expiry_and_with_naive_clock() -> None:
    assert seconds_left("https://h/x", T20) is None
    with pytest.raises(ValueError, match="timezone-aware"):
        seconds_left(S3_V4, datetime(2026, 11, 24, 20))
