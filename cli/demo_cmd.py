"""`weightlift demo`: the whole flow on this machine, no account needed.

Generates a real sharded safetensors model, serves it from the embedded storage emulator behind
presigned URLs that expire every few seconds, pulls it (refreshing the URLs as they expire),
and verifies it against its known parameter count.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from weightlift.cli.progress import Progress, human_bytes
from weightlift.downloader.manifest import Manifest, validate_manifest
from weightlift.downloader.sources.local import ResolvedSource

URL_LIFETIME = 1.0  # seconds: short enough that the demo shows refreshes happening
# Object stores cap each connection (S3: ~85-90 MB/s); a lower cap here makes the demo's
# transfer last a few seconds, long enough for URLs to expire mid-pull.
PER_CONNECTION_RATE = 10_000_000


def run(args: argparse.Namespace) -> int:
    from weightlift.cli.pull_cmd import pull_and_verify, run_cancellable
    from weightlift.emulator.faults import Fault
    from weightlift.emulator.model_gen import generate_checkpoint
    from weightlift.emulator.serve import ThreadedServer
    from weightlift.emulator.storage import StorageEmulator

    progress = Progress(quiet=args.quiet)
    say = progress.say
    with tempfile.TemporaryDirectory(prefix="weightlift-demo-") as tmp:
        bucket = Path(tmp) / "bucket"
        out = Path(args.output) if args.output else Path(tmp) / "model"
        say(f"1/4 generating a {human_bytes(args.size)} sharded safetensors model")
        model = generate_checkpoint(bucket, total_bytes=args.size, shards=4, seed=7)
        emu = StorageEmulator()
        for rel in model.files:
            emu.put_file(rel, bucket / rel)
        emu.inject("*", Fault.throttle(PER_CONNECTION_RATE), times=1_000_000)
        with ThreadedServer(emu.app) as server:
            base = server.base_url
            say(f"2/4 storage emulator on {base}: presigned URLs live {URL_LIFETIME:.0f}s, "
                f"each connection capped at {PER_CONNECTION_RATE / 1e6:.0f} MB/s")

            async def refresh() -> Manifest:
                return validate_manifest(
                    emu.manifest(model.files, base_url=base, lifetime=URL_LIFETIME))

            manifest = validate_manifest(
                emu.manifest(model.files, base_url=base, lifetime=URL_LIFETIME))
            source = ResolvedSource(manifest, refresh, model.params, "demo emulator")
            say(f"3/4 pulling {len(model.files)} files into {out}")
            pull_args = argparse.Namespace(
                connections=None, chunk_size=None, no_verify=False,
                expect_params=None, quiet=args.quiet,
            )
            code, report = asyncio.run(run_cancellable(
                pull_and_verify(source, out, pull_args, progress)))
        if code == 0:
            v = report.get("verification") or {}
            say(f"4/4 verified: {v.get('params', 0):,} parameters, as the platform reported "
                f"({model.params:,}); {report['totals']['refreshes']} URL refresh(es) on the way")
            if not args.output:
                say("(the model was in a temporary folder; pass -o DIR to keep it)")
        return code
