"""Debian's Janus with only its VideoRoom plugin and its HTTP API, driven by aiortc peers: the
independent SFU of ``benchmarks.side_by_side``.

Run inside the namespace of ``benchmarks.netns``: Janus gathers ICE candidates only on the
veth carrying 127.0.0.2 (it skips loopback interfaces), has no STUN or TURN server, and serves
its HTTP API on 127.0.0.1.  aiortc does not trickle, so every jsep sent to Janus says
``"trickle": false`` and carries all candidates; Janus waits for its own gathering to finish
before it answers, so its SDPs carry its candidates too.  Janus's peers must offer candidates on
127.0.0.2 as well (``configure_ice([JANUS_ADDRESS])``): with theirs on 127.0.0.1, Janus's
connectivity checks from the veth never completed.

    python -m benchmarks.janus      # self-check: one publisher, three subscribers, 5 s
"""

from __future__ import annotations

import asyncio
import itertools
import random
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription

from benchmarks.media import peer, vp8_only
from benchmarks.netns import JANUS_ADDRESS, JANUS_INTERFACE, confine
from clients.loadtest.polling import until
from clients.loadtest.process import ChildProcess, ChildProcessFailed, cpu_seconds, free_port, pinned

LIBDIR = Path("/usr/lib/x86_64-linux-gnu/janus")
KEEP_PLUGINS = {"libjanus_videoroom.so"}
KEEP_TRANSPORTS = {"libjanus_http.so"}


class JanusError(Exception):
    pass


