"""GStreamer's webrtcbin as a peer of the SFU: an independent WebRTC stack for the interop tests.

Run with Debian's Python (``/usr/bin/python3``, which has ``python3-gi`` and ``python3-gst-1.0``;
the project's virtualenv cannot import them)::

    gst_peer.py publish H264|VP8   # videotestsrc -> x264enc or vp8enc -> payloader -> webrtcbin
    gst_peer.py subscribe          # answers an offer and decodes the video it receives

It speaks JSON lines on stdin and stdout; the test relays them to the signaling WebSocket.

    test -> peer: {"type": "answer" | "offer", "sdp"}, {"type": "candidate", "mline", "candidate"},
                  {"type": "stop"}
    peer -> test: {"type": "ready"}, {"type": "offer" | "answer", "sdp"},
                  {"type": "candidate", "mline", "candidate"}, {"type": "error", "message"},
                  and every 200 ms {"type": "stats", "connection", "rtp_packets", "big_packets",
                  "max_rtp_size", "frames_decoded", "width", "height"}

The payloaders keep their default MTU (1,400 bytes), so a keyframe at the bitrate used here goes
out in packets of that size.  ICE stays on loopback: libnice gathers only on the addresses it is
given (``add-local-ip-address``), tries no UPnP port mapping, and no STUN or TURN server is
configured.  webrtcbin's DTLS
certificate is RSA, as it is by default.
"""

from __future__ import annotations

import json
import sys
import threading

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

ENCODERS = {
    "H264": (
        "x264enc tune=zerolatency speed-preset=ultrafast bitrate=2000 key-int-max=30 ! "
        "video/x-h264,profile=constrained-baseline ! rtph264pay config-interval=-1 name=pay ! "
        "application/x-rtp,media=video,encoding-name=H264,payload=102"
    ),
    "VP8": (
        "vp8enc deadline=1 target-bitrate=2000000 keyframe-max-dist=30 ! rtpvp8pay name=pay ! "
        "application/x-rtp,media=video,encoding-name=VP8,payload=96"
    ),
}
DECODERS = {
    "H264": "rtph264depay ! h264parse ! avdec_h264 name=decoder ! fakesink sync=false",
    "VP8": "rtpvp8depay ! vp8dec name=decoder ! fakesink sync=false",
}
BIG_PACKET = 1300  # bytes: a packet this size would not fit aiortc's SRTP buffer once rewritten

_out = threading.Lock()


def emit(message: dict) -> None:
    with _out:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()


def pipeline(role: str, codec: str | None) -> Gst.Pipeline:
    """A publisher's encoding pipeline into webrtcbin, or a subscriber's lone webrtcbin (its
    decoders are added as its pads appear)."""
    if role == "publish":
        source = "videotestsrc is-live=true ! video/x-raw,width=640,height=480,framerate=30/1"
        return Gst.parse_launch(f"webrtcbin name=webrtc bundle-policy=max-bundle {source} ! {ENCODERS[codec]} ! webrtc.")
    pipe = Gst.Pipeline.new("subscriber")
    webrtc = Gst.ElementFactory.make("webrtcbin", "webrtc")
    webrtc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
    pipe.add(webrtc)
    return pipe


def loopback_only(webrtc: Gst.Element) -> None:
    ice = webrtc.get_property("ice-agent")
    # webrtcbin 1.22 keeps its ICE object floating: PyGObject's wrapper sinks that reference
    # and would free the object with the wrapper.  Give webrtcbin its reference back.
    ice._ref()
    ice.emit("add-local-ip-address", "127.0.0.1")
    ice.get_property("agent").set_property("upnp", False)  # no port mapping on the LAN


