"""A Hugging Face Hub stand-in: the endpoints `huggingface_hub` calls to describe a repository
and download its files, with the Hub's headers, errors, private and gated repositories and
revisions (branches, tags, commits).

- `GET /api/{models|datasets}/ORG/NAME[/revision/REV]` (`?blobs=true`: sizes, git oids, LFS
  sha256), `GET /api/{models|datasets}/ORG/NAME/tree/REV[/PATH]` (`?recursive=true`);
- `HEAD|GET /[datasets/]ORG/NAME/resolve/REV/PATH`: an LFS file answers 302 to the storage
  emulator (a presigned URL that really expires); a regular file answers 307 to a same-host
  `/api/resolve-cache/...` URL that serves it (Range works; `cache_redirects = False` serves it
  at once); all carry `X-Repo-Commit` and `ETag`, LFS also `X-Linked-Etag` and `X-Linked-Size`;
- errors as the Hub sends them: `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`,
  `EntryNotFound`, `GatedRepo`) and `X-Error-Message` headers, a JSON `{"error": ...}` body;
  401 for a private or unknown repository asked without a token (the Hub does not say which),
  404 with a token, 401 then 403 for a gated one.

One token (`HubEmulator.token`) reads every private repository and the gated ones it was
granted (`grant`). LFS objects live in the storage emulator under `lfs/<sha256>`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, unquote

from aiohttp import web

from weightlift.emulator.http_range import select
from weightlift.emulator.serve import ThreadedServer, ThreadedStorage
from weightlift.emulator.storage import StorageEmulator

RepoType = Literal["model", "dataset"]
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".onnx", ".parquet", ".h5",
                ".msgpack", ".npz", ".ckpt")
LFS_MIN_SIZE = 10 << 20  # the Hub refuses regular (non-LFS) files above 10 MiB
_TYPES: dict[str, RepoType] = {"models": "model", "datasets": "dataset"}


def git_blob_id(data: bytes) -> str:
    """The git object id of a file with content ``data`` (what the Hub calls its blob id)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\n"
            f"size {size}\n").encode()


@dataclass(frozen=True)
class HubFile:
    """One file of a commit: LFS (content in storage under `lfs/<sha256>`) or regular."""

    path: str
    size: int
    blob_id: str  # git oid: of the content, or of the LFS pointer for an LFS file
    sha256: str | None = None  # LFS only
    data: bytes | None = None  # regular files only
    pointer_size: int = 0

    @property
    def storage_key(self) -> str:
        return f"lfs/{self.sha256}"


