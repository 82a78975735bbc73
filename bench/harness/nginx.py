"""nginx on loopback: generate the configuration, start it, sign URLs, stop it."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from string import Template

TEMPLATE = Path(__file__).resolve().parent.parent / "nginx.conf.template"
SECRET = "weightlift-bench"  # a throwaway signing secret for the loopback server only


def find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sign(base: str, rel_path: str, lifetime: float) -> str:
    """A /signed/ URL valid for ``lifetime`` seconds (nginx secure_link, md5 flavour)."""
    expires = int(time.time() + lifetime)
    uri = f"/signed/{rel_path}"
    digest = hashlib.md5(f"{expires}{uri} {SECRET}".encode(), usedforsecurity=False).digest()
    md5 = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    return f"{base}{uri}?md5={md5}&expires={expires}"


class Nginx:
    """``with Nginx(...) as ng:`` serves ``data_dir`` on ``ng.base``."""

    def __init__(self, binary: str, prefix: Path, data_dir: Path, *, rate: int,
                 workers: int | str = "auto") -> None:
        self.binary = binary
        self.prefix = prefix
        self.data_dir = data_dir
        self.rate = rate
        self.workers = workers
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, location: str, rel_path: str) -> str:
        return f"{self.base}/{location}/{rel_path}"

    def signed_url(self, rel_path: str, lifetime: float) -> str:
        return sign(self.base, rel_path, lifetime)

    def config_text(self) -> str:
        user_line = "user root root;" if os.geteuid() == 0 else ""
        return Template(TEMPLATE.read_text()).substitute(
            user_line=user_line, workers=self.workers, prefix=self.prefix, port=self.port,
            data=self.data_dir, rate=self.rate, secret=SECRET,
        )

    def __enter__(self) -> Nginx:
        self.prefix.mkdir(parents=True, exist_ok=True)
        conf = self.prefix / "nginx.conf"
        conf.write_text(self.config_text())
        self.proc = subprocess.Popen(
            [self.binary, "-p", str(self.prefix), "-c", str(conf)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"nginx exited at start: {err.strip()}")
            try:
                with urllib.request.urlopen(f"{self.base}/plain/", timeout=1):
                    pass
                break
            except urllib.error.HTTPError:
                break  # 403/404 for the folder itself: it answers
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("nginx did not start listening within 10 s") from None
                time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: fast shutdown of master and workers
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
