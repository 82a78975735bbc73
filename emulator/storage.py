"""A local stand-in for S3-like object storage behind presigned, expiring URLs.

`StorageEmulator` holds objects (bytes in memory, or files streamed from disk), signs URLs for
them, serves `GET`/`HEAD /<bucket>/<key>` with S3's Range, ETag and error semantics, records
every request and counts the body bytes it sends, and misbehaves on demand (`inject`).

Bodies are read in 1 MiB blocks (`os.pread` from the page cache for file-backed objects) and
written under aiohttp's flow control, so a multi-GiB object costs about 1 MiB per connection.
Measured on loopback (2 vCPU, 1 GiB object, aiohttp client reading 1 MiB chunks) this path gave
2.2-3.3 GB/s on one connection, faster than `sendfile(2)` through asyncio (1.1-1.9 GB/s), which
stays available as `use_sendfile=True` for fault-free file-backed bodies.
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip as gzip_module
import hashlib
import itertools
import os
import socket
import struct
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote
from xml.sax.saxutils import escape

from aiohttp import web
from multidict import CIMultiDict

from weightlift.downloader.hashing import sha256_file
from weightlift.emulator.faults import ANY_KEY, Exchange, Fault, FaultPlan
from weightlift.emulator.http_range import Selection, if_range_holds, select, shifted, whole
from weightlift.emulator.signing import Signer, Verdict, host_of, uri_encode

CHUNK = 1 << 20  # body writes on the fault path
SENDFILE_PIECE = 64 << 20  # sendfile in pieces so byte counters advance during big bodies
GZIP_IN_MEMORY = 64 << 20  # gzip bodies up to this are sent with a Content-Length
THROTTLE_CHUNK = 16 << 10
TOTAL_RATE_CHUNK = 256 << 10  # body writes under StorageEmulator.total_rate
FLUSH_LIMIT = 5.0  # seconds to wait for the socket buffer to drain before a drop/close

_SHUTDOWN = web.AppKey("shutdown", asyncio.Event)

_DEFAULT_STATUS_CODES = {
    500: ("InternalError", "We encountered an internal error. Please try again."),
    501: ("NotImplemented", "A header you provided implies functionality that is not implemented."),
    503: ("SlowDown", "Please reduce your request rate."),
    429: ("SlowDown", "Please reduce your request rate."),
    408: ("RequestTimeout", "Your socket connection to the server was not read from or written "
                            "to within the timeout period."),
}


@dataclass
class RequestRecord:
    """One request as storage saw it; `status`, `bytes_sent` and `fault` fill in as it is served."""

    method: str
    key: str
    path: str
    query: dict[str, str]
    range_header: str | None
    headers: CIMultiDict[str]  # case-insensitive: `"authorization" in rec.headers` works
    time: float
    status: int = 0
    bytes_sent: int = 0
    fault: str | None = None


@dataclass(frozen=True)
class StoredObject:
    """One object version: in-memory bytes or a file streamed from disk."""

    size: int
    etag: str  # quoted, as sent
    last_modified: str  # HTTP date
    data: bytes | None = None
    path: Path | None = None

    def read(self, start: int, n: int, fd: int | None) -> bytes:
        if self.data is not None:
            return self.data[start:start + n]
        assert fd is not None
        out = os.pread(fd, n, start)
        if len(out) != n:
            raise OSError(f"{self.path} shrank while being served")
        return out


@dataclass
class _ServeState:
    """Per-request knobs decided before the body is written."""

    obj: StoredObject
    sel: Selection
    fault: Fault | None
    gzip_body: bytes | None = None


def _xml_error(code: str, message: str, extra: dict[str, str] | None = None) -> bytes:
    fields = {"Code": code, "Message": message, **(extra or {})}
    inner = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in fields.items())
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{inner}</Error>'.encode()


def _http_date(epoch: float) -> str:
    return email.utils.formatdate(epoch, usegmt=True)


class StorageEmulator:
    """Object storage on loopback: put objects, presign URLs, serve them, inject faults.

    Thread-safe for the test side (put/inject/counters) while the app runs in another thread.
    """

    def __init__(
        self,
        *,
        secret: bytes = b"weightlift-emulator-secret",
        clock: Callable[[], float] = time.time,
        bucket: str = "weights",
        use_sendfile: bool = False,
    ) -> None:
        if not bucket or "/" in bucket:
            raise ValueError("bucket must be one non-empty path segment")
        self.signer = Signer(secret)
        self.clock = clock
        self.bucket = bucket
        self.use_sendfile = use_sendfile
        self.requests: list[RequestRecord] = []
        self._objects: dict[str, StoredObject] = {}
        self._generation: dict[str, int] = defaultdict(int)
        self._served: dict[str, int] = defaultdict(int)
        self._faults = FaultPlan()
        self._lock = threading.Lock()
        self._request_ids = itertools.count(1)
        # A cap on the bytes per second served by all requests together (0: none), as an
        # origin's egress limit; set it before serving. Paced per TOTAL_RATE_CHUNK written.
        self.total_rate = 0.0
        self._paced_until = 0.0

    # --- objects ---------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes) -> None:
        """Store `data` under `key` (replacing any object there); ETag is its quoted md5."""
        data = bytes(data)
        etag = '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'
        self._store(key, StoredObject(len(data), etag, _http_date(self.clock()), data=data))

    def put_file(self, key: str, path: Path) -> None:
        """Serve the file at `path` under `key`, streamed from disk on every request.

        The ETag is a content-version hash (path, size, mtime, generation), stable across runs
        of the emulator for an unchanged file, new for every `replace`. The file must not change
        behind the emulator's back (use `replace`).
        """
        path = Path(path).resolve()
        st = path.stat()
        if not path.is_file():
            raise ValueError(f"not a regular file: {path}")
        with self._lock:
            gen = self._generation[key] + (1 if key in self._objects else 0)
        ident = f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{gen}".encode()
        etag = '"' + hashlib.md5(ident, usedforsecurity=False).hexdigest() + '"'
        self._store(key, StoredObject(st.st_size, etag, _http_date(st.st_mtime), path=path))

    def replace(self, key: str, content: bytes | Path) -> None:
        """Overwrite an existing object with new content (bytes or a file): a new ETag."""
        if key not in self._objects:
            raise KeyError(key)
        if isinstance(content, Path):
            self.put_file(key, content)
        else:
            self.put_bytes(key, content)

    def delete(self, key: str) -> None:
        with self._lock:
            self._objects.pop(key, None)

    def _store(self, key: str, obj: StoredObject) -> None:
        _check_key(key)
        with self._lock:
            if key in self._objects:
                self._generation[key] += 1
            self._objects[key] = obj

    def keys(self) -> list[str]:
        with self._lock:
            return sorted(self._objects)

    def object(self, key: str) -> StoredObject:
        """The current version of `key` (its size, ETag, Last-Modified)."""
        return self._objects[key]

    def size(self, key: str) -> int:
        return self._objects[key].size

    def etag(self, key: str) -> str:
        return self._objects[key].etag

    def sha256(self, key: str) -> str:
        obj = self._objects[key]
        if obj.data is not None:
            return hashlib.sha256(obj.data).hexdigest()
        assert obj.path is not None
        return sha256_file(obj.path)

    # --- faults ----------------------------------------------------------------------------
    def inject(
        self, key: str, fault: Fault, *, times: int = 1, from_offset: int = 0,
        methods: Iterable[str] = ("GET",),
    ) -> None:
        """Apply `fault` to the next `times` matching requests for `key` (`"*"`: any key),
        optionally only those whose range starts at or after `from_offset`."""
        self._faults.arm(key, fault, times=times, from_offset=from_offset, methods=methods)

    def faults_pending(self, key: str | None = None) -> int:
        return self._faults.pending(key)

    def clear_faults(self, key: str | None = None) -> None:
        self._faults.clear(key)

    # --- counters --------------------------------------------------------------------------
    def bytes_served(self, key: str) -> int:
        """Body bytes handed to the network for `key` so far (all requests, all versions)."""
        return self._served.get(key, 0)

    @property
    def total_bytes_served(self) -> int:
        return sum(self._served.values())

    def reset_counters(self) -> None:
        """Forget recorded requests and byte counts (objects and faults stay)."""
        self.requests.clear()
        self._served.clear()

    def _count(self, rec: RequestRecord, n: int) -> None:
        rec.bytes_sent += n
        self._served[rec.key] += n

    # --- URLs ------------------------------------------------------------------------------
    def path_of(self, key: str) -> str:
        return f"/{self.bucket}/{uri_encode(key, keep_slash=True)}"

    def presign(
        self, key: str, *, lifetime: float, base_url: str, style: str = "s3v4",
        method: str = "GET",
    ) -> str:
        """A URL for `key` valid for `lifetime` seconds (sub-second works, see signing.py).

        `style="s3v4"`: SigV4 query auth, signed for `method` only (a GET URL does not
        authorize HEAD, as on S3). `style="expires"`: `?expires=<epoch>&sig=<hex>`, any method.
        `"cloudfront"`, `"azure"` (SAS), `"nginx"` (secure_link): those services' query forms,
        any method, each answered in its own dialect once expired (see signing.py).
        `base_url` is `scheme://host:port` (no path); the key need not exist yet.
        """
        path = self.path_of(key)
        query = self.signer.presign_query(
            raw_path=path, host=host_of(base_url), now=self.clock(), lifetime=lifetime,
            style=style, method=method)
        return f"{base_url.rstrip('/')}{path}?{query}"

    def manifest(
        self, keys: Iterable[str], *, base_url: str, lifetime: float,
        model_id: str = "emulated-model", style: str = "s3v4", with_sha256: bool = False,
    ) -> dict[str, Any]:
        """An Axom-shaped download manifest for `keys`, freshly signed."""
        files: list[dict[str, Any]] = []
        for key in keys:
            entry: dict[str, Any] = {
                "rel": key, "size": self.size(key),
                "url": self.presign(key, lifetime=lifetime, base_url=base_url, style=style)}
            if with_sha256:
                entry["sha256"] = self.sha256(key)
            files.append(entry)
        return {"model_id": model_id, "name": model_id, "version": "1", "files": files}

    # --- the app ---------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        """A fresh aiohttp app serving this emulator's state (one per server you start)."""
        app = web.Application()
        app[_SHUTDOWN] = asyncio.Event()  # wakes stalled bodies so shutdown is prompt
        app.on_shutdown.append(_on_shutdown)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    @property
    def app(self) -> web.Application:
        """A fresh app on every access, so the emulator can be served more than once."""
        return self.make_app()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw_path = request.rel_url.raw_path
        prefix = f"/{self.bucket}/"
        key = unquote(raw_path[len(prefix):]) if raw_path.startswith(prefix) else None
        rec = RequestRecord(
            method=request.method, key=key or "", path=raw_path,
            query=dict(request.rel_url.query), range_header=request.headers.get("Range"),
            headers=CIMultiDict(request.headers), time=self.clock())
        self.requests.append(rec)
        try:
            return await self._answer(request, rec, key)
        finally:
            if rec.status == 0:
                rec.status = 499  # nginx's "client closed request": never got as far as headers

    async def _answer(
        self, request: web.Request, rec: RequestRecord, key: str | None
    ) -> web.StreamResponse:
        method = request.method
        if method not in ("GET", "HEAD"):
            return self._error(rec, request, 405, "MethodNotAllowed",
                               "The specified method is not allowed against this resource.")
        if key is None or key == "":
            return self._error(rec, request, 404, "NoSuchBucket",
                               "The specified bucket does not exist.")
        pairs = parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True)
        if "Authorization" in request.headers and pairs:
            return self._error(
                rec, request, 400, "InvalidArgument",
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
                "Signature query string parameter or the Authorization header should be "
                "specified")
        checked = self.signer.check(
            method=method, host=request.headers.get("Host", "").lower(), raw_path=rec.path,
            pairs=pairs, now=self.clock())
        if checked.verdict is Verdict.FORGED:
            return self._error(
                rec, request, 403, "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you "
                "provided. Check your key and signing method.")
        if checked.verdict is Verdict.EXPIRED:
            return self._expired(rec, request, checked.expires_at, checked.lifetime,
                                 checked.style)

        obj = self._objects.get(key)
        if obj is None:
            return self._error(rec, request, 404, "NoSuchKey",
                               "The specified key does not exist.", {"Key": key})
        if_match = request.headers.get("If-Match")
        if if_match is not None and if_match.strip() not in ("*", obj.etag):
            return self._error(rec, request, 412, "PreconditionFailed",
                               "At least one of the pre-conditions you specified did not hold")
        if_none_match = request.headers.get("If-None-Match")
        if if_none_match is not None and if_none_match.strip() in ("*", obj.etag):
            rec.status = 304
            return web.Response(status=304, headers=self._validators(obj))

        sel = select(rec.range_header, obj.size)
        if not if_range_holds(request.headers.get("If-Range"), obj.etag, obj.last_modified):
            sel = whole(obj.size)
        has_body = method == "GET" and sel.satisfiable
        fault = self._faults.take(Exchange(
            key, method, sel.start if sel.satisfiable else obj.size,
            (sel.start, sel.end) if has_body else None, sel.partial))
        rec.fault = fault.kind if fault is not None else None
        if fault is not None and fault.kind == "status":
            return self._status_fault(rec, request, fault)
        if fault is not None and fault.kind == "expire":
            return self._expired(rec, request, self.clock() - 1, checked.lifetime,
                                 checked.style)
        if not sel.satisfiable:
            return self._error(rec, request, 416, "InvalidRange",
                               "The requested range is not satisfiable",
                               {"RangeRequested": rec.range_header or "",
                                "ActualObjectSize": str(obj.size)},
                               headers={"Content-Range": sel.content_range(obj.size)})
        if fault is not None and fault.kind == "replace_object":
            assert fault.new_content is not None
            self.replace(key, fault.new_content)  # `obj` is still the version this GET serves
        return await self._serve(request, rec, _ServeState(obj, sel, fault))

    async def _serve(
        self, request: web.Request, rec: RequestRecord, st: _ServeState
    ) -> web.StreamResponse:
        obj, fault = st.obj, st.fault
        kind = fault.kind if fault is not None else None
        if kind == "ignore_range":
            st.sel = whole(obj.size)
        content_range: str | None = None
        if kind == "wrong_content_range":
            wrong = shifted(st.sel, obj.size)
            content_range = wrong.content_range(obj.size)
            if wrong == st.sel:  # a 1-byte object: nothing else to point at, so lie about size
                content_range = f"bytes {wrong.start}-{wrong.end - 1}/{obj.size + 1}"
            st.sel = wrong
        elif st.sel.partial:
            content_range = st.sel.content_range(obj.size)

        resp = web.StreamResponse(status=206 if st.sel.partial else 200)
        resp.headers.update(self._validators(obj))
        resp.headers["Accept-Ranges"] = "bytes"
        resp.headers["Content-Type"] = "application/octet-stream"
        resp.headers["x-amz-request-id"] = self._request_id()
        resp.headers["Server"] = "AmazonS3"
        if content_range is not None:
            resp.headers["Content-Range"] = content_range
        if kind == "gzip":
            resp.headers["Content-Encoding"] = "gzip"
            if st.sel.length <= GZIP_IN_MEMORY and request.method == "GET":
                st.gzip_body = self._gzip_whole(st)
                resp.content_length = len(st.gzip_body)
            else:
                resp.enable_chunked_encoding()
        else:
            resp.content_length = st.sel.length
        rec.status = resp.status
        if request.method == "HEAD":
            await resp.prepare(request)
            return resp

        try:
            if (self.use_sendfile and fault is None and obj.path is not None and st.sel.length
                    and not self.total_rate):
                await self._sendfile(request, resp, rec, obj, st.sel)
            else:
                await self._stream(request, resp, rec, st)
        except ConnectionError:
            # The client went away, or a fault cut the connection: nothing more to say, and
            # aiohttp would log an escaping ConnectionError as a handler failure.
            pass
        return resp

    # --- bodies ----------------------------------------------------------------------------
    async def _sendfile(
        self, request: web.Request, resp: web.StreamResponse, rec: RequestRecord,
        obj: StoredObject, sel: Selection,
    ) -> None:
        await resp.prepare(request)  # sends the headers now
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("client went away")
        loop = asyncio.get_running_loop()
        assert obj.path is not None
        with open(obj.path, "rb") as fh:
            pos = sel.start
            while pos < sel.end:
                piece = min(SENDFILE_PIECE, sel.end - pos)
                fh.seek(pos)
                try:
                    await loop.sendfile(transport, fh, pos, piece)
                finally:
                    sent = max(0, fh.tell() - pos)
                    self._count(rec, sent)
                    pos += sent
                if sent < piece:
                    raise ConnectionResetError("sendfile stopped short")
        await resp.write_eof()

    async def _stream(
        self, request: web.Request, resp: web.StreamResponse, rec: RequestRecord,
        st: _ServeState,
    ) -> None:
        obj, sel, fault = st.obj, st.sel, st.fault
        kind = fault.kind if fault is not None else None
        await resp.prepare(request)
        shutdown = request.app[_SHUTDOWN]

        if st.gzip_body is not None:
            for i in range(0, len(st.gzip_body), CHUNK):
                part = st.gzip_body[i:i + CHUNK]
                await resp.write(part)
                self._count(rec, len(part))
            await resp.write_eof()
            return

        stop = sel.end
        if fault is not None and kind == "drop_after":
            stop = min(sel.end, sel.start + fault.n_bytes)
        elif fault is not None and kind == "short_body":
            stop = max(sel.start, sel.end - fault.n_bytes)
        pause_at = sel.start + fault.n_bytes if fault is not None and kind == "stall" else None
        flip = fault.offset if fault is not None and kind == "flip_byte" else None
        rate = fault.rate if fault is not None and kind == "throttle" else 0.0
        chunk = THROTTLE_CHUNK if rate else TOTAL_RATE_CHUNK if self.total_rate else CHUNK
        compressor = (zlib.compressobj(6, zlib.DEFLATED, 31) if kind == "gzip" else None)

        fd = os.open(obj.path, os.O_RDONLY) if obj.path is not None else None
        try:
            pos = sel.start
            t0 = time.monotonic()
            while True:
                if pause_at is not None and pos >= min(pause_at, stop):
                    assert fault is not None
                    await self._flush(request, shutdown)
                    await _sleep_unless(shutdown, fault.seconds)
                    pause_at = None
                if pos >= stop:
                    break
                limit = stop if pause_at is None else min(stop, pause_at)
                n = min(chunk, limit - pos)
                data = obj.read(pos, n, fd)
                if flip is not None and pos <= flip < pos + n:
                    buf = bytearray(data)
                    buf[flip - pos] ^= 0xFF
                    data = bytes(buf)
                if compressor is not None:
                    data = compressor.compress(data)
                if data:
                    await resp.write(data)
                    self._count(rec, len(data))
                    if self.total_rate:
                        await self._pace(len(data), shutdown)
                pos += n
                if rate:
                    ahead = (pos - sel.start) / rate - (time.monotonic() - t0)
                    if ahead > 0:
                        await _sleep_unless(shutdown, ahead)
            if compressor is not None:
                tail = compressor.flush()
                await resp.write(tail)
                self._count(rec, len(tail))
        finally:
            if fd is not None:
                os.close(fd)

        if kind in ("drop_after", "short_body") and stop < sel.end:
            await self._flush(request, shutdown)
            transport = request.transport
            if transport is not None:
                if kind == "drop_after":
                    sock = transport.get_extra_info("socket")
                    if sock is not None:  # linger 0: close() sends RST, a "connection reset"
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))
                    transport.abort()
                else:
                    transport.close()  # FIN after the buffered bytes: a clean short body
            raise ConnectionResetError("fault: connection cut")
        await resp.write_eof()

    async def _pace(self, n: int, shutdown: asyncio.Event) -> None:
        """Hold this body back so that all bodies together stay within ``total_rate``: each
        block books its share of the shared timeline (one event loop serves them all)."""
        now = time.monotonic()
        self._paced_until = max(self._paced_until, now) + n / self.total_rate
        if self._paced_until > now:
            await _sleep_unless(shutdown, self._paced_until - now)

    @staticmethod
    async def _flush(request: web.Request, shutdown: asyncio.Event) -> None:
        """Wait until what was written has left the process (bounded; a client may not read)."""
        transport = request.transport
        deadline = time.monotonic() + FLUSH_LIMIT
        while (transport is not None  # noqa: ASYNC110 - polls a buffer size, no event exists and not transport.is_closing()
               and transport.get_write_buffer_size() > 0
               and time.monotonic() < deadline and not shutdown.is_set()):
            await asyncio.sleep(0.001)

    def _gzip_whole(self, st: _ServeState) -> bytes:
        fd = os.open(st.obj.path, os.O_RDONLY) if st.obj.path is not None else None
        try:
            raw = st.obj.read(st.sel.start, st.sel.length, fd)
        finally:
            if fd is not None:
                os.close(fd)
        return gzip_module.compress(raw, mtime=0)

    # --- answers without a body of the object ---------------------------------------------
    def _validators(self, obj: StoredObject) -> dict[str, str]:
        return {"ETag": obj.etag, "Last-Modified": obj.last_modified}

    def _request_id(self) -> str:
        return f"{next(self._request_ids):016X}"

    def _error(
        self, rec: RequestRecord, request: web.Request, status: int, code: str, message: str,
        extra: dict[str, str] | None = None, *, headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> web.Response:
        rid = self._request_id()
        if body is None:
            body = _xml_error(code, message, {**(extra or {}), "RequestId": rid})
        rec.status = status
        resp = web.Response(status=status, body=body, headers={
            "x-amz-request-id": rid, "Server": "AmazonS3", **(headers or {})})
        if body:
            resp.content_type = "application/xml"
        return resp

    def _expired(
        self, rec: RequestRecord, request: web.Request, expires_at: float | None,
        lifetime: int | None, style: str = "s3v4",
    ) -> web.Response:
        """The answer real storage gives a URL past its time, in the URL's own dialect."""
        now = self.clock()
        if style == "cloudfront":  # CloudFront: a bare AccessDenied, no reason given
            return self._error(rec, request, 403, "AccessDenied", "Access denied",
                               headers={"Server": "CloudFront"})
        if style == "azure":
            start = email.utils.formatdate(now - 300, usegmt=True)
            end = email.utils.formatdate(expires_at if expires_at is not None else now,
                                         usegmt=True)
            return self._error(
                rec, request, 403, "AuthenticationFailed",
                "Server failed to authenticate the request. Make sure the value of "
                "Authorization header is formed correctly including the signature.",
                {"AuthenticationErrorDetail": "Signature not valid in the specified time "
                 f"frame: Start [{start}] - Expiry [{end}] - Current [{_http_date(now)}]"},
                headers={"x-ms-error-code": "AuthenticationFailed",
                         "Server": "Windows-Azure-Blob/1.0"})
        if style == "nginx":  # secure_link: `if ($secure_link = "0") { return 403; }`
            rec.status = 403
            return web.Response(status=403, content_type="text/html", headers={
                "Server": "nginx"}, text="<html>\r\n<head><title>403 Forbidden</title></head>"
                "\r\n<body>\r\n<center><h1>403 Forbidden</h1></center>\r\n<hr><center>nginx"
                "</center>\r\n</body>\r\n</html>\r\n")
        extra = {
            "X-Amz-Expires": str(lifetime if lifetime is not None else ""),
            "Expires": _iso(expires_at if expires_at is not None else now),
            "ServerTime": _iso(now),
        }
        return self._error(rec, request, 403, "AccessDenied", "Request has expired", extra)

    def _status_fault(self, rec: RequestRecord, request: web.Request, fault: Fault) -> web.Response:
        code, message = _DEFAULT_STATUS_CODES.get(
            fault.code, ("InjectedFault", f"Injected status {fault.code}"))
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
        return self._error(rec, request, fault.code, code, message, headers=headers,
                           body=fault.body)


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _check_key(key: str) -> None:
    if not key or key.startswith("/") or "\0" in key:
        raise ValueError(f"bad object key {key!r}")
    if key == ANY_KEY:
        raise ValueError(f"{ANY_KEY!r} is reserved for faults on any key")


async def _sleep_unless(event: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less if `event` is set (server shutting down)."""
    if seconds <= 0:
        return
    # Not asyncio.wait_for: on Python <= 3.11 it can swallow a cancellation (shutdown hang).
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=seconds)
    finally:
        waiter.cancel()


async def _on_shutdown(app: web.Application) -> None:
    app[_SHUTDOWN].set()


__all__ = ["Fault", "RequestRecord", "StorageEmulator", "StoredObject"]

