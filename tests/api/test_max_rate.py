"""--max-rate: a bandwidth cap for the whole pull, measured against the storage emulator.

The 10-second measurement is marked `slow` (left out of the quick default run; CI runs it with
`pytest -m slow`, see .ci/run)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from tests.api.conftest import weightlift
from tests.api.test_rough_edges import needs_engine_v2
from weightlift.emulator.serve import StorageEndpoint
from weightlift.pulling import PullOptions, engine_config
from weightlift.settings import env_settings, parse_rate

CAP = 20_000_000  # bytes/s: "20 MB/s"
SECONDS = 10.0


def test_rate_parsing() -> None:
    assert parse_rate("20M") == 20 * (1 << 20)
    assert parse_rate("20M/s") == parse_rate("20MiB") == 20 * (1 << 20)
    assert parse_rate("20000000") == CAP
    with pytest.raises(ValueError, match="not a rate"):
        parse_rate("fast")


@needs_engine_v2
def test_max_rate_reaches_the_engine() -> None:
    config = engine_config(PullOptions(max_rate=CAP), env_settings({}))
    assert config.max_rate == CAP
    assert engine_config(PullOptions(), env_settings({})).max_rate is None


@pytest.mark.slow
@needs_engine_v2
def test_20_mb_s_cap_holds_within_10_percent_over_10_seconds(threaded_storage: StorageEndpoint,
                                                             tmp_path: Path) -> None:
    size = int(CAP * SECONDS)
    half = size // 2
    # Two files, so the cap is seen to be for the whole pull, not per file or connection.
    block = bytes(range(256)) * 4096
    for name, n in (("a.bin", half), ("b.bin", size - half)):
        threaded_storage.emu.put_bytes(name, (block * (n // len(block) + 1))[:n])
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(threaded_storage.manifest(["a.bin", "b.bin"])))
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:  # bytes served, every 0.5 s, to see the rate over time too
        while not stop.wait(0.5):
            samples.append((time.monotonic(), threaded_storage.emu.total_bytes_served))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run = weightlift("pull", str(manifest), "-o", str(tmp_path / "o"), "--json",
                         "--max-rate", str(CAP), "--connections", "8", "--no-verify",
                         timeout=60)
    finally:
        stop.set()
        sampler.join(timeout=5)
    assert run.returncode == 0, run.stderr
    totals = json.loads(run.stdout)["totals"]
    rate = totals["bytes_fetched"] / totals["seconds"]
    windows = [(b2 - b1) / (t2 - t1) / 1e6
               for (t1, b1), (t2, b2) in zip(samples, samples[2:], strict=False)
               if b1 and b2 < size]  # 1-second windows inside the transfer
    print(f"--max-rate {CAP / 1e6:.0f} MB/s: {totals['bytes_fetched'] / 1e6:.0f} MB in "
          f"{totals['seconds']:.2f} s = {rate / 1e6:.2f} MB/s; 1 s windows (MB/s): "
          f"{', '.join(f'{w:.1f}' for w in windows)}")
    assert 0.9 * CAP <= rate <= 1.1 * CAP
