"""The node is killed while a webhook delivery is being retried and started again: the outbox is
in the database, so every event still arrives, once the receiver answers, in order.  And a
cluster node that drains says so."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

from clients.loadtest.polling import until
from tests.conftest import REDIS_URL
from tests.faults.node import Node
from tests.services import PrivatePostgres
from tests.webhook_receiver import Receiver

WEBHOOK_ENV = {
    "VIDEOCONF_WEBHOOKS__ALLOWED_NETWORKS": '["127.0.0.0/8"]',
    "VIDEOCONF_WEBHOOKS__RETRY_DELAYS": "[1]",
    "VIDEOCONF_WEBHOOKS__JITTER": "0",
    "VIDEOCONF_WEBHOOKS__POLL_INTERVAL": "0.1",
    "VIDEOCONF_WEBHOOKS__LEASE_SECONDS": "3",  # a post cut short by the kill is tried again after this
}


async def test_deliveries_being_retried_survive_a_node_restart(tmp_path: Path) -> None:
    receiver = await Receiver().start()
    receiver.answers = [500] * 10_000
    node = Node(tmp_path, **WEBHOOK_ENV)
    try:
        await node.start()
        made = node.server.cli("webhooks", "create", "--url", receiver.url(), "--ordered")
        assert made.returncode == 0, made.stderr
        endpoint = json.loads(made.stdout)
        host = await node.register("Hedy Host")
        meeting = await node.meeting(host)
        await node.call("POST", f"/api/meetings/{meeting['id']}/end", host["token"], expect=200)
        await until(lambda: len(receiver.received) >= 2, 15, "two failed attempts")
        assert set(receiver.types()) == {"meeting.started"}  # ordered: meeting.ended waits

        await node.kill()
        failed = len(receiver.received)
        receiver.answers = []  # the receiver is well again while the node is down
        await node.start(migrate=False)

        await until(lambda: "meeting.ended" in receiver.types(), 20, lambda: f"meeting.ended, got {receiver.types()}")
        receiver.events(endpoint["secret"])  # each one authentic
        started = receiver.types().count("meeting.started")
        assert receiver.types() == ["meeting.started"] * started + ["meeting.ended"] and started > failed
        assert len({r.webhook_id for r in receiver.received[:started]}) == 1  # one event, tried again

        async def settled() -> list[dict] | None:
            shown = node.server.cli("webhooks", "deliveries", endpoint["id"])
            items = json.loads(shown.stdout)["items"]
            return items if all(d["status"] == "succeeded" for d in items) else None

        log = await until(settled, 10, "the log to show both delivered")
        assert [d["event_type"] for d in log] == ["meeting.ended", "meeting.started"]
        assert log[0]["attempts"] == 1 and failed <= log[1]["attempts"] <= started  # a post the kill cut short is not counted
    finally:
        await node.close()
        await receiver.close()


async def test_a_draining_cluster_node_sends_node_draining(tmp_path: Path) -> None:
    pg = PrivatePostgres()
    await asyncio.to_thread(pg.start)
    receiver = await Receiver().start()
    shared = {**WEBHOOK_ENV, "VIDEOCONF_CLUSTER": "true", "VIDEOCONF_REDIS_PREFIX": f"vcwh:{uuid.uuid4().hex[:8]}:"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = Node(tmp_path / "a", database_url=pg.url, redis_url=REDIS_URL, VIDEOCONF_NODE_ID="node-a", **shared)
    second = Node(tmp_path / "b", database_url=pg.url, redis_url=REDIS_URL, VIDEOCONF_NODE_ID="node-b", **shared)
    try:
        await first.start()
        made = first.server.cli("webhooks", "create", "--url", receiver.url(), "--event", "node.draining")
        assert made.returncode == 0, made.stderr
        endpoint = json.loads(made.stdout)
        await second.start(migrate=False)
        await second.call("POST", "/api/nodes/node-a/drain", expect=202)  # asked of the other node
        await until(lambda: receiver.received, 15, "node.draining")
        (event,) = receiver.events(endpoint["secret"])
        assert event["type"] == "node.draining" and event["data"] == {"node": "node-a", "participants": 0}
    finally:
        await first.close()
        await second.close()
        await receiver.close()
        await asyncio.to_thread(pg.close)
