"""The engine against the storage emulator on loopback: real HTTP, real files."""

import hashlib
import json
import logging
import os

import pytest

from weightlift.downloader.engine import EngineConfig
from weightlift.downloader.errors import BadManifest
from weightlift.downloader.manifest import Manifest, validate_manifest
from weightlift.downloader.pull import pull
from weightlift.downloader.receipt import load_receipt
from weightlift.downloader.retry import RetryPolicy
from weightlift.downloader.sources.local import ResolvedSource
from weightlift.emulator.faults import Fault

KiB = 1 << 10
MiB = 1 << 20
FAST = EngineConfig(connections=8, chunk_size=256 * KiB, stall_timeout=1.0,
                    retry=RetryPolicy(backoff_base=0.01, backoff_cap=0.05), seed=1)


def _data(n: int, seed: int = 0) -> bytes:
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:n])


def _put(server, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        server.emu.put_bytes(rel, data)


def _source(server, files: dict[str, bytes], *, lifetime: float = 600.0, refresh: bool = False,
            sha: bool = False) -> ResolvedSource:
    def build() -> Manifest:
        return validate_manifest({"files": [
            {"rel": rel, "size": len(data), "url": server.presign(rel, lifetime=lifetime),
             **({"sha256": hashlib.sha256(data).hexdigest()} if sha else {})}
            for rel, data in files.items()
        ]})

    async def again() -> Manifest:
        return build()

    return ResolvedSource(build(), again if refresh else None, None, "test")


def _assert_landed(out, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        assert (out / rel).read_bytes() == data, rel
    receipt = load_receipt(out)
    assert receipt is not None
    assert {f.rel: f.sha256 for f in receipt.files} == {
        rel: hashlib.sha256(d).hexdigest() for rel, d in files.items()}
    for f in receipt.files:
        assert f.source.startswith("http://127.0.0.1:")
        assert f.source.endswith(f"/{f.rel}?…")  # redacted: no signature on disk
        assert (f.etag is not None) == (f.size > 0)  # empty files need no request


async def test_parallel_ranges_reassemble_byte_identical(storage_server, tmp_path):
    files = {"big.safetensors.bin": _data(3 * MiB + 17), "sub/small.json": b'{"a": 1}',
             "empty": b""}
    _put(storage_server, files)
    events = []
    result = await pull(_source(storage_server, files, sha=True), tmp_path, FAST, events.append)
    assert result.ok, result.files
    _assert_landed(tmp_path, files)
    kinds = [type(e).__name__ for e in events]
    # The renderer learns the file count before the first file starts.
    assert kinds.index("PullStarted") < kinds.index("FileStarted")
    assert kinds.count("FileFinished") == 3
    ranged = [r for r in storage_server.emu.requests if r.range_header]
    assert len(ranged) >= 12  # the big file really was split
    assert result.bytes_fetched == sum(len(d) for d in files.values())


async def test_rerun_of_finished_pull_fetches_nothing(storage_server, tmp_path):
    files = {"a.bin": _data(MiB)}
    _put(storage_server, files)
    await pull(_source(storage_server, files), tmp_path, FAST)
    served = storage_server.emu.total_bytes_served
    result = await pull(_source(storage_server, files), tmp_path, FAST)
    assert result.ok
    assert [f.status for f in result.files] == ["already-complete"]
    assert storage_server.emu.total_bytes_served == served


async def test_touched_final_file_is_fetched_again(storage_server, tmp_path):
    files = {"a.bin": _data(MiB)}
    _put(storage_server, files)
    await pull(_source(storage_server, files), tmp_path, FAST)
    with open(tmp_path / "a.bin", "r+b") as fh:
        fh.write(b"X")
    result = await pull(_source(storage_server, files), tmp_path, FAST)
    assert [f.status for f in result.files] == ["downloaded"]
    _assert_landed(tmp_path, files)


@pytest.mark.parametrize("fault", [
    Fault.drop_after(100 * KiB),
    Fault.status(500),
    Fault.status(503, retry_after="0"),
    Fault.status(429, retry_after="0"),
    Fault.stall(5.0, after_bytes=10 * KiB),
    Fault.ignore_range(),
    Fault.wrong_content_range(),
    Fault.gzip(),
    Fault.short_body(1000),
], ids=lambda f: f.kind)
async def test_transient_faults_end_byte_identical(storage_server, tmp_path, fault):
    files = {"a.bin": _data(2 * MiB, 1), "b.bin": _data(2 * MiB, 2)}
    _put(storage_server, files)
    storage_server.emu.inject("a.bin", fault, times=2)
    result = await pull(_source(storage_server, files), tmp_path, FAST)
    assert result.ok, [f.error for f in result.files]
    _assert_landed(tmp_path, files)


async def test_flipped_byte_is_caught_by_sha256_and_refetched(storage_server, tmp_path):
    files = {"a.bin": _data(MiB, 3)}
    _put(storage_server, files)
    storage_server.emu.inject("a.bin", Fault.flip_byte(1234), times=1)
    result = await pull(_source(storage_server, files, sha=True), tmp_path, FAST)
    assert result.ok
    assert result.restarts == 1
    _assert_landed(tmp_path, files)


async def test_persistent_corruption_never_lands(storage_server, tmp_path):
    files = {"a.bin": _data(MiB, 3)}
    _put(storage_server, files)
    storage_server.emu.inject("a.bin", Fault.flip_byte(1234), times=1000)
    result = await pull(_source(storage_server, files, sha=True), tmp_path, FAST)
    assert not result.ok
    assert "sha256" in (result.files[0].error or "")
    assert result.files[0].exit_code == 1
    assert not (tmp_path / "a.bin").exists()


async def test_object_replaced_mid_download_restarts_the_file(storage_server, tmp_path):
    old, new = _data(2 * MiB, 4), _data(2 * MiB, 5)
    storage_server.emu.put_bytes("a.bin", old)
    source = _source(storage_server, {"a.bin": old})
    # Sequential ranges: the first megabyte comes from the old object, then it is replaced.
    storage_server.emu.inject("a.bin", Fault.replace_object(new), times=1, from_offset=MiB)
    cfg = EngineConfig(connections=1, chunk_size=256 * KiB, seed=1)
    result = await pull(source, tmp_path, cfg)
    assert result.ok
    assert result.restarts >= 1
    assert (tmp_path / "a.bin").read_bytes() == new


async def test_expiry_mid_download_refreshes_once_for_all(storage_server, tmp_path):
    files = {f"f{i}.bin": _data(MiB, i) for i in range(4)}
    _put(storage_server, files)
    storage_server.emu.inject("f0.bin", Fault.expire(), times=1)
    storage_server.emu.inject("f1.bin", Fault.expire(), times=1)
    result = await pull(_source(storage_server, files, refresh=True), tmp_path, FAST)
    assert result.ok
    assert 1 <= result.refreshes <= 2
    _assert_landed(tmp_path, files)


async def test_short_lived_urls_are_refreshed_ahead_and_on_expiry(storage_server, tmp_path):
    files = {f"f{i}.bin": _data(2 * MiB, i) for i in range(3)}
    _put(storage_server, files)
    # ~2 s of transfer through URLs that live 1 s: refreshes must happen, ahead or on expiry.
    storage_server.emu.inject("*", Fault.throttle(1.5 * MiB), times=10_000)
    cfg = EngineConfig(connections=2, chunk_size=256 * KiB, seed=2)
    result = await pull(_source(storage_server, files, lifetime=1.0, refresh=True),
                        tmp_path, cfg)
    assert result.ok, [f.error for f in result.files]
    assert result.refreshes >= 1
    _assert_landed(tmp_path, files)


async def test_expired_url_without_refresh_fails_clearly(storage_server, tmp_path):
    files = {"a.bin": _data(MiB)}
    _put(storage_server, files)
    storage_server.emu.inject("a.bin", Fault.expire(), times=100)
    result = await pull(_source(storage_server, files), tmp_path, FAST)
    assert not result.ok
    assert "expired" in (result.files[0].error or "")
    assert result.files[0].exit_code == 3


async def test_endless_5xx_fails_with_state_kept_then_resumes(storage_server, tmp_path):
    files = {"a.bin": _data(2 * MiB)}
    _put(storage_server, files)
    storage_server.emu.inject("a.bin", Fault.status(503), times=10_000, from_offset=MiB)
    cfg = EngineConfig(connections=4, chunk_size=256 * KiB,
                       retry=RetryPolicy(max_attempts=3, backoff_base=0.001, backoff_cap=0.002))
    result = await pull(_source(storage_server, files), tmp_path, cfg)
    assert not result.ok
    assert result.files[0].exit_code == 3
    assert not (tmp_path / "a.bin").exists()
    storage_server.emu.clear_faults()
    served = storage_server.emu.total_bytes_served
    result = await pull(_source(storage_server, files), tmp_path, FAST)
    assert result.ok
    _assert_landed(tmp_path, files)
    assert storage_server.emu.total_bytes_served - served <= MiB + 256 * KiB


async def test_size_mismatch_with_manifest_fails(storage_server, tmp_path):
    storage_server.emu.put_bytes("a.bin", _data(MiB))
    manifest = validate_manifest({"files": [
        {"rel": "a.bin", "size": MiB + 1, "url": storage_server.presign("a.bin", lifetime=60)}]})
    result = await pull(ResolvedSource(manifest, None, None, "t"), tmp_path, FAST)
    assert not result.ok
    assert "manifest" in (result.files[0].error or "")
    assert not (tmp_path / "a.bin").exists()


async def test_unknown_sizes_are_probed_for_plain_urls(storage_server, tmp_path):
    files = {"a.bin": _data(MiB + 5), "b.json": b"{}"}
    _put(storage_server, files)
    from weightlift.downloader.manifest import manifest_from_urls

    manifest = manifest_from_urls([storage_server.presign(k, lifetime=60) for k in files])
    result = await pull(ResolvedSource(manifest, None, None, "t"), tmp_path, FAST)
    assert result.ok
    _assert_landed(tmp_path, files)


async def test_no_key_and_no_signature_leaks(storage_server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    files = {"a.bin": _data(MiB)}
    _put(storage_server, files)
    storage_server.emu.inject("a.bin", Fault.status(500), times=1)
    storage_server.emu.inject("a.bin", Fault.expire(), times=1)
    source = _source(storage_server, files, refresh=True)
    await pull(source, tmp_path, FAST)
    assert all("Authorization" not in r.headers for r in storage_server.emu.requests)
    # The emulator's own access log (the "storage server" side) legitimately shows its URLs.
    ours = [r.getMessage() for r in caplog.records if not r.name.startswith("aiohttp.access")]
    text = "\n".join(ours) + json.dumps(load_receipt(tmp_path).model_dump())
    for name in os.listdir(tmp_path / ".weightlift"):
        p = tmp_path / ".weightlift" / name
        if p.is_file():
            text += p.read_text(errors="replace")
    assert "X-Amz-Signature" not in text
    assert "Signature=" not in text


async def test_symlink_planted_in_output_is_not_followed(storage_server, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(outside)
    files = {"sub/a.bin": b"x" * 10}
    _put(storage_server, files)
    with pytest.raises(BadManifest, match="symlink"):
        await pull(_source(storage_server, files), out, FAST)
    assert list(outside.iterdir()) == []


async def test_kill_between_log_and_rename_recovers_without_network(storage_server, tmp_path,
                                                                      monkeypatch):
    import weightlift.downloader.finalize as finalize_mod

    files = {"a.bin": _data(MiB, 6)}
    _put(storage_server, files)

    class Killed(BaseException):
        """Stands in for kill -9 right before the rename (nothing of ours catches it)."""

    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(finalize_mod, "move_into_place", killed)
    with pytest.raises(Killed):
        await pull(_source(storage_server, files), tmp_path, FAST)
    assert not (tmp_path / "a.bin").exists()
    monkeypatch.undo()
    served = storage_server.emu.total_bytes_served
    result = await pull(_source(storage_server, files), tmp_path, FAST)
    assert [f.status for f in result.files] == ["already-complete"]
    assert storage_server.emu.total_bytes_served == served
    _assert_landed(tmp_path, files)


async def test_a_resumed_pull_of_unstated_sizes_counts_the_model_once(storage_server, tmp_path):
    """PullStarted.total_bytes is the model's size, resumed ranges included once (a resumed
    pull of plain URLs used to announce its size plus what was already on disk)."""
    files = {"a.bin": _data(2 * MiB, 7), "b.bin": _data(MiB, 8)}
    _put(storage_server, files)

    def unsized() -> ResolvedSource:
        return ResolvedSource(validate_manifest({"files": [
            {"rel": rel, "url": storage_server.presign(rel)} for rel in files]}),
            None, None, "test")

    storage_server.emu.inject("a.bin", Fault.drop_after(100 * KiB), times=1, from_offset=MiB)
    once = EngineConfig(connections=2, chunk_size=MiB, stall_timeout=1.0, seed=1,
                        retry=RetryPolicy(max_attempts=1))
    first = await pull(unsized(), tmp_path, once)
    assert [f.status for f in first.files] == ["failed", "downloaded"]
    events = []
    second = await pull(unsized(), tmp_path, FAST, events.append)
    assert second.ok, second.files
    started = next(e for e in events if type(e).__name__ == "PullStarted")
    assert started.total_bytes == sum(len(d) for d in files.values())
    assert MiB <= started.resumed_bytes < started.total_bytes
    _assert_landed(tmp_path, files)


async def test_a_broken_header_fails_its_file_and_the_others_finish(storage_server, tmp_path):
    """The header check fails a shard whose header can never load, at once and exit 1, while
    the pull goes on for the other files (the file is counted as ended once)."""
    from weightlift.cli.pull_cmd import safetensors_header_check

    bad = (20).to_bytes(8, "little") + b'{"a": nonsense here}' + _data(MiB, 9)
    files = {"bad.safetensors": bad, "big.bin": _data(3 * MiB, 10), "c.bin": _data(MiB, 11)}
    _put(storage_server, files)
    config = EngineConfig(connections=4, chunk_size=256 * KiB, stall_timeout=1.0, seed=1,
                          header_check=safetensors_header_check)
    result = await pull(_source(storage_server, files), tmp_path, config)
    status = {f.rel: (f.status, f.exit_code) for f in result.files}
    assert status == {"bad.safetensors": ("failed", 1), "big.bin": ("downloaded", 0),
                      "c.bin": ("downloaded", 0)}
    assert "broken safetensors header" in next(
        f.error for f in result.files if f.rel == "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()
    for rel in ("big.bin", "c.bin"):
        assert (tmp_path / rel).read_bytes() == files[rel]
