"""The download manifest (Axom shape) and its validation: nothing hostile gets past here.

A manifest names files by ``rel`` (a relative POSIX path inside the output folder), their size
and a URL. Validation is pure: it takes parsed JSON and returns a frozen ``Manifest`` or raises
``BadManifest`` with one line that names the offending entry.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, ValidationError

from weightlift.downloader.errors import BadManifest, redact_url
from weightlift.downloader.strict_json import StrictJSONError, loads_strict

# Our own state lives under this name in the output folder; a manifest may not claim it.
WORK_DIR_NAME = ".weightlift"
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
MAX_FILES = 200_000
MAX_REL_BYTES = 1024
MAX_COMPONENT_BYTES = 255
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_DRIVE = re.compile(r"^[A-Za-z]:")
# Characters Windows forbids and control characters: a name with them cannot land everywhere.
_FORBIDDEN = re.compile(r'[\x00-\x1f\x7f<>:"|?*]')


class _FileIn(BaseModel):
    """One file as it arrives in JSON; extra fields are tolerated and ignored."""

    model_config = ConfigDict(extra="ignore")
    rel: str
    size: int | None = None
    url: str
    sha256: str | None = None


class _ManifestIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model_id: str | None = None
    name: str | None = None
    version: str | None = None
    files: list[Any]


@dataclass(frozen=True)
class ManifestFile:
    """One file to fetch. ``size`` is None when the source does not know it (plain URLs)."""

    rel: str
    url: str
    size: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class Manifest:
    files: tuple[ManifestFile, ...]
    model_id: str | None = None
    name: str | None = None
    version: str | None = None

    def by_rel(self) -> dict[str, ManifestFile]:
        return {f.rel: f for f in self.files}

    @property
    def known_bytes(self) -> int:
        return sum(f.size or 0 for f in self.files)


def check_rel(rel: str) -> str:
    """Return ``rel`` if it is a safe relative path confined to the output folder, else raise."""
    shown = rel if len(rel) <= 80 else rel[:77] + "..."
    shown = shown.encode("unicode_escape").decode("ascii")

    def bad(why: str) -> BadManifest:
        return BadManifest(
            f"bad manifest: file name {shown!r} {why}",
            "the manifest must name files by plain relative paths",
        )

    if not rel or not rel.strip():
        raise bad("is empty")
    if len(rel.encode("utf-8", "surrogatepass")) > MAX_REL_BYTES:
        raise bad(f"is longer than {MAX_REL_BYTES} bytes")
    if rel.startswith(("/", "\\")):
        raise bad("is absolute")
    if _DRIVE.match(rel):
        raise bad("has a drive letter")
    if _FORBIDDEN.search(rel):
        raise bad("contains a control or reserved character")
    if "\\" in rel:
        raise bad("contains a backslash")
    parts = rel.split("/")
    for part in parts:
        if part == "..":
            raise bad("climbs out of the output folder with '..'")
        if part in ("", "."):
            raise bad("has an empty or '.' path component")
        if part != part.strip() or part.endswith("."):
            raise bad("has a component with leading/trailing spaces or a trailing dot")
        if len(part.encode("utf-8", "surrogatepass")) > MAX_COMPONENT_BYTES:
            raise bad(f"has a component longer than {MAX_COMPONENT_BYTES} bytes")
    if parts[0].casefold() == WORK_DIR_NAME:
        raise bad(f"uses the reserved folder {WORK_DIR_NAME!r}")
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        raise bad("is not valid Unicode") from None
    return rel


def _fold(rel: str) -> str:
    """The key under which two names collide on a case-insensitive, normalising filesystem."""
    return unicodedata.normalize("NFC", rel).casefold()


def _check_url(url: str, rel: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        raise BadManifest(f"bad manifest: {rel!r} has an unparseable URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadManifest(
            f"bad manifest: {rel!r} has a URL that is not http(s): {redact_url(url)}",
            "only http:// and https:// URLs are fetched",
        )
    return url


def validate_manifest(data: Any) -> Manifest:
    """Turn parsed JSON into a Manifest, or raise BadManifest naming the first problem."""
    if not isinstance(data, dict):
        raise BadManifest("bad manifest: the top level is not a JSON object")
    if "files" not in data:
        raise BadManifest("bad manifest: no 'files' list")
    if not isinstance(data["files"], list):
        raise BadManifest("bad manifest: 'files' is not a list")
    try:
        head = _ManifestIn.model_validate(data)
    except ValidationError as exc:
        raise BadManifest(f"bad manifest: {_first_error(exc)}") from None
    if len(head.files) > MAX_FILES:
        raise BadManifest(f"bad manifest: {len(head.files)} files is more than {MAX_FILES}")
    files: list[ManifestFile] = []
    seen: dict[str, str] = {}
    for index, raw in enumerate(head.files):
        try:
            entry = _FileIn.model_validate(raw)
        except ValidationError as exc:
            raise BadManifest(f"bad manifest: files[{index}]: {_first_error(exc)}") from None
        rel = check_rel(entry.rel)
        if entry.size is not None and entry.size < 0:
            raise BadManifest(f"bad manifest: {rel!r} has a negative size ({entry.size})")
        _check_url(entry.url, rel)
        sha = entry.sha256
        if sha is not None:
            if not _SHA256.match(sha):
                raise BadManifest(f"bad manifest: {rel!r} has a sha256 that is not 64 hex digits")
            sha = sha.lower()
        key = _fold(rel)
        if key in seen:
            other = seen[key]
            how = "twice" if other == rel else f"and {other!r} (same name ignoring case/Unicode)"
            raise BadManifest(f"bad manifest: {rel!r} is named {how}")
        seen[key] = rel
        files.append(ManifestFile(rel=rel, url=entry.url, size=entry.size, sha256=sha))
    _check_no_file_is_a_folder(files)
    return Manifest(
        files=tuple(files), model_id=head.model_id, name=head.name, version=head.version
    )


def _check_no_file_is_a_folder(files: list[ManifestFile]) -> None:
    names = {_fold(f.rel) for f in files}
    for f in files:
        parts = _fold(f.rel).split("/")
        for depth in range(1, len(parts)):
            prefix = "/".join(parts[:depth])
            if prefix in names:
                raise BadManifest(
                    f"bad manifest: {f.rel!r} lies inside {prefix!r}, which is also a file"
                )


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    return f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid"))


def parse_manifest(text: str | bytes) -> Manifest:
    """Parse manifest JSON text (strict: no NaN, no duplicate keys) into a Manifest."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise BadManifest("bad manifest: not valid UTF-8") from None

    try:
        data = loads_strict(text)
    except StrictJSONError as exc:
        if exc.key is not None:
            raise BadManifest(f"bad manifest: duplicate JSON key {exc.key!r}") from None
        raise BadManifest(f"bad manifest: {exc.constant} is not valid JSON") from None
    except json.JSONDecodeError as exc:
        raise BadManifest(
            f"bad manifest: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise BadManifest("bad manifest: JSON nested too deeply") from None
    return validate_manifest(data)


def load_manifest(path: Path) -> Manifest:
    """Read and validate a manifest file."""
    try:
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise BadManifest(
                f"bad manifest: {path} is {size} bytes, more than {MAX_MANIFEST_BYTES}"
            )
        data = path.read_bytes()
    except FileNotFoundError:
        raise BadManifest(f"manifest not found: {path}") from None
    except IsADirectoryError:
        raise BadManifest(f"manifest is a folder, not a file: {path}") from None
    except OSError as exc:
        raise BadManifest(f"cannot read manifest {path}: {exc.strerror}") from None
    return parse_manifest(data)


def manifest_from_urls(urls: list[str]) -> Manifest:
    """A manifest for plain URLs: each file is named by the last segment of its URL path."""
    files = []
    for url in urls:
        _check_url(url, url.split("?", 1)[0])
        name = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
        files.append({"rel": unquote(name), "url": url})
    return validate_manifest({"files": files})
