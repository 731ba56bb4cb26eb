"""Where a load test's bots join in a cluster: as the control API would place participants."""

from __future__ import annotations

from clients.loadtest.spread import api_base, assign_nodes, registry_nodes
from control_api.cluster import NodeInfo, NodeLoad


def node(node_id: str, participants: int, limit: int | None = 3, state: str = "serving", cpu: float = 0.0) -> NodeInfo:
    return NodeInfo(node_id, f"ws://{node_id}:8080/signaling", state, NodeLoad(participants=participants, cpu=cpu), limit)


def test_the_meeting_s_node_fills_first_then_the_least_loaded_others_under_their_limits() -> None:
    nodes = [node("a", 1), node("b", 2), node("c", 0)]
    placed = [n.id for n in assign_nodes(nodes, "a", 7)]
    # a takes two more (to its limit of 3); then the emptier of b and c by its share of its
    # limit (the id breaks a tie); once all are full, the meeting's node takes the rest.
    assert placed == ["a", "a", "c", "c", "b", "c", "a"]


def test_a_draining_meeting_node_takes_nobody_and_unlimited_nodes_take_everyone() -> None:
    assert [n.id for n in assign_nodes([node("a", 0, state="draining"), node("b", 5, limit=None)], "a", 3)] == ["b"] * 3
    assert [n.id for n in assign_nodes([node("a", 10, limit=None), node("b", 0)], "a", 2)] == ["a", "a"]


def test_the_registry_answer_is_read_leniently_and_urls_map_to_api_bases() -> None:
    body = {"nodes": [
        {"id": "a", "signaling_url": "wss://a.example/signaling", "state": "serving", "max_participants": 2,
         "load": {"participants": 1, "tracks": 2, "rooms": 1, "cpu": 0.1, "packets_per_second": 5.0}},
        {"id": "broken"},
    ]}
    (only,) = registry_nodes(body)
    assert only.id == "a" and only.max_participants == 2 and only.load.participants == 1
    assert registry_nodes(None) == [] and registry_nodes({"nodes": "x"}) == []
    assert api_base("wss://a.example/signaling") == "https://a.example"
    assert api_base("ws://127.0.0.1:9000/signaling") == "http://127.0.0.1:9000"
