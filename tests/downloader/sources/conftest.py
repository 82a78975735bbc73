"""S3 fixtures: moto's real S3 server as its own process on a free loopback port, and a small
gate in front of it that does what moto does not (expire presigned URLs, slow GET bodies)."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from aiohttp import ClientSession, web
from yarl import URL

ACCESS_KEY = "AKIAWLTEST0000KEY42"
SECRET_KEY = "wlTestSecret/abcdefghijklmnopqrstuvwxyz0123"
_buckets = itertools.count()


def _die_with_parent() -> None:
    """In the moto child, before exec: a SIGTERM when pytest dies, even by SIGKILL (Linux), so
    an aborted run leaves no server behind."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MotoServer:
    """``python -m moto.server`` on 127.0.0.1; stopped by ``stop``."""

    access_key = ACCESS_KEY
    secret_key = SECRET_KEY

    def __init__(self, log: Path, env: dict[str, str] | None = None) -> None:
        for _ in range(3):  # the free port may be taken between the probe and the bind
            self.port = _free_port()
            self._log = open(log, "ab")  # closed in stop()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                preexec_fn=_die_with_parent)
            if self._wait_up(deadline=time.monotonic() + 30):
                break
            self.stop()
        else:
            raise RuntimeError(f"moto server did not start; see {log}")
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def _wait_up(self, deadline: float) -> bool:
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()

    def client(self, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY,
               service: str = "s3") -> Any:
        import botocore.session

        return botocore.session.get_session().create_client(
            service, region_name="us-east-1", endpoint_url=self.endpoint,
            aws_access_key_id=access_key, aws_secret_access_key=secret_key)


    def put(self, bucket: str, objects: dict[str, bytes],
            sha256: frozenset[str] = frozenset()) -> None:
        """Upload ``objects``; those named in ``sha256`` with S3's full-object SHA256 checksum."""
        client = self.client()
        for key, body in objects.items():
            extra = {"ChecksumAlgorithm": "SHA256"} if key in sha256 else {}
            client.put_object(Bucket=bucket, Key=key, Body=body, **extra)

    def env(self, tmp: Path, endpoint: str | None = None, **extra: str) -> dict[str, str]:
        """The environment of a pull from this server (or ``endpoint``): test credentials, no
        ~/.aws, no instance metadata (a missing-credentials run must not wait on
        169.254.169.254). ``extra`` adds or, with "", removes variables."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
                   AWS_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint or self.endpoint,
                   AWS_CONFIG_FILE=str(tmp / "no-aws-config"),
                   AWS_SHARED_CREDENTIALS_FILE=str(tmp / "no-aws-credentials"),
                   AWS_EC2_METADATA_DISABLED="true")
        env.update(extra)
        return {k: v for k, v in env.items() if v != ""}


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bucket(moto_server: MotoServer) -> str:
    """A new, empty bucket on the shared moto server."""
    name = f"wl-test-{os.getpid()}-{next(_buckets)}"
    moto_server.client().create_bucket(Bucket=name)
    return name


class S3Gate:
    """A loopback reverse proxy in front of moto. moto ignores a presigned URL's expiry; the gate
    answers an expired one as S3 does (403 AccessDenied "Request has expired"), ``early`` seconds
    before the URL says, and can slow GET bodies to ``rate`` bytes/s per request."""

    def __init__(self, upstream: str, *, rate: float | None = None, early: float = 0.0) -> None:
        self.upstream = upstream
        self.rate = rate
        self.early = early
        self.expired_answers = 0
        self.gets = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        if not self._ready.wait(15) or self._failed is not None:
            self._thread.join(5)
            self._loop.close()
            raise RuntimeError(f"the S3 gate did not start: {self._failed!r}")
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except BaseException as exc:  # told to the test thread, which waits on _ready
            self._failed = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._session = ClientSession(auto_decompress=False)

    def _expired(self, query: str) -> bool:
        params = {k.lower(): v for k, v in parse_qsl(query)}
        if "x-amz-date" not in params or "x-amz-expires" not in params:
            return False
        start = datetime.strptime(params["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(
            tzinfo=timezone.utc)
        end = start + timedelta(seconds=int(params["x-amz-expires"]) - self.early)
        return datetime.now(timezone.utc) >= end

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        query = urlsplit(request.raw_path).query
        if request.method == "GET" and query:
            self.gets += 1
            if self._expired(query):
                self.expired_answers += 1
                return web.Response(status=403, content_type="application/xml", text=(
                    '<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
                    "<Message>Request has expired</Message></Error>"))
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with self._session.request(
                request.method, URL(self.upstream + request.raw_path, encoded=True),
                headers=headers, data=await request.read()) as upstream:
            out = web.StreamResponse(status=upstream.status)
            for name, value in upstream.headers.items():
                if name.lower() not in ("transfer-encoding", "connection", "server", "date"):
                    out.headers[name] = value
            await out.prepare(request)
            async for block in upstream.content.iter_chunked(64 * 1024):
                await out.write(block)
                if self.rate and request.method == "GET":
                    await asyncio.sleep(len(block) / self.rate)
            await out.write_eof()
            return out

    def close(self) -> None:
        if self._loop.is_closed():
            return

        async def stop() -> None:
            await self._session.close()
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(15)
        self._loop.close()


@pytest.fixture
def s3_gate(moto_server: MotoServer) -> Iterator[Callable[..., S3Gate]]:
    """``s3_gate(rate=..., early=...)`` -> an S3Gate in front of moto, closed at teardown."""
    gates: list[S3Gate] = []

    def make(**options: Any) -> S3Gate:
        gates.append(S3Gate(moto_server.endpoint, **options))
        return gates[-1]

    try:
        yield make
    finally:
        for gate in gates:
            gate.close()


class DeniedUser:
    """A moto server that checks credentials and IAM policies, a bucket with one object, and
    the keys of an IAM user with no policy at all (S3 answers it AccessDenied)."""

    def __init__(self, server: MotoServer, bucket: str, access_key: str, secret_key: str) -> None:
        self.server = server
        self.bucket = bucket
        self.access_key = access_key
        self.secret_key = secret_key


@pytest.fixture(scope="module")
def moto_denied_user(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeniedUser]:
    # moto lets the first N requests through unchecked (the set-up below: 4), then enforces.
    server = MotoServer(tmp_path_factory.mktemp("moto-auth") / "moto.log",
                        env={"INITIAL_NO_AUTH_ACTION_COUNT": "4"})
    try:
        s3 = server.client()
        s3.create_bucket(Bucket="wl-private")
        s3.put_object(Bucket="wl-private", Key="m/a.bin", Body=b"secret weights")
        iam = server.client(service="iam")
        iam.create_user(UserName="reader")
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        yield DeniedUser(server, "wl-private", key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        server.stop()
