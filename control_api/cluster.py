"""The nodes of a cluster and which node hosts each meeting's room, in Redis.

Every node (a ``videoconf run`` process with ``cluster = true``) writes a heartbeat each second:
its id, the signaling URL its participants connect to, its state (``serving`` or ``draining``),
its load and its participant limit.  A heartbeat lives ``NODE_TTL`` (5 s) in Redis: a node
whose last one is older does not exist.

Placement: the first join of a meeting places its room on the least-loaded serving node under
its limit (``choose``, a pure function).  One Lua script reads the room's placement and, only if
there is none or its node is gone, writes the new one with a fencing token from a counter that
only grows: Redis runs the script atomically, so two API nodes placing one room at once agree,
and a node can tell a placement it holds from one that was taken over (a larger token).  Later
joins go to the room's node while it is under its limit and serving, and to the least-loaded
other node when it is not: the meeting then spans nodes, relayed between them (see
``signaling.cascade``).  The node that hosts the room checks, at every join, that the placement names it, and
the room's placement is deleted (compare and delete, by token) when its room closes there."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis

NODE_TTL = 5.0  # seconds a heartbeat counts
HEARTBEAT_INTERVAL = 1.0
SERVING, DRAINING = "serving", "draining"

# KEYS: the room's placement, the fencing counter.  ARGV: the node key prefix, the node chosen
# (empty: only read).  A placement is "<node id>|<token>"; it stands while its node's heartbeat does.
PLACE = """
local current = redis.call('GET', KEYS[1])
if current then
  local node, token = string.match(current, '^(.*)|(%d+)$')
  if node and redis.call('EXISTS', ARGV[1] .. node) == 1 then return {node, token} end
