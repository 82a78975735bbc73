"""Download files with hf_transfer (run by the peers' python): files in parallel, 16
connections each, as huggingface_hub drives it. Usage: hf_pull.py SPEC.json"""

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import hf_transfer  # type: ignore[import-not-found,unused-ignore]


def main() -> None:
    with open(sys.argv[1]) as fh:
        spec = json.load(fh)

    def one(item: list[str]) -> None:
        url, path = item
        os.makedirs(os.path.dirname(path), exist_ok=True)
        hf_transfer.download(url, path, max_files=spec["max_files"],
                             chunk_size=spec["chunk_size"])

    files = spec["files"]
    with ThreadPoolExecutor(max(1, min(len(files), spec["parallel_files"]))) as pool:
        list(pool.map(one, files))


if __name__ == "__main__":
    main()
