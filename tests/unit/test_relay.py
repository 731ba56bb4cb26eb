"""A meeting over several nodes, without sockets: what a node says of its part (``room_state``),
what it wants relayed, how another node's state is mirrored as remote participants (and
forgotten when that node goes silent), and that malformed states and messages change nothing."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry

from control_api.pubsub import MemoryPubSub
from sfu.forwarding import UpTrack
from sfu.metrics import SfuMetrics
from sfu.relay import (
    RelayFeed,
    codec_from_json,
    codec_to_json,
    hand_raised_at,
    parse_people,
    remote_track,
    room_state,
    ssrcs_by_mid,
    wanted_layers,
)
from sfu.room import Participant, Room, SfuNode
from sfu.sdp import SimulcastOffer
from signaling.cascade import NODE_SILENT, Cascade, RoomCascade

VP8 = {"mimeType": "video/VP8", "clockRate": 90000, "channels": None, "payloadType": 96, "parameters": {}}
OPUS = {"mimeType": "audio/opus", "clockRate": 48000, "channels": 2, "payloadType": 111, "parameters": {}}


def a_node() -> SfuNode:
    return SfuNode(SfuMetrics(CollectorRegistry()))


async def _quiet(message: dict[str, Any]) -> None:
    pass


def person(identity: str, *tracks: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"identity": identity, "name": identity.title(), "role": "participant", "hand_raised": False,
            "hidden": False, "waiting": False, "tracks": list(tracks), **fields}


def track(track_id: str, kind: str = "video", layers: int = 1, **fields: Any) -> dict[str, Any]:
    return {"track_id": track_id, "kind": kind, "source": "camera" if kind == "video" else "microphone",
            "muted": False, "blocked": False, "codec": VP8 if kind == "video" else OPUS, "layers": layers, **fields}


def test_each_m_section_s_media_and_rtx_ssrc_are_read_by_mid() -> None:
    sdp = "\r\n".join([
        "v=0", "m=video 9 UDP/TLS/RTP/SAVPF 96 97", "a=mid:0", "a=ssrc-group:FID 111 222", "a=ssrc:111 cname:x", "a=ssrc:222 cname:x",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=mid:1", "a=ssrc:333 cname:x",
        "m=video 9 UDP/TLS/RTP/SAVPF 96", "a=mid:2", "a=ssrc-group:FID nonsense", "a=ssrc:x cname:y",
    ])
    assert ssrcs_by_mid(sdp) == {"0": (111, 222), "1": (333, None), "2": (None, None)}


def test_codecs_travel_as_json_and_garbage_is_no_codec() -> None:
    codec = codec_from_json(VP8)
    assert codec is not None and codec_to_json(codec) == VP8
    for bad in (None, 7, {}, {"mimeType": "video/VP8"}, {"mimeType": "video/VP8", "clockRate": "fast"}):
        assert codec_from_json(bad) is None


def test_malformed_people_and_tracks_are_left_out_and_counts_are_bounded() -> None:
    state = {"participants": [
        person("alice", track("t1"), track("t2", layers=9), track("t3", kind="text"), {"track_id": 5}, track("t4", codec=None)),
        "bob", {"identity": 3}, person("carol", *[track(f"c{i}") for i in range(40)]),
    ]}
    people = parse_people(state)
    assert [p["identity"] for p in people] == ["alice", "carol"]
    assert [t["track_id"] for t in people[0]["tracks"]] == ["t1"]
    assert len(people[1]["tracks"]) == 16
    assert parse_people({"participants": "everyone"}) == [] and parse_people({}) == []


def test_a_remote_track_has_the_publisher_s_layers_and_is_wanted_only_while_someone_here_takes_it() -> None:
    node = a_node()
    room = node.room("r")
    up = remote_track(track("t1", layers=3, muted=True), "alice", room)
    assert up.remote and up.is_simulcast and len(up.layers) == 3 and up.muted
    assert up.codec is not None and up.codec.mimeType == "video/VP8"
    assert wanted_layers(up) == []  # nobody here takes it
    audio = remote_track(track("a1", kind="audio"), "alice", room)
    assert wanted_layers(audio) == []

    class Down:
        def __init__(self, layer: Any) -> None:
            self.forwarder = type("F", (), {"wants": lambda _self, x: x is layer})()

    audio.downtracks.append(Down(None))  # type: ignore[arg-type]
    assert wanted_layers(audio) == [0]
    plain = remote_track(track("v1"), "alice", room)
    plain.downtracks.append(Down(None))  # type: ignore[arg-type]  # subscribed, but off (last-N)
    assert wanted_layers(plain) == []
    plain.downtracks.append(Down(plain.layers[0]))  # type: ignore[arg-type]
    assert wanted_layers(plain) == [0]
    up.downtracks.append(Down(None))  # type: ignore[arg-type]
    up.layers[2].pause()  # dynacast here stopped the top layer: nobody here wants it
    assert wanted_layers(up) == [0, 1]


async def test_a_state_lists_local_people_and_wants_remote_tracks_but_never_relays_them_again() -> None:
    node = a_node()
    room = node.room("r")
    local = Participant(room, "alice", "Alice", "host", {"can_subscribe": True}, _quiet)
    await room.add(local)
    mine = UpTrack("mine", "alice", "video", "camera", node.metrics, simulcast=SimulcastOffer("0", rids=["l", "h"]))
    mine.codec = codec_from_json(VP8)
    local.uptracks["mine"] = mine
    ghost = Participant(room, "bob", "Bob", "participant", {}, _quiet)
    ghost.remote = "node-b"
    await room.add(ghost)
    theirs = remote_track(track("theirs"), "bob", room)
    ghost.uptracks["theirs"] = theirs
    theirs.taps.append(type("Tap", (), {"wants": lambda _self, layer: True})())  # type: ignore[arg-type]  # a recorder here

    state = room_state(room, "node-a")
    assert state["node"] == "node-a" and state["link"] is True
    assert [p["identity"] for p in state["participants"]] == ["alice"]
    assert state["participants"][0]["tracks"][0]["layers"] == 2
    assert state["wants"] == {"theirs": [0]}
    assert node.participant_count() == 1 and node.track_count("video") == 1  # the remote one is not this node's


async def test_an_allocation_round_reaches_relay_feeds_and_everyone_after_them() -> None:
    """``Room.reallocate_all`` passes the room's video sources to every participant: a relay
    feed takes them too (a cascade test once found every round failing on the feed, so that
    nobody after it in the room got video)."""
    node = a_node()
    room = node.room("r")
    feed = RelayFeed(room, "node-b", _quiet)
    await room.add(feed)
    rounds: list[str] = []

    class Counted(Participant):
        async def reallocate(self, sources: Any = None) -> None:
            rounds.append(self.identity)
            await super().reallocate(sources)

    await room.add(Counted(room, "alice", "Alice", "host", {"can_subscribe": True}, _quiet))
    assert list(room.participants)[0] == feed.identity  # the feed comes first
    await room.reallocate_all()
    assert rounds == ["alice"]


async def cascade_room() -> tuple[Room, RoomCascade, list[dict[str, Any]]]:
    node = a_node()
    room = node.room("r")
    told: list[dict[str, Any]] = []

    async def notify(message: dict[str, Any]) -> None:
        told.append(message)

    await room.add(Participant(room, "zoe", "Zoe", "host", {"can_subscribe": True, "room_admin": True}, notify))

    async def on_order(room: Room, order: dict[str, Any]) -> None:
        told.append({"order": order})

    return room, RoomCascade(Cascade(MemoryPubSub(), "node-a", on_order), room), told


async def test_another_node_s_participants_are_mirrored_updated_and_forgotten() -> None:
    room, cascade, told = await cascade_room()
    await cascade._state("node-b", {"type": "state", "participants": [person("bob", track("b1"), track("b2", kind="audio"))], "link": True})
    bob = room.participants["bob"]
    assert bob.remote == "node-b" and set(bob.uptracks) == {"b1", "b2"}
    assert [m["type"] for m in told][:1] == ["participant-joined"]
    assert {m["track"]["track_id"] for m in told if m.get("type") == "track-published"} == {"b1", "b2"}

    # A hand, a host's mute and an unpublished track are told here as they happen there.
    told.clear()
    await cascade._state("node-b", {"type": "state", "participants": [person("bob", track("b1", blocked=True), hand_raised=True)]})
    kinds = [m["type"] for m in told]
    assert "participant-updated" in kinds and "track-unpublished" in kinds
    muted = next(m for m in told if m["type"] == "track-muted")
    assert muted["muted"] and muted["by_host"] and bob.uptracks["b1"].blocked

    # Bob left node b: he leaves here.  A node that says nothing for NODE_SILENT seconds is gone.
    await cascade._state("node-b", {"type": "state", "participants": []})
    assert "bob" not in room.participants
    await cascade._state("node-c", {"type": "state", "participants": [person("carl", track("c1"))]})
    assert room.participants["carl"].remote == "node-c"
    cascade.seen["node-c"] = time.monotonic() - NODE_SILENT - 1
    await cascade._expire()
    assert "carl" not in room.participants and "zoe" in room.participants


async def test_someone_here_wins_over_another_node_s_stale_copy_of_them() -> None:
    room, cascade, _ = await cascade_room()
    await cascade._state("node-b", {"type": "state", "participants": [person("zoe", track("z1"))]})
    assert room.participants["zoe"].remote is None and room.remote_track("z1") is None
    # Someone who moved from node b to node c is mirrored once, from the node that has them now.
    await cascade._state("node-b", {"type": "state", "participants": [person("bob")]})
    await cascade._state("node-c", {"type": "state", "participants": [person("bob")]})
    assert room.participants["bob"].remote == "node-c"


async def test_malformed_states_and_messages_change_nothing_and_raise_nothing() -> None:
    room, cascade, told = await cascade_room()
    before = dict(room.participants)
    garbage: list[Any] = [
        {"type": "state", "participants": None}, {"type": "state", "participants": [None, 1, "x", {"identity": None}]},
        {"type": "state", "participants": [{"identity": "eve", "tracks": [{"track_id": "e1", "kind": "video", "layers": 0, "codec": VP8}]}]},
        {"type": "state", "wants": "everything", "link": "yes"},
        {"type": "offer", "to": "node-a", "sdp": 5, "feed": None}, {"type": "answer", "to": "node-a", "sdp": None},
        {"type": "order", "to": "node-a", "action": "explode"}, {"type": None}, {"no": "type"},
    ]

    class Events:
        def __init__(self) -> None:
            self.items = [{**g, "from": "node-b"} for g in garbage] + [{"type": "state", "from": 42}]

        async def get(self) -> dict[str, Any]:
            if not self.items:
                raise EOFError
            return self.items.pop(0)

    try:
        await cascade._read(Events())  # type: ignore[arg-type]
    except EOFError:
        pass
    # Eve (whose only track was unusable) came as a person without tracks, and went with the
    # next state, which listed nobody.
    assert set(room.participants) == set(before)
    assert any(m["type"] == "participant-joined" and m["participant"]["identity"] == "eve" and not m["participant"]["tracks"] for m in told if "type" in m)
    assert not cascade.links and not cascade.feeds  # nobody here publishes: no feed to node b
    assert not [m for m in told if "order" in m]


async def test_a_raised_hand_keeps_the_time_it_first_went_up_until_it_comes_down() -> None:
    room = a_node().room("r")
    zoe = Participant(room, "zoe", "Zoe", "host", {"can_subscribe": True}, _quiet)
    assert zoe.info()["hand_raised_at"] is None and not zoe.hand_raised
    assert zoe.raise_hand(True, 1000.0) is True
    assert zoe.raise_hand(True, 1005.0) is False  # raised again while up: the first time stays
    assert (zoe.info()["hand_raised"], zoe.info()["hand_raised_at"]) == (True, 1000.0)
    assert zoe.raise_hand(False, 1010.0) is True and zoe.info()["hand_raised_at"] is None
    assert zoe.raise_hand(False, 1011.0) is False
    zoe.raise_hand(True, 1020.0)
    assert zoe.hand_raised_at == 1020.0


def test_another_node_s_hand_time_is_taken_as_it_says_and_guessed_only_for_a_node_that_does_not() -> None:
    assert hand_raised_at({"hand_raised": True, "hand_raised_at": 1000.5}, None, 2000.0) == 1000.5
    assert hand_raised_at({"hand_raised": True, "hand_raised_at": 1000.5}, 900.0, 2000.0) == 1000.5
    assert hand_raised_at({"hand_raised": False, "hand_raised_at": 1000.5}, 900.0, 2000.0) is None
    for garbage in (None, "soon", True, float("nan"), float("inf"), [1]):  # an older node, or nonsense
        assert hand_raised_at({"hand_raised": True, "hand_raised_at": garbage}, None, 2000.0) == 2000.0
        assert hand_raised_at({"hand_raised": True, "hand_raised_at": garbage}, 900.0, 2000.0) == 900.0


async def test_hand_times_cross_the_cascade_both_ways() -> None:
    room, cascade, told = await cascade_room()
    room.participants["zoe"].raise_hand(True, 1234.5)
    (zoe,) = room_state(room, "node-a")["participants"]
    assert (zoe["hand_raised"], zoe["hand_raised_at"]) == (True, 1234.5)

    await cascade._state("node-b", {"type": "state", "participants": [person("bob", hand_raised=True, hand_raised_at=1000.0)]})
    assert room.participants["bob"].info()["hand_raised_at"] == 1000.0
    joined = next(m for m in told if m.get("type") == "participant-joined")
    assert joined["participant"]["hand_raised_at"] == 1000.0
    told.clear()
    await cascade._state("node-b", {"type": "state", "participants": [person("bob", hand_raised=True, hand_raised_at=1000.0)]})
    assert not [m for m in told if m.get("type") == "participant-updated"]  # nothing changed: nothing told
    await cascade._state("node-b", {"type": "state", "participants": [person("bob")]})
    (down,) = [m for m in told if m.get("type") == "participant-updated"]
    assert (down["participant"]["hand_raised"], down["participant"]["hand_raised_at"]) == (False, None)
    told.clear()
    await cascade._state("node-b", {"type": "state", "participants": [person("bob", hand_raised=True, hand_raised_at=1100.0)]})
    (up,) = [m for m in told if m.get("type") == "participant-updated"]
    assert up["participant"]["hand_raised_at"] == 1100.0
