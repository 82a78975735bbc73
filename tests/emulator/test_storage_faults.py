"""Each injected fault, one test each: what the client sees, and that counts are honoured."""

import asyncio
import gzip
import random
import time

import aiohttp
import pytest

from weightlift.emulator.faults import Fault

DATA = random.Random(3).randbytes(3 * (1 << 20) + 123)  # spans several 1 MiB writes
N = len(DATA)


@pytest.fixture(params=["bytes", "file"])
def srv(request, storage_server, tmp_path):
    if request.param == "bytes":
        storage_server.emu.put_bytes("k", DATA)
    else:
        path = tmp_path / "k.bin"
        path.write_bytes(DATA)
        storage_server.emu.put_file("k", path)
    storage_server.emu.put_bytes("other", b"untouched")
    return storage_server


async def test_drop_after_sends_n_bytes_then_resets(srv, fetch):
    srv.emu.inject("k", Fault.drop_after(100_000), times=2)
    url = srv.presign("k")
    for _ in range(2):
        ans = await fetch(url)
        assert ans.status == 200
        assert int(ans.headers["Content-Length"]) == N
        assert ans.body == DATA[:100_000]
        assert isinstance(ans.error, aiohttp.ClientPayloadError)
    assert (await fetch(url)).body == DATA  # the third request is clean
    assert srv.emu.bytes_served("k") == 200_000 + N
    assert [r.fault for r in srv.emu.requests] == ["drop_after", "drop_after", None]


async def test_short_body_withholds_the_tail(srv, fetch):
    srv.emu.inject("k", Fault.short_body(1000))
    ans = await fetch(srv.presign("k"), headers={"Range": "bytes=0-9999"})
    assert ans.status == 206
    assert ans.headers["Content-Length"] == "10000"
    assert ans.body == DATA[:9000]
    assert isinstance(ans.error, aiohttp.ClientPayloadError)


@pytest.mark.parametrize(("code", "retry_after"), [
    (500, None), (502, None), (503, "2"), (504, None), (429, "0"), (408, None)])
async def test_status_faults(srv, fetch, code, retry_after):
    srv.emu.inject("k", Fault.status(code, retry_after=retry_after), times=1)
    ans = await fetch(srv.presign("k"))
    assert ans.status == code
    assert ans.headers.get("Retry-After") == retry_after
    assert ans.body.startswith(b"<?xml")
    assert (await fetch(srv.presign("k"))).status == 200
    assert srv.emu.faults_pending() == 0


async def test_status_with_a_custom_body(srv, fetch):
    srv.emu.inject("k", Fault.status(502, body=b"<html>bad gateway</html>"))
    ans = await fetch(srv.presign("k"))
    assert (ans.status, ans.body) == (502, b"<html>bad gateway</html>")


async def test_faults_are_per_key_and_from_offset(srv, fetch):
    srv.emu.inject("k", Fault.status(503), times=100, from_offset=1 << 20)
    url = srv.presign("k")
    assert (await fetch(srv.presign("other"))).status == 200
    assert (await fetch(url, headers={"Range": "bytes=0-99"})).status == 206
    assert (await fetch(url, headers={"Range": f"bytes={1 << 20}-"})).status == 503
    assert (await fetch(url, headers={"Range": "bytes=-10"})).status == 503  # starts at N-10
    assert srv.emu.faults_pending("k") == 98
    srv.emu.clear_faults()
    assert (await fetch(url, headers={"Range": "bytes=-10"})).status == 206


async def test_any_key_fault_and_first_armed_wins(srv, fetch):
    srv.emu.inject("*", Fault.status(500), times=1)
    srv.emu.inject("k", Fault.expire(), times=1)
    assert (await fetch(srv.presign("other"))).status == 500
    ans = await fetch(srv.presign("k"))
    assert ans.status == 403
    assert b"Request has expired" in ans.body
    assert (await fetch(srv.presign("k"))).status == 200


async def test_head_is_untouched_unless_armed_for_it(srv, fetch):
    srv.emu.inject("k", Fault.status(500), times=1)
    head = srv.presign("k", method="HEAD")
    assert (await fetch(head, method="HEAD")).status == 200
    srv.emu.inject("k", Fault.status(503), times=1, methods=("HEAD",))
    assert (await fetch(head, method="HEAD")).status == 503
    assert (await fetch(srv.presign("k"))).status == 500  # the GET fault is still armed


async def test_stall_goes_silent_then_finishes(srv, fetch):
    srv.emu.inject("k", Fault.stall(0.4, after_bytes=50_000))
    t0 = time.monotonic()
    ans = await fetch(srv.presign("k"))
    assert time.monotonic() - t0 >= 0.39
    assert ans.body == DATA


