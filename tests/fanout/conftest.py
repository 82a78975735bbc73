"""A 3-node local Ray cluster (one for the whole run: Ray starts slowly) and a capped origin."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from weightlift.emulator.model_gen import generate_checkpoint
from weightlift.emulator.serve import StorageEndpoint, ThreadedStorage
from weightlift.emulator.storage import StorageEmulator

NODES = 3
OBJECT_STORE = 128 << 20  # per node: far less than 3 copies of the model would need


@dataclass(frozen=True)
class LocalCluster:
    address: str
    nodes: list[dict[str, Any]]  # ray.nodes() entries, with resource `wl_node_<i>`

    def resource_of(self, node_id: str) -> str:
        node = next(n for n in self.nodes if n["NodeID"] == node_id)
        return next(r for r in node["Resources"] if r.startswith("wl_node_"))


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[LocalCluster]:
    """Three Ray nodes on this machine, 1 CPU each, each with a custom resource `wl_node_<i>`
    (for pinning work and for --ray-nodes); this process is connected to it."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"wl_node_0": 1}, "object_store_memory": OBJECT_STORE})
    try:
        for i in range(1, NODES):
            cluster.add_node(num_cpus=1, resources={f"wl_node_{i}": 1},
                             object_store_memory=OBJECT_STORE)
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        cluster.wait_for_nodes()
        yield LocalCluster(cluster.address, [n for n in ray.nodes() if n["Alive"]])
    finally:
        ray.shutdown()
        cluster.shutdown()


@dataclass(frozen=True)
class Origin:
    endpoint: StorageEndpoint
    manifest_path: Path
    model_bytes: int
    params: int
    sha256: dict[str, str]

    @property
    def emu(self) -> StorageEmulator:
        return self.endpoint.emu


@pytest.fixture(scope="session")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Origin]:
    """A generated 48 MiB, 4-shard checkpoint served from a background thread, all requests
    together capped at 40 MB/s (an origin's egress); a manifest file naming it."""
    src = tmp_path_factory.mktemp("model")
    gen = generate_checkpoint(src, total_bytes=48 << 20, shards=4, seed=14)
    emu = StorageEmulator()
    for rel in gen.files:
        emu.put_file(rel, src / rel)
    emu.total_rate = 40e6
    with ThreadedStorage(emu) as srv:
        manifest = tmp_path_factory.mktemp("manifest") / "manifest.json"
        manifest.write_text(json.dumps(srv.endpoint.manifest(lifetime=3600)))
        yield Origin(srv.endpoint, manifest, gen.total_bytes, gen.params,
                     {rel: emu.sha256(rel) for rel in gen.files})
