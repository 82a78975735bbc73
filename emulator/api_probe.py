"""A raw client for poking at the emulated platform APIs: it never follows a redirect and never
interprets an answer, so tests (and a person at a REPL) see exactly what the emulator sent.
Deliberately not weightlift's own API session, which it exists to check."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy


class HandClock:
    """A hand-wound clock for `PlatformEmulator.clock`: runs move only when `now` is set."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class ApiReply:
    status: int
    headers: CIMultiDictProxy[str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


class ApiProbe:
    """GETs below ``base`` with ``Authorization: Bearer <key>`` (``key=None``: no header)."""

    def __init__(self, session: aiohttp.ClientSession, base: str, key: str | None) -> None:
        self.session = session
        self.base = base
        self.key = key

    async def get(self, path: str, *, key: str | None | bool = True,
                  headers: dict[str, str] | None = None) -> ApiReply:
        """``key=True`` sends the probe's key, a string sends that one, None sends none."""
        use = self.key if key is True else key
        h = dict(headers or {})
        if isinstance(use, str):
            h["Authorization"] = f"Bearer {use}"
        async with self.session.get(self.base + path, headers=h,
                                    allow_redirects=False) as resp:
            return ApiReply(resp.status, resp.headers, await resp.text())

    async def ok(self, path: str) -> Any:
        """The JSON of a 200 answer (asserts the 200)."""
        r = await self.get(path)
        assert r.status == 200, r.text
        return r.json()