class Peer:
    def __init__(self, role: str, codec: str | None) -> None:
        self.stats = {"rtp_packets": 0, "big_packets": 0, "max_rtp_size": 0, "frames_decoded": 0}
        self.stats.update(width=None, height=None)
        self.pipe = pipeline(role, codec)
        self.webrtc = self.pipe.get_by_name("webrtc")
        loopback_only(self.webrtc)
        self.webrtc.connect("on-ice-candidate", self._on_candidate)
        self.webrtc.connect("pad-added", self._on_pad)
        bus = self.pipe.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", lambda _bus, msg: emit({"type": "error", "message": str(msg.parse_error()[0])}))
        if role == "publish":
            probe = Gst.PadProbeType.BUFFER | Gst.PadProbeType.BUFFER_LIST
            self.pipe.get_by_name("pay").get_static_pad("src").add_probe(probe, self._count_sent)
            sendonly = GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY
            self.webrtc.emit("get-transceiver", 0).set_property("direction", sendonly)
            self.webrtc.connect("on-negotiation-needed", self._on_negotiation_needed)
        self.pipe.set_state(Gst.State.PLAYING)

    @staticmethod
    def _on_candidate(_element: Gst.Element, mline: int, candidate: str) -> None:
        emit({"type": "candidate", "mline": mline, "candidate": candidate})

    # Packets and frames ---------------------------------------------------------------------

    def _count_sent(self, _pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        if info.type & Gst.PadProbeType.BUFFER_LIST:
            buffers = info.get_buffer_list()
            sizes = [buffers.get(i).get_size() for i in range(buffers.length())]
        else:
            sizes = [info.get_buffer().get_size()]
        for size in sizes:
            self.stats["rtp_packets"] += 1
            self.stats["big_packets"] += size >= BIG_PACKET
            self.stats["max_rtp_size"] = max(self.stats["max_rtp_size"], size)
        return Gst.PadProbeReturn.OK

    def _on_pad(self, _element: Gst.Element, pad: Gst.Pad) -> None:
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        caps = pad.get_current_caps() or pad.query_caps(None)
        name = caps.get_structure(0).get_string("encoding-name")
        if name not in DECODERS:
            emit({"type": "error", "message": f"no decoder for {name}"})
            return
        branch = Gst.parse_bin_from_description(DECODERS[name], True)
        self.pipe.add(branch)
        branch.sync_state_with_parent()
        pad.link(branch.get_static_pad("sink"))
        decoder = branch.get_by_name("decoder")
        decoder.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, self._count_decoded)

    def _count_decoded(self, pad: Gst.Pad, _info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        self.stats["frames_decoded"] += 1
        caps = pad.get_current_caps()
        if caps is not None:
            structure = caps.get_structure(0)
            self.stats["width"] = structure.get_int("width")[1]
            self.stats["height"] = structure.get_int("height")[1]
        return Gst.PadProbeReturn.OK

    # Negotiation ----------------------------------------------------------------------------

    def _on_negotiation_needed(self, element: Gst.Element) -> None:
        element.emit("create-offer", None, Gst.Promise.new_with_change_func(self._created, "offer"))

    def _created(self, promise: Gst.Promise, kind: str) -> None:
        reply = promise.get_reply()
        description = reply.get_value(kind) if reply is not None else None
        if description is None:
            emit({"type": "error", "message": f"webrtcbin made no {kind}: {reply}"})
            return
        self.webrtc.emit("set-local-description", description, Gst.Promise.new())
        emit({"type": kind, "sdp": description.sdp.as_text()})

    def _remote(self, kind: str, text: str) -> None:
        _, message = GstSdp.SDPMessage.new_from_text(text)
        sdp_type = GstWebRTC.WebRTCSDPType.OFFER if kind == "offer" else GstWebRTC.WebRTCSDPType.ANSWER
        description = GstWebRTC.WebRTCSessionDescription.new(sdp_type, message)
        then = Gst.Promise.new_with_change_func(self._answer) if kind == "offer" else Gst.Promise.new()
        self.webrtc.emit("set-remote-description", description, then)

    def _answer(self, _promise: Gst.Promise) -> None:
        self.webrtc.emit("create-answer", None, Gst.Promise.new_with_change_func(self._created, "answer"))

    def handle(self, message: dict) -> bool:
        kind = message.get("type")
        if kind in ("offer", "answer"):
            self._remote(kind, message["sdp"])
        elif kind == "candidate":
            self.webrtc.emit("add-ice-candidate", message["mline"], message["candidate"])
        elif kind == "stop":
            self.pipe.set_state(Gst.State.NULL)
            loop.quit()
        return False

    def report(self) -> bool:
        connection = self.webrtc.get_property("connection-state").value_nick
        emit({"type": "stats", "connection": connection, **self.stats})
        return True


def read_commands(peer: Peer) -> None:
    for line in sys.stdin:
        if line.strip():
            GLib.idle_add(peer.handle, json.loads(line))
    GLib.idle_add(peer.handle, {"type": "stop"})  # the test went away


if __name__ == "__main__":
    Gst.init(None)
    loop = GLib.MainLoop()
    peer = Peer(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
    threading.Thread(target=read_commands, args=(peer,), daemon=True).start()
    GLib.timeout_add(200, peer.report)
    emit({"type": "ready"})
    loop.run()
