"""sha256 of files with hashlib, in parallel threads (hashlib releases the GIL); prints
``<hex>  <path>`` lines like sha256sum. Usage: hash_files.py PATH... | @LISTFILE"""

import hashlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor


def sha256(path: str) -> str:
    h = hashlib.sha256()
    view = memoryview(bytearray(4 << 20))
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(view):
            h.update(view[:n])
    return h.hexdigest()


def main() -> None:
    paths: list[str] = []
    for arg in sys.argv[1:]:
        if arg.startswith("@"):
            with open(arg[1:]) as fh:
                paths += [line for line in fh.read().splitlines() if line]
        else:
            paths.append(arg)
    with ThreadPoolExecutor(max(1, min(len(paths), os.cpu_count() or 1))) as pool:
        for path, digest in zip(paths, pool.map(sha256, paths), strict=True):
            print(f"{digest}  {path}")


if __name__ == "__main__":
    main()
