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
# Limits (README "Limits"): parsing peaks at about 5x the manifest's size in memory, so the byte
# cap is what bounds memory; 100,000 files is far beyond any checkpoint (and is tested).
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
MAX_FILES = 100_000
MAX_REL_BYTES = 1024  # a whole `rel`, in UTF-8
MAX_COMPONENT_BYTES = 255  # NAME_MAX of ext4, XFS, btrfs, APFS; NTFS's 255 UTF-16 units
MAX_URL_BYTES = 16 * 1024  # presigned URLs with a session token are ~2 KiB
MAX_FILE_SIZE = (1 << 63) - 1  # off_t: no filesystem holds a larger file
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_DRIVE = re.compile(r"^[A-Za-z]:")
# Characters Windows forbids and control characters (C0, DEL, C1): a name with them cannot
# land everywhere, and a control character could rewrite the terminal it is shown on.
_FORBIDDEN = re.compile(r'[\x00-\x1f\x7f-\x9f<>:"|?*]')
# Bidirectional overrides and line/paragraph separators: a name with them displays as another
# name ("evil\u202egnp.bin" shows as "evilnib.png") or breaks a one-line message.
_DECEPTIVE = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
# Device names Windows (and SMB/NTFS mounts) reserve in every folder, with any extension.
_RESERVED = frozenset(["con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
                       *(f"lpt{i}" for i in range(1, 10))])
# Characters a URL must never carry raw: controls and whitespace (presigned URLs arrive
# percent-encoded; a raw CR/LF would split the request line).
_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")


class _FileIn(BaseModel):
    """One file as it arrives in JSON; extra fields are tolerated and ignored. Strict: a size
    of "10", 10.0 or true is a broken manifest, not a number to guess at."""

    model_config = ConfigDict(extra="ignore", strict=True)
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
    if _DECEPTIVE.search(rel):
        raise bad("contains a bidirectional-override or line-separator character")
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
        if part.split(".", 1)[0].rstrip(" ").casefold() in _RESERVED:
            raise bad("uses a device name Windows reserves (CON, NUL, COM1, ...)")
    if _fold(parts[0]) == WORK_DIR_NAME:
        raise bad(f"uses the reserved folder {WORK_DIR_NAME!r}")
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        raise bad("is not valid Unicode") from None
    return rel


def _fold(rel: str) -> str:
    """The key under which two names collide on a case-insensitive or normalisation-insensitive
    filesystem: Unicode's canonical caseless match, NFD(casefold(NFD(name))).

    Applied whatever the output folder's own filesystem does: case sensitivity can differ per
    folder (ext4 casefold, NTFS per-directory flags), so one probe cannot speak for a tree, and
    a folder pulled on Linux is often copied to macOS or Windows later. Full case folding is a
    superset of what APFS and NTFS fold ("ß" and "ss" collide here): over-refusing such a pair
    costs nothing real, missing one would let one file silently replace another."""
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", rel).casefold())


def _show(rel: str) -> str:
    """A name for a message: non-ASCII escaped, so names that differ only in normalisation
    look different, and nothing in it can break the line."""
    return repr(rel.encode("ascii", "backslashreplace").decode("ascii"))


def _check_url(url: str, rel: str) -> str:
    """http(s) with a host, a valid port, no user:password@, no raw control or space
    characters, at most MAX_URL_BYTES. Refused: file:, ftp:, s3:, gs:, data:, javascript:,
    scheme-relative //host/x, and credentials in the URL (they would be sent to storage and
    are a secret in a file)."""
    if len(url.encode("utf-8", "surrogatepass")) > MAX_URL_BYTES:
        raise BadManifest(f"bad manifest: {_show(rel)} has a URL longer than the limit of "
                          f"{MAX_URL_BYTES} bytes")
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if not port_ok:
        raise BadManifest(f"bad manifest: {_show(rel)} has an unparseable URL "
                          "(bad host or port)")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadManifest(
            f"bad manifest: {_show(rel)} has a URL that is not http(s): {_show(redact_url(url))}",
            "only http:// and https:// URLs are fetched",
        )
    if parts.username is not None or parts.password is not None:
        raise BadManifest(
            f"bad manifest: {_show(rel)} has a user name or password in its URL",
            "credentials do not belong in a URL; use a presigned URL",
        )
    if _URL_FORBIDDEN.search(url):
        raise BadManifest(f"bad manifest: {_show(rel)} has a URL with a raw space or control "
                          "character", "percent-encode it")
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
        raise BadManifest(f"bad manifest: {len(head.files):,} files, more than the limit of "
                          f"{MAX_FILES:,} files per manifest")
    files: list[ManifestFile] = []
    seen: dict[str, str] = {}
    for index, raw in enumerate(head.files):
        try:
            entry = _FileIn.model_validate(raw)
        except ValidationError as exc:
            raise BadManifest(f"bad manifest: files[{index}]: {_first_error(exc)}") from None
        rel = check_rel(entry.rel)
        if entry.size is not None and entry.size < 0:
            raise BadManifest(f"bad manifest: {_show(rel)} has a negative size ({entry.size})")
        if entry.size is not None and entry.size > MAX_FILE_SIZE:
            raise BadManifest(f"bad manifest: {_show(rel)} has a size larger than any file "
                              f"can be ({str(entry.size)[:30]}...)")
        _check_url(entry.url, rel)
        sha = entry.sha256
        if sha is not None:
            if not _SHA256.fullmatch(sha):
                raise BadManifest(
                    f"bad manifest: {_show(rel)} has a sha256 that is not 64 hex digits")
            sha = sha.lower()
        key = _fold(rel)
        if key in seen:
            other = seen[key]
            if other == rel:
                raise BadManifest(f"bad manifest: {_show(rel)} is named twice")
            raise BadManifest(
                f"bad manifest: {_show(other)} and {_show(rel)} are the same name ignoring "
                "case and Unicode normalisation",
                "they would be one file on macOS and Windows; the manifest is broken")
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
                    f"bad manifest: {_show(f.rel)} lies inside "
                    f"{_show('/'.join(f.rel.split('/')[:depth]))}, which is also a file"
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
    except ValueError:  # an integer of more than 4,300 digits
        raise BadManifest("bad manifest: a number in it is too long") from None
    return validate_manifest(data)


def load_manifest(path: Path) -> Manifest:
    """Read and validate a manifest file (or a pipe, e.g. ``<(curl ...)``): at most
    MAX_MANIFEST_BYTES are read, whatever the file claims (``/dev/zero`` ends too)."""
    too_big = BadManifest(
        f"bad manifest: {path} is larger than the limit of {MAX_MANIFEST_BYTES >> 20} MiB",
        "split the model into several manifests")
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise too_big
        with open(path, "rb") as fh:
            data = fh.read(MAX_MANIFEST_BYTES + 1)
        if len(data) > MAX_MANIFEST_BYTES:
            raise too_big
    except FileNotFoundError:
        raise BadManifest(f"manifest not found: {path}") from None
    except IsADirectoryError:
        raise BadManifest(f"manifest is a folder, not a file: {path}") from None
    except OSError as exc:
        raise BadManifest(f"cannot read manifest {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadManifest("bad manifest: not valid UTF-8") from None
    del data  # one copy of a large manifest in memory, not two
    return parse_manifest(text)


def manifest_from_urls(urls: list[str]) -> Manifest:
    """A manifest for plain URLs: each file is named by the last segment of its URL path."""
    files = []
    for url in urls:
        _check_url(url, url.split("?", 1)[0])
        name = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
        files.append({"rel": unquote(name), "url": url})
    return validate_manifest({"files": files})
