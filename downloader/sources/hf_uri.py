"""`hf://ORG/NAME[@REVISION]` and `hf://datasets/ORG/NAME[@REVISION]` SOURCE URIs, parsed into
a value (pure). Anything malformed is a usage error, named in one line."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from weightlift.downloader.errors import UsageError

__all__ = ["HF_SCHEME", "HfRef", "is_hf_uri", "parse_hf_uri"]

HF_SCHEME = "hf://"
RepoType = Literal["model", "dataset"]
FORMS = "hf://ORG/NAME[@REVISION] or hf://datasets/ORG/NAME[@REVISION]"

# The Hub's own rules for a namespace and a repository name: letters, digits, '-', '_', '.',
# not starting or ending with '-' or '.', no '--' or '..', at most 96 characters.
_NAME = re.compile(r"(?!.*(?:--|\.\.))[A-Za-z0-9](?:[A-Za-z0-9_.\-]{0,94}[A-Za-z0-9_])?")
# A branch, tag or commit: git ref characters; '/' allowed (`refs/pr/1`), nothing that could
# climb or break a path or a line.
_REVISION = re.compile(r"(?!.*\.\.)(?!/)[A-Za-z0-9_.\-/]{1,255}(?<!/)")
COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class HfRef:
    """One Hub repository at a revision (a branch, a tag or a commit; default `main`)."""

    repo_type: RepoType
    repo_id: str
    revision: str = "main"

    @property
    def url_prefix(self) -> str:
        """The path prefix of this repository's `resolve` URLs (`datasets/` for datasets)."""
        return "" if self.repo_type == "model" else "datasets/"

    def __str__(self) -> str:
        return f"{HF_SCHEME}{self.url_prefix}{self.repo_id}@{self.revision}"


def is_hf_uri(text: str) -> bool:
    """True when ``text`` uses the hf:// scheme (well-formed or not)."""
    return text.strip().lower().startswith(HF_SCHEME)


def parse_hf_uri(text: str) -> HfRef:
    """Parse an hf:// SOURCE; raise UsageError (exit 2) for anything else."""
    raw = text.strip()
    shown = (raw if len(raw) <= 120 else raw[:117] + "...").encode("unicode_escape").decode()

    def bad(why: str) -> UsageError:
        return UsageError(f"bad SOURCE {shown!r}: {why}", f"use {FORMS}")

    if not is_hf_uri(raw):
        raise bad("not an hf:// URI")
    rest = raw[len(HF_SCHEME):]
    path, at, revision = rest.partition("@")
    if at and not _REVISION.fullmatch(revision):
        raise bad("the revision after '@' is not a branch, tag or commit name")
    parts = path.split("/")
    repo_type: RepoType = "model"
    if parts[0] in ("datasets", "models") and len(parts) == 3:
        repo_type = "dataset" if parts[0] == "datasets" else "model"
        parts = parts[1:]
    if parts[0] == "spaces":
        raise bad("Spaces are not model weights; pull a model or a dataset")
    if parts[0] in ("datasets", "models"):  # reserved on the Hub: never an ORG
        raise bad(f"expected {parts[0]}/ORG/NAME")
    if len(parts) != 2 or not all(parts):
        raise bad("expected ORG/NAME")
    for part in parts:
        if not _NAME.fullmatch(part):
            raise bad(f"{part!r} is not a valid Hub name")
    return HfRef(repo_type, "/".join(parts), revision if at else "main")
