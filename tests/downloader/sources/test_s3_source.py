"""The S3 source against moto's real server: listing with pagination, keys and prefixes, the
sha256 S3 keeps, and a refresh that presigns again without asking S3."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from weightlift.downloader.errors import BadManifest, PlatformError, UsageError
from weightlift.downloader.sources.local import ResolvedSource
from weightlift.downloader.sources.resolve import open_source
from weightlift.downloader.sources.s3 import resolve_s3
from weightlift.downloader.sources.s3_plan import parse_s3_uri
from weightlift.downloader.url_expiry import expiry_of


async def _resolve(uri: str, env: dict[str, str], page_size: int = 1000) -> ResolvedSource:
    return await resolve_s3(parse_s3_uri(uri), env, page_size=page_size)


async def test_a_prefix_lists_every_page_and_keeps_relative_paths(
        moto_server: Any, bucket: str, tmp_path: Path) -> None:
    objects = {f"runs/7/final/shard-{i}.bin": bytes([i]) * (100 + i) for i in range(5)}
    objects["runs/7/final/sub/config.json"] = b"{}"
    objects["runs/7/final/sub/"] = b""  # a console-made "folder": not a file
    objects["runs/7/other.bin"] = b"not under the prefix"
    objects["runs/7/final-old/x.bin"] = b"a sibling prefix, not under it either"
    moto_server.put(bucket, objects, sha256=frozenset({"runs/7/final/shard-3.bin"}))

    # Pages of 2 keys: the listing must follow the continuation token four times.
    src = await _resolve(f"s3://{bucket}/runs/7/final/",
                         moto_server.env(tmp_path), page_size=2)
    files = src.manifest.by_rel()
    assert sorted(files) == [*(f"shard-{i}.bin" for i in range(5)), "sub/config.json"]
    for i in range(5):
        assert files[f"shard-{i}.bin"].size == 100 + i
    assert files["shard-3.bin"].sha256 == hashlib.sha256(bytes([3]) * 103).hexdigest()
    assert [f.rel for f in src.manifest.files if f.sha256] == ["shard-3.bin"]
    assert src.expected_params is None  # S3 knows no parameter count
    assert f"s3://{bucket}/runs/7/final/ (6 objects, 1 with sha256)" == src.description
    url = files["shard-0.bin"].url
    assert url.startswith(f"{moto_server.endpoint}/{bucket}/runs/7/final/shard-0.bin?")
    assert "X-Amz-Signature=" in url
    assert moto_server.access_key not in src.description


async def test_a_key_pulls_one_file_and_a_key_without_slash_can_be_a_folder(
        moto_server: Any, bucket: str, tmp_path: Path) -> None:
    moto_server.put(bucket, {"runs/7/model.safetensors": b"w" * 10, "runs/7/a/b.txt": b"b"},
         sha256=frozenset({"runs/7/model.safetensors"}))
    env = moto_server.env(tmp_path)
    one = await _resolve(f"s3://{bucket}/runs/7/model.safetensors", env)
    assert [(f.rel, f.size, f.sha256) for f in one.manifest.files] == [
        ("model.safetensors", 10, hashlib.sha256(b"w" * 10).hexdigest())]
    folder = await _resolve(f"s3://{bucket}/runs/7", env)  # no object "runs/7": a prefix
    assert sorted(folder.manifest.by_rel()) == ["a/b.txt", "model.safetensors"]
    whole = await _resolve(f"s3://{bucket}", env)
    assert sorted(whole.manifest.by_rel()) == ["runs/7/a/b.txt", "runs/7/model.safetensors"]


async def test_refresh_presigns_again_without_asking_s3(
        moto_server: Any, bucket: str, tmp_path: Path, s3_gate: Any) -> None:
    moto_server.put(bucket, {"m/a.bin": b"a" * 7})
    gate = s3_gate()
    try:
        src = await _resolve(f"s3://{bucket}/m/", moto_server.env(
            tmp_path, gate.endpoint, WEIGHTLIFT_S3_URL_EXPIRES="5"))
    finally:
        gate.close()  # from here on, nothing answers at the endpoint
    first = src.manifest.files[0]
    before = expiry_of(first.url)
    assert before is not None
    await asyncio.sleep(1.1)  # X-Amz-Date has a one-second resolution
    assert src.refresh is not None
    again = (await src.refresh()).files[0]
    after = expiry_of(again.url)
    assert after is not None
    assert (again.rel, again.size) == (first.rel, first.size)
    assert again.url != first.url
    assert 1 <= (after - before).total_seconds() <= 30
    assert "X-Amz-Expires=5&" in again.url


async def test_open_source_routes_s3_uris_and_refuses_mixing(
        moto_server: Any, bucket: str, tmp_path: Path) -> None:
    moto_server.put(bucket, {"m/a.bin": b"a"})
    env = moto_server.env(tmp_path)
    async with open_source([f"s3://{bucket}/m/"], env) as src:
        assert [f.rel for f in src.manifest.files] == ["a.bin"]
        assert src.refresh is not None
    with pytest.raises(UsageError, match="one s3:// source"):
        async with open_source([f"s3://{bucket}/m/", "manifest.json"], env):
            pass


async def test_errors_name_the_bucket_and_the_prefix(
        moto_server: Any, bucket: str, tmp_path: Path) -> None:
    env = moto_server.env(tmp_path)
    with pytest.raises(PlatformError) as missing:
        await _resolve(f"s3://{bucket}-nope/m/", env)
    assert f"bucket '{bucket}-nope' does not exist" in missing.value.one_line()
    with pytest.raises(UsageError) as empty:
        await _resolve(f"s3://{bucket}/nothing/here/", env)
    assert empty.value.one_line().startswith(f"no objects under s3://{bucket}/nothing/here/")
    with pytest.raises(UsageError) as no_key:
        await _resolve(f"s3://{bucket}/no-such-key.bin", env)
    assert f"no objects at s3://{bucket}/no-such-key.bin" in no_key.value.one_line()
    with pytest.raises(UsageError, match="WEIGHTLIFT_S3_URL_EXPIRES"):
        await _resolve(f"s3://{bucket}/m/", {**env, "WEIGHTLIFT_S3_URL_EXPIRES": "never"})
    half = {k: v for k, v in env.items() if k != "AWS_SECRET_ACCESS_KEY"}
    with pytest.raises(PlatformError, match="only one of AWS_ACCESS_KEY_ID"):
        await _resolve(f"s3://{bucket}/m/", half)
    assert moto_server.secret_key not in str(missing.value) + str(empty.value)


async def test_a_multipart_upload_sha256_is_not_taken_for_the_bytes(
        moto_server: Any, bucket: str, tmp_path: Path) -> None:
    """A multipart upload's SHA256 covers the parts' hashes, not the bytes: it must not become
    the file's expected sha256 (moto, like some servers, marks it neither COMPOSITE nor -N)."""
    client = moto_server.client()
    key = "m/big.bin"
    upload = client.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256")
    parts = []
    for number, body in ((1, b"p" * (5 << 20)), (2, b"q")):
        part = client.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"],
                                  PartNumber=number, Body=body, ChecksumAlgorithm="SHA256")
        parts.append({"PartNumber": number, "ETag": part["ETag"],
                      "ChecksumSHA256": part["ChecksumSHA256"]})
    client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"],
                                     MultipartUpload={"Parts": parts})
    moto_server.put(bucket, {"m/small.bin": b"s"}, sha256=frozenset({"m/small.bin"}))
    src = await _resolve(f"s3://{bucket}/m/", moto_server.env(tmp_path))
    files = src.manifest.by_rel()
    assert files["big.bin"].size == (5 << 20) + 1
    assert files["big.bin"].sha256 is None
    assert files["small.bin"].sha256 == hashlib.sha256(b"s").hexdigest()


