"""This node's part in meetings that span nodes (a cluster): the states, offers, answers and
host orders that the nodes of one meeting exchange over the bus (Redis pub/sub, channel
``relay:<meeting id>``), and what this node does with them (see ``sfu.relay`` for the media).

Each node with a meeting's room open publishes its ``room_state`` when something changes there,
when what it wants of the others changes (checked every ``CHECK_INTERVAL``), and at least every
``STATE_INTERVAL``.  From the others' states it keeps their participants and tracks as remote
participants (telling its own participants who joined, left, published, muted or raised a hand),
runs a relay feed to each node that wants this node's tracks, and answers the feeds of the nodes
whose tracks it wants.  A node whose state is older than ``NODE_SILENT`` is gone: its
participants leave here (they come back through the API, on a living node).  Host actions on a
participant of another node go to that node as an ``order``; it acts as if asked locally.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from control_api.pubsub import PubSub, Subscription
from sfu.relay import (
    RelayFeed,
    RelayLink,
    hand_raised_at,
    parse_people,
    person_metadata,
    remote_track,
    room_state,
)
from sfu.room import Participant, Room, SignalError

log = logging.getLogger(__name__)

CHECK_INTERVAL = 0.25
STATE_INTERVAL = 1.0
NODE_SILENT = 4.0
ORDER_ACTIONS = ("mute", "remove", "admit")

OrderHandler = Callable[[Room, dict[str, Any]], Awaitable[None]]


def relay_channel(room_id: str) -> str:
    return f"relay:{room_id}"


async def _nobody(message: dict[str, Any]) -> None:
    """A remote participant's messages: its own node tells it."""


