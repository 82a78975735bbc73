"""Presigned URLs: SigV4-style and `expires` forms, forged and expired answers."""

import asyncio
import re
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from weightlift.emulator.signing import EXACT_EXPIRY, Signer, Verdict, host_of
from weightlift.emulator.storage import StorageEmulator

DATA = b"0123456789" * 100


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.25) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _params(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_s3v4_url_has_the_standard_query_parameters(storage):
    url = storage.presign("dir/a.bin", lifetime=60, base_url="http://127.0.0.1:9000")
    assert url.startswith("http://127.0.0.1:9000/weights/dir/a.bin?")
    p = _params(url)
    assert p["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert re.fullmatch(r"[A-Z]+/\d{8}/us-east-1/s3/aws4_request", p["X-Amz-Credential"])
    assert re.fullmatch(r"\d{8}T\d{6}Z", p["X-Amz-Date"])
    assert p["X-Amz-SignedHeaders"] == "host"
    assert re.fullmatch(r"[0-9a-f]{64}", p["X-Amz-Signature"])
    assert 60 <= int(p["X-Amz-Expires"]) <= 61
    assert "%2F" in urlsplit(url).query  # the credential's slashes are encoded, as S3 does


def test_standard_fields_round_the_expiry_up_and_the_exact_one_is_kept():
    clock = FakeClock(1_700_000_000.75)
    emu = StorageEmulator(clock=clock)
    p = _params(emu.presign("k", lifetime=0.5, base_url="http://h:1"))
    assert p["X-Amz-Date"] == time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(1_700_000_000))
    assert p["X-Amz-Expires"] == "2"  # 1_700_000_002 >= the exact 1_700_000_001.25
    assert float(p[EXACT_EXPIRY]) == pytest.approx(1_700_000_001.25)
    q = _params(emu.presign("k", lifetime=0.5, base_url="http://h:1", style="expires"))
    assert q["expires"] == "1700000002"
    assert set(q) == {"expires", EXACT_EXPIRY, "sig"}


@pytest.mark.parametrize(("now", "verdict"), [
    (1000.0, Verdict.OK), (1009.99, Verdict.OK), (1010.0, Verdict.EXPIRED)])
def test_signer_judges_expiry_at_the_exact_instant(now, verdict):
    s = Signer(b"k")
    for style in ("s3v4", "expires"):
        query = s.presign_query(raw_path="/b/x", host="h", now=1000.0, lifetime=10, style=style)
        pairs = [tuple(kv.split("=", 1)) for kv in query.split("&")]
        from urllib.parse import unquote
        pairs = [(unquote(k), unquote(v)) for k, v in pairs]
        assert s.check(method="GET", host="h", raw_path="/b/x", pairs=pairs, now=now).verdict \
            is verdict


def test_host_of_drops_default_ports():
    assert host_of("http://127.0.0.1:80") == "127.0.0.1"
    assert host_of("https://Example.com:443/") == "example.com"
    assert host_of("http://127.0.0.1:8700") == "127.0.0.1:8700"


@pytest.mark.parametrize("style", ["s3v4", "expires"])
async def test_valid_url_serves_the_object(storage_server, fetch, style):
    storage_server.emu.put_bytes("a.bin", DATA)
    ans = await fetch(storage_server.presign("a.bin", style=style))
    assert ans.status == 200
    assert ans.body == DATA


def _tamper(url: str, name: str, value: str) -> str:
    return re.sub(rf"([?&]{re.escape(name)}=)[^&]*", lambda m: m.group(1) + value, url)


@pytest.mark.parametrize("mutate", [
    lambda u: _tamper(u, "X-Amz-Signature", "0" * 64),
    lambda u: _tamper(u, "X-Amz-Expires", "99999"),
    lambda u: _tamper(u, EXACT_EXPIRY, "9999999999.0"),
    lambda u: u.replace("/weights/a.bin", "/weights/b.bin"),  # a URL for another key
    lambda u: u.split("?")[0],  # no auth at all
    lambda u: re.sub(r"&X-Amz-Signature=[^&]*", "", u),
    lambda u: u + "&extra=1",
], ids=["signature", "expires", "exact-expiry", "other-key", "missing", "no-sig", "extra-param"])
async def test_forged_urls_get_signature_does_not_match(storage_server, fetch, mutate):
    storage_server.emu.put_bytes("a.bin", DATA)
    storage_server.emu.put_bytes("b.bin", DATA)
    ans = await fetch(mutate(storage_server.presign("a.bin")))
    assert ans.status == 403
    assert ans.headers["Content-Type"].startswith("application/xml")
    assert b"<Code>SignatureDoesNotMatch</Code>" in ans.body


async def test_url_signed_for_another_host_is_forged(storage_server, fetch):
    storage_server.emu.put_bytes("a.bin", DATA)
    port = storage_server.base_url.rsplit(":", 1)[1]
    url = storage_server.emu.presign("a.bin", lifetime=60, base_url=f"http://localhost:{port}")
    ans = await fetch(url.replace("localhost", "127.0.0.1"))
    assert b"SignatureDoesNotMatch" in ans.body


async def test_forged_plain_style_signature(storage_server, fetch):
    storage_server.emu.put_bytes("a.bin", DATA)
    url = _tamper(storage_server.presign("a.bin", style="expires"), "expires", "9999999999")
    ans = await fetch(url)
    assert ans.status == 403
    assert b"SignatureDoesNotMatch" in ans.body


async def test_expired_url_answers_s3_access_denied(aiohttp_server, fetch):
    clock = FakeClock()
    emu = StorageEmulator(clock=clock)
    emu.put_bytes("a.bin", DATA)
    server = await aiohttp_server(emu.app)
    url = emu.presign("a.bin", lifetime=30, base_url=f"http://{server.host}:{server.port}")
    assert (await fetch(url)).status == 200
    clock.now += 31
    ans = await fetch(url)
    assert ans.status == 403
    assert ans.headers["Content-Type"].startswith("application/xml")
    assert b"<Code>AccessDenied</Code><Message>Request has expired</Message>" in ans.body
    assert re.search(rb"<X-Amz-Expires>3[01]</X-Amz-Expires>", ans.body)
    assert emu.bytes_served("a.bin") == len(DATA)


async def test_sub_second_lifetime_expires_for_real(storage_server, fetch):
    storage_server.emu.put_bytes("a.bin", DATA)
    url = storage_server.presign("a.bin", lifetime=0.3)
    assert (await fetch(url)).status == 200
    await asyncio.sleep(0.35)
    ans = await fetch(url)
    assert ans.status == 403
    assert b"Request has expired" in ans.body


async def test_get_url_does_not_authorize_head_but_a_head_url_does(storage_server, fetch):
    storage_server.emu.put_bytes("a.bin", DATA)
    assert (await fetch(storage_server.presign("a.bin"), method="HEAD")).status == 403
    ans = await fetch(storage_server.presign("a.bin", method="HEAD"), method="HEAD")
    assert ans.status == 200
    assert int(ans.headers["Content-Length"]) == len(DATA)
    plain = storage_server.presign("a.bin", style="expires")
    assert (await fetch(plain, method="HEAD")).status == 200


async def test_query_auth_plus_authorization_header_is_rejected_and_recorded(
        storage_server, fetch):
    storage_server.emu.put_bytes("a.bin", DATA)
    ans = await fetch(storage_server.presign("a.bin"), headers={"Authorization": "Bearer axom_x"})
    assert ans.status == 400
    assert b"Only one auth mechanism allowed" in ans.body
    rec = storage_server.emu.requests[-1]
    assert rec.headers["authorization"] == "Bearer axom_x"  # case-insensitive
    assert rec.status == 400


# --- the real services' forms: CloudFront, Azure SAS, nginx secure_link ------------------------

NEW_STYLES = ("cloudfront", "azure", "nginx")


def test_real_styles_carry_the_services_parameters():
    emu = StorageEmulator(clock=FakeClock(1_700_000_000.75))
    cf = _params(emu.presign("k", lifetime=0.5, base_url="http://h:1", style="cloudfront"))
    assert set(cf) == {"Expires", "Signature", "Key-Pair-Id", EXACT_EXPIRY}
    assert cf["Expires"] == "1700000002"
    assert re.fullmatch(r"[A-Za-z0-9~_-]{28}", cf["Signature"])  # CloudFront's base64 alphabet
    az = _params(emu.presign("k", lifetime=0.5, base_url="http://h:1", style="azure"))
    assert set(az) == {"sv", "st", "se", "sr", "sp", "sig", EXACT_EXPIRY}
    assert az["se"] == "2023-11-14T22:13:22Z"  # rounded up, whole seconds
    assert az["sp"] == "r"
    assert az["sr"] == "b"
    ng = _params(emu.presign("k", lifetime=0.5, base_url="http://h:1", style="nginx"))
    assert set(ng) == {"md5", "expires", EXACT_EXPIRY}
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", ng["md5"])  # base64url md5, no padding
    assert ng["expires"] == "1700000002"


@pytest.mark.parametrize("style", NEW_STYLES)
@pytest.mark.parametrize(("now", "verdict"), [
    (1000.0, Verdict.OK), (1009.99, Verdict.OK), (1010.0, Verdict.EXPIRED)])
def test_real_styles_judge_expiry_at_the_exact_instant(style, now, verdict):
    from urllib.parse import parse_qsl

    s = Signer(b"k")
    query = s.presign_query(raw_path="/b/x", host="h", now=1000.0, lifetime=10, style=style)
    checked = s.check(method="GET", host="h", raw_path="/b/x", pairs=parse_qsl(query), now=now)
    assert checked.verdict is verdict
    assert checked.style == style


@pytest.mark.parametrize("style", NEW_STYLES)
async def test_real_styles_serve_the_object_for_get_and_head(storage_server, fetch, style):
    storage_server.emu.put_bytes("a.bin", DATA)
    url = storage_server.presign("a.bin", style=style)
    ans = await fetch(url)
    assert ans.status == 200
    assert ans.body == DATA
    assert (await fetch(url, method="HEAD")).status == 200


@pytest.mark.parametrize(("style", "name", "value"), [
    ("cloudfront", "Signature", "A" * 28), ("cloudfront", "Expires", "9999999999"),
    ("cloudfront", "Key-Pair-Id", "KOTHER"), ("azure", "sig", "AAAA"),
    ("azure", "se", "2099-01-01T00:00:00Z"), ("azure", "sp", "rw"),
    ("nginx", "md5", "A" * 22), ("nginx", "expires", "9999999999"),
    ("nginx", EXACT_EXPIRY, "9999999999.0"),
])
async def test_real_styles_reject_a_tampered_parameter(storage_server, fetch, style, name, value):
    storage_server.emu.put_bytes("a.bin", DATA)
    url = _tamper(storage_server.presign("a.bin", style=style), name, value)
    ans = await fetch(url)
    assert ans.status == 403
    assert b"SignatureDoesNotMatch" in ans.body
    other = storage_server.presign("a.bin", style=style).replace("/weights/a.bin", "/weights/b")
    assert (await fetch(other)).status == 403  # a URL is good for its own key only


async def test_azure_url_is_not_valid_before_its_start(aiohttp_server, fetch):
    clock = FakeClock()
    emu = StorageEmulator(clock=clock)
    emu.put_bytes("a.bin", DATA)
    server = await aiohttp_server(emu.app)
    url = emu.presign("a.bin", lifetime=30, base_url=f"http://{server.host}:{server.port}",
                      style="azure")
    clock.now -= 301  # `st` is five minutes before signing, as SDKs set it for clock skew
    assert (await fetch(url)).status == 403
    clock.now += 302
    assert (await fetch(url)).status == 200


@pytest.mark.parametrize(("style", "status", "marker"), [
    ("cloudfront", 403, b"<Code>AccessDenied</Code><Message>Access denied</Message>"),
    ("azure", 403, b"<Code>AuthenticationFailed</Code>"),
    ("nginx", 403, b"<title>403 Forbidden</title>"),
])
async def test_expired_real_styles_answer_in_their_own_dialect(aiohttp_server, fetch, style,
                                                                status, marker):
    clock = FakeClock()
    emu = StorageEmulator(clock=clock)
    emu.put_bytes("a.bin", DATA)
    server = await aiohttp_server(emu.app)
    url = emu.presign("a.bin", lifetime=30, base_url=f"http://{server.host}:{server.port}",
                      style=style)
    assert (await fetch(url)).status == 200
    clock.now += 31
    ans = await fetch(url)
    assert ans.status == status
    assert marker in ans.body
    if style == "azure":
        assert ans.headers["x-ms-error-code"] == "AuthenticationFailed"
        assert b"Signature not valid in the specified time frame" in ans.body


@pytest.mark.parametrize("style", ["s3v4", "expires", *NEW_STYLES])
def test_the_downloader_reads_each_styles_expiry_from_the_url(style):
    """downloader/url_expiry reads the standard field of every form (X-Amz-Date+X-Amz-Expires,
    `expires`, CloudFront `Expires`, Azure `se`), never the emulator's private exact one."""
    from datetime import datetime, timezone

    from weightlift.downloader.url_expiry import expiry_of

    emu = StorageEmulator(clock=FakeClock(1_700_000_000.25))
    url = emu.presign("dir/a.bin", lifetime=100, base_url="http://h:1", style=style)
    assert expiry_of(url) == datetime.fromtimestamp(1_700_000_101, timezone.utc)
    stripped = re.sub(rf"&?{EXACT_EXPIRY}=[^&]*", "", url)
    assert expiry_of(stripped) == expiry_of(url)
