"""Hostile manifests, paths, output folders and servers, through `weightlift pull` as a child.

Every hostile *input* (a manifest, a planted file) ends with exit 2 and one `weightlift: error:`
line, no traceback, and nothing written outside the output folder (for a refused manifest,
no output folder at all). Hostile *servers* (redirect loops, redirects to file:) end with
exit 3 and one line. The pure name rules (case and Unicode collisions both ways, every
hostile name) are in tests/downloader/test_manifest.py; the API-key-across-redirect rule is
tested in-process in tests/downloader/sources/test_api_session.py
(test_redirect_to_another_host_does_not_carry_the_key, ..._loop_stops,
..._to_another_scheme_is_refused) and test_platform_sources.py
(test_redirect_to_storage_host_never_carries_the_key); here once more end to end.

Zero-byte files need no network (a size-0 file is complete as soon as it is opened), so most
cases name URLs nobody listens on: whatever is refused is refused before any request.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from weightlift.downloader.manifest import (
    MAX_COMPONENT_BYTES,
    MAX_FILES,
    MAX_MANIFEST_BYTES,
)
from weightlift.emulator.serve import ThreadedServer

pytestmark = pytest.mark.chaos

NOBODY = "http://127.0.0.1:9/x"  # the discard port: never contacted by these cases
SIG = "X-Amz-Signature=" + "5eC7e7" * 8
EXIT_USAGE = 2
EXIT_TRANSFER = 3
EXIT_PLATFORM = 4


def _entry(rel: Any = "a.bin", size: Any = 0, url: Any = NOBODY, **kw: Any) -> dict[str, Any]:
    return {"rel": rel, "size": size, "url": url, **kw}


def _doc(*entries: dict[str, Any]) -> str:
    return json.dumps({"files": list(entries)})


def _error_line(res: Any, code: int, says: str) -> str:
    """The run ended with ``code`` and exactly one error line containing ``says``."""
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("weightlift: error:")]
    assert res.returncode == code, (res.returncode, res.stderr[-2000:])
    assert len(errors) == 1, res.stderr[-2000:]
    assert says in errors[0], errors[0]
    assert "internal error" not in res.stderr
    assert "Traceback" not in res.stderr
    return errors[0]


def _tree(root: Path) -> dict[str, bytes | str]:
    """Everything under ``root`` (files by content, links by target)."""
    out: dict[str, bytes | str] = {}
    for p in sorted(root.rglob("*")):
        key = str(p.relative_to(root))
        if p.is_symlink():
            out[key] = f"-> {os.readlink(p)}"
        elif p.is_file():
            out[key] = p.read_bytes()
        elif p.is_dir():
            out[key] = "dir"
        else:
            out[key] = "special"
    return out


# ---- refused manifests: exit 2, one line, no output folder ------------------------------------

# One of each kind through the CLI; every case (and more) runs in-process, fast, in
# tests/downloader/test_manifest.py::test_hostile_manifest_cases.
MANIFESTS: list[tuple[str, str, str]] = [
    # (id, manifest text, what the error line says)
    ("nested-dotdot", _doc(_entry("a/../../x")), "'..'"),
    ("drive", _doc(_entry("C:\\x")), "drive letter"),
    ("unc-slashes", _doc(_entry("//server/share")), "absolute"),
    ("nul", _doc(_entry("a\x00b")), "control"),
    ("bidi-override", _doc(_entry("evil\u202egnp.bin")), "bidirectional"),
    ("case-twins", _doc(_entry("Model.bin"), _entry("model.bin")), "ignoring case"),
    ("long-component", _doc(_entry("x" * (MAX_COMPONENT_BYTES + 1))),
     f"longer than {MAX_COMPONENT_BYTES} bytes"),
    ("fraction-size", _doc(_entry(size=1.5)), "size"),
    ("5000-digit-size", '{"files": [{"rel": "a", "size": ' + "9" * 5000 + ', "url": "x"}]}',
     "too long"),
    ("sha-newline", _doc(_entry(sha256="ab" * 32 + "\n")), "64 hex"),
    ("javascript-url", _doc(_entry(url="javascript:alert(1)")), "not http(s)"),
    ("userinfo-url", _doc(_entry(url=f"http://user:pa55word@127.0.0.1:9/x?{SIG}")),
     "user name or password"),
    ("bad-port-url", _doc(_entry(url="http://127.0.0.1:99999/x")), "bad host or port"),
    ("crlf-url", _doc(_entry(url="http://127.0.0.1:9/x\r\nX-Injected: 1")), "control"),
]


def _check_each(check: Callable[[Any], None], cases: Sequence[Any]) -> None:
    """Run ``check`` on every case, four child runs at a time; fail naming every case
    (``case[0]``) whose check failed, not only the first."""

    def one(case: Any) -> str | None:
        try:
            check(case)
        except AssertionError as exc:
            return f"{case[0]}: {exc}"
        return None

    with ThreadPoolExecutor(4) as pool:
        failures = [f for f in pool.map(one, cases) if f]
    assert not failures, "\n".join(failures)


def test_hostile_manifests_exit_2_with_one_line_and_write_nothing(wl, secrets, tmp_path):
    secrets.add("pa55word", SIG.split("=", 1)[1])

    def one(case: tuple[str, str, str]) -> None:
        name, text, says = case
        manifest = tmp_path / f"{name}.json"
        manifest.write_text(text, encoding="utf-8")
        out = tmp_path / f"out-{name}"
        res = wl("pull", str(manifest), "-o", str(out))
        _error_line(res, EXIT_USAGE, says)
        assert not out.exists(), f"{out} was created"

    _check_each(one, MANIFESTS)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".json")) == []


def test_oversized_manifests_are_refused_by_the_byte_limit(wl, tmp_path):
    big = tmp_path / "big.json"
    with open(big, "wb") as fh:  # sparse: the limit is checked before anything is read
        fh.truncate(MAX_MANIFEST_BYTES + 1)
    out = tmp_path / "out"
    for source in (str(big), "/dev/zero"):  # a device claims size 0: the read is capped too
        res = wl("pull", source, "-o", str(out))
        _error_line(res, EXIT_USAGE, f"larger than the limit of {MAX_MANIFEST_BYTES >> 20} MiB")
        assert not out.exists()


# ---- names that would be one file elsewhere ------------------------------------------------------

def _case_sensitive(folder: Path) -> bool:
    probe = folder / "Probe.tmp"
    probe.write_bytes(b"")
    try:
        return not (folder / "probe.tmp").exists()
    finally:
        probe.unlink()


def test_case_and_normalisation_twins_are_refused_on_any_filesystem(wl, tmp_path):
    """The rule does not depend on the output folder's filesystem (a probe of one folder
    cannot speak for a tree: case sensitivity is per directory on ext4 casefold and NTFS, and
    folders get copied to macOS later). Here it is refused on a case-sensitive one."""
    if not _case_sensitive(tmp_path):
        pytest.skip("this check wants a case-sensitive filesystem; tmp_path's is not")
    manifest = tmp_path / "m.json"
    for pair in [("caf\u00e9.bin", "cafe\u0301.bin")]:  # NFC and NFD
        manifest.write_text(_doc(_entry(pair[0]), _entry(pair[1])))
        res = wl("pull", str(manifest), "-o", str(tmp_path / "out"))
        line = _error_line(res, EXIT_USAGE, "ignoring case and Unicode normalisation")
        assert line.isascii(), line  # twins are shown escaped, so they look different
        assert not (tmp_path / "out").exists()


# ---- planted links and files in the output folder ------------------------------------------------

def _key(rel: str) -> str:
    return hashlib.sha256(rel.encode()).hexdigest()[:32]


def _work(out: Path) -> Path:
    (out / ".weightlift" / "parts").mkdir(parents=True, exist_ok=True)
    return out / ".weightlift"


Plant = Callable[[Path, Path, Path], Any]
PLANTED: list[tuple[str, str, Plant, int, str]] = [
    # (id, rel of a zero-byte file, plant(out, outside dir, victim file), exit, says)
    ("dir-symlink", "sub/a.bin", lambda o, x, v: (o / "sub").symlink_to(x),
     EXIT_USAGE, "is a symlink; refusing to write through it"),
    ("file-symlink", "victim", lambda o, x, v: (o / "victim").symlink_to(v),
     EXIT_USAGE, "is a symlink; refusing to write through it"),
    ("work-folder-symlink", "a.bin", lambda o, x, v: (o / ".weightlift").symlink_to(x),
     EXIT_USAGE, "is a symlink"),
    ("work-folder-is-a-file", "a.bin", lambda o, x, v: (o / ".weightlift").write_bytes(b""),
     EXIT_USAGE, "exists and is not a folder"),
    ("part-symlink", "a.bin",
     lambda o, x, v: (_work(o) / "parts" / f"{_key('a.bin')}.part").symlink_to(v),
     EXIT_USAGE, "is a symlink; refusing to write through it"),
    ("part-hardlink", "a.bin",
     lambda o, x, v: os.link(v, _work(o) / "parts" / f"{_key('a.bin')}.part"),
     EXIT_USAGE, "hard link"),
    ("part-fifo", "a.bin", lambda o, x, v: os.mkfifo(_work(o) / "parts" / f"{_key('a.bin')}.part"),
     EXIT_USAGE, "not a file"),
    ("receipt-tmp-symlink", "a.bin",
     lambda o, x, v: (_work(o) / "receipt.json.tmp").symlink_to(v),
     EXIT_USAGE, "is a symlink; refusing to follow it"),
    ("receipt-tmp-hardlink", "a.bin", lambda o, x, v: os.link(v, _work(o) / "receipt.json.tmp"),
     EXIT_USAGE, "hard link"),
    ("finished-log-symlink", "a.bin",
     lambda o, x, v: (_work(o) / "finished.jsonl").symlink_to(v), EXIT_USAGE, "is a symlink"),
    ("lock-symlink", "a.bin", lambda o, x, v: (_work(o) / "lock").symlink_to(v),
     EXIT_USAGE, "is a symlink"),
    # Read-side plants are ignored rather than followed: the file starts over and the journal
    # write replaces the link (a FIFO would block a read forever, /dev/zero fill memory).
    ("journal-to-dev-zero", "a.bin",
     lambda o, x, v: (_work(o) / "parts" / f"{_key('a.bin')}.journal").symlink_to("/dev/zero"),
     0, ""),
    ("journal-fifo", "a.bin",
     lambda o, x, v: os.mkfifo(_work(o) / "parts" / f"{_key('a.bin')}.journal"), 0, ""),
]


def test_planted_links_are_never_followed(wl, tmp_path):
    def one(case: tuple[str, str, Plant, int, str]) -> None:
        name, rel, plant, code, says = case
        root = tmp_path / name
        outside = root / "outside"
        outside.mkdir(parents=True)
        victim = outside / "victim"
        victim.write_bytes(b"precious")
        out = root / "out"
        out.mkdir()
        plant(out, outside, victim)
        before = _tree(outside)
        manifest = root / "m.json"
        manifest.write_text(_doc(_entry(rel)))
        res = wl("pull", str(manifest), "-o", str(out), timeout=30)
        if code:
            _error_line(res, code, says)
        else:
            assert res.returncode == 0, res.stderr[-2000:]
            assert (out / rel).read_bytes() == b""
            assert not (out / rel).is_symlink()
        assert _tree(outside) == before, "something was written outside the folder"

    _check_each(one, PLANTED)


# ---- long paths --------------------------------------------------------------------------------

def test_a_path_beyond_path_max_is_refused_up_front(wl, tmp_path):
    """Each part fits the manifest's limits; the output folder makes the whole too long."""
    path_max = os.pathconf(tmp_path, "PC_PATH_MAX")
    deep = tmp_path
    while len(os.fsencode(deep)) < path_max - 600:
        deep = deep / ("d" * 200)
    deep.mkdir(parents=True)
    manifest = tmp_path / "m.json"
    manifest.write_text(_doc(_entry("/".join(["e" * 250] * 3))))
    res = wl("pull", str(manifest), "-o", str(deep))
    _error_line(res, EXIT_USAGE, f"path limit of {path_max} bytes")
    assert sorted(p.name for p in deep.iterdir()) == [".weightlift"]


