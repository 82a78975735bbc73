"""--max-rate: a bandwidth cap for the whole pull, measured against the storage emulator.

The 10-second measurement is marked `slow` (left out of the quick default run; CI runs it with
`pytest -m slow`, see .ci/run)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.api.conftest import weightlift
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


def test_max_rate_reaches_the_engine() -> None:
    config = engine_config(PullOptions(max_rate=CAP), env_settings({}))
    assert config.max_rate == CAP
    assert engine_config(PullOptions(), env_settings({})).max_rate is None


@pytest.mark.slow
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
    started = time.monotonic()
    run = weightlift("pull", str(manifest), "-o", str(tmp_path / "o"), "--json",
                     "--max-rate", str(CAP), "--connections", "8", "--no-verify", timeout=60)
    wall = time.monotonic() - started
    assert run.returncode == 0, run.stderr
    totals = json.loads(run.stdout)["totals"]
    assert totals["bytes_fetched"] == size
    rate = totals["bytes_fetched"] / totals["seconds"]
    print(f"--max-rate {CAP / 1e6:.0f} MB/s: {size / 1e6:.0f} MB in {totals['seconds']:.2f} s "
          f"= {rate / 1e6:.2f} MB/s (child's wall time {wall:.2f} s)")
    assert 0.9 * CAP <= rate <= 1.1 * CAP
    # The whole command, start-up and verification included, is not much longer either.
    assert wall <= 1.1 * SECONDS + 5
