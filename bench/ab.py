"""One in-process pull with one EngineConfig field changed, for the A/B runs of the tuning record
in bench/README.md: `python bench/ab.py MANIFEST OUT '{"connections": 32}'` prints the engine's
own seconds and the script's (remove OUT and `sync` between runs)."""

import asyncio
import json
import sys
import time
from pathlib import Path

from weightlift.cli.pull_cmd import safetensors_header_check
from weightlift.downloader.engine import EngineConfig
from weightlift.downloader.pull import pull
from weightlift.downloader.sources.local import resolve_local


def main() -> None:
    t0 = time.perf_counter()
    changes = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    config = EngineConfig(header_check=safetensors_header_check, **changes)
    result = asyncio.run(pull(resolve_local([sys.argv[1]]), Path(sys.argv[2]), config))
    if not result.ok:
        sys.exit("pull failed")
    print(f"engine {result.seconds:.2f} s  script {time.perf_counter() - t0:.2f} s", flush=True)


if __name__ == "__main__":
    main()
