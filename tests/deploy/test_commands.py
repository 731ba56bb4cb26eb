"""The commands the deploy files call: `videoconf drain --wait` (Kubernetes' preStop) drains a
cluster node and returns once it has stopped, and does nothing to a node outside a cluster;
`videoconf health` (the image's HEALTHCHECK) fails while nothing answers."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.conftest import REDIS_URL
from tests.server_process import ServerProcess, request


def test_drain_moves_a_cluster_node_out_and_returns_when_it_has_stopped(tmp_path: Path) -> None:
    node = ServerProcess(
        tmp_path / "data",
        VIDEOCONF_CLUSTER="true",
        VIDEOCONF_REDIS_URL=REDIS_URL,
        VIDEOCONF_REDIS_PREFIX=f"test-drain-{uuid.uuid4().hex[:8]}:",
        VIDEOCONF_NODE_ID="drained-node",
    )
    assert node.cli("migrate").returncode == 0
    node.start()
    try:
        status, nodes = request(node.base + "/api/nodes")
        assert status == 200 and [n["id"] for n in nodes["nodes"]] == ["drained-node"]
        drained = node.cli("drain", "--wait", "30")
        assert drained.returncode == 0, drained.stderr
        assert "node drained-node is draining" in drained.stdout
        assert "node drained-node has stopped" in drained.stdout
        assert node.process is not None and node.process.wait(timeout=10) == 0
        assert "draining" in node.child.logged()
    finally:
        if node.process is not None and node.process.poll() is None:
            node.stop()
    unhealthy = node.cli("health")
    assert unhealthy.returncode == 1 and "unhealthy" in unhealthy.stderr


def test_drain_leaves_a_node_outside_a_cluster_running(tmp_path: Path) -> None:
    node = ServerProcess(tmp_path / "data")
    assert node.cli("migrate").returncode == 0
    node.start()
    try:
        result = node.cli("drain", "--wait", "5")
        assert result.returncode == 0 and "not a cluster node" in result.stderr
        assert request(node.base + "/readyz")[0] == 200
    finally:
        code, log = node.stop()
    assert code == 0, log