def test_other_sources_do_not_import_botocore() -> None:
    """The extra is paid for only by s3:// pulls: resolving other sources never imports it."""
    code = ("import sys, weightlift.downloader.sources.resolve, weightlift.cli.main; "
            "sys.exit('botocore' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


async def test_an_endpoint_that_does_not_answer_is_exit_4(tmp_path: Path,
                                                          moto_server: Any) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(PlatformError) as info:
        await _resolve("s3://bkt/m/", moto_server.env(tmp_path, endpoint))
    assert info.value.one_line() == (
        f"cannot reach S3 at {endpoint}: could not connect "
        "(check the network, AWS_ENDPOINT_URL and AWS_REGION)")


async def test_bad_settings_are_usage_errors(tmp_path: Path, moto_server: Any) -> None:
    for extra, needle in (({"AWS_ENDPOINT_URL": "localhost:9000"}, "is not a URL"),
                          ({"AWS_REGION": "us east 1"}, "bad AWS_REGION")):
        with pytest.raises(UsageError, match=needle):
            await _resolve("s3://bkt/m/", moto_server.env(tmp_path, **extra))


async def test_a_key_that_would_climb_out_of_the_folder_is_refused(
        moto_server: Any, bucket: str, tmp_path: Path) -> None:
    """S3 keys are any string: `..` or an empty segment cannot become a path (exit 2)."""
    for key in ("m/../../etc/cron.d/x", "m/a//b", "m/.weightlift/receipt.json"):
        moto_server.put(bucket, {key: b"x"})
        with pytest.raises(BadManifest):
            await _resolve(f"s3://{bucket}/m/", moto_server.env(tmp_path))
        moto_server.client().delete_object(Bucket=bucket, Key=key)


async def test_archived_objects_are_named_before_any_download(
        moto_server: Any, bucket: str, tmp_path: Path) -> None:
    """A GLACIER object answers GET with 403 InvalidObjectState, which would read as an
    expired URL; the source says what it is instead. A finished restore makes it readable."""
    client = moto_server.client()
    client.put_object(Bucket=bucket, Key="m/a.bin", Body=b"a")
    client.put_object(Bucket=bucket, Key="m/cold.bin", Body=b"c", StorageClass="GLACIER")
    client.put_object(Bucket=bucket, Key="m/thawed.bin", Body=b"t", StorageClass="DEEP_ARCHIVE")
    client.restore_object(Bucket=bucket, Key="m/thawed.bin", RestoreRequest={"Days": 1})
    env = moto_server.env(tmp_path)
    with pytest.raises(PlatformError) as prefix:
        await _resolve(f"s3://{bucket}/m/", env)
    assert prefix.value.one_line().startswith(
        f"s3://{bucket}/m/cold.bin under s3://{bucket}/m/: archived (Glacier)")
    assert "restore-object" in prefix.value.one_line()
    with pytest.raises(PlatformError, match="is archived"):
        await _resolve(f"s3://{bucket}/m/cold.bin", env)
    thawed = await _resolve(f"s3://{bucket}/m/thawed.bin", env)
    assert [f.rel for f in thawed.manifest.files] == ["thawed.bin"]
