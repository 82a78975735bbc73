"""`weightlift demo`: the whole flow on this machine, no account needed.

Starts the emulated Axom platform in-process on a free loopback port, with a fine-tuning run on
an accelerated clock (one preemption on the way) whose model is a real sharded safetensors
checkpoint; then watches the run, pulls the model through presigned URLs that expire every few
seconds (refreshing them as they go), and verifies the parameter count the platform reported.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from weightlift.cli.progress import human_bytes
from weightlift.downloader.planner import DEFAULT_CONNECTIONS
from weightlift.emulator.runs import RunScript

URL_LIFETIME = 2.0  # seconds: short enough that the pull has to refresh its URLs on the way
# Object stores cap each connection (S3: ~85-90 MB/s). The demo's cap holds the whole pull to
# about 100 MB/s whatever the connection count, so 256 MiB takes ~2.7 s: long enough for the
# 2 s URLs to be refreshed on the way. A smaller model is served slower, so that its pull
# still outlives a URL (refreshing is what the demo shows).
# A refresh happens when a request starts after its URL aged: the ranges must come in several
# waves, so a small model gets fewer connections (about four 2 MiB ranges each).
TOTAL_RATE = 100_000_000
MIN_PULL_SECONDS = 2.5 * URL_LIFETIME


def demo_connections(model_bytes: int) -> int:
    return max(2, min(DEFAULT_CONNECTIONS, model_bytes // (8 << 20)))


def per_connection_rate(model_bytes: int) -> int:
    """Storage's per-connection cap: the whole pull at most TOTAL_RATE, and at least
    MIN_PULL_SECONDS long."""
    total = min(TOTAL_RATE, model_bytes / MIN_PULL_SECONDS)
    return max(1, int(total // demo_connections(model_bytes)))
POLL_INTERVAL = 0.5  # the demo's run is accelerated, so it is watched more closely than 5 s


def demo_script(model_bytes: int) -> RunScript:
    """About 8 s from submit to completed, preempted once after the second checkpoint."""
    return RunScript(
        total_steps=120, steps_per_second=40.0, queued_s=0.5, provisioning_s=0.5,
        staging_s=0.5, checkpoint_every=40, checkpointing_s=0.2, uploading_s=0.6,
        preempt_at_step=95, preempted_s=0.6, model_bytes=model_bytes, shards=4, seed=7,
        log_every=20)


def run(args: argparse.Namespace) -> int:
    from weightlift.cli.pull_cmd import run_cancellable
    from weightlift.cli.watch_cmd import WatchOutput, WatchStage, watch_then_pull
    from weightlift.emulator.faults import Fault
    from weightlift.emulator.platforms import (
        ClockFromFirstRequest,
        PlatformEmulator,
        ThreadedPlatforms,
    )

    out = WatchOutput(json_mode=False, quiet=args.quiet, source="axom://jobs/<demo>")
    say = out.say
    with tempfile.TemporaryDirectory(prefix="weightlift-demo-") as tmp:
        model_dir = Path(args.output) if args.output else Path(tmp) / "model"
        clock = ClockFromFirstRequest()  # the run starts when the watch first asks
        emu = PlatformEmulator(Path(tmp) / "platform", clock=clock, url_lifetime=URL_LIFETIME)
        clock.emu = emu
        job_id = emu.add_axom_job(demo_script(args.size), name="demo-llama-sft")
        say(f"1/4 generating the run's model: a {human_bytes(args.size)} sharded safetensors "
            "checkpoint (BF16/F16/F32/I64)")
        emu.prepare(job_id)
        rate = per_connection_rate(args.size)
        emu.storage.inject("*", Fault.throttle(rate), times=1_000_000)
        with ThreadedPlatforms(emu) as platforms:
            source = f"axom://jobs/{job_id}"
            say(f"2/4 emulated Axom API on {platforms.axom_base}, storage on "
                f"{platforms.storage_base} (presigned URLs live {URL_LIFETIME:g} s, each "
                f"connection capped at {rate / 1e6:.2f} MB/s)")
            say(f"3/4 weightlift watch {source} --pull -o {model_dir}")
            watch_args = argparse.Namespace(
                source=source, interval=POLL_INTERVAL, pull=True, output=str(model_dir),
                connections=demo_connections(args.size), chunk_size=None, no_verify=False,
                expect_params=None, quiet=args.quiet, json=False)
            code, report = asyncio.run(run_cancellable(
                watch_then_pull(watch_args, out, WatchStage(), env=platforms.env())))
        if code == 0 and report is not None:
            say(f"4/4 gate passed: {report.params or 0:,} parameters, exactly the params_after "
                f"the platform reported; the URLs were refreshed "
                f"{report.totals.refreshes} time(s) during the pull")
            if not args.output:
                say("(the model was in a temporary folder; pass -o DIR to keep it)")
        return code
