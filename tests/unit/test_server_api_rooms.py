"""How the server API merges the rooms every node reports into one room per meeting."""

from __future__ import annotations

from control_api.services.server_api import merge_rooms


def person(identity: str, joined_at: float, **fields: object) -> dict:
    return {"identity": identity, "name": identity.title(), "joined_at": joined_at, "tracks": [], **fields}


def test_each_meeting_gathers_its_nodes_and_participants_and_one_recording() -> None:
    merged = merge_rooms({
        "node-b": [{"meeting_id": "m1", "participants": [person("bo", 2)], "recording": {"recording_id": "r1"}}],
        "node-a": [
            {"meeting_id": "m1", "participants": [person("al", 1)], "recording": None},
            {"meeting_id": "m2", "participants": [person("cy", 3)], "recording": None},
        ],
    })
    assert merged["m1"]["nodes"] == ["node-a", "node-b"] and merged["m1"]["recording"] == {"recording_id": "r1"}
    assert {i: p["node"] for i, p in merged["m1"]["participants"].items()} == {"al": "node-a", "bo": "node-b"}
    assert list(merged["m2"]["participants"]) == ["cy"]


def test_a_participant_that_moved_is_listed_once_where_it_joined_last() -> None:
    merged = merge_rooms({
        "node-a": [{"meeting_id": "m1", "participants": [person("al", 5)]}],
        "node-b": [{"meeting_id": "m1", "participants": [person("al", 9)]}],
    })
    assert merged["m1"]["participants"]["al"]["node"] == "node-b"


def test_outside_a_cluster_there_is_no_node_and_malformed_entries_are_left_out() -> None:
    merged = merge_rooms({None: [{"meeting_id": "m1", "participants": [person("al", 1), {"name": "no identity"}, "junk"]}, {"no": "id"}]})
    assert merged["m1"]["nodes"] == [] and list(merged["m1"]["participants"]) == ["al"]
