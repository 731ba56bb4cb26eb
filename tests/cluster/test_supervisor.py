"""``videoconf run --processes 2``: one command starts two nodes of one cluster, each pinned to
its own core, on consecutive HTTP and UDP ports with ids of their own; meetings are placed on
either, and SIGTERM stops them all.  Misconfigurations are refused before anything starts."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from clients.loadtest.polling import until
from clients.loadtest.process import ChildProcess, listening
from tests.conftest import REDIS_URL
from tests.faults.node import NODE_ENV, PASSWORD
from tests.media.test_single_udp_port import udp_ports
from tests.services import PrivatePostgres
from videoconf.config import ConfigError, load_settings
from videoconf.supervisor import check, child_environment


def consecutive_free_ports(kind: int, count: int) -> int:
    """A first port such that it and the next ``count - 1`` are free now."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        if first + count > 65535:
            continue
        try:
            held = []
            for port in range(first, first + count):
                sock = socket.socket(socket.AF_INET, kind)
                held.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise RuntimeError("no run of free ports")


def test_what_would_make_the_children_collide_is_refused(tmp_path: Path) -> None:
    base = {"data_dir": tmp_path, "redis_url": "redis://127.0.0.1:6379/0"}
    with pytest.raises(ConfigError, match="cluster"):
        check(load_settings(None, data_dir=tmp_path), 2)
    with pytest.raises(ConfigError, match="udp_port"):
        check(load_settings(None, cluster=True, ice_port_range=(50000, 50100), **base), 2)
    with pytest.raises(ConfigError, match=r"\{port\} or \{index\}"):
        check(load_settings(None, cluster=True, signaling_url="wss://meet.example.com/signaling", **base), 2)
    settings = load_settings(
        None, cluster=True, port=9000, udp_port=51000, node_id="host1",
        signaling_url="wss://host1.example.com:{port}/signaling", **base,
    )
    check(settings, 2)
    assert child_environment(settings, 1) == {
        "VIDEOCONF_PORT": "9001", "VIDEOCONF_HOST": settings.host, "VIDEOCONF_NODE_ID": "host1-1",
        "VIDEOCONF_UDP_PORT": "51001", "VIDEOCONF_SIGNALING_URL": "wss://host1.example.com:9001/signaling",
    }


async def test_one_command_runs_a_node_per_core(tmp_path: Path) -> None:
    pg = PrivatePostgres()
    await asyncio.to_thread(pg.start)
    port = consecutive_free_ports(socket.SOCK_STREAM, 2)
    udp = consecutive_free_ports(socket.SOCK_DGRAM, 2)
    prefix = f"vctest:supervisor:{uuid.uuid4().hex[:8]}:"
    env = {
        **os.environ, **NODE_ENV,
        "VIDEOCONF_DATA_DIR": str(tmp_path / "data"), "VIDEOCONF_DATABASE_URL": pg.url,
        "VIDEOCONF_REDIS_URL": REDIS_URL, "VIDEOCONF_REDIS_PREFIX": prefix, "VIDEOCONF_CLUSTER": "true",
        "VIDEOCONF_PORT": str(port), "VIDEOCONF_UDP_PORT": str(udp), "VIDEOCONF_NODE_ID": "host",
        "VIDEOCONF_ACCESS_TOKEN_SECRET": secrets.token_urlsafe(32), "VIDEOCONF_ROOM_TOKEN_SECRET": secrets.token_urlsafe(32),
    }
    env.pop("VIDEOCONF_CONFIG", None)
    supervisor = ChildProcess(
        [sys.executable, "-m", "videoconf.cli", "run", "--processes", "2", "--migrate"], env=env,
        output=tmp_path / "supervisor.log",
    )
    redis = Redis.from_url(REDIS_URL)
    try:
        await asyncio.to_thread(supervisor.start, lambda: listening(port) and listening(port + 1), 60, "both nodes")
        async with aiohttp.ClientSession() as http:

            async def registry() -> dict[str, Any] | None:
                async with http.get(f"http://127.0.0.1:{port + 1}/api/nodes") as response:
                    nodes = {n["id"]: n for n in (await response.json())["nodes"]}
                return nodes if set(nodes) == {"host-0", "host-1"} else None

            nodes = await until(registry, 20, "both nodes in the registry")
            assert {n["signaling_url"] for n in nodes.values()} == {
                f"ws://127.0.0.1:{port}/signaling", f"ws://127.0.0.1:{port + 1}/signaling",
            }
            async with http.post(f"http://127.0.0.1:{port}/api/auth/register", json={
                "email": "sue@example.com", "password": PASSWORD, "display_name": "Sue"}) as response:
                token = (await response.json())["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            async with http.post(f"http://127.0.0.1:{port}/api/meetings", json={"title": "M", "kind": "instant"}, headers=auth) as response:
                meeting = await response.json()
            urls = set()
            for api_port in (port, port + 1):  # either node's API names the same node
                async with http.post(f"http://127.0.0.1:{api_port}/api/meetings/{meeting['id']}/join", json={}, headers=auth) as response:
                    urls.add((await response.json())["signaling_url"])
            assert len(urls) == 1 and urls <= {n["signaling_url"] for n in nodes.values()}

        children = [int(p) for p in Path(f"/proc/{supervisor.pid}/task/{supervisor.pid}/children").read_text().split()]
        assert len(children) == 2
        ports = sorted(udp_ports(child) for child in children)
        assert ports == [[udp], [udp + 1]]
        cores = {Path(f"/proc/{child}/status").read_text().split("Cpus_allowed_list:")[1].split()[0] for child in children}
        assert len(cores) == min(2, os.cpu_count() or 1)

        assert supervisor.process is not None
        supervisor.process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(supervisor.process.wait, 30)
        assert code == 0, supervisor.log_tail()
        assert not listening(port) and not listening(port + 1)
    finally:
        supervisor.stop(signal.SIGKILL)
        keys = [key async for key in redis.scan_iter(match=prefix + "*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
        await asyncio.to_thread(pg.close)


async def test_the_nodes_stop_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    """SIGKILL leaves the supervisor no time to pass anything on: the kernel tells the children."""
    port = consecutive_free_ports(socket.SOCK_STREAM, 2)
    prefix = f"vctest:supervisor:{uuid.uuid4().hex[:8]}:"
    env = {
        **os.environ, **NODE_ENV, "VIDEOCONF_DATA_DIR": str(tmp_path / "data"), "VIDEOCONF_REDIS_URL": REDIS_URL,
        "VIDEOCONF_REDIS_PREFIX": prefix, "VIDEOCONF_CLUSTER": "true", "VIDEOCONF_PORT": str(port),
    }
    env.pop("VIDEOCONF_CONFIG", None)
    supervisor = ChildProcess(
        [sys.executable, "-m", "videoconf.cli", "run", "--processes", "2", "--migrate"], env=env,
        output=tmp_path / "supervisor.log",
    )
    try:
        await asyncio.to_thread(supervisor.start, lambda: listening(port) and listening(port + 1), 60, "both nodes")
        supervisor.kill()
        await until(lambda: not listening(port) and not listening(port + 1), 20, "both nodes to stop")
    finally:
        supervisor.stop(signal.SIGKILL)
        async with Redis.from_url(REDIS_URL) as redis:
            keys = [key async for key in redis.scan_iter(match=prefix + "*")]
            if keys:
                await redis.delete(*keys)
