"""`--hf-cache [DIR]`: land an hf:// pull in the Hugging Face cache layout, so `transformers`,
vLLM and `snapshot_download(..., local_files_only=True)` find it offline.

    DIR/models--ORG--NAME/blobs/<etag>                 the content (LFS: its sha256; other
                                                       files: their git blob id)
    DIR/models--ORG--NAME/snapshots/<commit>/<file>    relative symlinks to the blobs
    DIR/models--ORG--NAME/refs/<revision>              the commit (unless a commit was asked)

The pull itself runs as any other, into `DIR/models--ORG--NAME/.weightlift-staging/` (resumable,
verified, "a final name is always whole and right"); once it succeeded, every file is hard-linked
into `blobs/` (same filesystem: no copy, no second write) and the snapshot's symlinks and the ref
are each replaced atomically. The staging folder keeps its files and receipt, so a re-run
fetches nothing and `weightlift verify` still works on it.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import shutil
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from weightlift.downloader.errors import UsageError, write_failed
from weightlift.downloader.manifest import Manifest
from weightlift.downloader.sources.hf_uri import COMMIT, HfRef, is_hf_uri, parse_hf_uri
from weightlift.downloader.sources.local import ResolvedSource

__all__ = ["STAGING", "HfCachePlan", "check_hf_cache_sources", "default_cache_dir",
           "link_snapshot", "pull_into_hf_cache", "repo_folder"]

R = TypeVar("R")
STAGING = ".weightlift-staging"
TMP = ".weightlift-tmp"


def default_cache_dir() -> Path:
    """The cache `huggingface_hub` uses (`HF_HUB_CACHE`, else `HF_HOME/hub`)."""
    from weightlift.downloader.sources.hf import _import_hub

    return Path(_import_hub().constants.HF_HUB_CACHE)


def repo_folder(cache: Path, ref: HfRef) -> Path:
    """`models--ORG--NAME` (or `datasets--…`) under ``cache``, as `huggingface_hub` names it."""
    return cache / "--".join([f"{ref.repo_type}s", *ref.repo_id.split("/")])


def git_blob_id(path: Path) -> str:
    """The git object id of the file at ``path``: the Hub's ETag for a regular file."""
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size, usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class _Placer:
    """Atomic replacement of cache entries: each is made under a temporary name in
    ``repo_dir/.weightlift-tmp`` (where `huggingface_hub`'s cache scan does not look, so a
    crash leaves nothing it would call corrupted) and renamed into place."""

    def __init__(self, repo_dir: Path) -> None:
        self.tmp_dir = repo_dir / TMP
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._n = 0

    def _tmp(self) -> Path:
        self._n += 1
        tmp = self.tmp_dir / f"{os.getpid()}-{self._n}"
        tmp.unlink(missing_ok=True)
        return tmp

    def symlink(self, target: str, link: Path) -> None:
        tmp = self._tmp()
        os.symlink(target, tmp)
        os.replace(tmp, link)

    def text(self, text: str, path: Path) -> None:
        tmp = self._tmp()
        tmp.write_text(text)
        os.replace(tmp, path)

    def blob(self, src: Path, blob: Path) -> None:
        """``src``'s content at ``blob``: a hard link, or a copy where links are refused."""
        if blob.is_file() and not blob.is_symlink() and \
                blob.stat().st_size == src.stat().st_size:
            return  # content-addressed: the same name is the same content
        tmp = self._tmp()
        try:
            os.link(src, tmp)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOTSUP):
                raise
            shutil.copyfile(src, tmp)
        os.replace(tmp, blob)

    def close(self) -> None:
        try:
            self.tmp_dir.rmdir()
        except OSError:
            pass  # another pull's entries are in it


def link_snapshot(repo_dir: Path, staging: Path, ref: HfRef, commit: str,
                  manifest: Manifest) -> Path:
    """Lay the pulled files of ``staging`` out as the snapshot of ``commit``; return its path.
    Raises TransferFailed/DiskFull (exit 3) when the cache cannot be written."""
    blobs = repo_dir / "blobs"
    snapshot = repo_dir / "snapshots" / commit
    try:
        place = _Placer(repo_dir)
        blobs.mkdir(parents=True, exist_ok=True)
        for f in manifest.files:
            src = staging / f.rel
            etag = f.sha256 or git_blob_id(src)
            place.blob(src, blobs / etag)
            link = snapshot / f.rel
            link.parent.mkdir(parents=True, exist_ok=True)
            place.symlink(os.path.relpath(blobs / etag, link.parent), link)
        if ref.revision != commit:
            ref_file = repo_dir / "refs" / ref.revision
            ref_file.parent.mkdir(parents=True, exist_ok=True)
            place.text(commit, ref_file)  # no newline: huggingface_hub reads the file whole
        place.close()
    except OSError as exc:
        raise write_failed(exc, repo_dir, "the Hugging Face cache") from None
    return snapshot


def check_hf_cache_sources(sources: list[str]) -> None:
    """The Hugging Face cache holds Hub repositories: one hf:// SOURCE, else UsageError."""
    if len(sources) != 1 or not is_hf_uri(sources[0]):
        raise UsageError("--hf-cache needs one hf:// SOURCE")


@dataclass(frozen=True)
class HfCachePlan:
    """Where a pull lands for `--hf-cache`: pull into ``staging`` as into any folder, then
    `link` what was pulled into the cache layout. Any pull front end can drive it."""

    ref: HfRef
    commit: str
    repo_dir: Path
    manifest: Manifest

    @property
    def staging(self) -> Path:
        return self.repo_dir / STAGING

    @classmethod
    def of(cls, sources: list[str], source: ResolvedSource, cache_arg: str) -> HfCachePlan:
        """The plan for ``source`` (resolved from ``sources``) in the cache ``cache_arg``, or
        in the cache `huggingface_hub` uses when it is empty."""
        check_hf_cache_sources(sources)
        commit = source.manifest.version or ""
        if not COMMIT.fullmatch(commit):
            raise UsageError("--hf-cache needs the commit of the source, which it lacks")
        ref = parse_hf_uri(sources[0])
        cache = Path(cache_arg).expanduser() if cache_arg else default_cache_dir()
        return cls(ref, commit, repo_folder(cache, ref), source.manifest)

    def link(self, pulled: Iterable[str]) -> Path:
        """Link the files named ``pulled`` (the manifest may have been filtered on the way,
        by --include/--exclude) into the snapshot of the commit; return the snapshot path."""
        keep = set(pulled)
        files = tuple(f for f in self.manifest.files if f.rel in keep)
        return link_snapshot(self.repo_dir, self.staging, self.ref, self.commit,
                             replace(self.manifest, files=files))


async def pull_into_hf_cache(
    source: ResolvedSource, sources: list[str], cache_arg: str,
    pull: Callable[[Path], Awaitable[R]], pulled: Callable[[R], Iterable[str] | None],
) -> tuple[R, Path | None]:
    """Run ``pull`` (any front end's pull, returning its report) into the plan's staging
    folder; when ``pulled(report)`` names the files that landed (None: the pull failed or
    fetched nothing for real, e.g. a dry run), link them into the cache. Returns the report
    and the snapshot path (None when nothing was linked)."""
    plan = await asyncio.to_thread(HfCachePlan.of, sources, source, cache_arg)
    report = await pull(plan.staging)
    rels = pulled(report)
    if rels is None:
        return report, None
    return report, await asyncio.to_thread(plan.link, list(rels))
