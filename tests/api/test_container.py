"""The container recipe: the README's init-container command line works (docker has no engine
here, so the command the image would run is run directly), and the Dockerfile copies every
package folder the build needs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import tomllib

from tests.api.conftest import weightlift
from weightlift.emulator.platforms import ThreadedPlatforms
from weightlift.emulator.runs import RunScript

ROOT = Path(__file__).resolve().parents[2]


def init_container_args() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", readme, flags=re.S)
                if "initContainers" in b]
    init = block.split("initContainers:", 1)[1].split("containers:", 1)[0]
    (args,) = re.findall(r"^\s+args: (\[.*\])$", init, flags=re.M)
    parsed: list[str] = json.loads(args)
    return parsed


@pytest.mark.parametrize("right_count", [True, False])
def test_init_container_command_pulls_and_gates(threaded_platforms: ThreadedPlatforms,
                                                tmp_path: Path, right_count: bool) -> None:
    tp = threaded_platforms
    job = tp.emu.add_axom_job(RunScript.instant(model_bytes=1 << 20, shards=2))
    tp.emu.prepare(job)
    params = tp.emu.expected_params(job)
    volume = tmp_path / "models"  # the emptyDir, mounted at /models
    args = [str(volume) + a.removeprefix("/models") if a.startswith("/models/") else
            a.replace("<model-id>", tp.emu.axom_model_id(job)) for a in init_container_args()]
    i = args.index("--expect-params")
    assert args[i + 1] == "2360000000"
    args[i + 1] = str(params if right_count else params + 1)
    run = weightlift(*args, env=tp.env())
    doc = json.loads(run.stdout)
    if right_count:
        assert run.returncode == 0, run.stderr
        assert doc["params"] == params
        assert (volume / "llm" / ".weightlift" / "receipt.json").is_file()
    else:  # the pod must not start: a non-zero exit, and the reason on one line
        assert run.returncode == 1
        assert doc["ok"] is False
        assert "does not match the expected" in run.stderr


def test_dockerfile_copies_every_package_folder() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    folders = set(config["tool"]["setuptools"]["package-dir"].values())
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) \./\S+$", dockerfile, flags=re.M))
    assert folders <= copied, folders - copied
    assert re.search(r'^ENTRYPOINT \["weightlift"\]$', dockerfile, flags=re.M)
