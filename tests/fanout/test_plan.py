"""The cluster chunk plan matches what each node's engine asks for (no Ray needed)."""

from __future__ import annotations

import pytest

from weightlift.downloader.errors import UsageError
from weightlift.downloader.fanout.driver import check_shared_hosts, select_nodes, short_names
from weightlift.downloader.fanout.plan import check_template, node_dir, plan_cluster
from weightlift.downloader.manifest import Manifest, ManifestFile
from weightlift.downloader.planner import plan_file
from weightlift.downloader.ranges import RangeSet

MiB = 1 << 20


def manifest(*sizes: int) -> Manifest:
    return Manifest(tuple(ManifestFile(f"f{i}", f"http://h/f{i}", size)
                          for i, size in enumerate(sizes)))


def test_the_plan_is_a_fresh_nodes_plan() -> None:
    m = manifest(10 * MiB + 123, 1 * MiB, 0, 4 * MiB)
    plan = plan_cluster(m, 4 * MiB, 8)
    fresh = [c for f in m.files for c in plan_file(f.rel, f.size or 0, RangeSet(), 4 * MiB)]
    assert [(c.rel, c.start, c.end, c.whole) for c in plan.chunks] == \
        [(c.rel, c.start, c.end, c.whole) for c in fresh]
    assert [c.index for c in plan.chunks] == list(range(len(plan.chunks)))
    assert plan.total_bytes == 15 * MiB + 123


def test_a_resumed_range_is_split_along_the_cluster_chunks() -> None:
    plan = plan_cluster(manifest(12 * MiB), 4 * MiB, 8)
    pieces = plan.pieces("f0", 3 * MiB, 9 * MiB)
    assert [(c.start, lo, hi) for c, lo, hi in pieces] == [
        (0, 3 * MiB, 4 * MiB), (4 * MiB, 4 * MiB, 8 * MiB), (8 * MiB, 8 * MiB, 9 * MiB)]
    assert plan.pieces("nope", 0, 10) == []


def test_unknown_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="size"):
        plan_cluster(Manifest((ManifestFile("a", "http://h/a"),)), None, 8)


def test_node_folders() -> None:
    assert node_dir("/data/{node}/m", "abc") == "/data/abc/m"
    assert node_dir("/data/m", "abc") == "/data/m"
    check_template("/data/{node}")
    with pytest.raises(UsageError, match="placeholder"):
        check_template("/data/{nodes}")


def test_node_selection_by_resource_or_label() -> None:
    nodes = [
        {"NodeID": "1" * 56, "Alive": True, "Resources": {"gpu_pool": 1.0}, "Labels": {}},
        {"NodeID": "2" * 56, "Alive": True, "Resources": {}, "Labels": {"tier": "serve"}},
        {"NodeID": "3" * 56, "Alive": False, "Resources": {"gpu_pool": 1.0}, "Labels": {}},
    ]
    assert [n["NodeID"][0] for n in select_nodes(nodes, None)] == ["1", "2"]
    assert [n["NodeID"][0] for n in select_nodes(nodes, "gpu_pool")] == ["1"]
    assert [n["NodeID"][0] for n in select_nodes(nodes, "tier=serve")] == ["2"]
    assert select_nodes(nodes, "tier=train") == []
    assert short_names(["ab" * 28, "cd" * 28]) == ["ab" * 6, "cd" * 6]
    assert short_names(["a" * 56, "a" * 55 + "b"]) == ["a" * 56, "a" * 55 + "b"]


def test_nodes_sharing_a_host_need_the_placeholder() -> None:
    same = [{"NodeManagerAddress": "10.0.0.1"}, {"NodeManagerAddress": "10.0.0.1"}]
    check_shared_hosts(same, "/m/{node}")
    check_shared_hosts([{"NodeManagerAddress": "10.0.0.1"}, {"NodeManagerAddress": "10.0.0.2"}],
                       "/m")
    with pytest.raises(UsageError, match=r"2 of the selected Ray nodes run on one host"):
        check_shared_hosts(same, "/m")
