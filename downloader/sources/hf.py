"""`hf://ORG/NAME[@REVISION]`: a Hugging Face Hub repository as a manifest, resolved with
`huggingface_hub` (the token from `HF_TOKEN` or `hf auth login`, `HF_ENDPOINT`, the revision
pinned to its commit).

- Every file's size, and every LFS file's sha256, come from the repository's metadata
  (`repo_info(files_metadata=True)`), so each LFS file is checked for free.
- LFS files are fetched from where their `resolve` URL redirects: presigned storage (the CDN).
  The redirect is asked for here, with the token, and never followed: the token goes to the
  Hub's origin only, and the manifest holds the presigned URL, which `refresh` asks for again.
- Files the Hub serves itself (regular git files: config, tokenizer) need the token when the
  repository is private or gated. The engine sends no credentials anywhere, so those files go
  through a relay on loopback (`hf_relay.HubRelay`) that adds the token on the way to the Hub
  only; for a public repository the manifest holds the Hub URL itself.

The engine learns nothing of this: it gets a manifest, a refresh, and the expected parameter
count (the `safetensors.total` the Hub reports, when it does).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from weightlift.downloader.errors import PlatformError, UsageError, WeightliftError
from weightlift.downloader.manifest import Manifest, validate_manifest
from weightlift.downloader.redact import register_secret
from weightlift.downloader.sources.hf_uri import COMMIT, HfRef
from weightlift.downloader.sources.local import ResolvedSource

if TYPE_CHECKING:
    from huggingface_hub import HfApi

    from weightlift.downloader.sources.hf_relay import HubRelay

__all__ = ["HUB_EXTRA_HINT", "HubFileInfo", "open_hf"]

HUB_EXTRA_HINT = "pip install 'weightlift[hf]'"
RESOLVE_CONCURRENCY = 8  # HEAD requests to the Hub at once (each runs in a thread)
T = TypeVar("T")


@dataclass(frozen=True)
class HubFileInfo:
    """One file of the pinned commit, as the Hub's metadata describes it."""

    rel: str
    size: int
    blob_id: str | None  # git oid (of the LFS pointer for an LFS file)
    sha256: str | None  # LFS files only


def _import_hub() -> Any:
    # Unless the user chose otherwise: the client would otherwise fetch a registry of AI agents
    # for its User-Agent and cache it in HF_HOME, a write outside the output folder. Read once,
    # at the client's import.
    if "huggingface_hub" not in sys.modules:
        os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        import huggingface_hub
        import huggingface_hub.constants  # not one of the package's lazy attributes
    except ImportError:
        raise UsageError("hf:// sources need the Hugging Face Hub client, which is not "
                         "installed", HUB_EXTRA_HINT) from None
    return huggingface_hub


class HubError(PlatformError):
    """The Hub refused or failed (exit 4), with the Hub's own reason."""