class RoomCascade:
    """One room's view of the meeting's other nodes."""

    def __init__(self, cascade: Cascade, room: Room) -> None:
        self.cascade = cascade
        self.room = room
        self.node_id = cascade.node_id
        self.seen: dict[str, float] = {}  # node -> when its last state came (monotonic)
        self.feeds: dict[str, RelayFeed] = {}  # node -> the feed of this node's tracks to it
        self.links: dict[str, RelayLink] = {}  # node -> the link its tracks arrive on
        self.states: dict[str, dict[str, Any]] = {}
        self._dirty = asyncio.Event()
        self._dirty.set()
        self._sent: tuple[float, Any] = (float("-inf"), None)
        room.on_change = self._dirty.set

    async def publish(self, message: dict[str, Any]) -> None:
        await self.cascade.bus.publish(relay_channel(self.room.room_id), {**message, "from": self.node_id})

    async def run(self) -> None:
        try:
            async with self.cascade.bus.subscribe(relay_channel(self.room.room_id)) as events:
                reader = asyncio.create_task(self._read(events), name=f"cascade-read:{self.room.room_id}")
                try:
                    while not self.room.closed and not reader.done():
                        await self._publish_state()
                        with contextlib.suppress(asyncio.TimeoutError):
                            await asyncio.wait_for(self._dirty.wait(), CHECK_INTERVAL)
                        await self._expire()
                finally:
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reader
        finally:
            await self._leave()

    async def _publish_state(self) -> None:
        self._dirty.clear()
        state = room_state(self.room, self.node_id)
        state["recording"] = self.cascade.recording(self.room.room_id)
        now = time.monotonic()
        if state != self._sent[1] or now - self._sent[0] >= STATE_INTERVAL:
            self._sent = (now, state)
            await self.publish(state)

    async def _read(self, events: Subscription) -> None:
        while True:
            message = await events.get()
            sender = message.get("from")
            if not isinstance(sender, str) or sender == self.node_id:
                continue
            kind = message.get("type")
            to_me = message.get("to") == self.node_id
            try:
                if kind == "state":
                    await self._state(sender, message)
                elif kind == "leave":
                    await self._forget(sender, "left")
                elif kind == "offer" and to_me:
                    self._offer(sender, message)
                elif kind == "answer" and to_me:
                    self._answer(sender, message)
                elif kind == "order" and to_me and message.get("action") in ORDER_ACTIONS:
                    await self.cascade.on_order(self.room, message)
            except (SignalError, ConnectionError) as exc:
                log.info("relay message %s from %s not applied: %s", kind, sender, exc)
            except Exception:
                log.exception("relay message %s from %s failed", kind, sender)

    # States ------------------------------------------------------------------------------------

    async def _state(self, node: str, state: dict[str, Any]) -> None:
        if node not in self.seen:  # a node new to the meeting: it hears from this one at once
            self._sent = (float("-inf"), None)
            self._dirty.set()
        self.seen[node] = time.monotonic()
        before = self.states.get(node, {}).get("recording")
        self.states[node] = state
        await self._mirror(node, parse_people(state))
        await self._recording(before, state.get("recording"))
        await self._feed(node, bool(state.get("link")), state.get("wants"))

    async def _mirror(self, node: str, people: list[dict[str, Any]]) -> None:
        room = self.room
        listed = set()
        for person in people:
            identity = person["identity"]
            existing = room.participants.get(identity)
            if existing is not None and existing.remote is None:
                continue  # here itself (it moved): this node's own participant wins
            listed.add(identity)
            if existing is not None and existing.remote != node:
                await room.remove(existing, "moved", keep_room=True)
                existing = None
            if existing is None:
                existing = Participant(
                    room, identity, str(person.get("name") or identity), str(person.get("role") or "participant"),
                    {"hidden": bool(person.get("hidden"))}, _nobody, waiting=bool(person.get("waiting")),
                )
                existing.remote = node
                existing.hand_raised_at = hand_raised_at(person, None, time.time())
                existing.metadata = person_metadata(person)
                await room.add(existing)
            else:
                await self._update(existing, person)
            await self._tracks(existing, person["tracks"])
        for participant in list(room.participants.values()):
            if participant.remote == node and participant.identity not in listed:
                await room.remove(participant, "left", keep_room=True)

    async def _update(self, ghost: Participant, person: dict[str, Any]) -> None:
        if ghost.waiting and not person.get("waiting"):
            await self.room.admit(ghost.identity)
        hand = hand_raised_at(person, ghost.hand_raised_at, time.time())
        metadata = person_metadata(person)
        if hand != ghost.hand_raised_at or metadata != ghost.metadata:
            ghost.hand_raised_at = hand
            ghost.metadata = metadata
            await self.room.broadcast({"type": "participant-updated", "participant": ghost.info()})

    async def _tracks(self, ghost: Participant, tracks: list[dict[str, Any]]) -> None:
        room = self.room
        listed = {t["track_id"] for t in tracks}
        for track_id in [t for t in ghost.uptracks if t not in listed]:
            await room.track_unpublished(ghost, ghost.uptracks.pop(track_id))
        for info in tracks:
            up = ghost.uptracks.get(info["track_id"])
            if up is None:
                if room.remote_track(info["track_id"]) is not None:
                    continue  # listed by two nodes at once (a move): the first one keeps it
                up = ghost.uptracks[info["track_id"]] = remote_track(info, ghost.identity, room)
                link = self.links.get(ghost.remote or "")
                if link is not None:
                    link.bind(up)
                if not ghost.waiting:
                    await room.track_published(ghost, up)
                continue
            muted, blocked = bool(info.get("muted")), bool(info.get("blocked"))
            if (muted, blocked) != (up.muted, up.blocked):
                up.muted, up.blocked = muted, blocked
                for observer in list(room.observers):
                    observer.track_muted(up)
                await room.broadcast({
                    "type": "track-muted", "track_id": up.track_id, "participant": up.owner,
                    "muted": muted or blocked, "by_host": blocked,
                })

    async def _recording(self, before: Any, now: Any) -> None:
        """A recorder on another node started or stopped: this node's participants are told."""
        was = before.get("recording_id") if isinstance(before, dict) else None
        is_ = now.get("recording_id") if isinstance(now, dict) else None
        if was == is_:
            return
        if was is not None:
            await self.room.broadcast({"type": "recording-stopped", "recording_id": str(was), "reason": "stopped"})
        if is_ is not None and isinstance(now, dict):
            await self.room.broadcast({
                "type": "recording-started", "recording_id": str(is_), "layout": str(now.get("layout") or "grid"),
                "started_at": str(now.get("started_at") or ""), "by": None,
            })

    def remote_recording(self) -> dict[str, Any] | None:
        for state in self.states.values():
            if isinstance(state.get("recording"), dict):
                return dict(state["recording"])
        return None

    # Relay links -------------------------------------------------------------------------------

    async def _feed(self, node: str, wants_link: bool, wants: Any) -> None:
        """Run a feed of this node's tracks to ``node`` while it wants one and there are tracks."""
        room = self.room
        has_tracks = any(p.local and p.uptracks for p in room.participants.values())
        feed = self.feeds.get(node)
        if feed is not None and (feed.closed or not wants_link or not has_tracks):
            self.feeds.pop(node, None)
            if not feed.closed:
                await room.remove(feed, "relay_closed", keep_room=True)
            feed = None
        if feed is None and wants_link and has_tracks and not room.closed:
            feed = self.feeds[node] = RelayFeed(room, node, self.publish)
            await room.add(feed)
        if feed is not None:
            feed.set_wanted(wants)

    def _offer(self, origin: str, message: dict[str, Any]) -> None:
        feed_id = message.get("feed")
        if not isinstance(feed_id, str):
            return
        link = self.links.get(origin)
        if link is None or link.feed_id != feed_id:
            if link is not None:
                self.room.spawn(link.close())
            link = self.links[origin] = RelayLink(self.room, origin, feed_id, self.publish)
            link.failed = self._link_failed
            for participant in self.room.participants.values():
                if participant.remote == origin:
                    for up in participant.uptracks.values():
                        link.bind(up)
        self.room.spawn(link.offer(message.get("sdp"), message.get("tracks")))

    def _answer(self, node: str, message: dict[str, Any]) -> None:
        feed = self.feeds.get(node)
        if feed is not None and feed.feed_id == message.get("feed") and isinstance(message.get("sdp"), str):
            feed.answer(message["sdp"])

    def _link_failed(self, link: RelayLink) -> None:
        if self.links.get(link.origin) is link:
            del self.links[link.origin]
        self.room.spawn(link.close())

    # Nodes that go ---------------------------------------------------------------------------

    async def _expire(self) -> None:
        now = time.monotonic()
        for node, seen in list(self.seen.items()):
            if now - seen > NODE_SILENT:
                log.warning("node %s said nothing about room %s for %.0f s: its participants leave here", node, self.room.room_id, now - seen)
                await self._forget(node, "connection_failed")

    async def _forget(self, node: str, reason: str) -> None:
        self.seen.pop(node, None)
        self.states.pop(node, None)
        room = self.room
        for participant in list(room.participants.values()):
            if participant.remote == node:
                await room.remove(participant, reason, keep_room=True)
        feed = self.feeds.pop(node, None)
        if feed is not None:
            await room.remove(feed, "relay_closed", keep_room=True)
        link = self.links.pop(node, None)
        if link is not None:
            await link.close()

    async def _leave(self) -> None:
        for link in list(self.links.values()):
            await link.close()
        self.links.clear()
        with contextlib.suppress(Exception):
            await self.publish({"type": "leave", "node": self.node_id})


