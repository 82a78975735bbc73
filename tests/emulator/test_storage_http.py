"""S3-like HTTP semantics: Range, If-Range, HEAD, validators, errors, counting, manifests."""

import hashlib
import random

import pytest

from weightlift.emulator.http_range import Selection, select, shifted
from weightlift.emulator.storage import StorageEmulator

DATA = random.Random(7).randbytes(300_000)
N = len(DATA)


@pytest.fixture(params=["bytes", "file"])
def served(request, storage_server, tmp_path):
    """The same object stored in memory or on disk."""
    if request.param == "bytes":
        storage_server.emu.put_bytes("obj", DATA)
    else:
        path = tmp_path / "obj.bin"
        path.write_bytes(DATA)
        storage_server.emu.put_file("obj", path)
    return storage_server


@pytest.mark.parametrize(("header", "status", "start", "end"), [
    (None, 200, 0, N),
    ("bytes=0-0", 206, 0, 1),
    ("bytes=0-99", 206, 0, 100),
    ("bytes=100-", 206, 100, N),
    ("bytes=-10", 206, N - 10, N),
    ("bytes=-999999999", 206, 0, N),
    ("bytes=250000-999999999", 206, 250_000, N),
    (f"bytes={N - 1}-{N - 1}", 206, N - 1, N),
    ("bytes=5-4", 200, 0, N),  # invalid: ignored
    ("bytes=0-1,5-6", 200, 0, N),  # multi-range: S3 answers the whole object
    ("items=0-1", 200, 0, N),
])
async def test_range_answers(served, fetch, header, status, start, end):
    ans = await fetch(served.presign("obj"), headers={"Range": header} if header else None)
    assert ans.status == status
    assert ans.body == DATA[start:end]
    assert int(ans.headers["Content-Length"]) == end - start
    assert ans.headers["Accept-Ranges"] == "bytes"
    if status == 206:
        assert ans.headers["Content-Range"] == f"bytes {start}-{end - 1}/{N}"
    else:
        assert "Content-Range" not in ans.headers


@pytest.mark.parametrize("header", [f"bytes={N}-", f"bytes={N + 5}-{N + 10}", "bytes=-0"])
async def test_unsatisfiable_range_is_416(served, fetch, header):
    ans = await fetch(served.presign("obj"), headers={"Range": header})
    assert ans.status == 416
    assert ans.headers["Content-Range"] == f"bytes */{N}"
    assert b"<Code>InvalidRange</Code>" in ans.body


async def test_any_range_of_an_empty_object_is_416(storage_server, fetch):
    storage_server.emu.put_bytes("empty", b"")
    ans = await fetch(storage_server.presign("empty"), headers={"Range": "bytes=0-0"})
    assert (ans.status, ans.headers["Content-Range"]) == (416, "bytes */0")
    ans = await fetch(storage_server.presign("empty"))
    assert (ans.status, ans.body, ans.headers["Content-Length"]) == (200, b"", "0")


async def test_validators_and_no_compression(served, fetch):
    ans = await fetch(served.presign("obj"), headers={"Accept-Encoding": "gzip, br"})
    assert ans.headers["ETag"] == served.emu.etag("obj")
    assert ans.headers["ETag"].startswith('"')
    assert ans.headers["ETag"].endswith('"')
    assert ans.headers["Last-Modified"].endswith(" GMT")
    assert "Content-Encoding" not in ans.headers
    assert ans.body == DATA


async def test_etag_of_bytes_is_the_quoted_md5(storage_server):
    storage_server.emu.put_bytes("a", b"hello")
    assert storage_server.emu.etag("a") == f'"{hashlib.md5(b"hello").hexdigest()}"'


async def test_if_range_matching_gives_206_and_stale_gives_whole_200(served, fetch):
    url, etag = served.presign("obj"), served.emu.etag("obj")
    ans = await fetch(url, headers={"Range": "bytes=10-19", "If-Range": etag})
    assert (ans.status, ans.body) == (206, DATA[10:20])
    ans = await fetch(url, headers={"Range": "bytes=10-19", "If-Range": '"stale"'})
    assert (ans.status, ans.body) == (200, DATA)
    ans = await fetch(url, headers={"Range": "bytes=10-19", "If-Range": "W/" + etag})
    assert ans.status == 200  # weak validators never match If-Range
    lm = ans.headers["Last-Modified"]
    ans = await fetch(url, headers={"Range": "bytes=10-19", "If-Range": lm})
    assert ans.status == 206


async def test_if_match_and_if_none_match(served, fetch):
    url, etag = served.presign("obj"), served.emu.etag("obj")
    assert (await fetch(url, headers={"If-Match": '"other"'})).status == 412
    assert (await fetch(url, headers={"If-Match": etag})).status == 200
    assert (await fetch(url, headers={"If-None-Match": etag})).status == 304


async def test_head_has_the_headers_and_no_body(served, fetch):
    url = served.presign("obj", method="HEAD")
    ans = await fetch(url, method="HEAD")
    assert (ans.status, ans.body) == (200, b"")
    assert int(ans.headers["Content-Length"]) == N
    assert ans.headers["ETag"] == served.emu.etag("obj")
    ans = await fetch(url, method="HEAD", headers={"Range": "bytes=5-9"})
    assert (ans.status, ans.headers["Content-Range"]) == (206, f"bytes 5-9/{N}")
    assert served.emu.total_bytes_served == 0


