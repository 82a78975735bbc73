"""`--include` / `--exclude`: which of a manifest's files a pull fetches. Pure.

Patterns are shell globs matched against the file's path in the manifest (``rel``), as
`hf download --include/--exclude` does: ``*`` also crosses ``/``, so ``*.safetensors`` matches
``sub/model.safetensors``. A file is kept when it matches an include pattern (or none is given)
and no exclude pattern.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from fnmatch import fnmatchcase

from weightlift.downloader.errors import UsageError
from weightlift.downloader.manifest import Manifest
from weightlift.downloader.resolver import RefreshFn
from weightlift.downloader.sources.local import ResolvedSource


@dataclasses.dataclass(frozen=True)
class Selection:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def of(cls, include: str | Sequence[str] | None,
           exclude: str | Sequence[str] | None) -> Selection:
        def norm(value: str | Sequence[str] | None) -> tuple[str, ...]:
            if value is None:
                return ()
            return (value,) if isinstance(value, str) else tuple(value)

        return cls(norm(include), norm(exclude))

    @property
    def active(self) -> bool:
        return bool(self.include or self.exclude)

    def keeps(self, rel: str) -> bool:
        if self.include and not any(fnmatchcase(rel, p) for p in self.include):
            return False
        return not any(fnmatchcase(rel, p) for p in self.exclude)

    def apply(self, manifest: Manifest) -> Manifest:
        """The manifest with only the selected files (the same object when nothing is set)."""
        if not self.active:
            return manifest
        return dataclasses.replace(manifest,
                                   files=tuple(f for f in manifest.files if self.keeps(f.rel)))


def select(source: ResolvedSource, selection: Selection) -> ResolvedSource:
    """``source`` reduced to the selected files; its refresh is reduced the same way. Raises
    UsageError when the patterns leave nothing to fetch."""
    if not selection.active:
        return source
    manifest = selection.apply(source.manifest)
    if not manifest.files:
        shown = ", ".join([*(f"--include {p}" for p in selection.include),
                           *(f"--exclude {p}" for p in selection.exclude)])
        names = ", ".join(f.rel for f in source.manifest.files[:5])
        more = "…" if len(source.manifest.files) > 5 else ""
        raise UsageError(f"{shown} leave(s) none of the {len(source.manifest.files)} file(s) "
                         "to fetch", f"the source has: {names}{more}")
    refresh: RefreshFn | None = None
    if source.refresh is not None:
        inner = source.refresh

        async def refresh_selected() -> Manifest:
            return selection.apply(await inner())

        refresh = refresh_selected
    return dataclasses.replace(source, manifest=manifest, refresh=refresh)
