"""A crowd of SDK bots in one meeting, for the web client's large-meeting tests and the renderer
benchmark: each publishes replayed VP8 (encoded once, shared by all) and receives nothing (its
room token does not grant subscribing), so that a crowd of 48 costs this machine little more than
its packets.  A few bots also publish a silent tone that a test can raise to make them talk."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from clients.sdk.media import ToneAudioTrack
from clients.sdk.participant import Participant
from clients.sdk.replay import replay_video

# Small, slow video: what a tile of a 3 x 3 grid shows, at a rate the machine carries 48 times.
CROWD_VIDEO = (320, 180, 10, 120_000)


@dataclass
class Bot:
    name: str
    participant: Participant
    video: str  # the camera track's id
    voice: ToneAudioTrack | None = None  # silent until talk()

    @property
    def identity(self) -> str:
        assert self.participant.identity is not None
        return self.participant.identity

    def talk(self, loud: bool = True) -> None:
        assert self.voice is not None, f"{self.name} has no microphone"
        self.voice.amplitude = 0.8 if loud else 0.0


@dataclass
class Crowd:
    bots: list[Bot] = field(default_factory=list)

    def named(self, name: str) -> Bot:
        return next(b for b in self.bots if b.name == name)

    def by_identity(self) -> dict[str, Bot]:
        return {b.identity: b for b in self.bots}

    async def close(self) -> None:
        await asyncio.gather(*(b.participant.close() for b in self.bots), return_exceptions=True)


def bot_token(codec: Any, meeting_id: str, name: str, ttl: int = 3600) -> str:
    """A room token for a bot that publishes and chats but subscribes to nothing."""
    token, _ = codec.encode({
        "sub": str(uuid.uuid4()), "name": name, "room": meeting_id, "role": "participant",
        "grants": {"can_publish": True, "can_subscribe": False, "can_publish_data": True,
                   "room_admin": False, "hidden": False, "recorder": False},
        "waiting": False, "jti": uuid.uuid4().hex,
    }, ttl)
    return token


async def gather_crowd(
    signaling_url: str, codec: Any, meeting_id: str, count: int, *, voices: int = 2,
    names: Sequence[str] | None = None, concurrency: int = 6, video: tuple[int, int, int, int] = CROWD_VIDEO,
    prepare: Callable[[int, Participant], None] | None = None,
) -> Crowd:
    """``count`` bots joined in order ("Bot 01", "Bot 02", ...), each publishing its camera; the
    first ``voices`` also a silent microphone.  They join in that order (the room's join order),
    a few at a time.  ``prepare(index, participant)`` runs before each bot connects (to tap its
    connections, say)."""
    names = list(names or [f"Bot {i + 1:02d}" for i in range(count)])
    crowd = Crowd()
    gate = asyncio.Semaphore(concurrency)
    turns = [asyncio.Event() for _ in range(count + 1)]
    turns[0].set()

    async def one(index: int) -> Bot:
        participant = Participant(signaling_url, bot_token(codec, meeting_id, names[index]), ice_servers=[], video_codec="VP8")
        if prepare is not None:
            prepare(index, participant)
        async with gate:
            await turns[index].wait()  # join in order; publishing overlaps
            try:
                await participant.connect(timeout=30)
            finally:
                turns[index + 1].set()
            tracks: list[tuple[Any, str]] = [(replay_video(*video), "camera")]
            voice = ToneAudioTrack(frequency=330.0 + 40 * index, amplitude=0.0) if index < voices else None
            if voice is not None:
                tracks.append((voice, "microphone"))
            ids = await participant.publish(tracks, timeout=30)
        return Bot(names[index], participant, ids[0], voice)

    results = await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
    crowd.bots = [r for r in results if isinstance(r, Bot)]
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        await crowd.close()
        raise RuntimeError(f"{len(failures)} of {count} bots failed to join: {failures[0]!r}")
    return crowd