end
if ARGV[2] == '' then return false end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[2] .. '|' .. token)
return {ARGV[2], tostring(token)}
"""
# KEYS: the room's placement.  ARGV: "<node id>|<token>" as placed.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class NodeLoad:
    participants: int = 0
    tracks: int = 0
    rooms: int = 0
    cpu: float = 0.0  # share of one core over the last interval
    packets_per_second: float = 0.0  # forwarded


@dataclass(frozen=True)
class NodeInfo:
    id: str
    signaling_url: str
    state: str = SERVING
    load: NodeLoad = field(default_factory=NodeLoad)
    max_participants: int | None = None
    heartbeat_at: float = 0.0  # the node's wall clock, seconds

    def takes_rooms(self) -> bool:
        limit = self.max_participants
        return self.state == SERVING and (limit is None or self.load.participants < limit)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> NodeInfo | None:
        try:
            data = json.loads(text)
            return cls(**{**data, "load": NodeLoad(**data.get("load", {}))})
        except (ValueError, TypeError):
            return None  # written by another version: not a node this one can use


@dataclass(frozen=True)
class Placement:
    node: str
    token: int


CPU_STEP = 0.1  # CPU shares that differ by less than this much of a core are the same load (noise)


def choose(nodes: Sequence[NodeInfo]) -> NodeInfo | None:
    """The node a new room goes to: a serving node under its participant limit, the least loaded
    (the smallest share of its limit, then CPU in steps of ``CPU_STEP``, then rooms; the id
    breaks ties), or None.  Idle nodes differ in CPU by a few thousandths (a request served, a
    heartbeat): that is not load, and must not decide."""
    open_nodes = [n for n in nodes if n.takes_rooms()]

    def load(node: NodeInfo) -> tuple[float, int, int, str]:
        share = node.load.participants / node.max_participants if node.max_participants else node.load.participants
        return (share, int(node.load.cpu / CPU_STEP), node.load.rooms, node.id)

    return min(open_nodes, key=load, default=None)


def node_channel(node_id: str) -> str:
    """The pub/sub channel of orders for one node (a drain)."""
    return f"node:{node_id}"


class NoNodeAvailable(Exception):
    """No serving node under its limit: the meeting cannot be placed now."""


class RedisCluster:
    def __init__(self, redis: Redis, prefix: str, ttl: float = NODE_TTL) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl = ttl
        self._place = redis.register_script(PLACE)
        self._release = redis.register_script(RELEASE)

    def _node_key(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}"

    def _room_key(self, room_id: str) -> str:
        return f"{self.prefix}room:{room_id}"

    async def heartbeat(self, info: NodeInfo, rooms: list[dict[str, Any]] | None = None) -> None:
        """The node is alive, with this load; with ``rooms``, what it holds (its rooms and its own
        participants, for the server API), which lasts as long as the heartbeat."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self._node_key(info.id), info.to_json(), px=int(self.ttl * 1000))
            pipe.sadd(f"{self.prefix}nodes", info.id)
            if rooms is not None:
                pipe.set(self._rooms_key(info.id), json.dumps(rooms, separators=(",", ":")), px=int(self.ttl * 1000))
            await pipe.execute()

    def _rooms_key(self, node_id: str) -> str:
        return f"{self.prefix}rooms:{node_id}"

    async def node_rooms(self, node_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """The rooms each of these nodes last published (a node that published none is left out)."""
        if not node_ids:
            return {}
        values = await self.redis.mget([self._rooms_key(i) for i in node_ids])
        found: dict[str, list[dict[str, Any]]] = {}
        for node_id, value in zip(node_ids, values, strict=True):
            if value is None:
                continue
            try:
                rooms = json.loads(value)
            except ValueError:
                continue
            if isinstance(rooms, list):
                found[node_id] = [r for r in rooms if isinstance(r, dict)]
        return found

    async def leave(self, node_id: str) -> None:
        """The node stops: it is gone at once, not after its heartbeat runs out."""
        await self.redis.delete(self._node_key(node_id), self._rooms_key(node_id))
        await self.redis.srem(f"{self.prefix}nodes", node_id)

    async def nodes(self) -> list[NodeInfo]:
        """The living nodes (those whose heartbeat has run out are forgotten here)."""
        ids = sorted(i.decode() if isinstance(i, bytes) else i for i in await self.redis.smembers(f"{self.prefix}nodes"))
        if not ids:
            return []
        values = await self.redis.mget([self._node_key(i) for i in ids])
        gone = [i for i, value in zip(ids, values, strict=True) if value is None]
        if gone:
            await self.redis.srem(f"{self.prefix}nodes", *gone)
        found = [NodeInfo.from_json(value) for value in values if value is not None]
        return [node for node in found if node is not None]

    async def place(self, room_id: str) -> tuple[NodeInfo, Placement]:
        """The node that hosts ``room_id``: where it is, or a new placement on ``choose``'s node."""
        nodes = {node.id: node for node in await self.nodes()}
        for _ in range(3):  # the node placed on may go between the two reads: look again
            chosen = choose(list(nodes.values()))
            result = await self._place(
                keys=[self._room_key(room_id), f"{self.prefix}fence"],
                args=[self._node_key(""), chosen.id if chosen else ""],
            )
            if not result:
                raise NoNodeAvailable("no node can take a new meeting now")
            node_id, token = (part.decode() if isinstance(part, bytes) else part for part in result)
            node = nodes.get(node_id)
            if node is not None:
                return node, Placement(node_id, int(token))
            nodes = {node.id: node for node in await self.nodes()}
        raise NoNodeAvailable("the cluster's nodes changed while placing the meeting")

    async def node_for_join(self, room_id: str) -> NodeInfo:
        """The node a participant of ``room_id`` joins: the room's node while it takes
        participants, else (it is full, or draining) the least-loaded other one, so that the
        meeting spans nodes."""
        node, _ = await self.place(room_id)
        if node.takes_rooms():
            return node
        other = choose([n for n in await self.nodes() if n.id != node.id])
        if other is None:
            raise NoNodeAvailable("every node is full or draining")
        return other

    async def placement(self, room_id: str) -> Placement | None:
        """Where ``room_id`` is placed, if its node is alive."""
        result = await self._place(keys=[self._room_key(room_id), f"{self.prefix}fence"], args=[self._node_key(""), ""])
        if not result:
            return None
        node_id, token = (part.decode() if isinstance(part, bytes) else part for part in result)
        return Placement(node_id, int(token))

    async def release(self, room_id: str, placement: Placement) -> bool:
        """Delete the room's placement if it is still ``placement`` (a newer one stays)."""
        deleted = await self._release(keys=[self._room_key(room_id)], args=[f"{placement.node}|{placement.token}"])
        return bool(deleted)


class CpuMeter:
    """This process's CPU share of one core between two readings."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, cpu: Callable[[], float] = time.process_time) -> None:
        self._clock, self._cpu = clock, cpu
        self._last = (clock(), cpu())

    def share(self) -> float:
        now, used = self._clock(), self._cpu()
        elapsed = now - self._last[0]
        result = (used - self._last[1]) / elapsed if elapsed > 0 else 0.0
        self._last = (now, used)
        return round(max(0.0, result), 3)


def node_summary(node: NodeInfo, now: float) -> dict[str, Any]:
    """A node as ``GET /api/nodes`` shows it."""
    return {**asdict(node), "heartbeat_age": round(max(0.0, now - node.heartbeat_at), 3)}
