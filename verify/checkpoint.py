"""Checkpoint checks: every shard's header, shards against the index, receipt integrity,
parameter totals and the expected-count gate, and (optionally) the deep value scan.

:func:`verify_directory` is the one entry point (``verify`` and ``pull`` both call it). It collects
problems instead of raising them, so one run lists everything wrong; only input it cannot work
on at all (no such directory) raises.
"""

from __future__ import annotations

import os
import posixpath
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from weightlift.downloader.errors import UsageError, VerificationFailed
from weightlift.downloader.hashing import sha256_file
from weightlift.downloader.receipt import WORK_DIR, Receipt, ReceiptFile, load_receipt
from weightlift.downloader.strict_json import StrictJSONError, loads_strict
from weightlift.downloader.workarea import pull_in_progress
from weightlift.verify.header import HeaderError, SafetensorsHeader, quote, read_header
from weightlift.verify.report import FileReport, Problem, TensorScan, VerifyReport

if TYPE_CHECKING:  # deep imports numpy (~40 ms): only `--deep` pays for it
    from weightlift.verify.deep import TensorFinding

SHARD_SUFFIX = ".safetensors"
INDEX_SUFFIX = ".safetensors.index.json"
MAX_INDEX_BYTES = 100_000_000
# The safetensors library needs about 11x a header's length in memory to open it (1.1 GB for a
# 99 MB header), twice what our own parser needs: past this length its second opinion is
# skipped with a warning, so verify's memory stays bounded by our parser's (at most ~45 MB more
# for the library). Real checkpoints have headers well under 1 MB (hundreds to a few thousand
# tensors per shard); 4 MB is some 50,000 tensors in one file.
SECOND_OPINION_MAX_HEADER = 4_000_000

OnBytes = Callable[[int], None]


@dataclass
class _Run:
    """Mutable scratch of one verification; turned into a VerifyReport at the end."""

    root: Path
    problems: list[Problem]
    warnings: list[Problem]

    def problem(self, message: str, file: str | None = None, tensor: str | None = None) -> None:
        self.problems.append(Problem(file=file, tensor=tensor, message=message))

    def warn(self, message: str, file: str | None = None, tensor: str | None = None) -> None:
        self.warnings.append(Problem(file=file, tensor=tensor, message=message))


