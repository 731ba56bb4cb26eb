"""Simulcast with real headless Chromium: the browser publishes three RID layers from a 720p fake
camera, an SDK subscriber decodes each layer in turn, and a Chromium subscriber is switched
between layers without a freeze in its getStats."""

from __future__ import annotations

import asyncio

from tests.media.browser import chromium, client_page, js
from tests.media.conftest import Meeting, until
from videoconf.app import SFU

SIZES = ((320, 180), (640, 360), (1280, 720))

PUBLISH = """
const stream = await navigator.mediaDevices.getUserMedia({
  audio: true, video: { width: { exact: 1280 }, height: { exact: 720 }, frameRate: 30 },
});
const client = new vc.SfuClient(url, token, { iceServers: [] });
window.client = client;
await client.connect();
return await client.publish([
  { track: stream.getVideoTracks()[0], source: "camera" },
  { track: stream.getAudioTracks()[0], source: "microphone" },
]);
"""

SUBSCRIBE = """
const client = new vc.SfuClient(url, token, { iceServers: [] });
window.client = client;
client.addEventListener("track", ({ detail }) => {
  const element = document.createElement(detail.track.kind);
  element.autoplay = true;
  element.muted = true;
  element.srcObject = detail.stream;
  element.dataset.track = detail.trackId;
  document.body.append(element);
});
window.forwarded = [];
client.addEventListener("track-forwarding", ({ detail }) => window.forwarded.push(detail));
await client.connect();
return client.identity;
"""

OUTBOUND = """
const report = await client.publisher.getStats();
const out = [];
for (const s of report.values()) {
  if (s.type === "outbound-rtp" && s.kind === "video") {
    out.push({ rid: s.rid, width: s.frameWidth, height: s.frameHeight, fps: s.framesPerSecond,
               limit: s.qualityLimitationReason, active: s.active, target: s.targetBitrate });
  }
}
return out;
"""

STATS = """
const stats = await client.inboundStats(trackId);
return stats && {
  width: stats.frameWidth ?? 0, height: stats.frameHeight ?? 0, decoded: stats.framesDecoded ?? 0,
  freezes: stats.freezeCount ?? 0, freezeSeconds: stats.totalFreezesDuration ?? 0,
  keyframes: stats.keyFramesDecoded ?? 0, lost: stats.packetsLost ?? 0, nacks: stats.nackCount ?? 0,
  plis: stats.pliCount ?? 0, fps: stats.framesPerSecond ?? 0, dropped: stats.framesDropped ?? 0,
};
"""

SENDER_REPORTS = """
const report = await client.subscriber.getStats();
const out = [];
for (const s of report.values()) {
  if (s.type === "remote-outbound-rtp") out.push({ kind: s.kind, packets: s.packetsSent, reports: s.reportsSent });
}
return out;
"""


def base_url(meeting: Meeting) -> str:
    return str(meeting.api.client.make_url("")).rstrip("/")


async def test_chromium_publishes_three_layers_that_an_sdk_subscriber_decodes(meeting: Meeting) -> None:
    async with chromium() as browser:
        page = await client_page(browser, base_url(meeting))
        video_id, audio_id = await js(page, PUBLISH, url=meeting.signaling_url, token=await meeting.token(meeting.host))
        node = meeting.api.app[SFU]
        (room,) = node.rooms.values()
        (publisher,) = [p for p in room.participants.values() if video_id in p.uptracks]
        up = publisher.uptracks[video_id]
        assert up.is_simulcast and [layer.rid for layer in up.order] == ["q", "h", "f"]
        viewer = await meeting.participant(meeting.people[0])
        await until(lambda: video_id in viewer.remote and viewer.remote[video_id].frames >= 3, timeout=30)
        remote = viewer.remote[video_id]
        # Chromium adds its upper layers as the SFU's estimate of its uplink grows.
        for ask, size in (({"quality": "low"}, (320, 180)), ({"width": 640, "height": 360}, (640, 360)), ({"quality": "high"}, (1280, 720))):
            await viewer.track_settings(video_id, **ask)
            await until(lambda s=size: remote.last_size == s, timeout=40)
            before = remote.sizes.get(size, 0)
            await until(lambda s=size, b=before: remote.sizes.get(s, 0) >= b + 10, timeout=20)
        assert [(layer.width, layer.height) for layer in up.order] == list(SIZES)
        await until(lambda: viewer.remote.get(audio_id) is not None and len(viewer.remote[audio_id].audio) > 20, timeout=10)
        assert page.errors == []


