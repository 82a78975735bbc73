"""The public calls: ``weightlift.pull``, ``pull_async``, ``verify``, ``ls``, ``ls_async``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

from weightlift.downloader.errors import (
    EXIT_OK,
    EXIT_PLATFORM,
    EXIT_USAGE,
    EXIT_VERIFY_FAILED,
    BadManifest,
    DiskFull,
    PlatformError,
    TransferFailed,
    UsageError,
    VerificationFailed,
    WeightliftError,
)
from weightlift.reports import ClusterPullReport, ListReport, PullReport, VerifyReport

T = TypeVar("T")
Source = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
PathArg = str | os.PathLike[str]


def sources_of(source: Source) -> list[str]:
    """One SOURCE or several (plain URLs) as the CLI's list of strings."""
    if isinstance(source, (str, os.PathLike)):
        return [os.fspath(source)]
    return [os.fspath(s) for s in source]


def error_for(report: PullReport) -> WeightliftError:
    """The exception a failed pull (or a dry run that does not fit) raises."""
    message = report.error or f"pull failed (exit {report.exit_code})"
    if report.dry_run:
        return DiskFull(message, "free some space, or pull into another folder")
    cls: type[WeightliftError] = {
        EXIT_VERIFY_FAILED: VerificationFailed, EXIT_USAGE: BadManifest,
        EXIT_PLATFORM: PlatformError,
    }.get(report.exit_code, TransferFailed)
    return cls(message)


def _sink(progress: bool) -> Any:
    if not progress:
        from weightlift.pulling import Silent

        return Silent()
    from weightlift.cli.progress import Progress

    return Progress(quiet=False)


@overload
async def pull_async(
    source: Source,
    out_dir: PathArg | None = None,
    *,
    connections: int | None = None,
    chunk_size: int | None = None,
    expect_params: int | None = None,
    verify: bool = True,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    progress: bool = False,
    max_rate: float | None = None,
    dry_run: bool = False,
    env: Mapping[str, str] | None = None,
    ray: Literal[False] = False,
    ray_address: str | None = None,
    ray_nodes: str | None = None,
    ray_budget: int | str | None = None,
) -> PullReport: ...


@overload
async def pull_async(
    source: Source,
    out_dir: PathArg | None = None,
    *,
    connections: int | None = None,
    chunk_size: int | None = None,
    expect_params: int | None = None,
    verify: bool = True,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    progress: bool = False,
    max_rate: float | None = None,
    dry_run: bool = False,
    env: Mapping[str, str] | None = None,
    ray: Literal[True],
    ray_address: str | None = None,
    ray_nodes: str | None = None,
    ray_budget: int | str | None = None,
) -> ClusterPullReport: ...


@overload
async def pull_async(
    source: Source,
    out_dir: PathArg | None = None,
    *,
    connections: int | None = None,
    chunk_size: int | None = None,
    expect_params: int | None = None,
    verify: bool = True,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    progress: bool = False,
    max_rate: float | None = None,
    dry_run: bool = False,
    env: Mapping[str, str] | None = None,
    ray: bool,
    ray_address: str | None = None,
    ray_nodes: str | None = None,
    ray_budget: int | str | None = None,
) -> PullReport | ClusterPullReport: ...


