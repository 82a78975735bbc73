"""SOURCE arguments → a ResolvedSource (for `pull`) or a RunFollower (for `watch`).

`hf://` SOURCEs are resolved with `huggingface_hub` (`HF_TOKEN`, `HF_ENDPOINT`; see `hf.py`).
Platform URIs open an API session from the environment (`AXOM_KEY`/`AXOM_API_BASE`,
`TENSORONE_API_KEY`/`TENSORONE_API_BASE`) that stays open while the caller works, because the
manifest's `refresh` and the follower's `poll` use it. Manifest files and URLs go to
`resolve_local` and need no network.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from weightlift.downloader.errors import PlatformError, UsageError
from weightlift.downloader.sources.hf_uri import is_hf_uri, parse_hf_uri
from weightlift.downloader.sources.local import ResolvedSource, resolve_local
from weightlift.downloader.sources.platform_uri import is_platform_uri, parse_platform_uri
from weightlift.downloader.sources.s3_plan import is_s3_uri, parse_s3_uri

if TYPE_CHECKING:
    # The platform clients are imported only when a platform source is used: a pull from a
    # manifest file should not pay for them at start-up.
    from weightlift.downloader.sources.api_session import ApiSession
    from weightlift.downloader.sources.follow import RunFollower

__all__ = ["AXOM", "TENSORONE", "PlatformConfig", "open_run", "open_session", "open_source"]


@dataclass(frozen=True)
class PlatformConfig:
    name: str
    key_env: str
    base_env: str
    default_base: str
    key_example: str


AXOM = PlatformConfig("Axom", "AXOM_KEY", "AXOM_API_BASE", "https://console.axomlabs.ai/api",
                      "axom_live_…")
TENSORONE = PlatformConfig("TensorOne", "TENSORONE_API_KEY", "TENSORONE_API_BASE",
                           "https://api.tensorone.ai/v2", "tpo_live_…")
_CONFIGS: dict[str, PlatformConfig] = {"axom": AXOM, "tensorone": TENSORONE}


def open_session(platform: Literal["axom", "tensorone"], env: Mapping[str, str],
                 **options: Any) -> ApiSession:
    """An (unopened) ApiSession for ``platform`` configured from ``env``. ``options`` go to
    ApiSession (retry policy, sleep, clock: for tests)."""
    from weightlift.downloader.sources.api_session import ApiSession

    cfg = _CONFIGS[platform]
    key = env.get(cfg.key_env, "").strip()
    if not key:
        raise PlatformError(f"{cfg.key_env} is not set",
                            f"export {cfg.key_env}={cfg.key_example}")
    base = env.get(cfg.base_env, "").strip() or cfg.default_base
    return ApiSession(cfg.name, base, key, key_env=cfg.key_env, base_env=cfg.base_env,
                      key_example=cfg.key_example, **options)


@asynccontextmanager
async def open_source(sources: list[str], env: Mapping[str, str] | None = None,
                      **session_options: Any) -> AsyncIterator[ResolvedSource]:
    """Resolve SOURCE arguments; a platform source's API session stays open inside the
    block (its `refresh` needs it)."""
    if any(is_hf_uri(s) for s in sources):
        if len(sources) != 1:
            raise UsageError("pass one hf:// source per pull",
                             "an hf:// source cannot be mixed with other sources")
        from weightlift.downloader.sources.hf import open_hf

        async with open_hf(parse_hf_uri(sources[0]), os.environ if env is None else env) as hf:
            yield hf
        return
    if any(is_s3_uri(s) for s in sources):
        if len(sources) != 1:
            raise UsageError("pass one s3:// source per pull",
                             "an s3:// prefix already pulls every object under it")
        # botocore is imported only here (the `s3` extra): other pulls never pay for it.
        from weightlift.downloader.sources.s3 import resolve_s3

        yield await resolve_s3(parse_s3_uri(sources[0]), os.environ if env is None else env)
        return
    platform_sources = [s for s in sources if is_platform_uri(s)]
    if not platform_sources:
        yield resolve_local(sources)
        return
    if len(sources) != 1:
        raise UsageError("pass one platform source per pull",
                         "a platform source cannot be mixed with other sources")
    from weightlift.downloader.sources.axom import AxomClient, resolve_axom
    from weightlift.downloader.sources.tensorone import TensorOneClient, resolve_tensorone

    ref = parse_platform_uri(sources[0])
    async with open_session(ref.platform, os.environ if env is None else env,
                            **session_options) as session:
        if ref.platform == "axom":
            resolved = await resolve_axom(AxomClient(session), ref)
        else:
            resolved = await resolve_tensorone(TensorOneClient(session), ref)
        yield resolved


@asynccontextmanager
async def open_run(source: str, env: Mapping[str, str] | None = None,
                   **session_options: Any) -> AsyncIterator[RunFollower]:
    """A follower for a job URI (`axom://jobs/<id>`, `tensorone://jobs/<id>`)."""
    if not is_platform_uri(source):
        raise UsageError(f"watch follows a training run, not {source.split('?', 1)[0]!r}",
                         "use axom://jobs/<id> or tensorone://jobs/<id>")
    ref = parse_platform_uri(source)
    if ref.kind != "job" or ref.job_id is None:
        raise UsageError(f"watch follows a training run, not a {ref.kind}: {source}",
                         f"use {ref.platform}://jobs/<id>")
    from weightlift.downloader.sources.axom import AxomClient, AxomFollower
    from weightlift.downloader.sources.tensorone import TensorOneClient, TensorOneFollower

    async with open_session(ref.platform, os.environ if env is None else env,
                            **session_options) as session:
        follower: RunFollower
        if ref.platform == "axom":
            follower = AxomFollower(AxomClient(session), ref.job_id)
        else:
            follower = TensorOneFollower(TensorOneClient(session), ref.job_id)
        yield follower
