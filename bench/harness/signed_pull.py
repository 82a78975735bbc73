"""`weightlift pull` against nginx secure_link URLs that expire mid-pull, re-signed whenever
weightlift asks for a refresh (a local manifest cannot refresh, so this driver stands in for a
platform). Prints the pull's JSON report like ``weightlift pull --json``.

Usage: signed_pull.py SPEC.json OUT_DIR [pull options...]
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.nginx import sign  # noqa: E402
from weightlift.cli.main import build_parser  # noqa: E402
from weightlift.cli.progress import Progress  # noqa: E402
from weightlift.downloader.manifest import Manifest, validate_manifest  # noqa: E402
from weightlift.downloader.sources.local import ResolvedSource  # noqa: E402


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    out = sys.argv[2]
    args = build_parser().parse_args(["pull", sys.argv[1], "-o", out, "-q", "--json",
                                      *sys.argv[3:]])
    refreshes = 0

    def manifest() -> Manifest:
        return validate_manifest({"model_id": "bench", "files": [
            {**f, "url": sign(spec["base"], f"{spec['data_name']}/{f['rel']}", spec["lifetime"])}
            for f in spec["files"]]})

    async def refresh() -> Manifest:
        nonlocal refreshes
        refreshes += 1
        return manifest()

    source = ResolvedSource(manifest(), refresh, spec.get("params"), "signed nginx")

    from weightlift.cli import pull_cmd

    if hasattr(pull_cmd, "pull_and_verify"):
        async def go() -> tuple[int, dict[str, Any]]:
            got: tuple[int, dict[str, Any]] = await pull_cmd.pull_and_verify(
                source, Path(out), args, Progress(quiet=True))
            return got

        code, report = asyncio.run(go())
    else:  # the CLI before platform sources: run_pull runs its own event loop
        code, report = pull_cmd.run_pull(source, Path(out), args, Progress(quiet=True))
    report["driver_refreshes"] = refreshes
    print(json.dumps(report))
    return code


if __name__ == "__main__":
    sys.exit(main())
