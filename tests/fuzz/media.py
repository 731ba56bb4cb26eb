"""Harnesses on a real in-process SFU node (``sfu.room.SfuNode``), with real aiortc peers on
127.0.0.1 and no ICE servers.

- RTP/RTCP ingress: a publisher (Opus, VP8 with three RID layers, H.264) and a subscriber of all
  three tracks, both connected.  Fuzzed packets go in decrypted where aiortc hands them on after
  SRTP: ``RTCDtlsTransport._handle_rtp_data``/``_handle_rtcp_data`` of the SFU's transports, so
  they take aiortc's parsing and routing, the SFU's receiver tap, up-tracks, down-tracks (which
  forward to the real subscriber) and the subscriber's feedback path.
- SDP offers through ``Participant.publish`` and answers through the subscriber negotiation
  (``Participant.answer``), each case with a fresh participant.

aiortc's private API is used here only to inject packets (the two methods above); everything
else goes through the SFU's public classes."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.clock import current_ms
from prometheus_client import CollectorRegistry

from sfu.aiortc_client import drop_incoming_rtp
from sfu.aiortc_hooks import REPAIRED_RID_URI, RID_URI, ParkedTrack, configure_ice
from sfu.metrics import SfuMetrics
from sfu.room import Participant, Room, SfuNode, SignalError
from sfu.sdp import check_description, offer_ssrc_simulcast
from signaling.protocol import ERROR_CODES
from tests.fuzz.core import ErrorLog, LoopRunner, Runner, Undefined, describe
from tests.fuzz.rtp_cases import Profile, RtcpSpec, RtpSpec, corpus
from tests.fuzz.sdp_cases import SdpCase

CASE_SECONDS = 15.0
GRANTS = {"can_publish": True, "can_subscribe": True, "can_publish_data": True}
EXTENSION_NAMES = {
    "urn:ietf:params:rtp-hdrext:sdes:mid": "mid",
    RID_URI: "rid",
    REPAIRED_RID_URI: "rrid",
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time": "abs",
    "urn:ietf:params:rtp-hdrext:ssrc-audio-level": "level",
}
RIDS = ["q", "h", "f"]


async def until(condition: Callable[[], bool], seconds: float = 20.0, what: str = "a condition") -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class Inbox:
    """What the SFU tells one participant (its ``notify``)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]


def client_pc() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))


def _codecs(kind: str, name: str) -> list[Any]:
    caps = RTCRtpSender.getCapabilities(kind).codecs
    return [c for c in caps if c.name == name] + [c for c in caps if c.name == "rtx"][:1]


def with_rid_simulcast(sdp: str, mid: str, rids: list[str]) -> str:
    """A browser's RID simulcast in the m-section ``mid`` (aiortc does not write it)."""
    lines = sdp.splitlines()
    out: list[str] = []
    for line in lines:
        out.append(line)
        if line == f"a=mid:{mid}":
            out += [f"a=rid:{rid} send" for rid in rids] + ["a=simulcast:send " + ";".join(rids)]
    return "\r\n".join(out) + "\r\n"


async def publisher_offer(pc: RTCPeerConnection, kinds: tuple[str, ...] = ("audio", "VP8", "H264")) -> tuple[str, list[dict[str, Any]]]:
    """An offer of ``kinds`` (audio, VP8 with RID simulcast, VP8-SIM with SSRC simulcast, H264)
    from a client whose tracks never send, and the track metadata for ``publish``."""
    tracks, munge = [], []
    for kind in kinds:
        media = "audio" if kind == "audio" else "video"
        transceiver = pc.addTransceiver(ParkedTrack(media), direction="sendonly")
        if kind != "audio":
            transceiver.setCodecPreferences(_codecs("video", "VP8" if kind.startswith("VP8") else kind))
        munge.append((kind, transceiver))
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    for kind, transceiver in munge:
        media = "audio" if kind == "audio" else "video"
        tracks.append({"mid": transceiver.mid, "kind": media, "source": "microphone" if media == "audio" else "camera"})
        if kind == "VP8":
            sdp = with_rid_simulcast(sdp, transceiver.mid, RIDS)
        elif kind == "VP8-SIM":
            layers = [(0x1000 + n, 0x2000 + n) for n in range(3)]
            sdp = offer_ssrc_simulcast(sdp, transceiver.mid, layers, "fuzz-cname")
    return sdp, tracks