def hub_error(exc: Exception, ref: HfRef, *, has_token: bool, endpoint: str) -> Exception:
    """A `huggingface_hub` or network exception as one line for a user (exit 4)."""
    from huggingface_hub import errors as e

    if isinstance(exc, e.OfflineModeIsEnabled):
        return HubError(f"{ref}: HF_HUB_OFFLINE is set, so the Hub cannot be asked",
                        "unset HF_HUB_OFFLINE to pull")
    if not isinstance(exc, e.HfHubHTTPError) or exc.response is None:
        if isinstance(exc, OSError | ConnectionError) or type(exc).__module__.startswith(
                ("httpx", "httpcore")):
            return HubError(f"cannot reach the Hub at {endpoint}: {type(exc).__name__}: "
                            f"{str(exc)[:200]}", "check HF_ENDPOINT and the network")
        return exc
    status = exc.response.status_code
    code = exc.response.headers.get("X-Error-Code")
    reason = (exc.response.headers.get("X-Error-Message") or exc.server_message or "").strip()
    said = f"{status}{' ' + code if code else ''}" + (f": {reason}" if reason else "")
    login = "set HF_TOKEN or run `hf auth login`"
    if isinstance(exc, e.GatedRepoError):
        if status == 401 or not has_token:
            return HubError(f"{ref} is a gated repository and needs a token (the Hub "
                            f"answered {said})",
                            f"accept its conditions on its Hub page, then {login}")
        return HubError(f"{ref} is a gated repository this token may not read (the Hub "
                        f"answered {said})",
                        "ask for access on its Hub page with the account the token belongs to")
    if isinstance(exc, e.RevisionNotFoundError):
        return HubError(f"{ref}: revision {ref.revision!r} not found (the Hub answered {said})",
                        "name a branch, a tag or a commit of the repository")
    if isinstance(exc, e.RepositoryNotFoundError):
        if status == 401 and not has_token:
            return HubError(f"{ref}: repository not found, or private and needs a token (the "
                            f"Hub answered {said})", f"{login}; check the name")
        datasets = " (datasets are hf://datasets/ORG/NAME)" if ref.repo_type == "model" else ""
        return HubError(f"{ref}: repository not found (the Hub answered {said})",
                        f"check the name{datasets}, and that the token may read it")
    if isinstance(exc, e.RemoteEntryNotFoundError):
        return HubError(f"{ref}: a listed file is missing (the Hub answered {said})",
                        "the repository changed while it was being read; run again")
    if status == 401:
        return HubError(f"{ref}: the Hub refused the token (it answered {said})",
                        "check HF_TOKEN, or run `hf auth login` again")
    if status == 403:
        return HubError(f"{ref}: the Hub refused access (it answered {said})",
                        "check that the token has read access to the repository")
    return HubError(f"{ref}: the Hub answered {said}", "run again later" if status >= 500
                    else None)


class HubClient:
    """The few `huggingface_hub` calls a pull needs, each run in a thread (the library is
    synchronous) and each failure turned into one line (`hub_error`)."""

    def __init__(self, ref: HfRef, env: Mapping[str, str]) -> None:
        hub = _import_hub()
        self.ref = ref
        self.endpoint = (env.get("HF_ENDPOINT", "").strip() or hub.constants.ENDPOINT).rstrip("/")
        token = env.get("HF_TOKEN", "").strip() or hub.get_token()
        self.token: str | None = token or None
        register_secret(self.token)  # never printed, whatever a library puts in a message
        self._api: HfApi = hub.HfApi(endpoint=self.endpoint, token=self.token or False)
        self._sem = asyncio.Semaphore(RESOLVE_CONCURRENCY)

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        async with self._sem:
            try:
                return await asyncio.to_thread(fn, *args, **kwargs)
            except WeightliftError:
                raise
            except Exception as exc:
                err = hub_error(exc, self.ref, has_token=self.token is not None,
                                endpoint=self.endpoint)
                if err is exc:
                    raise
                raise err from None

    async def info(self) -> Any:
        """The repository at the revision, with file metadata (sizes, oids, LFS sha256)."""
        return await self._call(self._api.repo_info, self.ref.repo_id,
                                repo_type=self.ref.repo_type, revision=self.ref.revision,
                                files_metadata=True)

    def resolve_url(self, commit: str, rel: str) -> str:
        return (f"{self.endpoint}/{self.ref.url_prefix}{self.ref.repo_id}/resolve/{commit}/"
                f"{quote(rel)}")

    async def locate(self, commit: str, f: HubFileInfo) -> str | None:
        """Where the Hub redirects `resolve` for ``f``: a storage URL, or None when the Hub
        serves the file itself. The redirect is read, not followed (the token stays here)."""
        from huggingface_hub import get_hf_file_metadata

        url = self.resolve_url(commit, f.rel)
        meta = await self._call(get_hf_file_metadata, url, token=self.token or False,
                                endpoint=self.endpoint, retry_on_errors=True)
        if meta.commit_hash is not None and meta.commit_hash != commit:
            raise HubError(f"{self.ref}: the Hub answered for commit {meta.commit_hash[:12]} "
                           f"when asked for {commit[:12]}")
        if meta.size is not None and meta.size != f.size:
            raise HubError(f"{self.ref}: {f.rel} is {meta.size:,} bytes by its redirect and "
                           f"{f.size:,} by the repository's listing")
        location = str(meta.location)
        from weightlift.downloader.sources.hf_relay import origin

        if origin(location) == origin(self.endpoint):
            return None
        return location


