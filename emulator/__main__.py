"""`python -m weightlift.emulator storage --dir DIR [--port 8700]`: serve a folder's files as
presigned objects and write an Axom-shaped manifest for them."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from weightlift.emulator.storage import StorageEmulator


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m weightlift.emulator")
    sub = p.add_subparsers(dest="command", required=True)
    st = sub.add_parser("storage", help="serve a folder's files behind presigned URLs")
    st.add_argument("--dir", type=Path, required=True, help="folder whose files become objects")
    st.add_argument("--host", default="127.0.0.1")
    st.add_argument("--port", type=int, default=8700)
    st.add_argument("--lifetime", type=float, default=3600.0, help="URL lifetime, seconds")
    st.add_argument("--style", choices=["s3v4", "expires"], default="s3v4")
    st.add_argument("--manifest", type=Path, default=None,
                    help="where to write the manifest (default: a file in the temp folder)")
    return p


def _load(root: Path) -> StorageEmulator:
    if not root.is_dir():
        raise SystemExit(f"error: --dir {root} is not a folder")
    emu = StorageEmulator()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        emu.put_file(path.relative_to(root).as_posix(), path)
    return emu


def _announce(emu: StorageEmulator, root: Path, base_url: str, args: argparse.Namespace) -> None:
    manifest = emu.manifest(emu.keys(), base_url=base_url, lifetime=args.lifetime,
                            model_id=root.name or "emulated-model", style=args.style)
    out: Path = args.manifest or Path(tempfile.gettempdir()) / "weightlift-emulator-manifest.json"
    out.write_text(json.dumps(manifest, indent=2))
    print(f"serving {len(manifest['files'])} files from {root} at {base_url}", flush=True)
    print(f"manifest: {out}  (URLs valid {args.lifetime:g} s)", flush=True)


async def _serve(
    app: web.Application, host: str, port: int, on_ready: Callable[[str], None]
) -> None:
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        on_ready(f"http://{host}:{runner.addresses[0][1]}")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "storage":
        root: Path = args.dir.resolve()
        emu = _load(root)
        try:
            asyncio.run(_serve(emu.make_app(), args.host, args.port,
                               lambda url: _announce(emu, root, url, args)))
        except KeyboardInterrupt:
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