async def test_chromium_subscriber_switches_layers_without_freezing(meeting: Meeting) -> None:
    async with chromium() as browser:
        publisher = await client_page(browser, base_url(meeting))
        video_id, _ = await js(publisher, PUBLISH, url=meeting.signaling_url, token=await meeting.token(meeting.host))
        page = await client_page(browser, base_url(meeting))
        await js(page, SUBSCRIBE, url=meeting.signaling_url, token=await meeting.token(meeting.people[0]))

        timeline: list[tuple[float, dict | None]] = []
        started = asyncio.get_running_loop().time()

        async def stats() -> dict | None:
            current = await js(page, STATS, trackId=video_id)
            timeline.append((round(asyncio.get_running_loop().time() - started, 2), current))
            return current

        def freezes() -> str:
            """The moments a freeze was counted, with what came before."""
            lines = []
            for (_, before), (at, after) in zip(timeline, timeline[1:], strict=False):
                if before and after and after["freezes"] > before["freezes"]:
                    lines.append(f"at {at}s: {before} -> {after}")
            return "; ".join(lines)

        # Chromium adds its layers as its bandwidth estimate grows (and may drop one on the way,
        # which no SFU can hide): start switching once the top layer plays.
        first: dict | None = None
        deadline = asyncio.get_running_loop().time() + 40
        while first is None or first["decoded"] < 10 or (first["width"], first["height"]) != (1280, 720):
            assert asyncio.get_running_loop().time() < deadline, f"Chromium never played the top layer: {first}"
            await asyncio.sleep(0.3)
            first = await stats()
        switches = [(320, 180), (1280, 720), (640, 360), (320, 180), (640, 360), (1280, 720)]
        for width, height in switches:
            await js(page, "client.trackSettings(trackId, { width, height });", trackId=video_id, width=width, height=height)
            deadline = asyncio.get_running_loop().time() + 20
            current = await stats()
            while (current["width"], current["height"]) != (width, height):
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(
                        f"Chromium never showed {width}x{height}: {current}; publisher sends "
                        f"{await js(publisher, OUTBOUND)}; forwarding {await js(page, 'return window.forwarded;')}"
                    )
                await asyncio.sleep(0.2)
                current = await stats()
            # Let it play at that layer for a moment: a freeze shows up after the switch.
            decoded = current["decoded"]
            while current["decoded"] < decoded + 15:
                assert asyncio.get_running_loop().time() < deadline + 10, f"Chromium stalled at {width}x{height}: {current}"
                await asyncio.sleep(0.2)
                current = await stats()
        final = await stats()
        assert final["freezes"] == first["freezes"], f"{first} then {final}: {freezes()}; forwarding {await js(page, 'return window.forwarded;')}"
        assert final["decoded"] > first["decoded"] + 6 * 15
        node = meeting.api.app[SFU]
        (room,) = node.rooms.values()
        (viewer,) = [p for p in room.participants.values() if video_id in p.downtracks]
        assert viewer.downtracks[video_id].switches >= 5
        # Chromium takes the SFU's sender reports (from one timer per event loop, SRTCP protected
        # by the native helper): one per forwarded stream, counting what the SFU sent on it.
        async def reported() -> list[dict] | None:
            streams = await js(page, SENDER_REPORTS)
            return streams if {s["kind"] for s in streams if s["packets"] > 0 and s["reports"] >= 2} == {"audio", "video"} else None

        streams = await until(reported, 10, lambda: "sender reports for audio and video in Chromium's stats", interval=0.5)
        (video_reports,) = [s for s in streams if s["kind"] == "video"]
        assert video_reports["packets"] >= final["decoded"]  # several packets a frame
        assert page.errors == []
