"""`weightlift pull s3://...` as a user runs it: a child process against moto's real S3 server.

Byte-identical pulls, a re-run that fetches nothing, a SIGKILL mid-pull that resumes, URLs that
expire mid-pull and are presigned again, one line per error, and no key, secret or signature in
anything the pull prints or writes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from weightlift.emulator.model_gen import generate_checkpoint

PREFIX = "runs/7/final/"


def _pull(env: dict[str, str], source: str, out: Path, *extra: str, debug: bool = False,
          timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``weightlift [-vv] pull SOURCE -o OUT EXTRA...`` (-vv: every DEBUG record, botocore's
    included, goes to stderr, where secrets must not appear either)."""
    return subprocess.run(
        [sys.executable, "-m", "weightlift.cli", *(["-vv"] if debug else []), "pull", source,
         "-o", str(out), *extra],
        capture_output=True, text=True, timeout=timeout, env=env)


def _no_secrets(moto: Any, done: subprocess.CompletedProcess[str], out: Path | None) -> None:
    """Nothing printed or written names the key, the secret or a signature."""
    texts = {"stdout": done.stdout, "stderr": done.stderr}
    if out is not None and out.exists():
        for path in out.rglob("*"):
            if path.is_file() and path.stat().st_size < (1 << 20):
                texts[str(path)] = path.read_text(errors="replace")
    for where, text in texts.items():
        assert "Traceback" not in text, where
        for secret in (moto.secret_key, moto.access_key, "X-Amz-Signature",
                       "X-Amz-Credential", "Signature="):
            assert secret not in text, f"{secret!r} in {where}"


def _upload_checkpoint(moto: Any, bucket: str, tmp: Path, total: int, shards: int) -> Any:
    ckpt = generate_checkpoint(tmp / "src", total_bytes=total, shards=shards, seed=7)
    objects = {PREFIX + rel: (tmp / "src" / rel).read_bytes() for rel in ckpt.files}
    first_shard = PREFIX + ckpt.files[0]
    moto.put(bucket, objects, sha256=frozenset({first_shard}))
    return ckpt


def _same_tree(src: Path, out: Path, files: tuple[str, ...]) -> None:
    for rel in files:
        assert (out / rel).read_bytes() == (src / rel).read_bytes(), rel
    pulled = {p.relative_to(out).as_posix() for p in out.rglob("*")
              if p.is_file() and ".weightlift" not in p.parts}
    assert pulled == set(files)


