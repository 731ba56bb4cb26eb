"""Spreading a load test: its bots over worker processes (``--processes N``), and over the nodes
of a cluster the way the control API would place participants.

``assign_nodes`` is pure: given the registry (``GET /api/nodes``) and the meeting's node, it says
where each of ``count`` new participants goes: the meeting's node while it is serving and under
its limit, then the least-loaded other node under its limit (``control_api.cluster.choose``),
counting the participants it has placed so far.  The bots then join node by node, the meeting's
node first, since a node takes a meeting placed elsewhere only once that node is full."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import replace
from typing import Any

from control_api.cluster import NodeInfo, NodeLoad, choose


def api_base(signaling_url: str) -> str:
    """The HTTP base of the node whose signaling WebSocket is ``signaling_url``."""
    scheme, _, rest = signaling_url.partition("://")
    host = rest.split("/", 1)[0]
    return f"{'https' if scheme == 'wss' else 'http'}://{host}"


def registry_nodes(body: Any) -> list[NodeInfo]:
    """The serving nodes of a ``GET /api/nodes`` answer."""
    nodes = []
    for entry in (body or {}).get("nodes") or []:
        try:
            load = NodeLoad(**{k: entry["load"][k] for k in ("participants", "tracks", "rooms", "cpu", "packets_per_second")})
            nodes.append(NodeInfo(str(entry["id"]), str(entry["signaling_url"]), str(entry["state"]), load, entry.get("max_participants")))
        except (KeyError, TypeError):
            continue
    return nodes


def assign_nodes(nodes: list[NodeInfo], origin: str, count: int) -> list[NodeInfo]:
    """Where each of ``count`` new participants of a meeting on node ``origin`` goes."""
    current = {node.id: node for node in nodes}
    placed: list[NodeInfo] = []
    for _ in range(count):
        home = current.get(origin)
        if home is not None and home.takes_rooms():
            chosen: NodeInfo | None = home
        else:
            chosen = choose([n for n in current.values() if n.id != origin])
        if chosen is None:  # everyone full: the meeting's node takes the rest, as a node would
            chosen = home or next(iter(current.values()))
        placed.append(chosen)
        current[chosen.id] = replace(chosen, load=replace(chosen.load, participants=chosen.load.participants + 1))
    return placed


class WorkerClient:
    """One worker process (``clients.loadtest.worker``) and its request/answer pipe."""

    def __init__(self, index: int, ice_addresses: list[str]) -> None:
        self.index = index
        self.ice_addresses = ice_addresses
        self.process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "clients.loadtest.worker", json.dumps(self.ice_addresses),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=dict(os.environ),
            limit=64 * 1024 * 1024,
        )

    async def request(self, message: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
        process = self.process
        if process is None or process.stdin is None or process.stdout is None:
            raise RuntimeError(f"load worker {self.index} is not running")
        async with self._lock:
            process.stdin.write((json.dumps(message) + "\n").encode())
            await process.stdin.drain()
            line = await asyncio.wait_for(process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"load worker {self.index} exited (status {process.returncode})")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"load worker {self.index}: {answer['error']}")
        return answer

    async def close(self) -> None:
        process = self.process
        if process is None:
            return
        try:
            if process.returncode is None:
                await self.request({"cmd": "quit"}, timeout=30)
        except Exception:
            pass
        try:
            await asyncio.wait_for(process.wait(), 10)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
        self.process = None
