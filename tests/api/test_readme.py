"""The README's Python API example, run as it is written (in a folder with a manifest.json)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.api.conftest import Served

README = Path(__file__).resolve().parents[2] / "README.md"


def python_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    (example,) = [b for b in blocks if "weightlift.pull(" in b]
    return example


def test_readme_python_example_runs(served: Served, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    served.write_manifest(work / "manifest.json")
    run = subprocess.run([sys.executable, "-c", python_example()], cwd=work, capture_output=True,
                         text=True, timeout=120, env=dict(os.environ), check=False)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split()[:2] == ["True", str(served.gen.params)]
    shown = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert set(shown) == set(served.files)  # *.safetensors and *.json: every file here
    for rel, (size, sha) in shown.items():
        assert int(size) == len(served.files[rel])
        assert re.fullmatch(r"[0-9a-f]{64}", sha)
    assert run.stderr == ""  # nothing printed by the library itself