def test_a_prefix_pulls_byte_identical_and_a_rerun_fetches_nothing(
        moto_server: Any, bucket: str, tmp_path: Path) -> None:
    ckpt = _upload_checkpoint(moto_server, bucket, tmp_path, 3 << 20, 3)
    env = moto_server.env(tmp_path)
    out = tmp_path / "model"
    source = f"s3://{bucket}/{PREFIX}"
    done = _pull(env, source, out, "--json", "--connections", "4", "--chunk-size", "256K",
                 "--expect-params", str(ckpt.params), debug=True)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["ok"] is True
    assert report["expected_params"] == ckpt.params  # from --expect-params: S3 knows none
    assert report["verification"]["params"] == ckpt.params
    _same_tree(tmp_path / "src", out, ckpt.files)
    receipt = json.loads((out / ".weightlift" / "receipt.json").read_text())
    assert receipt["model_id"] == source  # where the files came from
    _no_secrets(moto_server, done, out)  # -vv: botocore DEBUG records would hold signatures

    again = _pull(env, source, out, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["totals"]["bytes_fetched"] == 0


def test_the_sha256_s3_keeps_is_checked(moto_server: Any, bucket: str, tmp_path: Path) -> None:
    """S3's full-object checksum becomes the file's expected sha256. moto stores a checksum
    without checking it against the body (S3 would refuse the upload), which is how a corrupted
    object looks to us: the pull must refuse it, and keep nothing under its final name."""
    good, bad = b"A" * 300_000, b"B" * 300_000
    claimed = base64.b64encode(hashlib.sha256(good).digest()).decode()
    moto_server.client().put_object(Bucket=bucket, Key="m/weights.bin", Body=bad,
                                    ChecksumAlgorithm="SHA256", ChecksumSHA256=claimed)
    out = tmp_path / "model"
    done = _pull(moto_server.env(tmp_path), f"s3://{bucket}/m/weights.bin", out, "--json",
                 "--no-verify")
    assert done.returncode == 1, done.stderr  # integrity: verification failed
    assert json.loads(done.stdout)["files"][0]["status"] == "failed"
    assert "sha256" in done.stderr.splitlines()[-1]
    assert not (out / "weights.bin").exists()
    _no_secrets(moto_server, done, out)


def test_a_kill_9_mid_pull_resumes(moto_server: Any, bucket: str, tmp_path: Path,
                                   s3_gate: Any) -> None:
    # Journals are written about once a second: the gate slows moto down (2 x 500 KB/s over
    # 3 MiB) so that the kill, at the second journal write, lands mid-pull with ranges saved.
    gate = s3_gate(rate=500_000)
    ckpt = _upload_checkpoint(moto_server, bucket, tmp_path, 3 << 20, 2)
    env = moto_server.env(tmp_path, gate.endpoint)
    out = tmp_path / "model"
    source = f"s3://{bucket}/{PREFIX}"
    args = ("--json", "--connections", "2", "--chunk-size", "256K")
    killed = _pull({**env, "WEIGHTLIFT_FAILPOINTS": "journal.before_write=2"}, source, out, *args)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert "weightlift failpoint journal.before_write" in killed.stderr
    resumed = _pull(env, source, out, *args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    totals = json.loads(resumed.stdout)["totals"]
    assert 0 < totals["bytes_fetched"] < totals["bytes"]  # the journaled ranges were kept
    _same_tree(tmp_path / "src", out, ckpt.files)
    _no_secrets(moto_server, resumed, out)


def test_urls_that_expire_mid_pull_are_presigned_again(
        moto_server: Any, bucket: str, tmp_path: Path, s3_gate: Any) -> None:
    # URLs live 4 s by their signature; the gate (moto itself ignores expiry) refuses them 2 s
    # early, as S3 refuses an expired URL: the first refresh answers S3's "Request has expired"
    # rather than the resolver's look-ahead (0.8 s before the 4 s). X-Amz-Date is whole seconds,
    # so a URL works for 1 to 2 s. 2 connections x 400 KB/s over 3 MiB last about 4 s.
    gate = s3_gate(rate=400_000, early=2.0)
    ckpt = _upload_checkpoint(moto_server, bucket, tmp_path, 3 << 20, 1)
    env = moto_server.env(tmp_path, gate.endpoint, WEIGHTLIFT_S3_URL_EXPIRES="4")
    out = tmp_path / "model"
    done = _pull(env, f"s3://{bucket}/{PREFIX}", out, "--json", "--connections", "2",
                 "--chunk-size", "256K")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["totals"]["refreshes"] >= 1
    assert gate.expired_answers >= 1
    _same_tree(tmp_path / "src", out, ckpt.files)
    _no_secrets(moto_server, done, out)


@pytest.fixture
def shadow_botocore(tmp_path: Path) -> str:
    """A PYTHONPATH entry under which `import botocore` fails, as without the extra."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "botocore.py").write_text("raise ImportError('No module named botocore')\n")
    return str(shadow)


# One child per kind of failure (the other error lines are tested in-process, in
# test_s3_source.py): a platform error, a missing setting, a missing extra, a bad prefix.
@pytest.mark.parametrize(("case", "code", "needles"), [
    ("no-bucket", 4, ["bucket '{bucket}-gone' does not exist"]),
    ("empty-prefix", 2, ["no objects under s3://{bucket}/nothing/"]),
    ("no-credentials", 4, ["no AWS credentials found", "AWS_ACCESS_KEY_ID", "AWS_PROFILE"]),
    ("no-extra", 2, ["pip install 'weightlift[s3]'"]),
])
def test_each_error_is_one_line_and_an_exit_code(
        moto_server: Any, bucket: str, tmp_path: Path, shadow_botocore: str, case: str,
        code: int, needles: list[str]) -> None:
    moto_server.put(bucket, {"m/a.bin": b"a"})
    env = moto_server.env(tmp_path)
    sources = [f"s3://{bucket}/m/"]
    if case == "no-bucket":
        sources = [f"s3://{bucket}-gone/m/"]
    elif case == "empty-prefix":
        sources = [f"s3://{bucket}/nothing/"]
    elif case == "no-credentials":
        env = moto_server.env(tmp_path, AWS_ACCESS_KEY_ID="", AWS_SECRET_ACCESS_KEY="")
    elif case == "no-extra":
        env = {**env, "PYTHONPATH": shadow_botocore}
    out = tmp_path / "model"
    done = subprocess.run(
        [sys.executable, "-m", "weightlift.cli", "pull", *sources, "-o", str(out)],
        capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == code, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for needle in needles:
        assert needle.format(bucket=bucket) in lines[0]
    assert not out.exists()  # nothing written
    _no_secrets(moto_server, done, None)


def test_access_denied_names_the_credentials_and_the_permission(
        moto_denied_user: Any, tmp_path: Path) -> None:
    user = moto_denied_user
    env = user.server.env(tmp_path, AWS_ACCESS_KEY_ID=user.access_key,
                          AWS_SECRET_ACCESS_KEY=user.secret_key)
    out = tmp_path / "model"
    done = _pull(env, f"s3://{user.bucket}/m/", out)
    assert done.returncode == 4, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"access denied to s3://{user.bucket}/m/" in lines[0]
    assert f"access key …{user.access_key[-4:]} from the environment" in lines[0]
    assert "s3:ListBucket" in lines[0]
    assert user.access_key not in lines[0]
    assert user.secret_key not in done.stderr + done.stdout
    assert not out.exists()


def test_credentials_from_a_profile_in_the_shared_file(
        moto_server: Any, bucket: str, tmp_path: Path) -> None:
    """botocore's chain, not only the environment: AWS_PROFILE names a profile of
    ~/.aws/credentials (here AWS_SHARED_CREDENTIALS_FILE)."""
    moto_server.put(bucket, {"m/a.bin": b"profile" * 1000})
    (tmp_path / "no-aws-credentials").write_text(
        f"[wl-test]\naws_access_key_id = {moto_server.access_key}\n"
        f"aws_secret_access_key = {moto_server.secret_key}\n")
    env = moto_server.env(tmp_path, AWS_ACCESS_KEY_ID="", AWS_SECRET_ACCESS_KEY="",
                          AWS_PROFILE="wl-test")
    out = tmp_path / "model"
    done = _pull(env, f"s3://{bucket}/m/a.bin", out, "--no-verify")
    assert done.returncode == 0, done.stderr
    assert (out / "a.bin").read_bytes() == b"profile" * 1000
    _no_secrets(moto_server, done, out)
    missing = _pull({**env, "AWS_PROFILE": "nope"}, f"s3://{bucket}/m/a.bin", out)
    assert missing.returncode == 4
    assert "profile (nope) could not be found" in missing.stderr
    assert "check AWS_PROFILE" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
