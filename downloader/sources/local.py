"""Local sources: a manifest JSON file, or plain http(s) URLs. Neither can be refreshed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from weightlift.downloader.errors import UsageError
from weightlift.downloader.manifest import Manifest, load_manifest, manifest_from_urls
from weightlift.downloader.resolver import RefreshFn


@dataclass(frozen=True)
class ResolvedSource:
    manifest: Manifest
    refresh: RefreshFn | None
    expected_params: int | None
    description: str


def _is_url(text: str) -> bool:
    return text.lower().startswith(("http://", "https://"))


def resolve_local(sources: list[str]) -> ResolvedSource:
    """Turn manifest-file or URL SOURCE arguments into a manifest (no network needed); platform
    URIs are `resolve.open_source`'s."""
    urls = [s for s in sources if _is_url(s)]
    if urls and len(urls) != len(sources):
        raise UsageError("mix of URLs and manifest files; pass one manifest, or only URLs")
    if urls:
        return ResolvedSource(manifest_from_urls(urls), None, None, f"{len(urls)} URL(s)")
    if len(sources) != 1:
        raise UsageError("pass one manifest file (or several http(s) URLs)")
    path = Path(sources[0])
    return ResolvedSource(load_manifest(path), None, None, str(path))