def list_files(root: Path) -> list[str]:
    """Relative POSIX names of the regular files under ``root``, without weightlift's work area."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d != WORK_DIR]
            rel_dir = ""
        dirnames.sort()
        for name in sorted(filenames):
            rel = posixpath.join(rel_dir.replace(os.sep, "/"), name) if rel_dir else name
            if os.path.isfile(os.path.join(dirpath, name)):
                out.append(rel)
    return out


def unsafe_rel(name: str) -> str | None:
    """Why a relative file name would leave the directory, or None if it is a plain one."""
    if not name or "\\" in name or "\x00" in name:
        return "is empty or holds a backslash or NUL"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "is an absolute path"
    if any(part in ("..", ".", "") for part in name.split("/")):
        return "has '..', '.' or empty path components"
    return None


def unsafe_shard_name(name: str) -> str | None:
    """Why a shard name from an index is unsafe, or None if it is a plain relative name."""
    why = unsafe_rel(name)
    if why:
        return why
    if not name.endswith(SHARD_SUFFIX):
        return f"does not end in {SHARD_SUFFIX}"
    return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__


def second_opinion(path: Path, header: SafetensorsHeader) -> list[str]:
    """Disagreements between our parser and the ``safetensors`` library on one file."""
    try:
        from safetensors import safe_open
    except ImportError:  # pragma: no cover - it is a dependency; stay useful without it
        return []
    ours = {t.name: t for t in header.tensors}
    out: list[str] = []
    try:
        with safe_open(str(path), framework="numpy") as f:
            keys = list(f.keys())
            meta = f.metadata() or {}
            # Slices give dtype and shape without reading data, so BF16 (not in numpy) works too.
            theirs = {k: (str(f.get_slice(k).get_dtype()).upper(),
                          tuple(int(d) for d in f.get_slice(k).get_shape()))
                      for k in keys if k in ours}
    except Exception as exc:  # the library's own error types vary by version
        return [f"the safetensors library rejects this file ({_one_line(exc)}) although "
                "weightlift's parser accepted it (a weightlift bug: please report it)"]
    missing = sorted(set(ours) - set(keys))
    extra = sorted(set(keys) - set(ours))
    if missing or extra:
        out.append(f"the safetensors library sees different tensors (ours only: "
                   f"{len(missing)}, library only: {len(extra)}; e.g. "
                   f"{quote((missing + extra)[0])})")
    for name, (dtype, shape) in theirs.items():
        t = ours[name]
        if dtype != t.dtype or shape != t.shape:
            out.append(f"tensor {quote(name)}: the safetensors library reads {dtype} "
                       f"{list(shape)}, weightlift's parser {t.dtype} {list(t.shape)}")
    if dict(meta) != dict(header.metadata):
        out.append("the safetensors library reads different __metadata__")
    return out


def _check_index(run: _Run, rel: str, headers: dict[str, SafetensorsHeader],
                 present: set[str]) -> set[str]:
    """Check one index against its shards; returns the shard rels it references."""
    path = run.root / rel
    try:
        if path.stat().st_size > MAX_INDEX_BYTES:
            run.problem(f"index is over {MAX_INDEX_BYTES} bytes", rel)
            return set()
        doc = loads_strict(path.read_text(encoding="utf-8"))
    except StrictJSONError as exc:
        what = f"duplicate key {quote(exc.key)}" if exc.key is not None else str(exc)
        run.problem(f"index is not valid JSON ({what})", rel)
        return set()
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        run.problem(f"index is not valid JSON ({_one_line(exc)})", rel)
        return set()
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not all(
            isinstance(v, str) for v in weight_map.values()):
        run.problem("index has no weight_map object of tensor name -> shard file name", rel)
        return set()
    base = posixpath.dirname(rel)
    referenced: set[str] = set()
    names: dict[str, str] = {}  # shard name as written -> shard rel
    for shard in sorted(set(weight_map.values())):
        why = unsafe_shard_name(shard)
        if why:
            run.problem(f"shard name {quote(shard)} {why}", rel)
            continue
        shard_rel = posixpath.join(base, shard) if base else shard
        names[shard] = shard_rel
        referenced.add(shard_rel)
        if shard_rel not in present:
            count = sum(1 for v in weight_map.values() if v == shard)
            run.problem(f"missing shard {quote(shard)} ({count} tensor(s) of the index "
                        "live there)", rel)
    tensor_names: dict[str, set[str]] = {}  # shard rel -> its tensors' names, built once
    for tensor, shard in weight_map.items():
        shard_rel = names.get(shard)
        header = headers.get(shard_rel) if shard_rel else None
        if header is None:
            continue
        assert shard_rel is not None
        if shard_rel not in tensor_names:
            tensor_names[shard_rel] = {t.name for t in header.tensors}
        if tensor not in tensor_names[shard_rel]:
            run.problem(f"index names tensor {quote(tensor)} in shard {quote(shard)}, "
                        "which does not contain it", rel, tensor)
    for shard, shard_rel in names.items():
        header = headers.get(shard_rel)
        if header is None:
            continue
        for t in header.tensors:
            listed = weight_map.get(t.name)
            if listed is None:
                run.problem(f"tensor {quote(t.name)} is not in the weight_map of {rel}",
                            shard_rel, t.name)
            elif listed != shard:
                run.problem(f"tensor {quote(t.name)} is also here, but {rel} puts it in "
                            f"{quote(listed)}", shard_rel, t.name)
    total = doc.get("metadata", {}).get("total_size") if isinstance(
        doc.get("metadata"), dict) else None
    if total is None:
        run.warn("index has no metadata.total_size", rel)
    elif type(total) is not int:
        run.problem(f"metadata.total_size is {type(total).__name__}, not an integer", rel)
    elif all(r in headers for r in referenced) and len(names) == len(set(weight_map.values())):
        actual = sum(headers[r].data_bytes for r in referenced)
        if actual != total:
            run.problem(f"metadata.total_size is {total:,} but the shards hold {actual:,} "
                        f"bytes of tensor data ({actual - total:+,})", rel)
    return referenced


def _receipt_checks(run: _Run, receipt: Receipt, present: set[str],
                    check_hashes: bool) -> list[ReceiptFile]:
    """Size checks now; returns the receipt entries whose sha256 should be re-computed."""
    to_hash: list[ReceiptFile] = []
    listed: set[str] = set()
    for entry in receipt.files:
        listed.add(entry.rel)
        if unsafe_rel(entry.rel):
            run.problem(f"receipt names an unsafe path: it {unsafe_rel(entry.rel)}", entry.rel)
            continue
        if entry.rel not in present:
            run.problem("missing: listed in the pull receipt but not on disk", entry.rel)
            continue
        size = (run.root / entry.rel).stat().st_size
        if size != entry.size:
            run.problem(f"size {size:,} differs from the pull receipt's {entry.size:,} "
                        "(changed or damaged since the pull)", entry.rel)
            continue
        if check_hashes:
            to_hash.append(entry)
    for rel in sorted(present - listed):
        run.warn("not in the pull receipt (added after the pull?)", rel)
    return to_hash


@contextmanager
def _progress_bar(total: int, enabled: bool, desc: str) -> Iterator[OnBytes | None]:
    if not enabled or total <= 0:
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
               file=sys.stderr, dynamic_ncols=True, leave=False)
    lock = threading.Lock()

    def update(n: int) -> None:
        with lock:
            bar.update(n)

    try:
        yield update
    finally:
        bar.close()


def _unfinished_parts(root: Path) -> int:
    """How many part files an interrupted pull left in the work area (none after a pull that
    completed: each part is renamed into place when its file is finalised)."""
    try:
        with os.scandir(root / WORK_DIR / "parts") as entries:
            return sum(1 for e in entries if e.name.endswith(".part"))
    except OSError:
        return 0


def verify_directory(directory: Path, *, expect_params: int | None = None, deep: bool = False,
                     check_hashes: bool = True, progress: bool = False) -> VerifyReport:
    """Check the checkpoint in ``directory`` and return the report (``ok`` when nothing is wrong).

    ``expect_params`` defaults to the pull receipt's expected count. Raises ``UsageError`` only
    when ``directory`` is missing, not a directory, or a pull into it is running (its files are
    not all there yet: judging them now would report a half-pulled folder as broken).
    """
    started = time.perf_counter()
    root = Path(directory)
    if not root.exists():
        raise UsageError(f"{root} does not exist", "give the folder the model was pulled into")
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory", "give the folder that holds the shards")
    if pull_in_progress(root):
        raise UsageError(f"a pull into {root} is in progress",
                         "wait for it to finish, then run verify again")
    run = _Run(root, [], [])
    unfinished = _unfinished_parts(root)
    if unfinished:
        run.problem(f"a pull into this folder did not finish: {unfinished} file(s) are still "
                    f"partial in {WORK_DIR}/parts (run the same pull again to complete them)")

    receipt: Receipt | None = None
    try:
        receipt = load_receipt(root)
    except VerificationFailed as exc:
        run.problem(exc.one_line(), f"{WORK_DIR}/receipt.json")
    expected = expect_params
    if expected is None and receipt is not None:
        expected = receipt.expected_params

    try:
        files = list_files(root)
    except OSError as exc:
        raise VerificationFailed(f"cannot list {root}: {exc.strerror}") from None
    present = set(files)
    shard_rels = [r for r in files if r.endswith(SHARD_SUFFIX)]
    index_rels = [r for r in files if r.endswith(INDEX_SUFFIX)]

    headers: dict[str, SafetensorsHeader] = {}
    for rel in shard_rels:
        try:
            headers[rel] = read_header(root / rel)
        except HeaderError as exc:
            run.problem(exc.message, rel, exc.tensor)
            continue
        except OSError as exc:
            run.problem(f"cannot read: {exc.strerror}", rel)
            continue
        header_len = headers[rel].data_start - 8
        if header_len > SECOND_OPINION_MAX_HEADER:
            run.warn(f"header of {header_len:,} bytes: the safetensors library's second opinion "
                     f"was skipped (it would need about {11 * header_len // 1_000_000:,} MB)",
                     rel)
            continue
        for disagreement in second_opinion(root / rel, headers[rel]):
            run.problem(disagreement, rel)

    covered: set[str] = set()
    for rel in index_rels:
        covered |= _check_index(run, rel, headers, present)
    index_dirs = {posixpath.dirname(r) for r in index_rels}
    for rel in shard_rels:
        if rel not in covered and posixpath.dirname(rel) in index_dirs:
            run.problem("unreferenced shard: no index names it", rel)
    if not shard_rels:
        run.problem(f"no {SHARD_SUFFIX} files in {root}")

    by_dtype: dict[str, int] = {}
    by_shard: dict[str, int] = {}
    tensors = 0
    for rel, header in headers.items():
        by_shard[rel] = header.params
        tensors += len(header.tensors)
        for t in header.tensors:
            by_dtype[t.dtype] = by_dtype.get(t.dtype, 0) + t.numel
    params = sum(by_shard.values())
    if expected is not None and params != expected:
        diff = params - expected
        partial = len(headers) != len(shard_rels)
        run.problem(f"parameter count {params:,} does not match the expected {expected:,} "
                    f"({abs(diff):,} {'more' if diff > 0 else 'fewer'} than expected"
                    f"{'; count is partial, some shards are unreadable' if partial else ''})")

    to_hash = _receipt_checks(run, receipt, present, check_hashes) if receipt else []
    hashed_ok: set[str] = set()
    findings: list[TensorScan] = []
    scan_bytes = sum(h.data_bytes for h in headers.values()) if deep else 0
    hash_bytes = sum(e.size for e in to_hash)
    workers = max(1, min(4, os.cpu_count() or 1))
    if deep:
        from weightlift.verify.deep import scan_file
    with _progress_bar(hash_bytes + scan_bytes, progress, "verify") as on_bytes, \
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify") as pool:
        hash_jobs: dict[str, Future[str]] = {
            e.rel: pool.submit(sha256_file, root / e.rel, on_bytes) for e in to_hash}
        scan_jobs: dict[str, Future[list[TensorFinding]]] = {
            rel: pool.submit(scan_file, root / rel, header, on_bytes)
            for rel, header in headers.items()} if deep else {}
        for entry in to_hash:
            try:
                digest = hash_jobs[entry.rel].result()
            except OSError as exc:
                run.problem(f"cannot read: {exc.strerror}", entry.rel)
                continue
            if digest != entry.sha256.lower():
                run.problem(f"sha256 {digest[:16]}… differs from the pull receipt's "
                            f"{entry.sha256[:16]}… (changed or damaged since the pull)",
                            entry.rel)
            else:
                hashed_ok.add(entry.rel)
        for rel, job in scan_jobs.items():
            try:
                found = job.result()
            except (OSError, ValueError) as exc:
                run.problem(f"deep scan cannot read the data: {_one_line(exc)}", rel)
                continue
            for f in found:
                findings.append(TensorScan(file=rel, tensor=f.name, dtype=f.dtype, nan=f.nan,
                                           inf=f.inf, all_zero=f.all_zero))
                if f.nan or f.inf:
                    run.problem(f"tensor {quote(f.name)} ({f.dtype}) holds {f.nan:,} NaN and "
                                f"{f.inf:,} Inf value(s)", rel, f.name)
                if f.all_zero:
                    run.warn(f"tensor {quote(f.name)} ({f.dtype}) is all zeros", rel, f.name)

    file_reports = []
    for rel in files:
        kind = "shard" if rel.endswith(SHARD_SUFFIX) else \
            "index" if rel.endswith(INDEX_SUFFIX) else "other"
        found_header = headers.get(rel)
        try:
            size = (root / rel).stat().st_size
        except OSError:
            size = 0
        file_reports.append(FileReport(
            rel=rel, size=size, kind=kind,
            tensors=len(found_header.tensors) if found_header else 0,
            params=found_header.params if found_header else 0,
            data_bytes=found_header.data_bytes if found_header else 0,
            sha256_checked=rel in hashed_ok))
    return VerifyReport(
        directory=str(root), ok=not run.problems, files=file_reports, shards=len(shard_rels),
        tensors=tensors, params=params, expected_params=expected,
        params_by_dtype=dict(sorted(by_dtype.items())), params_by_shard=by_shard,
        hashed_files=len(hashed_ok), deep=deep, scanned_bytes=scan_bytes, findings=findings,
        problems=run.problems, warnings=run.warnings,
        seconds=round(time.perf_counter() - started, 3))
