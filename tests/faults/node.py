"""A VideoConf node as production runs it (``videoconf run`` in its own process, pointed at the
database and Redis it is given), the accounts and meeting of a test, and SDK participants in the
test's process that reconnect through a room-token callback, as an application would wire them.

Everything that blocks (starting and stopping the node or a private service) runs in a thread, so
that the participants' media keeps flowing in the event loop meanwhile.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from clients.loadtest.polling import until
from clients.sdk.media import PatternVideoTrack, ToneAudioTrack
from clients.sdk.participant import Participant
from tests.server_process import ServerProcess

PASSWORD = "correct horse battery"

# A test node: fast password hashing, no access log, loose rate limits except where a test sets
# its own, ICE on loopback only, no ICE servers anywhere (the defaults, stated).
NODE_ENV = {
    "VIDEOCONF_ENV": "test",
    "VIDEOCONF_PASSWORD_HASHING__TIME_COST": "1",
    "VIDEOCONF_PASSWORD_HASHING__MEMORY_KIB": "64",
    "VIDEOCONF_PASSWORD_HASHING__PARALLELISM": "1",
    "VIDEOCONF_ACCESS_LOG": "false",
    "VIDEOCONF_ICE_ADDRESSES": '["127.0.0.1"]',
    "VIDEOCONF_ICE_SERVERS": "[]",
    "VIDEOCONF_SFU_ICE_SERVERS": "[]",
    **{
        f"VIDEOCONF_RATE_LIMITS__{rule}__{field}": value
        for rule in ("LOGIN_PER_IP", "LOGIN_PER_ACCOUNT", "REGISTER_PER_IP")
        for field, value in (("LIMIT", "100000"), ("PERIOD", "1"))
    },
}


class Node:
    def __init__(self, tmp_path: Path, *, database_url: str | None = None, redis_url: str | None = None, **env: str) -> None:
        settings = dict(NODE_ENV)
        if database_url:
            settings["VIDEOCONF_DATABASE_URL"] = database_url
        if redis_url:
            settings["VIDEOCONF_REDIS_URL"] = redis_url
            settings["VIDEOCONF_REDIS_PREFIX"] = f"vcfault:{uuid.uuid4().hex[:8]}:"
        settings.update(env)
        self.server = ServerProcess(tmp_path / "data", log=tmp_path / "node.log", **settings)
        self.http: aiohttp.ClientSession | None = None
        self.participants: list[Participant] = []

    @property
    def base(self) -> str:
        return self.server.base

    @property
    def signaling_url(self) -> str:
        return self.base.replace("http://", "ws://") + "/signaling"

    @property
    def pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid

    async def start(self, migrate: bool = True) -> None:
        if migrate:
            done = await asyncio.to_thread(self.server.cli, "migrate")
            assert done.returncode == 0, done.stderr
        await asyncio.to_thread(self.server.start)
        if self.http is None:
            self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))

    async def stop(self) -> tuple[int, str]:
        return await asyncio.to_thread(self.server.stop)

    async def kill(self) -> None:
        await asyncio.to_thread(self.server.kill)

    def log(self) -> str:
        return self.server._output()

    # HTTP --------------------------------------------------------------------------------------

    async def call(
        self, method: str, path: str, token: str | None = None, body: Any = None, expect: int | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        assert self.http is not None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.request(method, self.base + path, json=body, headers=headers) as response:
            data: Any = await response.json() if response.content_type == "application/json" else await response.text()
            if expect is not None:
                assert response.status == expect, (method, path, response.status, data)
            return response.status, data, dict(response.headers)

    async def register(self, name: str) -> dict[str, Any]:
        email = f"{name.split()[0].lower()}-{uuid.uuid4().hex[:6]}@example.com"
        _, body, _ = await self.call(
            "POST", "/api/auth/register", body={"email": email, "password": PASSWORD, "display_name": name}, expect=201
        )
        return {**body, "token": body["access_token"], "email": email, "name": name}

    async def meeting(self, account: dict[str, Any], **fields: Any) -> dict[str, Any]:
        _, body, _ = await self.call(
            "POST", "/api/meetings", account["token"], {"title": "Fault test", "kind": "instant", **fields}, expect=201
        )
        return body

    async def hosted_meeting(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], str]:
        """Two accounts, a live meeting the first hosts, and that meeting's chat path."""
        host = await self.register("Hedy Host")
        guest = await self.register("Gus Guest")
        meeting = await self.meeting(host)
        return host, guest, meeting, f"/api/meetings/{meeting['id']}/messages"

    async def publishing_host(self) -> tuple[dict[str, Any], dict[str, Any], Participant]:
        """A host, their live meeting, and their SDK participant in it publishing a 320x240
        pattern and a tone."""
        host = await self.register("Hedy Host")
        meeting = await self.meeting(host)
        sdk = await self.participant(host, meeting)
        await sdk.publish([(PatternVideoTrack(320, 240, fps=15), "camera"), (ToneAudioTrack(), "microphone")])
        return host, meeting, sdk

    async def page_with_publishing_host(self, browser: Any, name: str = "Wendy Web") -> tuple[Any, dict[str, Any], Participant]:
        """Start the node; a host publishing from the SDK (``publishing_host``) and, in
        ``browser``, the web client of ``name`` in the host's meeting: (page, meeting, SDK)."""
        from tests.media.test_web_client import join_by_code, person

        await self.start()
        _, meeting, sdk = await self.publishing_host()
        page = await person(browser, self.base, name)
        await join_by_code(page, meeting["code"])
        return page, meeting, sdk

    async def room_token(self, account: dict[str, Any], meeting: dict[str, Any]) -> str:
        _, body, _ = await self.call("POST", f"/api/meetings/{meeting['id']}/join", account["token"], {}, expect=200)
        return body["token"]

    async def metrics(self) -> dict[str, float]:
        assert self.http is not None
        async with self.http.get(self.base + "/metrics") as response:
            text = await response.text()
        return {
            sample.name + "".join(f"{{{k}={v}}}" for k, v in sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    # Participants ------------------------------------------------------------------------------

    async def participant(self, account: dict[str, Any], meeting: dict[str, Any], **options: Any) -> Participant:
        """An SDK participant that fetches a new room token from the API whenever it must join again."""

        async def token_provider() -> str:
            return await self.room_token(account, meeting)

        client = Participant(
            self.signaling_url, await token_provider(), ice_servers=[], token_provider=token_provider, **options
        )
        self.participants.append(client)
        await client.connect()
        return client

    async def close(self) -> None:
        for client in self.participants:
            await client.close()
        self.participants.clear()
        if self.http is not None:
            await self.http.close()
            self.http = None
        if self.server.process is not None and self.server.process.poll() is None:
            await self.stop()


def video_tracks(client: Participant, participant: str | None = None) -> list[Any]:
    """The client's current remote video tracks (of ``participant``), with a verifier."""
    return [
        r for r in client.remote.values()
        if r.kind == "video" and not r.ended and r.verifier is not None and (participant is None or r.participant == participant)
    ]


def verified_frames(client: Participant, participant: str | None = None) -> int:
    return sum(r.verifier.frames_verified for r in video_tracks(client, participant))



async def frames_advance(client: Participant, count: int = 10, timeout: float = 15.0, participant: str | None = None) -> None:
    """Wait for ``count`` more verified video frames at ``client`` (media is flowing)."""
    start = verified_frames(client, participant)
    await until(lambda: verified_frames(client, participant) >= start + count, timeout, f"{count} more verified frames")
