"""`s3://BUCKET/KEY` and `s3://BUCKET/PREFIX/`: the URI, the objects it names, their sha256 (pure).

Nothing here talks to S3 or imports botocore: `s3.py` lists and heads objects and hands the
results in as plain values; these functions decide what the manifest holds.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from weightlift.downloader.errors import UsageError

__all__ = ["ARCHIVE_CLASSES", "S3Object", "S3Ref", "full_object_sha256", "is_s3_uri",
           "needs_restore", "objects_to_files", "parse_s3_uri", "signing_region",
           "url_lifetime"]

# Presigned URL lifetime: an hour by default (the resolver re-presigns ahead of expiry, so a
# longer pull only costs a local signature per hour); SigV4 allows at most 7 days.
EXPIRES_ENV = "WEIGHTLIFT_S3_URL_EXPIRES"
DEFAULT_EXPIRES = 3600
MAX_EXPIRES = 7 * 24 * 3600
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MULTIPART_ETAG = re.compile(r"-[0-9]+\"?$")
# Storage classes whose objects cannot be read until restored (GET: 403 InvalidObjectState).
ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})


def is_s3_uri(text: str) -> bool:
    return text[:5].lower() == "s3://"


@dataclass(frozen=True)
class S3Ref:
    """A parsed `s3://` SOURCE. ``key`` is "" for a whole bucket; a prefix ends with "/"."""

    bucket: str
    key: str

    @property
    def is_prefix(self) -> bool:
        return self.key == "" or self.key.endswith("/")

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def parse_s3_uri(text: str) -> S3Ref:
    """`s3://bucket`, `s3://bucket/`, `s3://bucket/prefix/` or `s3://bucket/key`, taken literally
    (as the AWS CLI does: no percent-decoding, a `?` is part of the key); UsageError otherwise."""
    if not is_s3_uri(text):
        raise UsageError(f"not an s3:// URI: {text!r}")
    rest = text[5:]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise UsageError(f"no bucket in {text!r}", "use s3://BUCKET/KEY or s3://BUCKET/PREFIX/")
    if _CONTROL.search(text) or any(c.isspace() for c in bucket) or ":" in bucket:
        raise UsageError(f"bad S3 URI {text.encode('unicode_escape').decode('ascii')!r}",
                         "use s3://BUCKET/KEY or s3://BUCKET/PREFIX/")
    if key.startswith("/"):
        raise UsageError(f"{text!r} has an empty path segment after the bucket",
                         f"did you mean s3://{bucket}/{key.lstrip('/')}?")
    return S3Ref(bucket, key)


def url_lifetime(env: Mapping[str, str]) -> int:
    """Seconds a presigned GET URL lives: ``WEIGHTLIFT_S3_URL_EXPIRES`` (1 to 604800), else an
    hour. UsageError on anything else."""
    raw = env.get(EXPIRES_ENV, "").strip()
    if not raw:
        return DEFAULT_EXPIRES
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_EXPIRES:
        raise UsageError(f"{EXPIRES_ENV}={raw[:20]!r} is not a number of seconds",
                         f"use 1 to {MAX_EXPIRES} (7 days)")
    return int(raw)


@dataclass(frozen=True)
class S3Object:
    """One object as a listing (or a HeadObject) describes it."""

    key: str
    size: int
    sha256: str | None = None  # hex, only from a full-object checksum
    archived: bool = False  # in an archive class and not restored: unreadable for now


def needs_restore(storage_class: str | None, restore: str | None,
                  archive_status: str | None = None) -> bool:
    """True when a GET would be refused because the object is archived (GLACIER, DEEP_ARCHIVE,
    or an Intelligent-Tiering archive tier) and no finished restore (``x-amz-restore:
    ongoing-request="false", ...``) makes a copy readable."""
    archived = (storage_class or "").upper() in ARCHIVE_CLASSES or bool(archive_status)
    restored = restore is not None and 'ongoing-request="false"' in restore
    return archived and not restored


def full_object_sha256(checksum: str | None, checksum_type: str | None = None,
                       etag: str | None = None) -> str | None:
    """The hex sha256 of the whole object from ``x-amz-checksum-sha256``, or None.

    A multipart upload's SHA256 is composite (a hash of the parts' hashes, written `...-N`, type
    COMPOSITE; S3 has no full-object SHA256 for multipart uploads): it is not the sha256 of the
    bytes, so it is not used. Some servers omit both marks, so a multipart ETag (`"...-N"`)
    rules it out too unless the type says FULL_OBJECT. Anything that does not decode to 32
    bytes is ignored rather than trusted."""
    kind = (checksum_type or "").upper()
    if not checksum or kind not in ("", "FULL_OBJECT") or "-" in checksum:
        return None
    if not kind and etag and _MULTIPART_ETAG.search(etag):
        return None
    try:
        raw = base64.b64decode(checksum, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 32 else None


def objects_to_files(ref: S3Ref, objects: Iterable[S3Object]) -> list[tuple[str, S3Object]]:
    """(rel, object) pairs for the manifest: a prefix keeps each key's path below the prefix,
    a single key is named by its last segment. Zero-byte "folder" markers (keys ending in "/")
    are skipped. The names are checked later, with the rest of the manifest."""
    files: list[tuple[str, S3Object]] = []
    for obj in objects:
        if not ref.is_prefix:
            files.append((obj.key.rsplit("/", 1)[-1], obj))
            continue
        if obj.key.endswith("/") and obj.size == 0:
            continue
        files.append((obj.key[len(ref.key):], obj))
    return sorted(files, key=lambda pair: pair[0])


def signing_region(bucket_region: str | None, client_region: str | None, *,
                   endpoint_set: bool) -> str | None:
    """The region to presign for instead of the client's, or None to keep it.

    A URL signed for another region than the bucket's is refused, and botocore follows S3's
    redirects for API calls but cannot for a URL it hands away. On AWS the bucket's own region
    (S3's ``x-amz-bucket-region``) is always right, whatever AWS_REGION says; a custom endpoint
    (MinIO, R2) has its own idea of regions, so it is not second-guessed."""
    if endpoint_set or not bucket_region or bucket_region == client_region:
        return None
    return bucket_region
