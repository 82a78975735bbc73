"""What S3 said, as one weightlift error line that says what to set (pure: codes in, error out).

`s3.py` turns botocore's exceptions into the plain values these functions take, so the wording
and the exit codes are tested as a table without a server.
"""

from __future__ import annotations

from weightlift.downloader.errors import PlatformError, UsageError, WeightliftError
from weightlift.downloader.sources.s3_plan import S3Ref

CREDENTIALS_HINT = ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, "
                    "or run where an instance or container role is available")
INSTALL_HINT = "pip install 'weightlift[s3]'"

_AUTH_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
                         "ExpiredToken", "TokenRefreshRequired", "InvalidSecurity"})


def missing_extra() -> UsageError:
    return UsageError("s3:// sources need botocore, which is not installed", INSTALL_HINT)


def no_credentials(detail: str = "no AWS credentials found") -> PlatformError:
    return PlatformError(f"cannot read s3:// sources: {detail}", CREDENTIALS_HINT)


def empty(ref: S3Ref) -> UsageError:
    if ref.is_prefix:
        return UsageError(f"no objects under {ref}", "check the bucket and the prefix")
    return UsageError(f"no objects at {ref} or under {ref}/",
                      "check the key; a prefix ends with '/'")


def client_error(code: str, status: int | None, message: str, ref: S3Ref, *,
                 credentials: str, endpoint: str) -> WeightliftError:
    """The error for S3's answer ``code`` (e.g. ``NoSuchBucket``) to a request about ``ref``.

    ``credentials`` says which credentials were used (never the secret); ``endpoint`` is where
    the request went (AWS or ``AWS_ENDPOINT_URL``)."""
    where = f"s3://{ref.bucket}/"
    if code == "NoSuchBucket":
        return PlatformError(f"bucket {ref.bucket!r} does not exist at {endpoint}",
                             "check the bucket name, AWS_ENDPOINT_URL and AWS_REGION")
    if code in ("AccessDenied", "AllAccessDisabled", "AccountProblem") or (
            status == 403 and code not in _AUTH_CODES):
        return PlatformError(
            f"access denied to {ref} for {credentials} ({code or status})",
            f"grant s3:ListBucket on {where} and s3:GetObject on its objects, or use other "
            "credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID)")
    if code in ("ExpiredToken", "TokenRefreshRequired"):
        return PlatformError(f"the AWS session token of {credentials} has expired",
                             "renew the credentials (aws sso login, or a new AWS_SESSION_TOKEN)")
    if code in _AUTH_CODES:
        return PlatformError(f"S3 rejected {credentials} ({code})",
                             "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) "
                             "and that they belong to this endpoint")
    if code in ("PermanentRedirect", "AuthorizationHeaderMalformed",
                "IllegalLocationConstraintException"):
        return PlatformError(f"bucket {ref.bucket!r} is in another region ({code})",
                             "set AWS_REGION to the bucket's region")
    if code == "InvalidBucketName":
        return UsageError(f"{ref.bucket!r} is not a valid bucket name")
    shown = " ".join(message.split())[:200]
    return PlatformError(f"S3 refused {ref}: {code or status}" + (f": {shown}" if shown else ""),
                         "check the bucket, the prefix and the credentials")


def archived(ref: S3Ref, first_key: str, count: int) -> PlatformError:
    """Objects in GLACIER or DEEP_ARCHIVE (not restored): S3 refuses to serve them."""
    hint = "restore them (aws s3api restore-object), wait until it is done, then run again"
    if not ref.is_prefix:
        return PlatformError(f"{ref} is archived (Glacier) and cannot be read until restored",
                             hint.replace("them", "it"))
    more = f" and {count - 1} more" if count > 1 else ""
    return PlatformError(f"s3://{ref.bucket}/{first_key}{more} under {ref}: archived (Glacier), "
                         "cannot be read until restored", hint)


def unreachable(endpoint: str, detail: str) -> PlatformError:
    return PlatformError(f"cannot reach S3 at {endpoint}: {detail}",
                         "check the network, AWS_ENDPOINT_URL and AWS_REGION")
