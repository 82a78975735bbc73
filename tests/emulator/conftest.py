"""Helpers for the emulator's own tests: a raw client that never decompresses or re-encodes."""

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from multidict import CIMultiDictProxy
from yarl import URL


@dataclass
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    error: Exception | None = None  # the body broke off (reset, short, timeout)


Fetch = Callable[..., Awaitable[Answer]]


@pytest.fixture
async def fetch() -> AsyncIterator[Fetch]:
    """`await fetch(url, method="GET", headers=None, timeout=None)`: status, headers, the body
    bytes received (even when the body breaks off, then with `.error` set)."""
    async with aiohttp.ClientSession(auto_decompress=False) as session:

        async def go(url: str, method: str = "GET", headers: dict[str, str] | None = None,
                     timeout: float | None = None) -> Answer:
            t = aiohttp.ClientTimeout(total=None, sock_read=timeout)
            async with session.request(method, URL(url, encoded=True), headers=headers,
                                       timeout=t) as resp:
                body = bytearray()
                try:
                    async for block in resp.content.iter_chunked(1 << 16):
                        body += block
                except (aiohttp.ClientError, TimeoutError) as exc:
                    return Answer(resp.status, resp.headers, bytes(body), exc)
                return Answer(resp.status, resp.headers, bytes(body))

        yield go
