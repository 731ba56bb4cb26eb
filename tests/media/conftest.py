"""Fixtures for media tests: the whole server in this process (control API, signaling, SFU) on
SQLite, real aiortc peers over loopback, ICE on 127.0.0.1 only, no ICE servers."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clients.loadtest.polling import until
from clients.sdk.participant import Participant
from tests.conftest import Api, Backend, FakeClock, make_settings, start_api


@dataclass
class Meeting:
    api: Api
    meeting: dict[str, Any]
    host: dict[str, Any]
    people: list[dict[str, Any]]
    clients: list[Participant]

    @property
    def signaling_url(self) -> str:
        return str(self.api.client.make_url("/signaling")).replace("http://", "ws://")

    async def token(self, account: dict[str, Any], **body: Any) -> str:
        _, joined = await self.api.call("POST", f"/api/meetings/{self.meeting['id']}/join", account["token"], json=body, expect=200)
        return joined["token"]

    async def participant(self, account: dict[str, Any], *, connect: bool = True, **options: Any) -> Participant:
        client = Participant(self.signaling_url, await self.token(account), ice_servers=[], **options)
        self.clients.append(client)
        if connect:
            await client.connect()
        return client


class RealClock:
    """Media tests run in real time; tokens must not expire under them."""

    def __call__(self):  # noqa: ANN204
        from datetime import datetime, timezone

        return datetime.now(timezone.utc)

    def advance(self, seconds: float) -> None:
        raise RuntimeError("media tests use the real clock")


@pytest.fixture
async def meeting(sqlite_backend: Backend, tmp_path: Path) -> AsyncIterator[Meeting]:
    async with open_meeting(sqlite_backend, tmp_path) as state:
        yield state


@contextlib.asynccontextmanager
async def open_meeting(backend: Backend, tmp_path: Path, **settings_overrides: Any) -> AsyncIterator[Meeting]:
    """The whole server with a meeting, a host and four people; ``settings_overrides`` go to the
    server's settings."""
    settings = make_settings(tmp_path, backend, ice_addresses=["127.0.0.1"], resume_seconds=3, **settings_overrides)
    api = await start_api(settings, RealClock(), backend)  # type: ignore[arg-type]
    host = await api.register("Hedy Host")
    people = [await api.register(f"Person {i}") for i in range(4)]
    meeting = await api.meeting(host["token"], title="Media test")
    state = Meeting(api, meeting, host, people, [])
    try:
        yield state
    finally:
        for client in state.clients:
            await client.close()
        await api.client.close()
        gc.collect()


def recorded_fragments(meeting: Meeting) -> int:
    """The complete fragments written so far to the files of the recordings under way (the
    recorder cuts a fragment at each keyframe, every two seconds; each is playable)."""
    from videoconf.app import RECORDER

    recorders = meeting.api.app[RECORDER].recorders.values()
    return sum(r.path.read_bytes().count(b"moof") for r in recorders if r.path.is_file())


__all__ = ["Meeting", "until", "FakeClock", "open_meeting", "recorded_fragments"]
