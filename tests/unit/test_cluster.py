"""The node registry and room placement (control_api/cluster.py): the choice is pure; the
registry and the placement run on the machine's real Redis, under a prefix of their own."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from control_api.cluster import (
    DRAINING,
    CpuMeter,
    NodeInfo,
    NodeLoad,
    NoNodeAvailable,
    RedisCluster,
    choose,
)


def node(name: str, participants: int = 0, limit: int | None = None, state: str = "serving", cpu: float = 0.0, rooms: int = 0) -> NodeInfo:
    return NodeInfo(name, f"ws://{name}/signaling", state, NodeLoad(participants, 0, rooms, cpu), limit)


@pytest.mark.parametrize(
    ("nodes", "chosen"),
    [
        ([], None),
        ([node("a", 3), node("b", 1)], "b"),  # fewer participants
        ([node("a", 2, limit=2), node("b", 5)], "b"),  # a is full
        ([node("a", 1, limit=10), node("b", 1, limit=2)], "a"),  # the smaller share of its limit
        ([node("a", 0, state=DRAINING), node("b", 9)], "b"),  # draining takes no new room
        ([node("a", 1, cpu=0.9), node("b", 1, cpu=0.2)], "b"),  # then CPU
        ([node("a", 1, cpu=0.04), node("b", 1, cpu=0.001)], "a"),  # ... but not its noise: the id decides
        ([node("a", 1, rooms=3), node("b", 1, rooms=1)], "b"),  # then rooms
        ([node("b"), node("a")], "a"),  # then the id: the same answer everywhere
        ([node("a", 2, limit=2), node("b", 0, state=DRAINING)], None),  # nowhere to go
    ],
)
def test_a_new_room_goes_to_the_least_loaded_serving_node_under_its_limit(nodes: list[NodeInfo], chosen: str | None) -> None:
    found = choose(nodes)
    assert (found.id if found else None) == chosen


def test_a_heartbeat_written_by_another_version_is_skipped() -> None:
    assert NodeInfo.from_json(node("a", 2).to_json()) == node("a", 2)
    assert NodeInfo.from_json(b"{not json") is None
    assert NodeInfo.from_json('{"id": "a", "colour": "blue"}') is None


def test_the_cpu_meter_gives_the_share_of_one_core_between_readings() -> None:
    clock, cpu = [100.0], [5.0]
    meter = CpuMeter(clock=lambda: clock[0], cpu=lambda: cpu[0])
    clock[0], cpu[0] = 102.0, 6.0
    assert meter.share() == 0.5
    assert meter.share() == 0.0  # no time passed


@pytest.fixture
async def cluster(redis_client: Any) -> Any:
    prefix = f"vctest:cluster:{uuid.uuid4().hex}:"
    yield RedisCluster(redis_client, prefix, ttl=0.5)
    keys = [key async for key in redis_client.scan_iter(match=prefix + "*")]
    if keys:
        await redis_client.delete(*keys)


async def test_nodes_exist_while_their_heartbeat_lasts(cluster: RedisCluster) -> None:
    await cluster.heartbeat(node("a", 1))
    await cluster.heartbeat(node("b", 2))
    assert [n.id for n in await cluster.nodes()] == ["a", "b"]
    await asyncio.sleep(0.3)
    await cluster.heartbeat(node("a", 1))
    await asyncio.sleep(0.3)  # b's heartbeat is now 0.6 s old, past its 0.5 s
    assert [n.id for n in await cluster.nodes()] == ["a"]
    await cluster.leave("a")
    assert await cluster.nodes() == []


async def test_a_room_stays_where_it_was_placed_while_that_node_lives(cluster: RedisCluster) -> None:
    with pytest.raises(NoNodeAvailable):
        await cluster.place("room1")
    await cluster.heartbeat(node("a", 3))
    await cluster.heartbeat(node("b", 1))
    placed, first = await cluster.place("room1")
    assert placed.id == "b" and first.node == "b"
    await cluster.heartbeat(node("b", 9))  # b is busier now, but room1 lives there
    again, same = await cluster.place("room1")
    assert again.id == "b" and same == first
    assert await cluster.placement("room1") == first
    other, _ = await cluster.place("room2")
    assert other.id == "a"


async def test_placing_one_room_from_many_nodes_at_once_gives_one_answer(cluster: RedisCluster) -> None:
    for name in ("a", "b", "c"):
        await cluster.heartbeat(node(name))
    results = await asyncio.gather(*(cluster.place("busy") for _ in range(20)))
    assert len({placement for _, placement in results}) == 1


async def test_a_room_whose_node_died_is_placed_again_with_a_larger_token(cluster: RedisCluster) -> None:
    await cluster.heartbeat(node("a"))
    _, first = await cluster.place("room")
    await asyncio.sleep(0.6)  # a's heartbeat runs out
    assert await cluster.placement("room") is None
    await cluster.heartbeat(node("b"))
    placed, second = await cluster.place("room")
    assert placed.id == "b" and second.token > first.token
    assert not await cluster.release("room", first)  # the dead node's release changes nothing
    assert await cluster.placement("room") == second
    assert await cluster.release("room", second)
    assert await cluster.placement("room") is None