async def test_stall_trips_a_client_read_timeout(srv, fetch):
    srv.emu.inject("k", Fault.stall(30, after_bytes=10_000))
    ans = await fetch(srv.presign("k"), timeout=0.3)
    assert isinstance(ans.error, asyncio.TimeoutError)
    assert ans.body == DATA[:len(ans.body)]
    assert len(ans.body) >= 10_000
    # teardown must not wait the 30 s: the server wakes stalled bodies when it shuts down


async def test_ignore_range_answers_200_with_everything(srv, fetch):
    srv.emu.inject("k", Fault.ignore_range())
    url = srv.presign("k")
    assert (await fetch(url)).status == 200  # a whole GET does not consume it
    ans = await fetch(url, headers={"Range": "bytes=100-199"})
    assert (ans.status, ans.body) == (200, DATA)
    assert "Content-Range" not in ans.headers


@pytest.mark.parametrize(("asked", "start", "end"), [
    ("bytes=100-199", 99, 199), ("bytes=0-99", 1, 101), ("bytes=0-", 0, N - 1)])
async def test_wrong_content_range_is_consistent_but_not_what_was_asked(
        srv, fetch, asked, start, end):
    srv.emu.inject("k", Fault.wrong_content_range())
    ans = await fetch(srv.presign("k"), headers={"Range": asked})
    assert ans.status == 206
    assert ans.headers["Content-Range"] == f"bytes {start}-{end - 1}/{N}"
    assert ans.body == DATA[start:end]


async def test_flip_byte_corrupts_only_responses_covering_it(srv, fetch):
    off = (1 << 20) + 5  # in the second 1 MiB write
    srv.emu.inject("k", Fault.flip_byte(off), times=1)
    url = srv.presign("k")
    clean = await fetch(url, headers={"Range": "bytes=0-999"})
    assert clean.body == DATA[:1000]
    assert srv.emu.faults_pending() == 1
    ans = await fetch(url)
    assert len(ans.body) == N
    assert ans.body != DATA
    diff = [i for i in range(N) if ans.body[i] != DATA[i]]
    assert diff == [off]
    assert (await fetch(url)).body == DATA


async def test_replace_object_serves_old_then_new(srv, fetch):
    new = b"N" * 5000
    old_etag = srv.emu.etag("k")
    srv.emu.inject("k", Fault.replace_object(new))
    url = srv.presign("k")
    first = await fetch(url, headers={"Range": "bytes=0-9"})
    assert (first.body, first.headers["ETag"]) == (DATA[:10], old_etag)
    second = await fetch(url, headers={"Range": "bytes=10-19", "If-Range": old_etag})
    assert second.status == 200
    assert second.body == new
    assert second.headers["ETag"] != old_etag
    third = await fetch(url, headers={"Range": "bytes=10-19"})
    assert third.headers["Content-Range"] == "bytes 10-19/5000"


async def test_gzip_sends_a_compressed_body(srv, fetch):
    srv.emu.inject("k", Fault.gzip(), times=2)
    url = srv.presign("k")
    ans = await fetch(url, headers={"Range": "bytes=0-9999", "Accept-Encoding": "identity"})
    assert ans.status == 206
    assert ans.headers["Content-Encoding"] == "gzip"
    assert int(ans.headers["Content-Length"]) == len(ans.body)
    assert gzip.decompress(ans.body) == DATA[:10000]
    ans = await fetch(url)
    assert gzip.decompress(ans.body) == DATA


async def test_expire_answers_expired_on_a_live_url(srv, fetch):
    srv.emu.inject("k", Fault.expire(), times=1)
    ans = await fetch(srv.presign("k", lifetime=3600))
    assert ans.status == 403
    assert b"<Code>AccessDenied</Code><Message>Request has expired</Message>" in ans.body
    assert ans.headers["Content-Type"].startswith("application/xml")


async def test_throttle_paces_the_body(srv, fetch):
    srv.emu.inject("k", Fault.throttle(1_000_000))
    t0 = time.monotonic()
    ans = await fetch(srv.presign("k"), headers={"Range": "bytes=0-299999"})
    assert ans.body == DATA[:300_000]
    assert time.monotonic() - t0 >= 0.28


def test_fault_arguments_are_checked():
    with pytest.raises(ValueError, match="HTTP status"):
        Fault.status(42)
    with pytest.raises(ValueError, match=">= 0"):
        Fault.drop_after(-1)
    assert Fault.drop_after(10).kind == "drop_after"
    assert Fault.status(503, retry_after="1") == Fault.status(503, retry_after="1")
