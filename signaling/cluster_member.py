"""This node as a member of the cluster (``cluster = true``): its heartbeat every second, with its
load read from the SFU, and the rooms the cluster has placed on it.

A room is admitted here only while its placement in Redis names this node; its placement is
released, by its fencing token, when the room closes.  Redis being away costs heartbeats (the
node then drops out of the registry after 5 s and gets no new rooms) but never the rooms it
already holds."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from control_api.cluster import (
    DRAINING,
    HEARTBEAT_INTERVAL,
    SERVING,
    CpuMeter,
    NodeInfo,
    NodeLoad,
    NoNodeAvailable,
    Placement,
    RedisCluster,
    node_channel,
)
from control_api.pubsub import PubSub
from sfu.room import SfuNode

log = logging.getLogger(__name__)


class ClusterMember:
    def __init__(
        self, cluster: RedisCluster, node: SfuNode, node_id: str, signaling_url: str,
        max_participants: int | None = None, clock: Callable[[], float] = time.time,
    ) -> None:
        self.cluster = cluster
        self.node = node
        self.node_id = node_id
        self.signaling_url = signaling_url
        self.max_participants = max_participants
        self.clock = clock
        self.state = SERVING
        self.placements: dict[str, Placement] = {}
        self.seen: dict[str, int] = {}  # the registry as last read: nodes by state (for metrics)
        self._cpu = CpuMeter()
        self._forwarded = (time.monotonic(), node.metrics.forwarded_total())
        self._task: asyncio.Task[None] | None = None
        self._orders: asyncio.Task[None] | None = None
        self._touch: asyncio.Task[None] | None = None
        self.last_beat: float | None = None  # monotonic time of the last heartbeat the registry took
        self.on_drain: Callable[[], None] | None = None  # what a drain order does (the node's Drain)
        # this node's rooms for the server API (``SignalingServer.room_summaries``), sent with each heartbeat
        self.rooms: Callable[[], list[dict[str, Any]]] | None = None

    def info(self) -> NodeInfo:
        now, forwarded = time.monotonic(), self.node.metrics.forwarded_total()
        elapsed = now - self._forwarded[0]
        rate = (forwarded - self._forwarded[1]) / elapsed if elapsed > 0 else 0.0
        self._forwarded = (now, forwarded)
        load = NodeLoad(
            participants=self.node.participant_count(),
            tracks=self.node.track_count("audio") + self.node.track_count("video"),
            rooms=self.node.room_count(),
            cpu=self._cpu.share(),
            packets_per_second=round(rate, 1),
        )
        return NodeInfo(self.node_id, self.signaling_url, self.state, load, self.max_participants, self.clock())

    def collect(self) -> Iterator[Metric]:
        """``videoconf_cluster_nodes{state}``: the living nodes of the registry, as last read."""
        family = GaugeMetricFamily("videoconf_cluster_nodes", "Living nodes in the cluster registry", labels=["state"])
        for state, count in sorted(self.seen.items()):
            family.add_metric([state], count)
        yield family
        if self.last_beat is not None:
            yield GaugeMetricFamily(
                "videoconf_cluster_heartbeat_age_seconds", "Seconds since this node's last heartbeat reached the registry",
                value=time.monotonic() - self.last_beat,
            )

    async def heartbeat(self) -> None:
        await self.cluster.heartbeat(self.info(), self.rooms() if self.rooms is not None else None)
        self.last_beat = time.monotonic()

    async def start(self, bus: PubSub | None = None) -> None:
        await self.heartbeat()  # in the registry before the first request
        self._task = asyncio.create_task(self._beat(), name="cluster-heartbeat")
        if bus is not None:
            self._orders = asyncio.create_task(self._listen(bus), name="cluster-orders")

    async def _listen(self, bus: PubSub) -> None:
        """Orders for this node from any node's API (``POST /api/nodes/{id}/drain``)."""
        async with bus.subscribe(node_channel(self.node_id)) as orders:
            while True:
                order = await orders.get()
                if order.get("type") == "drain" and self.on_drain is not None and self.state == SERVING:
                    log.warning("draining: ordered through the API")
                    self.on_drain()

    async def _beat(self) -> None:
        failed = False
        while True:
            await asyncio.sleep(HEARTBEAT_INTERVAL)
            try:
                await self.heartbeat()
                seen: dict[str, int] = {SERVING: 0, DRAINING: 0}
                for node in await self.cluster.nodes():
                    seen[node.state] = seen.get(node.state, 0) + 1
                self.seen = seen
                if failed:
                    log.warning("cluster heartbeats reach Redis again")
                failed = False
            except Exception as exc:  # Redis away: keep serving what is here, say so once
                if not failed:
                    log.error("a cluster heartbeat failed: %s", exc)
                failed = True

    async def drain(self) -> None:
        """Take no new rooms, and give up the ones here: the registry says so at once, and the
        API places these meetings elsewhere from now on."""
        self.state = DRAINING
        try:
            await self.heartbeat()
        except Exception as exc:
            log.error("could not announce the drain: %s", exc)
        for room_id in list(self.placements):
            await self.room_closed(room_id)

    async def admits(self, room_id: str, open_here: bool = False) -> bool:
        """Whether this node takes a participant of ``room_id``: its placement names this node
        (a room placed nowhere yet, joined without the API, is placed now, and may land here),
        or names a node that is full or draining (the meeting spans nodes).  With Redis away,
        only a room already open here (``open_here``) is."""
        if self.state != SERVING:
            return False  # draining: its meetings are placed elsewhere now
        try:
            placement = await self.cluster.placement(room_id)
            if placement is None:
                _, placement = await self.cluster.place(room_id)
        except NoNodeAvailable:
            return False
        except Exception as exc:
            log.warning("cannot read room %s's placement: %s", room_id, exc)
            return open_here
        if placement.node == self.node_id:
            self.placements[room_id] = placement
            return True
        # Placed elsewhere: this node takes part of the meeting only while that node cannot.
        try:
            origin = next((n for n in await self.cluster.nodes() if n.id == placement.node), None)
        except Exception as exc:
            log.warning("cannot read the cluster registry: %s", exc)
            return open_here
        return origin is None or not origin.takes_rooms()

    def touch(self) -> None:
        """Participants came or went: the registry hears of it now, not at the next beat, so
        that the next join is routed with the count as it is."""
        if self._task is not None and (self._touch is None or self._touch.done()):
            self._touch = asyncio.create_task(self._beat_once(), name="cluster-heartbeat-now")

    async def _beat_once(self) -> None:
        try:
            await self.heartbeat()
        except Exception as exc:
            log.warning("a cluster heartbeat failed: %s", exc)

    async def room_closed(self, room_id: str) -> None:
        placement = self.placements.pop(room_id, None)
        if placement is not None:
            try:
                await self.cluster.release(room_id, placement)
            except Exception as exc:  # the placement then lasts until this node's heartbeat does
                log.warning("could not release the placement of room %s: %s", room_id, exc)

    async def stop(self) -> None:
        for task in (self._task, self._orders, self._touch):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for room_id in list(self.placements):
            await self.room_closed(room_id)
        try:
            await self.cluster.leave(self.node_id)
        except Exception as exc:
            log.warning("could not leave the cluster registry: %s", exc)