def sdp_ssrcs(sdp: str) -> list[int]:
    return list(dict.fromkeys(int(n) for n in re.findall(r"^a=ssrc:(\d+) ", sdp, re.M)))


def read_profile(offer: str, answer: str, subscriber_offer: str) -> Profile:
    extensions = {}
    for ident, uri in re.findall(r"^a=extmap:(\d+)(?:/\w+)? (\S+)", answer, re.M):
        if uri in EXTENSION_NAMES:
            extensions[EXTENSION_NAMES[uri]] = int(ident)
    return Profile(
        ssrcs=sdp_ssrcs(offer),
        payload_types=sorted({int(n) for n in re.findall(r"^a=rtpmap:(\d+) ", answer, re.M)}),
        extensions=extensions,
        mids=re.findall(r"^a=mid:(\S+)", offer, re.M),
        rids=RIDS,
        feedback_ssrcs=sdp_ssrcs(subscriber_offer),
    )


class Node:
    """An SFU node of this process with one room, its metrics readable."""

    def __init__(self, room: str) -> None:
        configure_ice(["127.0.0.1"], None)
        self.registry = CollectorRegistry()
        self.node = SfuNode(SfuMetrics(self.registry))
        self.room: Room = self.node.room(room)
        self.room_id = room
        self.joined = 0

    def fresh_room(self) -> Room:
        if self.room.closed:
            self.room = self.node.room(self.room_id)
        return self.room

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    async def join(self, prefix: str, grants: dict[str, bool] = GRANTS) -> tuple[Participant, Inbox]:
        self.joined += 1
        inbox = Inbox()
        participant = Participant(self.fresh_room(), f"{prefix}{self.joined}", prefix, "participant", dict(grants), inbox)
        await participant.room.add(participant)
        return participant, inbox

    async def close(self) -> None:
        await self.node.stop()