class Cascade:
    """The rooms of this node that take part in meetings over several nodes."""

    def __init__(
        self, bus: PubSub, node_id: str, on_order: OrderHandler,
        recording: Callable[[str], dict[str, Any] | None] = lambda room_id: None,
    ) -> None:
        self.bus = bus
        self.node_id = node_id
        self.on_order = on_order
        self.recording = recording  # this node's recording of a room, if it records it
        self.rooms: dict[str, RoomCascade] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def watch(self, room: Room) -> None:
        if room.room_id in self.rooms:
            return
        cascade = self.rooms[room.room_id] = RoomCascade(self, room)
        task = asyncio.create_task(self._run(cascade), name=f"cascade:{room.room_id}")
        self._tasks[room.room_id] = task

    async def _run(self, cascade: RoomCascade) -> None:
        try:
            await cascade.run()
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("the relay of room %s failed", cascade.room.room_id)
        finally:
            if self.rooms.get(cascade.room.room_id) is cascade:
                del self.rooms[cascade.room.room_id]
                self._tasks.pop(cascade.room.room_id, None)

    async def order(self, room: Room, node: str, action: str, **fields: Any) -> None:
        """Ask ``node`` to act on one of its participants, as a host here asked."""
        cascade = self.rooms.get(room.room_id)
        if cascade is None:
            raise SignalError("unknown_participant", "that participant's node is not reachable")
        await cascade.publish({"type": "order", "to": node, "action": action, **fields})

    def remote_recording(self, room_id: str) -> dict[str, Any] | None:
        """A recording of the room that another node makes, as it last said."""
        cascade = self.rooms.get(room_id)
        return cascade.remote_recording() if cascade is not None else None

    def link_count(self) -> int:
        return sum(len(c.links) + len(c.feeds) for c in self.rooms.values())

    def collect(self) -> Iterator[Metric]:
        """``videoconf_cluster_relay_links{direction}``: feeds to other nodes and links from them."""
        family = GaugeMetricFamily(
            "videoconf_cluster_relay_links", "Relay links of meetings that span nodes (outgoing: feeds of this node's tracks)",
            labels=["direction"],
        )
        family.add_metric(["outgoing"], sum(len(c.feeds) for c in self.rooms.values()))
        family.add_metric(["incoming"], sum(len(c.links) for c in self.rooms.values()))
        yield family

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