class Janus:
    def __init__(self, workdir: Path, core: int | None = 0, interface: str = JANUS_INTERFACE) -> None:
        self.workdir = workdir
        self.core = core
        self.interface = interface
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/janus"
        self.child: ChildProcess | None = None
        self._http: aiohttp.ClientSession | None = None
        self._session: int | None = None
        self._poller: asyncio.Task[None] | None = None
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._rooms: list[tuple[int, int]] = []  # (room, handle that created it)
        self._handles: list[int] = []

    @staticmethod
    def version() -> str | None:
        done = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "janus"], capture_output=True, text=True)
        return done.stdout.strip() or None

    # The process -------------------------------------------------------------------------------

    def _write_config(self) -> Path:
        config = self.workdir / "conf"
        config.mkdir(parents=True, exist_ok=True)
        plugins = sorted(p.name for p in (LIBDIR / "plugins").glob("*.so") if p.name not in KEEP_PLUGINS)
        transports = sorted(p.name for p in (LIBDIR / "transports").glob("*.so") if p.name not in KEEP_TRANSPORTS)
        (config / "janus.jcfg").write_text(f"""general: {{
    configs_folder = "{config}"
    plugins_folder = "{LIBDIR / 'plugins'}"
    transports_folder = "{LIBDIR / 'transports'}"
    events_folder = "{LIBDIR / 'events'}"
    loggers_folder = "{LIBDIR / 'loggers'}"
    debug_level = 3
    session_timeout = 120
}}
media: {{
    ipv6 = false
    rtp_port_range = "20000-40000"
}}
nat: {{
    nice_debug = false
    full_trickle = false
    ignore_mdns = true
    ice_enforce_list = "{self.interface}"
}}
plugins: {{
    disable = "{','.join(plugins)}"
}}
transports: {{
    disable = "{','.join(transports)}"
}}
events: {{
    broadcast = false
}}
""")
        (config / "janus.transport.http.jcfg").write_text(f"""general: {{
    json = "plain"
    base_path = "/janus"
    http = true
    ip = "127.0.0.1"
    port = {self.port}
    https = false
}}
admin: {{
    admin_http = false
    admin_https = false
}}
""")
        (config / "janus.plugin.videoroom.jcfg").write_text("general: {\n}\n")
        return config

    def start(self, timeout: float = 20.0) -> None:
        if shutil.which("janus") is None:
            raise JanusError("Debian's janus is not installed (apt-get install janus)")
        config = self._write_config()
        log = self.workdir / "janus.log"
        command = ["janus", "-C", str(config / "janus.jcfg"), "-F", str(config), "-o", "-N", "-L", str(log)]
        self.child = ChildProcess(pinned(self.core, command), output=subprocess.DEVNULL, log=log)
        try:
            self.child.start(self._answers, timeout, f"janus on {self.base}")
        except ChildProcessFailed as error:
            raise JanusError(str(error)) from None

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.base + "/info", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    @property
    def pid(self) -> int:
        assert self.child is not None
        return self.child.pid

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop(timeout=15)

    # The HTTP API ------------------------------------------------------------------------------

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self._http is not None
        body = {**body, "transaction": body.get("transaction") or f"t{next(self._ids)}"}
        async with self._http.post(self.base + path, json=body) as response:
            answer = await response.json(content_type=None)
        if answer.get("janus") == "error":
            raise JanusError(f"{body.get('janus')}: {answer['error']}")
        return dict(answer)

    async def open(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        created = await self._post("", {"janus": "create"})
        self._session = int(created["data"]["id"])
        self._poller = asyncio.create_task(self._poll(), name="janus-long-poll")

    async def _poll(self) -> None:
        """Janus's long poll: dispatches asynchronous plugin events by transaction, and keeps
        the session alive."""
        assert self._http is not None
        while True:
            try:
                async with self._http.get(f"{self.base}/{self._session}", params={"maxev": "10"}) as response:
                    events = await response.json(content_type=None)
            except (aiohttp.ClientError, asyncio.TimeoutError):
                await asyncio.sleep(0.2)
                continue
            for event in events if isinstance(events, list) else [events]:
                waiter = self._waiting.get(str(event.get("transaction")))
                if waiter is not None and not waiter.done() and event.get("janus") == "event":
                    waiter.set_result(event)

    async def _attach(self) -> int:
        attached = await self._post(f"/{self._session}", {"janus": "attach", "plugin": "janus.plugin.videoroom"})
        handle = int(attached["data"]["id"])
        self._handles.append(handle)
        return handle

    async def _message(self, handle: int, body: dict[str, Any], jsep: dict[str, Any] | None = None, timeout: float = 30.0) -> dict[str, Any]:
        """A plugin request; the synchronous answer, or the asynchronous event it leads to."""
        transaction = f"t{next(self._ids)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[transaction] = future
        try:
            request: dict[str, Any] = {"janus": "message", "body": body, "transaction": transaction}
            if jsep is not None:
                request["jsep"] = jsep
            answer = await self._post(f"/{self._session}/{handle}", request)
            if answer.get("janus") == "success":
                return answer
            event = await asyncio.wait_for(future, timeout)
        finally:
            self._waiting.pop(transaction, None)
        data = event.get("plugindata", {}).get("data", {})
        if "error" in data:
            raise JanusError(f"{body.get('request')}: {data['error']}")
        return event

    async def create_room(self, publishers: int = 10, bitrate: int = 4_000_000) -> int:
        handle = await self._attach()
        room = random.randrange(1, 2**31)
        answer = await self._message(handle, {
            "request": "create", "room": room, "publishers": publishers, "bitrate": bitrate,
            "videocodec": "vp8", "audiocodec": "opus", "record": False, "notify_joining": False,
        })
        data = answer["plugindata"]["data"]
        if data.get("videoroom") != "created":
            raise JanusError(f"create: {data}")
        self._rooms.append((room, handle))
        return room

    async def publish(self, pc: RTCPeerConnection, room: int) -> int:
        """Publish ``pc``'s sendonly transceivers; the publisher's feed id."""
        handle = await self._attach()
        joined = await self._message(handle, {"request": "join", "ptype": "publisher", "room": room, "display": "publisher"})
        feed = int(joined["plugindata"]["data"]["id"])
        await pc.setLocalDescription(await pc.createOffer())
        event = await self._message(handle, {"request": "publish", "audio": True, "video": True},
                                    jsep={"type": "offer", "sdp": pc.localDescription.sdp, "trickle": False})
        jsep = event.get("jsep")
        if not jsep:
            raise JanusError(f"publish: no answer in {event}")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type="answer"))
        # Janus offers a feed to subscribers only once its PeerConnection is up.
        await until(lambda: pc.connectionState in ("connected", "failed", "closed"), 20,
                    lambda: f"the publisher's connection to Janus: it is {pc.connectionState}", interval=0.05, error=JanusError)
        if pc.connectionState != "connected":
            raise JanusError(f"the publisher's connection to Janus is {pc.connectionState}")
        return feed

    async def subscribe(self, pc: RTCPeerConnection, room: int, feed: int) -> None:
        handle = await self._attach()
        for attempt in range(50):  # "No such feed" until Janus has seen the publisher's media
            try:
                event = await self._message(handle, {"request": "join", "ptype": "subscriber", "room": room, "streams": [{"feed": feed}]})
                break
            except JanusError as exc:
                if "No such feed" not in str(exc) or attempt == 49:
                    raise
                await asyncio.sleep(0.1)
        jsep = event.get("jsep")
        if not jsep:
            raise JanusError(f"subscribe: no offer in {event}")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await self._message(handle, {"request": "start", "room": room},
                            jsep={"type": "answer", "sdp": pc.localDescription.sdp, "trickle": False})

    async def destroy_rooms(self) -> None:
        """Destroy the rooms made so far (kicking their participants) and detach every handle."""
        for room, handle in self._rooms:
            try:
                await self._message(handle, {"request": "destroy", "room": room})
            except (JanusError, asyncio.TimeoutError, aiohttp.ClientError):
                pass
        self._rooms.clear()
        for handle in self._handles:
            try:
                await self._post(f"/{self._session}/{handle}", {"janus": "detach"})
            except (JanusError, aiohttp.ClientError):
                pass
        self._handles.clear()

    async def close(self) -> None:
        if self._http is None:
            return
        await self.destroy_rooms()
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        try:
            await self._post(f"/{self._session}", {"janus": "destroy"})
        except (JanusError, aiohttp.ClientError):
            pass
        await self._http.close()
        self._http = None