async def test_unknown_key_is_no_such_key(storage_server, fetch):
    ans = await fetch(storage_server.presign("nope/x.bin"))
    assert ans.status == 404
    assert ans.headers["Content-Type"].startswith("application/xml")
    assert b"<Code>NoSuchKey</Code>" in ans.body
    assert b"<Key>nope/x.bin</Key>" in ans.body


async def test_outside_the_bucket_and_other_methods(storage_server, fetch):
    ans = await fetch(storage_server.base_url + "/elsewhere/x")
    assert (ans.status, b"NoSuchBucket" in ans.body) == (404, True)
    assert (await fetch(storage_server.base_url + "/")).status == 404
    storage_server.emu.put_bytes("a", b"x")
    assert (await fetch(storage_server.presign("a"), method="PUT")).status == 405


async def test_replace_gives_a_new_etag_and_delete_removes(storage_server, fetch, tmp_path):
    emu = storage_server.emu
    emu.put_bytes("a", b"one")
    url = storage_server.presign("a")
    first = (await fetch(url)).headers["ETag"]
    emu.replace("a", b"two")
    ans = await fetch(url)
    assert ans.body == b"two"
    assert ans.headers["ETag"] != first
    p = tmp_path / "f"
    p.write_bytes(b"three")
    emu.replace("a", p)
    e3 = emu.etag("a")
    emu.replace("a", p)  # the same file again is still a new version
    assert emu.etag("a") != e3
    assert (await fetch(url)).body == b"three"
    emu.delete("a")
    assert (await fetch(url)).status == 404
    with pytest.raises(KeyError):
        emu.replace("a", b"x")


def test_file_etag_is_stable_across_emulators(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"data")
    a, b = StorageEmulator(), StorageEmulator()
    a.put_file("k", p)
    b.put_file("k", p)
    assert a.etag("k") == b.etag("k")


async def test_keys_with_odd_characters_round_trip(storage_server, fetch):
    for key in ["sub dir/a+b=c.bin", "ü/ñ~x.json", "a%2Fb"]:
        storage_server.emu.put_bytes(key, key.encode())
        ans = await fetch(storage_server.presign(key))
        assert (ans.status, ans.body) == (200, key.encode()), key
        assert storage_server.emu.requests[-1].key == key


async def test_bytes_and_requests_are_recorded(served, fetch):
    emu = served.emu
    await fetch(served.presign("obj"), headers={"Range": "bytes=0-999"})
    await fetch(served.presign("obj"), headers={"Range": "bytes=1000-"})
    await fetch(served.presign("missing"))
    assert emu.bytes_served("obj") == N
    assert emu.total_bytes_served == N
    assert [(r.method, r.key, r.range_header, r.status, r.bytes_sent) for r in emu.requests] == [
        ("GET", "obj", "bytes=0-999", 206, 1000),
        ("GET", "obj", "bytes=1000-", 206, N - 1000),
        ("GET", "missing", None, 404, 0),
    ]
    assert "Authorization" not in emu.requests[0].headers
    assert "X-Amz-Signature" in emu.requests[0].query
    emu.reset_counters()
    assert (emu.total_bytes_served, emu.requests) == (0, [])


def test_manifest_is_axom_shaped(storage):
    storage.put_bytes("model.safetensors", b"abc")
    storage.put_bytes("config.json", b"{}")
    m = storage.manifest(["model.safetensors", "config.json"], base_url="http://h:1",
                         lifetime=60, model_id="m1", with_sha256=True)
    assert m["model_id"] == "m1"
    assert [(f["rel"], f["size"]) for f in m["files"]] == [("model.safetensors", 3),
                                                           ("config.json", 2)]
    assert m["files"][0]["url"].startswith("http://h:1/weights/model.safetensors?X-Amz-")
    assert m["files"][1]["sha256"] == hashlib.sha256(b"{}").hexdigest()


def test_bad_keys_are_refused(storage):
    for key in ["", "/abs", "*"]:
        with pytest.raises(ValueError, match="key"):
            storage.put_bytes(key, b"")


def test_shifted_ranges_differ_from_the_asked_one():
    for sel in [Selection(0, 10, True), Selection(5, 10, True), Selection(0, 100, True)]:
        other = shifted(sel, 100)
        assert other != sel
        assert 0 <= other.start < other.end <= 100
    assert select("bytes=0-", 0).satisfiable is False


async def test_sendfile_path_serves_and_counts_the_same(aiohttp_server, fetch, tmp_path):
    path = tmp_path / "obj.bin"
    path.write_bytes(DATA)
    emu = StorageEmulator(use_sendfile=True)
    emu.put_file("obj", path)
    server = await aiohttp_server(emu.app)
    url = emu.presign("obj", lifetime=60, base_url=f"http://{server.host}:{server.port}")
    ans = await fetch(url, headers={"Range": "bytes=1000-"})
    assert (ans.status, ans.body) == (206, DATA[1000:])
    assert (await fetch(url)).body == DATA
    assert emu.bytes_served("obj") == 2 * N - 1000
