"""weightlift: fast, resumable, verified downloads of model weights, as a Python API.

    import weightlift

    report = weightlift.pull("axom://models/<id>", "./model", expect_params=2_360_000_000)
    report.ok, report.params, [(f.rel, f.size, f.sha256) for f in report.files]
    check = weightlift.verify("./model")          # VerifyReport: .ok, .params, .problems

``pull`` blocks; ``await weightlift.pull_async(...)`` takes the same arguments inside a running
event loop. Nothing is printed unless ``progress=True``. Loggers live under ``weightlift.*``;
no handler is installed.

Errors: every failure raises a ``WeightliftError`` subclass whose ``exit_code`` is the CLI's
(``UsageError``/``BadManifest`` 2, ``TransferFailed``/``DiskFull`` 3, ``VerificationFailed`` 1
for a file whose sha256 or size is wrong, ``PlatformError`` 4). A checkpoint that arrived but
fails its checks (format, parameter count) is *returned*: ``report.ok`` is False,
``report.exit_code`` 1 and ``report.problems`` says why.

The names are imported on first use, so that `weightlift --help` does not pay for them.
"""

from __future__ import annotations

import os
import types
from typing import TYPE_CHECKING, Any

# `weightlift.verify` names two things: the subpackage (verify/, the checks) and the API call
# `weightlift.verify(dir)`. It stays the subpackage (so `import weightlift.verify.deep as d` and
# every attribute keep working) and is made callable: calling it is the API's verify().
import weightlift.verify as _verify_package


class _CallableVerify(types.ModuleType):
    def __call__(self, directory: str | os.PathLike[str], *, expect_params: int | None = None,
                 deep: bool = False, hashes: bool = True, progress: bool = False) -> Any:
        from weightlift.api_calls import verify as run

        return run(directory, expect_params=expect_params, deep=deep, hashes=hashes,
                   progress=progress)


_verify_package.__class__ = _CallableVerify

if TYPE_CHECKING:
    from weightlift.api_calls import ls, ls_async, pull, pull_async
    from weightlift.downloader.errors import (
        BadManifest,
        DiskFull,
        PlatformError,
        TransferFailed,
        UsageError,
        VerificationFailed,
        WeightliftError,
    )
    from weightlift.reports import (
        ClusterPullReport,
        FileEntry,
        ListReport,
        PullReport,
        Totals,
        VerifyReport,
        WatchEvent,
        json_schema,
    )

    __version__: str

    def verify(directory: str | os.PathLike[str], *, expect_params: int | None = None,
               deep: bool = False, hashes: bool = True, progress: bool = False
               ) -> VerifyReport:
        """Check the checkpoint in ``directory`` offline (``weightlift.api_calls.verify``)."""


__all__ = [
    "BadManifest",
    "ClusterPullReport",
    "DiskFull",
    "FileEntry",
    "ListReport",
    "PlatformError",
    "PullReport",
    "Totals",
    "TransferFailed",
    "UsageError",
    "VerificationFailed",
    "VerifyReport",
    "WatchEvent",
    "WeightliftError",
    "__version__",
    "json_schema",
    "ls",
    "ls_async",
    "pull",
    "pull_async",
    "verify",
]

_HOMES = {
    **dict.fromkeys(("ls", "ls_async", "pull", "pull_async"), "weightlift.api_calls"),
    **dict.fromkeys(("BadManifest", "DiskFull", "PlatformError", "TransferFailed",
                     "UsageError", "VerificationFailed", "WeightliftError"),
                    "weightlift.downloader.errors"),
    **dict.fromkeys(("ClusterPullReport", "FileEntry", "ListReport", "PullReport", "Totals",
                     "VerifyReport", "WatchEvent", "json_schema"), "weightlift.reports"),
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("weightlift")
    except PackageNotFoundError:  # pragma: no cover - a source tree that is not installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _version()
    elif name in _HOMES:
        import importlib

        value = getattr(importlib.import_module(_HOMES[name]), name)
    else:
        raise AttributeError(f"module 'weightlift' has no attribute {name!r}")
    globals()[name] = value  # once: later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