@dataclass
class HubRepo:
    repo_type: RepoType
    repo_id: str
    private: bool = False
    gated: Literal[False, "auto", "manual"] = False
    params: int | None = None  # what the Hub reports as `safetensors.total`
    commits: dict[str, dict[str, HubFile]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit

    def commit_of(self, revision: str) -> str | None:
        if revision in self.refs:
            return self.refs[revision]
        return revision if revision in self.commits else None


class HubEmulator:
    """Repositories, a token, and an aiohttp app that serves them (see the module docstring).
    ``storage`` serves LFS content; set ``storage_base_url`` once it is served."""

    def __init__(self, storage: StorageEmulator | None = None, *, url_lifetime: float = 600.0,
                 token: str | None = None) -> None:
        self.storage = storage if storage is not None else StorageEmulator(bucket="hf-lfs")
        self.storage_base_url = ""
        self.url_lifetime = url_lifetime
        # As the Hub does: a regular file's `resolve` answers 307 to a same-host
        # `/api/resolve-cache/...` URL that serves it (auth still required there).
        self.cache_redirects = True
        self.token = token or "hf_emu" + secrets.token_hex(16)
        self.repos: dict[tuple[RepoType, str], HubRepo] = {}
        self.granted: set[str] = set()  # gated repositories the token may read
        self.requests: list[tuple[str, str, bool]] = []  # method, path, had Authorization
        self._lock = threading.Lock()
        self._seq = itertools.count(1)

    # --- repositories ----------------------------------------------------------------------
    def create_repo(self, repo_id: str, *, repo_type: RepoType = "model", private: bool = False,
                    gated: Literal[False, "auto", "manual"] = False,
                    params: int | None = None) -> HubRepo:
        repo = HubRepo(repo_type, repo_id, private=private, gated=gated, params=params)
        self.repos[(repo_type, repo_id)] = repo
        return repo

    def commit(self, repo_id: str, files: Mapping[str, bytes | Path], *,
               repo_type: RepoType = "model", branch: str = "main") -> str:
        """A new commit on ``branch`` whose tree is exactly ``files``; returns its sha."""
        repo = self.repos[(repo_type, repo_id)]
        tree: dict[str, HubFile] = {}
        for path, content in sorted(files.items()):
            tree[path] = self._add_file(path, content)
        ident = f"{repo_id}\0{branch}\0{next(self._seq)}\0" + "\0".join(
            f"{f.path}:{f.blob_id}" for f in tree.values())
        sha = hashlib.sha1(ident.encode(), usedforsecurity=False).hexdigest()
        with self._lock:
            repo.commits[sha] = tree
            repo.refs[branch] = sha
        return sha

    def tag(self, repo_id: str, tag: str, commit: str, *, repo_type: RepoType = "model") -> None:
        self.repos[(repo_type, repo_id)].refs[tag] = commit

    def grant(self, repo_id: str) -> None:
        """Let the token read the gated repository ``repo_id``."""
        self.granted.add(repo_id)

    def _add_file(self, path: str, content: bytes | Path) -> HubFile:
        size = content.stat().st_size if isinstance(content, Path) else len(content)
        if not (path.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE):
            data = content.read_bytes() if isinstance(content, Path) else bytes(content)
            return HubFile(path, size, git_blob_id(data), data=data)
        if isinstance(content, Path):
            h = hashlib.sha256()
            with open(content, "rb") as fh:
                while block := fh.read(1 << 20):
                    h.update(block)
            sha = h.hexdigest()
        else:
            sha = hashlib.sha256(content).hexdigest()
        pointer = lfs_pointer(sha, size)
        f = HubFile(path, size, git_blob_id(pointer), sha256=sha, pointer_size=len(pointer))
        if f.storage_key not in self.storage.keys():
            if isinstance(content, Path):
                self.storage.put_file(f.storage_key, content)
            else:
                self.storage.put_bytes(f.storage_key, content)
        return f

    # --- the app ---------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization")
        self.requests.append((request.method, request.path, auth is not None))
        # The raw path: a revision like `refs%2Fpr%2F1` must stay one segment.
        parts = [unquote(p) for p in request.raw_path.split("?", 1)[0].split("/")[1:]]
        if auth is not None and auth != f"Bearer {self.token}":
            return _error(401, None, "Invalid credentials in Authorization header")
        authed = auth is not None
        if parts == ["api", "agent-harnesses"]:  # the client asks for it for its User-Agent
            return web.json_response({"standardEnvVars": ["AI_AGENT", "AGENT"],
                                      "harnesses": {}})
        if parts[:2] == ["api", "resolve-cache"] and len(parts) >= 7 and parts[2] in _TYPES \
                and request.method in ("GET", "HEAD"):
            return self._resolve(request, _TYPES[parts[2]], "/".join(parts[3:5]), parts[5],
                                 "/".join(parts[6:]), authed, cached=True)
        if parts[:1] == ["api"] and len(parts) >= 4 and parts[1] in _TYPES:
            return self._api(request, _TYPES[parts[1]], "/".join(parts[2:4]), parts[4:], authed)
        repo_type: RepoType = "model"
        if parts[:1] == ["datasets"]:
            repo_type, parts = "dataset", parts[1:]
        if len(parts) >= 5 and parts[2] == "resolve" and request.method in ("GET", "HEAD"):
            return self._resolve(request, repo_type, "/".join(parts[:2]), parts[3],
                                 "/".join(parts[4:]), authed)
        return _error(404, None, "Not found")

    def _repo(self, repo_type: RepoType, repo_id: str, authed: bool,
              for_files: bool) -> HubRepo | web.Response:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not authed):
            if not authed:  # the Hub does not tell a stranger whether a private repo exists
                return _error(401, "RepoNotFound", "Invalid username or password.")
            return _error(404, "RepoNotFound", "Repository not found")
        if for_files and repo.gated:
            kind = "model" if repo_type == "model" else "dataset"
            if not authed:
                return _error(401, "GatedRepo", f"Access to {kind} {repo_id} is restricted. You "
                              "must have access to it and be authenticated to access it. "
                              "Please log in.")
            if repo_id not in self.granted:
                return _error(403, "GatedRepo", f"Access to {kind} {repo_id} is restricted and "
                              "you are not in the authorized list. Visit "
                              f"https://huggingface.co/{repo_id} to ask for access.")
        return repo

    def _api(self, request: web.Request, repo_type: RepoType, repo_id: str, rest: list[str],
             authed: bool) -> web.Response:
        repo = self._repo(repo_type, repo_id, authed, for_files=False)
        if isinstance(repo, web.Response):
            return repo
        if not rest:
            rest = ["revision", "main"]
        if rest[0] not in ("revision", "tree") or len(rest) < 2 or request.method != "GET":
            return _error(404, None, "Not found")
        sha = repo.commit_of(rest[1])
        if sha is None:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {rest[1]}")
        tree = repo.commits[sha]
        if rest[0] == "tree":
            prefix = "/".join(rest[2:])
            return web.json_response(_tree(tree, prefix,
                                           request.query.get("recursive") == "true"))
        blobs = request.query.get("blobs", "").lower() == "true"
        return web.json_response(self._info(repo, sha, tree, blobs))

    def _info(self, repo: HubRepo, sha: str, tree: dict[str, HubFile],
              blobs: bool) -> dict[str, Any]:
        siblings: list[dict[str, Any]] = []
        for f in tree.values():
            entry: dict[str, Any] = {"rfilename": f.path}
            if blobs:
                entry.update(size=f.size, blobId=f.blob_id)
                if f.sha256 is not None:
                    entry["lfs"] = {"sha256": f.sha256, "size": f.size,
                                    "pointerSize": f.pointer_size}
            siblings.append(entry)
        info: dict[str, Any] = {
            "_id": hashlib.md5(repo.repo_id.encode(), usedforsecurity=False).hexdigest()[:24],
            "id": repo.repo_id, "sha": sha, "private": repo.private, "gated": repo.gated,
            "disabled": False, "downloads": 0, "likes": 0, "tags": [],
            "lastModified": "2026-12-01T12:00:00.000Z", "siblings": siblings,
        }
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
            if repo.params is not None:
                info["safetensors"] = {"parameters": {"BF16": repo.params},
                                       "total": repo.params}
        return info

    def _resolve(self, request: web.Request, repo_type: RepoType, repo_id: str, revision: str,
                 path: str, authed: bool, cached: bool = False) -> web.Response:
        repo = self._repo(repo_type, repo_id, authed, for_files=True)
        if isinstance(repo, web.Response):
            return repo
        sha = repo.commit_of(revision)
        if sha is None:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        f = repo.commits[sha].get(path)
        if f is None:
            return _error(404, "EntryNotFound", f"{path} does not exist on \"{revision}\"")
        headers = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes",
                   "Access-Control-Expose-Headers": "X-Repo-Commit,X-Linked-Etag,X-Linked-Size"}
        if f.sha256 is not None:
            location = self.storage.presign(f.storage_key, lifetime=self.url_lifetime,
                                            base_url=self.storage_base_url)
            headers.update({"Location": location, "ETag": f'"{f.sha256}"',
                            "X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(f.size)})
            return web.Response(status=302, headers=headers)
        assert f.data is not None
        headers["ETag"] = f'"{f.blob_id}"'
        if self.cache_redirects and not cached:
            kind = "models" if repo_type == "model" else "datasets"
            headers["Location"] = f"/api/resolve-cache/{kind}/{repo_id}/{sha}/{quote(path)}"
            return web.Response(status=307, headers=headers)
        sel = select(request.headers.get("Range"), f.size)
        if not sel.satisfiable:
            headers["Content-Range"] = sel.content_range(f.size)
            return web.Response(status=416, headers=headers)
        if sel.partial:
            headers["Content-Range"] = sel.content_range(f.size)
        body = f.data[sel.start:sel.end]
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(body))
            return web.Response(status=206 if sel.partial else 200, headers=headers)
        return web.Response(status=206 if sel.partial else 200, body=body, headers=headers,
                            content_type="application/octet-stream")


def _tree(tree: dict[str, HubFile], prefix: str, recursive: bool) -> list[dict[str, Any]]:
    """The tree listing under ``prefix``: files and (implicit) folders, as the Hub lists them."""
    base = prefix.strip("/") + "/" if prefix.strip("/") else ""
    out: list[dict[str, Any]] = []
    folders: set[str] = set()
    for f in tree.values():
        if not f.path.startswith(base):
            continue
        rest = f.path[len(base):]
        if "/" in rest:
            parts = rest.split("/")
            for depth in range(1, len(parts) if recursive else 2):
                folders.add(base + "/".join(parts[:depth]))
            if not recursive:
                continue
        entry: dict[str, Any] = {"type": "file", "oid": f.blob_id, "size": f.size,
                                 "path": f.path}
        if f.sha256 is not None:
            entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
        out.append(entry)
    out += [{"type": "directory", "oid": hashlib.sha1(d.encode(), usedforsecurity=False)
             .hexdigest(), "size": 0, "path": d} for d in sorted(folders)]
    return out


def _error(status: int, code: str | None, message: str) -> web.Response:
    headers = {"X-Error-Message": message}
    if code is not None:
        headers["X-Error-Code"] = code
    return web.Response(status=status, text=json.dumps({"error": message}), headers=headers,
                        content_type="application/json")


class ThreadedHub:
    """A `HubEmulator` and its LFS storage, each served from a background thread on its own
    loopback port (two origins, like the Hub and its CDN): ``with ThreadedHub(hub) as th:``;
    `th.env` holds `HF_ENDPOINT` and `HF_TOKEN`."""

    def __init__(self, hub: HubEmulator | None = None) -> None:
        self.hub = hub if hub is not None else HubEmulator()
        self._storage = ThreadedStorage(self.hub.storage)
        self._api = ThreadedServer(self.hub.make_app())

    @property
    def endpoint(self) -> str:
        return self._api.base_url

    @property
    def env(self) -> dict[str, str]:
        return {"HF_ENDPOINT": self.endpoint, "HF_TOKEN": self.hub.token}

    def start(self) -> ThreadedHub:
        self._storage.start()
        self.hub.storage_base_url = self._storage.base_url
        try:
            self._api.start()
        except BaseException:
            self._storage.stop()
            raise
        return self

    def stop(self) -> None:
        self._api.stop()
        self._storage.stop()

    def __enter__(self) -> ThreadedHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
