"""The emulator on its own.

`python -m weightlift.emulator [--port 8700]`: the Axom and TensorOne APIs (on --port) and their
storage (on the next port, or a free one), with one scripted job on each platform, and a Hugging
Face Hub stand-in (on the port after, or a free one) with a public, a private and a gated model
and a dataset; prints the base URLs, keys and example commands.

`python -m weightlift.emulator storage --dir DIR [--port 8700]`: serve a folder's files as
presigned objects and write an Axom-shaped manifest for them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from aiohttp import web

from weightlift.emulator.hub_demo import announce as announce_hub
from weightlift.emulator.hub_demo import demo_hub
from weightlift.emulator.platforms import ClockFromFirstRequest, PlatformEmulator
from weightlift.emulator.runs import RunScript, RunTimeline
from weightlift.emulator.signing import STYLES
from weightlift.emulator.storage import StorageEmulator

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20,
          "MB": 1 << 20, "MIB": 1 << 20, "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30}
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*")


def parse_size(text: str) -> int:
    """"64MB", "1.5G", "2097152" -> bytes (binary units)."""
    m = _SIZE.fullmatch(text)
    if m is None or m.group(2).upper() not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 64MB or 1GB)")
    n = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if n < 64 << 10:
        raise argparse.ArgumentTypeError("model size must be at least 64KB")
    return n


def demo_script(model_bytes: int) -> RunScript:
    """About 50 s from submit to completed, with one preemption after the second checkpoint."""
    return RunScript(
        total_steps=480, steps_per_second=16.0, queued_s=1.5, provisioning_s=2.0,
        staging_s=1.5, checkpoint_every=120, checkpointing_s=1.0, uploading_s=2.0,
        preempt_at_step=300, preempted_s=2.0, model_bytes=model_bytes, shards=2,
        log_every=20)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m weightlift.emulator",
        description="Emulated Axom and TensorOne platforms (default), or plain storage.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8700, help="API port (storage: the next one)")
    p.add_argument("--url-lifetime", type=float, default=600.0,
                   help="lifetime of presigned download URLs, seconds")
    p.add_argument("--model-size", type=parse_size, default=64 << 20,
                   help="size of each generated model, e.g. 64MB, 1.5GB (default 64MB)")
    p.add_argument("--speed", type=float, default=1.0,
                   help="run-clock multiplier (2 = runs finish twice as fast)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where generated models go (default: a temporary folder)")
    sub = p.add_subparsers(dest="command")
    st = sub.add_parser("storage", help="serve a folder's files behind presigned URLs")
    st.add_argument("--dir", type=Path, required=True, help="folder whose files become objects")
    st.add_argument("--host", default="127.0.0.1")
    st.add_argument("--port", type=int, default=8700)
    st.add_argument("--lifetime", type=float, default=3600.0, help="URL lifetime, seconds")
    st.add_argument("--style", choices=list(STYLES), default="s3v4")
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


async def _serve_platforms(args: argparse.Namespace, workdir: Path) -> None:
    # The runs start when a client first asks about them, not when the server starts: a person
    # copying the printed command must not find the run already over.
    clock = ClockFromFirstRequest()
    emu = PlatformEmulator(workdir, url_lifetime=args.url_lifetime, clock=clock)
    clock.emu = emu
    script = demo_script(args.model_size).scaled(args.speed)
    api = web.AppRunner(emu.api_app(), access_log=None, shutdown_timeout=1.0)
    storage = web.AppRunner(emu.storage.make_app(), access_log=None, shutdown_timeout=1.0)
    await api.setup()
    await storage.setup()
    hub_runner: list[web.AppRunner] = []
    try:
        await web.TCPSite(api, args.host, args.port).start()
        api_port = api.addresses[0][1]
        try:  # storage next to the API; with --port 0, any free port
            await web.TCPSite(storage, args.host, api_port + 1 if args.port else 0).start()
        except OSError:  # the next port is taken: any free one will do
            await web.TCPSite(storage, args.host, 0).start()
        emu.storage_base_url = f"http://{args.host}:{storage.addresses[0][1]}"
        axom_job = emu.add_axom_job(script)
        t1_job = emu.add_tensorone_job(replace(script, shards=1, seed=1))
        loop = asyncio.get_running_loop()
        for job_id in (axom_job, t1_job):  # generate now, so the first pull does not wait
            loop.run_in_executor(None, emu.prepare, job_id)
        # The Hub stand-in: its LFS files live in the same storage, its API on its own port.
        demo = await loop.run_in_executor(None, lambda: demo_hub(
            workdir, model_bytes=args.model_size, url_lifetime=args.url_lifetime,
            storage=emu.storage))
        demo.hub.storage_base_url = emu.storage_base_url
        hub = web.AppRunner(demo.hub.make_app(), access_log=None, shutdown_timeout=1.0)
        await hub.setup()
        hub_runner.append(hub)
        try:
            await web.TCPSite(hub, args.host, api_port + 2 if args.port else 0).start()
        except OSError:
            await web.TCPSite(hub, args.host, 0).start()
        hub_base = f"http://{args.host}:{hub.addresses[0][1]}"
        base = f"http://{args.host}:{api_port}"
        _announce_platforms(emu, base, axom_job, t1_job, script, announce_hub(demo, hub_base))
        await asyncio.Event().wait()
    finally:
        await api.cleanup()
        await storage.cleanup()
        for runner in hub_runner:
            await runner.cleanup()


def _announce_platforms(emu: PlatformEmulator, base: str, axom_job: str, t1_job: str,
                        script: RunScript, hub_lines: list[str]) -> None:
    axom_env = f"AXOM_API_BASE={base}/api AXOM_KEY={emu.axom_key}"
    t1_env = f"TENSORONE_API_BASE={base}/v2 TENSORONE_API_KEY={emu.tensorone_key}"
    lines = [
        "weightlift platform emulator (Ctrl-C to stop)",
        f"  Axom API:       {base}/api   key {emu.axom_key}",
        f"  TensorOne API:  {base}/v2    key {emu.tensorone_key}",
        f"  storage:        {emu.storage_base_url}   (presigned URLs live "
        f"{emu.url_lifetime:g} s)",
        f"  Axom job:       {axom_job}",
        f"  TensorOne job:  {t1_job}",
        f"  each run: {script.total_steps} steps, one preemption, about "
        f"{_duration(script):.0f} s to complete, starting when first asked about",
        "",
        "try:",
        f"  {axom_env} weightlift watch axom://jobs/{axom_job} --pull -o ./model",
        f"  {t1_env} weightlift watch tensorone://jobs/{t1_job}",
        f"  {t1_env} weightlift pull tensorone://jobs/{t1_job} -o ./ckpt",
        *hub_lines,
        f"  curl -H 'Authorization: Bearer {emu.axom_key}' {base}/api/jobs/{axom_job}",
    ]
    print("\n".join(lines), flush=True)


def _duration(script: RunScript) -> float:
    return RunTimeline(script).end_t


def serve_platforms(args: argparse.Namespace) -> int:
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        asyncio.run(_serve_platforms(args, args.workdir))
    else:
        with tempfile.TemporaryDirectory(prefix="weightlift-emulator-") as tmp:
            asyncio.run(_serve_platforms(args, Path(tmp)))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command is None:
        if args.speed <= 0:
            raise SystemExit("error: --speed must be positive")
        try:
            return serve_platforms(args)
        except KeyboardInterrupt:
            return 130
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
