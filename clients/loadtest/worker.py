"""A load-test worker: a process of its own that holds a share of the receive-only bots, so that
the load generator is not limited to one core (``videoconf loadtest --processes N``).

The parent mints the bots' room tokens and picks their nodes; the worker joins them, counts what
they receive, and answers the parent's requests, one JSON object per line on stdin and stdout:

- ``{"cmd": "join", "bots": [{"index", "token", "url"}], "concurrency": n}``: join these bots;
  answers ``{"joined": [{"index", "join_seconds", "failed"}]}``.
- ``{"cmd": "settle", "video": v, "audio": a, "tile": [w, h] | null, "timeout": s}``: wait until
  every bot receives ``v`` video and ``a`` audio streams (then ask for the tile size); answers
  ``{"settled": true}`` or ``{"error": "..."}``.
- ``{"cmd": "books"}``: every bot's totals (``RtpCounter.totals``, with frames per stream), when
  media first arrived, and this process's CPU seconds.
- ``{"cmd": "remove", "count": n}``: the last ``n`` bots leave.  ``{"cmd": "quit"}``: all leave; exit.

Bad requests get ``{"error": ...}``; the worker never talks to anything but its parent and the nodes.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from clients.loadtest.stats import RtpCounter, counting
from clients.sdk.participant import Participant


@dataclass
class WorkerBot:
    index: int
    participant: Participant
    counter: RtpCounter
    started_at: float
    joined_at: float | None = None
    failed: str | None = None


class Worker:
    def __init__(self) -> None:
        self.bots: list[WorkerBot] = []

    async def join(self, bots: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
        gate = asyncio.Semaphore(max(1, concurrency))

        async def one(spec: dict[str, Any]) -> WorkerBot:
            async with gate:
                participant = Participant(str(spec["url"]), str(spec["token"]), ice_servers=[], video_codec="VP8")
                counter = RtpCounter()
                count = counting(bool(spec.get("clear")))
                participant.tap_incoming(lambda pc: count(pc, counter))
                bot = WorkerBot(int(spec["index"]), participant, counter, time.monotonic())
                self.bots.append(bot)
                try:
                    await participant.connect(timeout=30)
                    bot.joined_at = time.monotonic()
                except Exception as exc:  # counted by the parent, not fatal
                    bot.failed = f"{type(exc).__name__}: {exc}"
                return bot

        joined = await asyncio.gather(*(one(spec) for spec in bots))
        return {"joined": [
            {"index": b.index, "join_seconds": None if b.joined_at is None else b.joined_at - b.started_at, "failed": b.failed}
            for b in joined
        ]}

    async def settle(self, video: int, audio: int, tile: list[int] | None, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        live = [b for b in self.bots if not b.failed]
        while True:
            waiting = [b for b in live if len(b.counter.media("video")) < video or len(b.counter.media("audio")) < audio]
            if not waiting:
                break
            if time.monotonic() > deadline:
                return {"error": f"{len(waiting)} of {len(live)} bots did not get every stream within {timeout:.0f} s"}
            await asyncio.sleep(0.5)
        if tile:
            for bot in live:
                for remote in list(bot.participant.remote.values()):
                    if remote.kind == "video":
                        await bot.participant.track_settings(remote.track_id, width=int(tile[0]), height=int(tile[1]))
        return {"settled": True}

    def books(self) -> dict[str, Any]:
        books: dict[str, Any] = {}
        first_media: dict[str, float] = {}
        for bot in self.bots:
            if bot.failed:
                continue
            totals = bot.counter.totals()
            totals["video_frames_by_ssrc"] = {
                str(ssrc): s.frames for ssrc, s in bot.counter.streams.items() if s.kind == "video" and not s.rtx
            }
            books[str(bot.index)] = totals
            if bot.counter.first_packet_at is not None:
                first_media[str(bot.index)] = bot.counter.first_packet_at - bot.started_at
        times = os.times()
        return {"books": books, "first_media": first_media, "cpu": times.user + times.system}

    async def remove(self, count: int) -> dict[str, Any]:
        leaving = self.bots[-count:] if count > 0 else []
        await asyncio.gather(*(b.participant.close() for b in leaving), return_exceptions=True)
        self.bots = self.bots[: len(self.bots) - len(leaving)]
        return {"removed": len(leaving)}

    async def handle(self, request: dict[str, Any]) -> dict[str, Any] | None:
        cmd = request.get("cmd")
        if cmd == "join":
            return await self.join(list(request.get("bots") or []), int(request.get("concurrency") or 8))
        if cmd == "settle":
            return await self.settle(int(request.get("video") or 0), int(request.get("audio") or 0),
                                     request.get("tile"), float(request.get("timeout") or 60))
        if cmd == "books":
            return self.books()
        if cmd == "remove":
            return await self.remove(int(request.get("count") or 0))
        if cmd == "quit":
            await self.remove(len(self.bots))
            return None
        return {"error": f"unknown request {cmd!r}"}


async def serve() -> None:
    from sfu.aiortc_hooks import configure_ice

    addresses = json.loads(sys.argv[1]) if len(sys.argv) > 1 else ["127.0.0.1"]
    configure_ice(addresses)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    worker = Worker()
    while True:
        line = await reader.readline()
        if not line:  # the parent went away
            await worker.remove(len(worker.bots))
            return
        try:
            request = json.loads(line)
            answer = await worker.handle(request) if isinstance(request, dict) else {"error": "not an object"}
        except Exception as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        if answer is None:
            print(json.dumps({"bye": True}), flush=True)
            return
        print(json.dumps(answer), flush=True)


def main() -> None:
    try:
        import uvloop

        uvloop.run(serve())
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(serve())


if __name__ == "__main__":
    main()