# ---- sizes beyond the free disk ----------------------------------------------------------------

def test_sizes_beyond_the_free_disk_fail_up_front_with_exit_3(wl, threaded_storage, tmp_path):
    threaded_storage.emu.put_bytes("a.bin", b"x")
    manifest = tmp_path / "m.json"
    url = threaded_storage.presign("a.bin")
    manifest.write_text(_doc(_entry("a.bin", size=1 << 62, url=url),
                             _entry("b.bin", size=1 << 62, url=url)))
    res = wl("pull", str(manifest), "-o", str(tmp_path / "out"))
    _error_line(res, EXIT_TRANSFER, "no space left")
    assert "nothing was fetched" in res.stderr
    assert threaded_storage.emu.total_bytes_served == 0


# ---- storage redirects ---------------------------------------------------------------------------

class _Recorder:
    """Two loopback HTTP servers on different hosts: `first` (127.0.0.1, named "localhost" in
    URLs so that a cookie it sets is kept by a cookie jar) redirects; `second` (127.0.0.2)
    serves the bytes. Every request's headers are recorded."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self._lock = threading.Lock()
        self.first = ThreadedServer(self._app("first"), host="127.0.0.1")
        self.second = ThreadedServer(self._app("second"), host="127.0.0.2")

    def _app(self, who: str) -> web.Application:
        async def handle(request: web.Request) -> web.StreamResponse:
            with self._lock:
                self.seen.append((who, request.path_qs, dict(request.headers)))
            path = request.path
            if who == "second":
                return web.Response(body=self.body, headers={"ETag": '"x"'})
            if path == "/start":  # set a cookie, bounce once on the same host
                return web.Response(status=302, headers={
                    "Location": "/hop", "Set-Cookie": "session=C00KIEVALUE; Path=/"})
            if path == "/hop":
                return web.Response(status=302, headers={
                    "Location": f"http://127.0.0.2:{self.second.port}/data/a.bin?{SIG}2"})
            if path == "/to-file":
                return web.Response(status=302, headers={"Location": "file:///etc/passwd"})
            if path == "/to-javascript":
                return web.Response(status=302, headers={"Location": "javascript:alert(1)"})
            if path == "/loop":
                return web.Response(status=302, headers={"Location": request.path_qs})
            return web.Response(status=404)

        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", handle)
        return app

    def url(self, path: str) -> str:
        return f"http://localhost:{self.first.port}{path}?{SIG}"

    def __enter__(self) -> _Recorder:
        self.first.start()
        try:
            self.second.start()
        except OSError as exc:  # pragma: no cover - 127.0.0.2 not routable here
            self.first.stop()
            pytest.skip(f"cannot listen on 127.0.0.2: {exc}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.second.stop()
        self.first.stop()


def test_storage_redirects_are_followed_without_credentials(wl, secrets, tmp_path):
    body = os.urandom(3000)
    with _Recorder(body) as srv:
        secrets.add(SIG.split("=", 1)[1], "C00KIEVALUE", "axom_live_notforstorage")
        manifest = tmp_path / "m.json"
        manifest.write_text(_doc(_entry("a.bin", size=len(body), url=srv.url("/start"),
                                        sha256=hashlib.sha256(body).hexdigest())))
        out = tmp_path / "out"
        res = wl("pull", str(manifest), "-o", str(out),
                 env={"AXOM_KEY": "axom_live_notforstorage", "TENSORONE_API_KEY": "tpo_x" * 3})
        assert res.returncode == 0, res.stderr[-2000:]
        assert (out / "a.bin").read_bytes() == body
        hops = [(who, path) for who, path, _ in srv.seen]
        assert [h[0] for h in hops] == ["first", "first", "second"], hops
    for who, _path, headers in srv.seen:
        names = {k.lower() for k in headers}
        assert not names & {"authorization", "cookie", "proxy-authorization", "x-api-key"}, \
            (who, headers)
        assert not any("axom_live" in v or "tpo_x" in v for v in headers.values()), headers


@pytest.mark.parametrize(("path", "says"), [
    ("/to-file", "redirected http://localhost"),
    ("/to-javascript", "refusing to follow it"),
    ("/loop", "too many redirects"),
])
def test_bad_storage_redirects_fail_clearly_without_retrying(wl, secrets, tmp_path, path, says):
    with _Recorder(b"x") as srv:
        secrets.add(SIG.split("=", 1)[1])
        manifest = tmp_path / "m.json"
        manifest.write_text(_doc(_entry("a.bin", size=1, url=srv.url(path))))
        res = wl("pull", str(manifest), "-o", str(tmp_path / "out"))
        line = _error_line(res, EXIT_TRANSFER, says)
        assert "?…" in line or "?" not in line  # the signature is never shown
        # Not retried: a redirect to file: is no transient fault; a loop is bounded.
        assert len(srv.seen) <= (11 if path == "/loop" else 1), len(srv.seen)
        assert not any(who == "second" for who, _, _ in srv.seen)


def test_platform_api_redirect_to_another_host_does_not_carry_the_key(
        wl, secrets, threaded_platforms, tmp_path):
    from weightlift.emulator.api_faults import ApiFault
    from weightlift.emulator.runs import RunScript

    emu = threaded_platforms.emu
    secrets.add(emu.axom_key)
    job = emu.add_axom_job(RunScript.instant(model_bytes=64 << 10))
    emu.inject_api("axom", f"/api/jobs/{job}", ApiFault.redirect(
        f"{threaded_platforms.storage_base}/elsewhere/jobs/{job}"))
    out = tmp_path / "out"
    res = wl("pull", f"axom://jobs/{job}", "-o", str(out), env=threaded_platforms.env())
    _error_line(res, EXIT_PLATFORM, "redirected GET")
    seen = [r for r in emu.storage.requests if "elsewhere" in r.path]
    assert len(seen) == 1
    assert "authorization" not in {k.lower() for k in seen[0].headers}
    assert emu.axom_key not in json.dumps(dict(seen[0].headers))


# ---- a manifest of MAX_FILES entries -----------------------------------------------------------

def test_a_manifest_at_the_file_limit_is_planned_with_bounded_memory(tmp_path, secrets,
                                                                     rss_probe, chaos_report):
    """MAX_FILES entries with realistic presigned URLs, each 1 TiB: parsed, checked (every
    name against the folder too), planned, and refused at the free-space check, the first
    point that looks at them all together (exit 3, nothing fetched), with the child's own peak
    RSS (`rss_probe`). Pulling 100,000 real files does not fit CI's time; one entry more
    than the limit is refused in tests/downloader/test_manifest.py::test_too_many_files."""
    n = MAX_FILES
    sig = ("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20260101%2F"
           "us-east-1%2Fs3%2Faws4_request&X-Amz-Date=20260101T000000Z&X-Amz-Expires=3600&"
           f"X-Amz-SignedHeaders=host&{SIG}")
    secrets.add(SIG.split("=", 1)[1])
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"files": [
        _entry(f"shard{i // 1000:03d}/part-{i:06d}.bin", size=1 << 40,
               url=f"http://127.0.0.1:9/bucket/m/part-{i:06d}.bin?{sig}") for i in range(n)]}))
    manifest_bytes = manifest.stat().st_size
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "WEIGHTLIFT_TRACEBACK"}
    env["WEIGHTLIFT_LOG"] = "INFO"  # DEBUG would log a line per file; INFO is checked too
    probe = rss_probe("manifest-100k")
    env.update(probe.env)
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "weightlift.cli", "pull", str(manifest),
                             "-o", str(out), "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    assert proc.stderr is not None
    with proc.stderr:
        err = proc.stderr.read().decode("utf-8", "replace")
    code = proc.wait()
    seconds = time.monotonic() - start
    rss_mb = probe.peak_mb()
    chaos_report("hostile-100k-manifest", files=n, manifest_bytes=manifest_bytes,
                 exit_code=code, seconds=round(seconds, 1), peak_rss_mb=round(rss_mb, 1))
    secrets.check(err, "stderr")
    assert "Traceback" not in err, err[-3000:]
    errors = [ln for ln in err.splitlines() if ln.startswith("weightlift: error:")]
    assert code == EXIT_TRANSFER, err[-2000:]
    assert len(errors) == 1, errors
    assert "no space left" in errors[0]
    assert "nothing was fetched" in errors[0]
    # Parsing peaks near 5x the manifest's size (the byte limit bounds it); planning adds
    # well under 1 KiB per file. Measured: ~210 MB for this 35 MB manifest.
    bound = 80 + 5 * manifest_bytes / 2**20 + n / 1024
    assert rss_mb < bound, (rss_mb, bound)
    assert not [p for p in out.iterdir() if p.name != ".weightlift"]
    secrets.check_tree(out)