async def _self_check() -> int:
    from clients.loadtest.stats import RtpCounter, tap_counter
    from clients.sdk.replay import replay_audio, replay_video
    from sfu.aiortc_hooks import configure_ice

    configure_ice([JANUS_ADDRESS])
    with tempfile.TemporaryDirectory(prefix="janus-") as workdir:
        janus = Janus(Path(workdir))
        janus.start()
        pcs: list[RTCPeerConnection] = []
        try:
            await janus.open()
            room = await janus.create_room()
            publisher = peer()
            pcs.append(publisher)
            publisher.addTransceiver(replay_video(), direction="sendonly").setCodecPreferences(vp8_only())
            publisher.addTransceiver(replay_audio(), direction="sendonly")
            feed = await janus.publish(publisher, room)
            counters = []
            for _ in range(3):
                pc = peer()
                pcs.append(pc)
                await janus.subscribe(pc, room, feed)
                counters.append(tap_counter(pc, RtpCounter()))
            await asyncio.sleep(3)
            cpu0 = cpu_seconds(janus.pid)
            before = [c.totals()["packets"] for c in counters]
            await asyncio.sleep(5)
            after = [c.totals() for c in counters]
            cpu = cpu_seconds(janus.pid) - cpu0
            for b, a in zip(before, after, strict=True):
                print(f"subscriber: {a['packets'] - b} packets in 5 s, {a['video_streams']} video and {a['audio_streams']} audio streams, lost {a['lost']}")
            print(f"janus CPU: {cpu:.2f} s in 5 s")
            ok = all(a["packets"] - b > 100 and a["video_streams"] and a["audio_streams"] for b, a in zip(before, after, strict=True))
            return 0 if ok else 1
        finally:
            await asyncio.gather(*(pc.close() for pc in pcs), return_exceptions=True)
            await janus.close()
            janus.stop()


if __name__ == "__main__":
    confine()
    sys.exit(asyncio.run(_self_check()))