async def pull_async(
    source: Source,
    out_dir: PathArg | None = None,
    *,
    connections: int | None = None,
    chunk_size: int | None = None,
    expect_params: int | None = None,
    verify: bool = True,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    progress: bool = False,
    max_rate: float | None = None,
    dry_run: bool = False,
    env: Mapping[str, str] | None = None,
    ray: bool = False,
    ray_address: str | None = None,
    ray_nodes: str | None = None,
    ray_budget: int | str | None = None,
) -> PullReport | ClusterPullReport:
    """Pull ``source`` into ``out_dir`` (default: ``$WEIGHTLIFT_OUTPUT_ROOT/<model id>``) and
    verify it; returns the PullReport. Raises a WeightliftError when a file could not be
    fetched or arrived wrong; a checkpoint that fails its checks is returned with
    ``ok=False`` and ``exit_code == 1``. ``env`` replaces ``os.environ`` (API keys, WEIGHTLIFT_*).
    ``dry_run`` fetches nothing: the report lists each file as to-fetch, partial or present, and
    DiskFull is raised when the disk has less room than is still to fetch.

    ``ray=True`` pulls onto every node of a Ray cluster (``pip install 'weightlift[ray]'``)
    instead: ``out_dir`` may hold ``{node}``, ``ray_address`` defaults to ``RAY_ADDRESS``,
    ``ray_nodes`` picks nodes by resource NAME or label KEY=VALUE, ``ray_budget`` caps the
    object store (bytes or a SIZE such as "2G"). It returns a ClusterPullReport (per node:
    ``ok``, ``exit_code``, bytes from origin and from peers); a node that failed is in the
    report (``ok`` False), UsageError/PlatformError are raised before any node runs."""
    from weightlift.pulling import PullOptions, run_pull
    from weightlift.selection import Selection

    for name, value in (("connections", connections), ("chunk_size", chunk_size)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise UsageError(f"{name} must be a positive int, not {value!r}")
    if expect_params is not None and (not isinstance(expect_params, int) or expect_params < 0):
        raise UsageError(f"expect_params must be a non-negative int, not {expect_params!r}")
    if max_rate is not None and not max_rate > 0:
        raise UsageError(f"max_rate must be positive (bytes per second), not {max_rate!r}")
    options = PullOptions(connections=connections, chunk_size=chunk_size,
                          expect_params=expect_params, verify=verify,
                          selection=Selection.of(include, exclude), max_rate=max_rate,
                          dry_run=dry_run)
    if not ray and (ray_address or ray_nodes or ray_budget):
        raise UsageError("ray_address, ray_nodes and ray_budget go with ray=True")
    if ray:
        return await _pull_cluster(source, out_dir, options, env, progress, ray_address,
                                   ray_nodes, ray_budget)
    report = await run_pull(sources_of(source), Path(out_dir) if out_dir is not None else None,
                            options, _sink(progress), env=os.environ if env is None else env)
    if report.exit_code not in (EXIT_OK, EXIT_VERIFY_FAILED) or (
            report.exit_code == EXIT_VERIFY_FAILED and report.verification is None):
        raise error_for(report)
    return report


async def _pull_cluster(source: Source, out_dir: PathArg | None, options: Any,
                        env: Mapping[str, str] | None, progress: bool, address: str | None,
                        nodes: str | None, budget: int | str | None) -> ClusterPullReport:
    from weightlift.cluster import run_cluster_pull
    from weightlift.settings import parse_size

    if isinstance(budget, str):
        try:
            budget = parse_size(budget)
        except ValueError as exc:
            raise UsageError(f"ray_budget: {exc}") from None
    if budget is not None and (isinstance(budget, bool) or budget < 1):
        raise UsageError(f"ray_budget must be a positive size, not {budget!r}")
    say = _sink(True).say if progress else None
    return await run_cluster_pull(
        sources_of(source), os.fspath(out_dir) if out_dir is not None else None, options,
        env=os.environ if env is None else env, address=address, nodes=nodes, budget=budget,
        say=say)


def _run(coro: Coroutine[Any, Any, T], what: str) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    coro.close()
    raise UsageError(f"weightlift.{what}() blocks and cannot run inside a running event loop",
                     f"use `await weightlift.{what}_async(...)` there")


@overload
def pull(
    source: Source,
    out_dir: PathArg | None = None,
    *,
    connections: int | None = None,
    chunk_size: int | None = None,
    expect_params: int | None = None,
    verify: bool = True,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    progress: bool = False,
    max_rate: float | None = None,
    dry_run: bool = False,
    env: Mapping[str, str] | None = None,
    ray: Literal[False] = False,
    ray_address: str | None = None,
    ray_nodes: str | None = None,
    ray_budget: int | str | None = None,
) -> PullReport: ...


@overload
def pull(
    source: Source,
    out_dir: PathArg | None = None,
    *,
    connections: int | None = None,
    chunk_size: int | None = None,
    expect_params: int | None = None,
    verify: bool = True,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    progress: bool = False,
    max_rate: float | None = None,
    dry_run: bool = False,
    env: Mapping[str, str] | None = None,
    ray: Literal[True],
    ray_address: str | None = None,
    ray_nodes: str | None = None,
    ray_budget: int | str | None = None,
) -> ClusterPullReport: ...


@overload
def pull(
    source: Source,
    out_dir: PathArg | None = None,
    *,
    connections: int | None = None,
    chunk_size: int | None = None,
    expect_params: int | None = None,
    verify: bool = True,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    progress: bool = False,
    max_rate: float | None = None,
    dry_run: bool = False,
    env: Mapping[str, str] | None = None,
    ray: bool,
    ray_address: str | None = None,
    ray_nodes: str | None = None,
    ray_budget: int | str | None = None,
) -> PullReport | ClusterPullReport: ...


def pull(
    source: Source,
    out_dir: PathArg | None = None,
    *,
    connections: int | None = None,
    chunk_size: int | None = None,
    expect_params: int | None = None,
    verify: bool = True,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    progress: bool = False,
    max_rate: float | None = None,
    dry_run: bool = False,
    env: Mapping[str, str] | None = None,
    ray: bool = False,
    ray_address: str | None = None,
    ray_nodes: str | None = None,
    ray_budget: int | str | None = None,
) -> PullReport | ClusterPullReport:
    """``pull_async`` for code without an event loop (blocks until done)."""
    return _run(pull_async(source, out_dir, connections=connections, chunk_size=chunk_size,
                           expect_params=expect_params, verify=verify, include=include,
                           exclude=exclude, progress=progress, max_rate=max_rate,
                           dry_run=dry_run, env=env, ray=ray, ray_address=ray_address,
                           ray_nodes=ray_nodes, ray_budget=ray_budget), "pull")


def verify(directory: PathArg, *, expect_params: int | None = None, deep: bool = False,
           hashes: bool = True, progress: bool = False) -> VerifyReport:
    """Check the checkpoint in ``directory`` (offline): every shard well-formed, shards and
    index agree, sizes and sha256 match the pull receipt (``hashes``), the parameter count
    equals ``expect_params`` (default: the receipt's). Returns the VerifyReport (``ok`` False
    and ``exit_code`` 1 when something is wrong); raises UsageError when ``directory`` is not
    a folder. ``deep`` also scans tensor values for NaN/Inf."""
    from weightlift.checking import check_folder

    return check_folder(Path(directory), expect_params, deep, hashes, progress)


async def ls_async(source: Source, *, env: Mapping[str, str] | None = None) -> ListReport:
    """The files ``pull`` would fetch from ``source`` (sizes, sha256 when known), or a
    TensorOne job's checkpoints; nothing is downloaded."""
    from weightlift.listing import list_source

    return await list_source(sources_of(source), os.environ if env is None else env)


def ls(source: Source, *, env: Mapping[str, str] | None = None) -> ListReport:
    """``ls_async`` for code without an event loop."""
    return _run(ls_async(source, env=env), "ls")


__all__ = ["error_for", "ls", "ls_async", "pull", "pull_async", "sources_of", "verify"]