def files_of(info: Any) -> list[HubFileInfo]:
    """The commit's files from `repo_info(files_metadata=True)` (pure over its siblings)."""
    out: list[HubFileInfo] = []
    for s in info.siblings or []:
        lfs = s.lfs
        size = lfs.size if lfs is not None else s.size
        if size is None:
            raise HubError(f"the Hub listed {s.rfilename!r} without its size")
        out.append(HubFileInfo(s.rfilename, int(size), s.blob_id,
                               lfs.sha256 if lfs is not None else None))
    return out


def expected_params_of(info: Any) -> int | None:
    """The parameter count the Hub reports for a model's safetensors weights, if any."""
    st = getattr(info, "safetensors", None)
    total = getattr(st, "total", None) if st is not None else None
    return total if isinstance(total, int) and total > 0 else None


class HubManifest:
    """Builds (and rebuilds, for `refresh`) the manifest of one pinned commit; owns the relay,
    started the first time a file the Hub serves itself needs the token (call `close`)."""

    def __init__(self, client: HubClient, commit: str, files: list[HubFileInfo], *,
                 needs_token: bool) -> None:
        self.client = client
        self.commit = commit
        self.files = files
        self.needs_token = needs_token
        self.relay: HubRelay | None = None

    async def _relayed(self, hub_url: str) -> str:
        if not self.needs_token:
            return hub_url  # public: the engine fetches it from the Hub as it is
        if self.relay is None:
            from weightlift.downloader.sources.hf_relay import HubRelay

            relay = HubRelay(self.client.endpoint, self.client.token or "")
            await relay.start()
            self.relay = relay
        return self.relay.url_for(hub_url)

    async def close(self) -> None:
        if self.relay is not None:
            await self.relay.close()

    async def build(self) -> Manifest:
        """Ask the Hub where each LFS file is (fresh presigned URLs) and make the manifest."""
        lfs = [f for f in self.files if f.sha256 is not None]
        # With no LFS file, one regular file is still asked for: a gated repository refuses
        # files (not metadata), and that refusal should come now, as one line.
        probe = lfs or self.files[:1]
        locations = await asyncio.gather(*(self.client.locate(self.commit, f) for f in probe))
        located = {f.rel: loc for f, loc in zip(probe, locations, strict=True)}
        entries: list[dict[str, Any]] = []
        for f in self.files:
            url = located.get(f.rel) if f.sha256 is not None else None
            if url is None:  # served by the Hub itself (a regular file, or an odd LFS one)
                url = await self._relayed(self.client.resolve_url(self.commit, f.rel))
            entry: dict[str, Any] = {"rel": f.rel, "size": f.size, "url": url}
            if f.sha256 is not None:
                entry["sha256"] = f.sha256
            entries.append(entry)
        ref = self.client.ref
        # The id names the repository (a later commit updates the same model in the same
        # folder); the commit is the manifest's version, kept as the receipt's `revision`.
        return validate_manifest({"model_id": f"{ref.url_prefix}{ref.repo_id}",
                                  "name": ref.repo_id, "version": self.commit,
                                  "files": entries})


@asynccontextmanager
async def open_hf(ref: HfRef, env: Mapping[str, str]) -> AsyncIterator[ResolvedSource]:
    """Resolve ``ref`` into a manifest pinned to the revision's commit. A relay for Hub-served
    files of a private or gated repository runs inside the block (the pull needs it)."""
    client = HubClient(ref, env)
    info = await client.info()
    commit = getattr(info, "sha", None)
    if not isinstance(commit, str) or not COMMIT.fullmatch(commit):
        raise HubError(f"{ref}: the Hub did not say which commit the revision is")
    files = files_of(info)
    if not files:
        raise HubError(f"{ref} has no files at commit {commit[:12]}")
    builder = HubManifest(client, commit, files,
                          needs_token=client.token is not None and bool(info.private or info.gated))
    try:
        manifest = await builder.build()
        params = expected_params_of(info) if ref.repo_type == "model" else None
        shown = ref.revision if ref.revision == commit else f"{ref.revision}, commit {commit[:12]}"
        yield ResolvedSource(
            manifest, builder.build, params,
            f"{ref.url_prefix}{ref.repo_id} ({shown}; {len(files)} file(s)"
            + (f", {params:,} parameters" if params else "") + ")")
    finally:
        await builder.close()
