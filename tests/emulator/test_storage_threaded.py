"""The emulator served from a background thread, and from `python -m weightlift.emulator`."""

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from weightlift.emulator.faults import Fault
from weightlift.emulator.serve import ThreadedServer, ThreadedStorage

DATA = bytes(range(256)) * 1000


def _get(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


def test_threaded_storage_serves_a_synchronous_client(threaded_storage):
    threaded_storage.emu.put_bytes("a/b.bin", DATA)
    status, headers, body = _get(threaded_storage.presign("a/b.bin"), {"Range": "bytes=10-19"})
    assert (status, body) == (206, DATA[10:20])
    threaded_storage.emu.inject("a/b.bin", Fault.status(503, retry_after="1"))
    status, headers, body = _get(threaded_storage.presign("a/b.bin"))
    assert (status, headers["Retry-After"]) == (503, "1")
    assert threaded_storage.emu.bytes_served("a/b.bin") == 10


def test_a_child_process_can_pull_from_it(threaded_storage):
    threaded_storage.emu.put_bytes("w.bin", DATA)
    code = ("import sys, urllib.request; "
            "sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1]).read())")
    out = subprocess.run([sys.executable, "-c", code, threaded_storage.presign("w.bin")],
                         capture_output=True, check=True, timeout=20)
    assert out.stdout == DATA
    assert [r.headers.get("Authorization") for r in threaded_storage.emu.requests] == [None]


def test_stop_is_prompt_with_a_stalled_response_in_flight():
    with ThreadedStorage() as srv:
        srv.emu.put_bytes("k", DATA)
        srv.emu.inject("k", Fault.stall(60, after_bytes=100))
        with pytest.raises(TimeoutError):
            _get(srv.endpoint.presign("k"), timeout=0.3)
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 3


def test_base_url_before_start_is_an_error(storage):
    srv = ThreadedServer(storage.make_app())
    with pytest.raises(RuntimeError, match="not started"):
        _ = srv.base_url
    srv.stop()  # stopping a server never started is harmless


def test_start_failure_is_reported(storage):
    with ThreadedStorage() as first:
        port = int(first.base_url.rsplit(":", 1)[1])
        with pytest.raises(RuntimeError, match="failed to start"):
            ThreadedServer(storage.make_app(), port=port).start()


def test_python_m_emulator_storage_serves_a_folder(tmp_path):
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_bytes(b"{}")
    (folder / "sub" / "w.bin").write_bytes(DATA)
    manifest_path = tmp_path / "m.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "weightlift.emulator", "storage", "--dir", str(folder),
         "--port", "0", "--manifest", str(manifest_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        assert lines[0].startswith("serving 2 files"), lines
        assert str(manifest_path) in lines[1]
        manifest = json.loads(manifest_path.read_text())
        files = {f["rel"]: f for f in manifest["files"]}
        assert set(files) == {"config.json", "sub/w.bin"}
        assert files["sub/w.bin"]["size"] == len(DATA)
        assert _get(files["sub/w.bin"]["url"])[2] == DATA
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