async def answer_offers(participant: Participant, inbox: Inbox, pc: RTCPeerConnection) -> None:
    """Answer every subscriber offer the SFU sends, as a client would."""
    answered = 0
    while not participant.closed:
        offers = inbox.of("subscriber-offer")
        if len(offers) > answered:
            await pc.setRemoteDescription(RTCSessionDescription(offers[answered]["sdp"], "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            participant.answer(pc.localDescription.sdp)
            answered += 1
        await asyncio.sleep(0.01)


async def connected_publisher(node: Node) -> tuple[Participant, RTCPeerConnection, str, str]:
    """A participant publishing Opus, VP8 (three RID layers) and H.264 from a connected client:
    the participant, the client, the offer and the SFU's answer."""
    publisher, _ = await node.join("pub")
    client = client_pc()
    offer, tracks = await publisher_offer(client)
    answer = (await publisher.publish(offer, tracks))["sdp"]
    await client.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    await until(lambda: client.connectionState == "connected", what="the publisher's connection")
    return publisher, client, offer, answer


# RTP and RTCP ingress -----------------------------------------------------------------------------


class RtpBench:
    PACKET_METRICS = ("receive", "forward", "tap")

    def __init__(self) -> None:
        corpus()  # encoded once, before any strategy draws from it
        self.node = Node("fuzz-rtp")
        self.clients: list[RTCPeerConnection] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def open(self) -> None:
        await self.node.node.start()
        publisher, pub_client, offer, answer = await connected_publisher(self.node)
        self.clients.append(pub_client)
        subscriber, sub_client, sub_offer = await self._subscribe(publisher)
        self.publisher, self.subscriber = publisher, subscriber
        self.profile = read_profile(offer, answer, sub_offer)
        self.pub_transport = publisher.publisher.getTransceivers()[0].receiver.transport  # type: ignore[union-attr]
        self.sub_transport = subscriber.subscriber.getTransceivers()[0].sender.transport  # type: ignore[union-attr]
        drop_incoming_rtp(sub_client, 1.0, random.Random(0))  # the subscriber client decodes nothing

    async def _subscribe(self, publisher: Participant) -> tuple[Participant, RTCPeerConnection, str]:
        subscriber, inbox = await self.node.join("sub")
        client = client_pc()
        self.clients.append(client)
        self.tasks.append(asyncio.ensure_future(answer_offers(subscriber, inbox, client)))
        await until(lambda: len(subscriber.downtracks) == len(publisher.uptracks), what="three down-tracks")
        await until(lambda: client.connectionState == "connected", what="the subscriber's connection")
        return subscriber, client, inbox.of("subscriber-offer")[-1]["sdp"]

    def _counts(self) -> tuple[float, float, float]:
        metric = self.node.metric
        errors = sum(metric("videoconf_sfu_packet_errors_total", where=w) for w in self.PACKET_METRICS)
        received = sum(metric("videoconf_sfu_packets_received_total", kind=k) for k in ("audio", "video"))
        forwarded = sum(metric("videoconf_sfu_packets_forwarded_total", kind=k) for k in ("audio", "video"))
        return errors, received, forwarded

    async def case(self, specs: list[RtpSpec | RtcpSpec]) -> str:
        errors, received, forwarded = self._counts()
        for spec in specs:
            await self._inject(spec)
            await asyncio.sleep(0)
        now_errors, now_received, now_forwarded = self._counts()
        self.contained = now_errors - errors
        return "forwarded" if now_forwarded > forwarded else "received" if now_received > received else "dropped"

    def check(self) -> None:
        """After the error log: failures the packet path contained without logging them (it logs
        the 1st, 2nd, 4th... of each), and both transports still up."""
        if self.contained:
            raise Undefined("a failure in the SFU's packet path (contained, counted in videoconf_sfu_packet_errors)")
        for pc in (self.publisher.publisher, self.subscriber.subscriber):
            if pc is None or pc.connectionState != "connected":
                raise Undefined("a transport of the SFU is no longer connected")

    async def _inject(self, spec: RtpSpec | RtcpSpec) -> None:
        data = spec.encode(self.profile)
        try:
            if isinstance(spec, RtpSpec):
                await self.pub_transport._handle_rtp_data(data, arrival_time_ms=current_ms())
            else:
                transport = self.sub_transport if spec.to_subscriber_side else self.pub_transport
                await transport._handle_rtcp_data(data)
        except Exception as exc:
            raise Undefined(f"{type(exc).__name__} raised out of the receive path ({exc}) | {data.hex()}") from exc

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await self.node.close()
        for pc in self.clients:
            await pc.close()


@contextlib.contextmanager
def open_bench(bench: Any, loggers: tuple[str, ...] = ("sfu", "aiortc"), seconds: float = CASE_SECONDS) -> Iterator[Runner]:
    """Set ``bench`` up on a production loop; each case runs ``bench.case`` within its bound,
    then fails on an error logged meanwhile, then on what ``bench.check`` finds."""
    loop = LoopRunner()
    try:
        with ErrorLog(*loggers) as errors:
            loop.run(bench.open(), 120)
            errors.take()

            def run(value: Any) -> str:
                label = loop.run(bench.case(value), seconds)
                errors.check()
                bench.check()
                return label

            yield run
            loop.run(bench.close(), 60)
    finally:
        loop.close()


def open_rtp() -> contextlib.AbstractContextManager[Runner]:
    return open_bench(RtpBench())


# SDP offers and answers ----------------------------------------------------------------------------


class SdpWarnings(ErrorLog):
    """Errors fail a case; the warning the SFU logs when aiortc refuses an offer or answer names
    aiortc's exception, which the label keeps (``refused:invalid_sdp:KeyError``)."""

    def reason(self) -> str:
        for record in self.records:
            if record.exc_info and record.exc_info[1] is not None:
                return type(record.exc_info[1]).__name__
        return ""


class PublishBench:
    """Each case: a fresh participant publishes a mutated offer."""

    def __init__(self, log: SdpWarnings) -> None:
        self.node = Node("fuzz-offers")
        self.log = log
        self.bases: list[tuple[str, list[dict[str, Any]]]] = []

    async def open(self) -> None:
        for kinds in (("audio", "VP8", "H264"), ("audio",), ("VP8-SIM",), ("H264", "audio")):
            pc = client_pc()
            self.bases.append(await publisher_offer(pc, kinds))
            await pc.close()

    async def case(self, case: SdpCase) -> str:
        sdp, tracks = self.bases[case.base % len(self.bases)]
        participant, _ = await self.node.join("p")
        self.log.take()
        try:
            answer = await participant.publish(case.apply(sdp), tracks)
            check_description(answer["sdp"])
            return "answer"
        except SignalError as exc:
            return refusal(exc.code, self.log)
        finally:
            await participant.room.remove(participant, "left")
            await asyncio.sleep(0)

    async def close(self) -> None:
        await self.node.close()


def refusal(code: str, log: SdpWarnings) -> str:
    if code not in ERROR_CODES:
        raise Undefined(f"refused with {code!r}, which the protocol does not list")
    reason = log.reason()
    return f"refused:{code}:{reason}" if reason else f"refused:{code}"


class AnswerBench:
    """Each case: a fresh subscriber of a publisher's three tracks answers the SFU's offer with
    a mutated answer (from a real client's answer to an offer of the same shape)."""

    def __init__(self, log: SdpWarnings) -> None:
        self.node = Node("fuzz-answers")
        self.log = log
        self.templates: dict[int, str] = {}

    async def open(self) -> None:
        # The publisher stays connected: a publisher whose ICE fails is removed, and with it the
        # tracks every case subscribes to.
        self.publisher, self.client, _, _ = await connected_publisher(self.node)

    async def _template(self, offer: str) -> str:
        count = offer.count("\nm=")
        if count not in self.templates:
            pc = client_pc()
            await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            self.templates[count] = pc.localDescription.sdp
            await pc.close()
        return self.templates[count]

    async def case(self, case: SdpCase) -> str:
        participant, inbox = await self.node.join("s", {"can_subscribe": True})
        try:
            await until(lambda: inbox.of("subscriber-offer"), 10, "a subscriber offer")
            answer = case.apply(await self._template(inbox.of("subscriber-offer")[0]["sdp"]))
            self.log.take()
            before = len(inbox.messages)
            participant.answer(answer)
            await settled(participant, inbox, before)
            errors = inbox.of("error")
            return refusal(errors[0]["code"], self.log) if errors else "accepted"
        finally:
            await participant.room.remove(participant, "left")
            await asyncio.sleep(0)

    async def close(self) -> None:
        await self.node.close()
        await self.client.close()


async def settled(participant: Participant, inbox: Inbox, before: int, quiet: float = 0.3) -> None:
    """Until the answer had its effect: an error, a removal, a message, or ``quiet`` seconds of
    nothing (an accepted answer whose tracks all were rejected sends nothing)."""
    deadline = time.monotonic() + quiet
    while time.monotonic() < deadline:
        if len(inbox.messages) > before or participant.closed:
            await asyncio.sleep(0)
            return
        await asyncio.sleep(0.002)


def open_publish() -> contextlib.AbstractContextManager[Runner]:
    return _open_sdp(PublishBench)


def open_answer() -> contextlib.AbstractContextManager[Runner]:
    return _open_sdp(AnswerBench)


@contextlib.contextmanager
def _open_sdp(kind: Callable[[SdpWarnings], Any]) -> Iterator[Runner]:
    import logging

    loop = LoopRunner()
    try:
        with SdpWarnings("sfu", "aiortc", level=logging.WARNING) as log:
            bench = kind(log)
            loop.run(bench.open(), 120)

            def run(case: SdpCase) -> str:
                label = loop.run(bench.case(case), CASE_SECONDS)
                failures = [r for r in log.take() if r.levelno >= logging.ERROR]
                if failures:
                    raise Undefined(describe(failures[0]))
                return label

            yield run
            loop.run(bench.close(), 60)
    finally:
        loop.close()

