"""Shared by the hostile-server suite (tests/hostile): puts the suite's helper modules on
sys.path (it is not a package: the suite runs with --import-mode=importlib) and serves
`serve`, a raw-socket misbehaving server factory (hostile_server.py, behaviours.py). The child
runs and their judging live in hostile_run.py.

Every module here sets `pytestmark = pytest.mark.hostile` (`pytest -m hostile` runs the suite
alone).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from hostile_server import Behaviour, HostileServer  # noqa: E402


@pytest.fixture
def serve() -> Iterator[Any]:
    """``serve(data, behaviour) -> HostileServer`` (started); all stop at teardown."""
    started: list[HostileServer] = []

    def start(data: bytes, behaviour: Behaviour, **kw: Any) -> HostileServer:
        srv = HostileServer(data, behaviour, **kw)
        started.append(srv)
        return srv.__enter__()

    yield start
    for srv in started:
        srv.stop()
