"""What one subscriber gets of one published track, decided packet by packet, with no I/O.

A ``Forwarder`` owns the layer now forwarded (``current``), the layer wanted (``target``), the
highest VP8 temporal layer wanted, the sequence/timestamp ``Munger`` and a ``Vp8Munger``.  A
cached packet goes in and a verdict comes out: ``Forward`` (send it with these numbers and this
payload), or a ``Drop`` saying why (``Drop.AWAIT_KEYFRAME`` also asks for a keyframe of the
target).  The caller does the I/O, and tells ``sent`` once the packet went out.  The down-track
(subscribers), the recorder's tap and relay links between SFU processes all decide this way.

The rules:
- a switch to another layer happens only on a keyframe of the target; sequence numbers continue
  without a gap, timestamps by wall clock since the last packet sent, and a frame of the old
  layer that the switch cut short looks lost, not complete;
- VP8 frames above the temporal cap are dropped whole (decided once per picture ID), and the
  sequence gap they leave is closed; the cap falls at the next frame and rises at the next
  frame that can start the higher layer (TL0, or a layer-sync frame);
- VP8 picture IDs and TL0PICIDX continue across switches and drops, so that a browser's decoder
  sees one unbroken stream (Chromium froze for about 2 s on switches without this).

The clock is passed in; layers are anything with a ``position`` (``sfu.layer.Layer``).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from sfu.munger import Munger
from sfu.packet_cache import CachedPacket
from sfu.vp8 import rewrite_vp8

FRAME_MEMORY = 64  # VP8 picture-ID decisions remembered


class LayerRef(Protocol):
    position: int


class Forward(NamedTuple):
    """Send the packet as ``sequence`` (16 bits) and ``timestamp`` (32 bits) with ``payload``."""

    sequence: int
    timestamp: int
    payload: bytes


class Drop(enum.Enum):
    """Why a packet is not forwarded."""

    NOT_WANTED = "not_wanted"  # neither the current layer nor the target
    AWAIT_KEYFRAME = "await_keyframe"  # the target's, but no keyframe: ask the publisher for one
    TEMPORAL = "temporal"  # a VP8 frame above the temporal cap
    STALE = "stale"  # from before the point forwarding (re)started, or dropped before


Verdict = Forward | Drop
_forward = tuple.__new__  # Forward(...) without the named tuple's Python-level __new__ (per copy)


class Selection(enum.Enum):
    """What the layer rule alone says of a packet (the recorder needs no more)."""

    CURRENT = "current"
    SWITCHED = "switched"


class Vp8Munger:
    """VP8 picture IDs and TL0PICIDX, continued across layer switches and dropped frames."""

    def __init__(self) -> None:
        self.frames: dict[int, int | None] = {}  # input picture ID -> output (None: dropped)
        self.picture_offset = 0
        self.tl0_offset = 0
        self.last_picture: int | None = None
        self.last_tl0: int | None = None

    def restart(self, packet: CachedPacket) -> None:
        """A new layer starts with ``packet``: its numbers continue from the last ones sent."""
        self.frames.clear()
        if packet.picture_id is not None:
            self.picture_offset = (self.last_picture + 1 - packet.picture_id) if self.last_picture is not None else 0
        if packet.tl0 is not None:
            self.tl0_offset = (self.last_tl0 + 1 - packet.tl0) if self.last_tl0 is not None else 0

    def known(self, picture: int) -> bool | None:
        """Whether the frame was forwarded, if it was decided already."""
        out = self.frames.get(picture, False)
        return None if out is False else out is not None

    def decide(self, picture: int, forward: bool) -> None:
        """Remember a frame's fate; a dropped frame moves the later picture IDs down by one."""
        if forward:
            out: int | None = picture + self.picture_offset
        else:
            out = None
            self.picture_offset -= 1
        if len(self.frames) >= FRAME_MEMORY:
            del self.frames[next(iter(self.frames))]
        self.frames[picture] = out

    def payload(self, packet: CachedPacket) -> bytes:
        """The packet's payload with its picture ID and TL0PICIDX rewritten where they move."""
        vp8 = packet.vp8
        if vp8 is None:
            return packet.payload
        picture = packet.picture_id
        if self.picture_offset == 0 and self.tl0_offset == 0 and (picture is None or self.frames.get(picture, picture) == picture):
            return packet.payload
        out = self.frames.get(picture) if picture is not None else None
        tl0 = packet.tl0 + self.tl0_offset if packet.tl0 is not None else None
        return rewrite_vp8(packet.payload, vp8, out, tl0 & 0xFF if tl0 is not None else None)

    def sent(self, packet: CachedPacket) -> None:
        if packet.picture_id is not None:
            out = self.frames.get(packet.picture_id)
            if out is not None and (self.last_picture is None or out > self.last_picture):
                self.last_picture = out
        if packet.tl0 is not None:
            out_tl0 = packet.tl0 + self.tl0_offset
            if self.last_tl0 is None or out_tl0 > self.last_tl0:
                self.last_tl0 = out_tl0


class Forwarder:
    """The forwarding state of one subscriber (or tap) of one track."""

    def __init__(
        self,
        target: LayerRef | None,
        rng: random.Random | None = None,
        clock_rate: int = 90000,
        on_switch: Callable[[], None] | None = None,
    ) -> None:
        self.current: Any = None  # the layer forwarded now
        self.target: Any = target  # the layer wanted (None: paused)
        self.temporal: int | None = None  # the highest VP8 temporal layer forwarded (None: all)
        self.temporal_wanted: int | None = None  # a higher cap, taken at the next frame that allows it
        self.reason = "requested"
        self.clock_rate = clock_rate
        self.munger = Munger(rng)
        self.vp8 = Vp8Munger()
        self.switches = 0
        self.on_switch = on_switch  # told of each switch (the node's counter); rare, never per packet
        self.last_sent_at: float | None = None
        self.frame_open = False  # the last packet sent did not end its frame

    @property
    def paused(self) -> bool:
        return self.target is None

    def wants(self, layer: LayerRef) -> bool:
        return layer is self.current or layer is self.target

    def set_target(self, layer: LayerRef | None, temporal: int | None = None, reason: str = "requested") -> None:
        """Forward ``layer`` from its next keyframe on (None: pause now); ``temporal`` caps the
        temporal layers (lowered at the next frame, raised at the next frame that allows it)."""
        if self.munger.lent is not None and (layer is not self.current or temporal != self.temporal):
            self.munger.lent()  # a native lane forwards only the current layer, under its cap
        self.reason = reason
        if layer is None:
            self.target = None
            if self.current is not None:
                self.current = None
                self.munger.stop()
            return
        self.target = layer
        if temporal is None or self.temporal is None or temporal < self.temporal:
            self.temporal = temporal
            self.temporal_wanted = None
        elif temporal > self.temporal:
            self.temporal_wanted = temporal

    def select(self, packet: CachedPacket, layer: LayerRef, now: float) -> Selection | Drop:
        """The layer rule: a packet of the current layer passes; one of the target passes from a
        keyframe on, which makes the target current."""
        if layer is self.current:
            return Selection.CURRENT
        if layer is not self.target:
            return Drop.NOT_WANTED
        if not packet.keyframe:
            return Drop.AWAIT_KEYFRAME
        self._switch(layer, packet, now)
        return Selection.SWITCHED

    def decide(self, packet: CachedPacket, layer: LayerRef, now: float) -> Verdict:
        """Whether and as what ``packet`` (of ``layer``) goes to this subscriber."""
        if layer is not self.current:  # (the current layer's packets, nearly all, skip the call)
            selection = self.select(packet, layer, now)
            if selection.__class__ is Drop:
                return selection  # type: ignore[return-value]
        picture = packet.picture_id
        if picture is None:
            forward = packet.tid is None or self.temporal is None or packet.tid <= self.temporal
        else:  # decided once per frame: the frame's first packet decides, the others look it up
            known = self.vp8.frames.get(picture, False)
            forward = self._frame_forwarded(packet) if known is False else known is not None
        if not forward:
            self.munger.drop(packet.sequence)
            return Drop.TEMPORAL
        mapped = self.munger.map(packet.sequence, packet.timestamp)
        if mapped is None:
            return Drop.STALE
        return _forward(Forward, (mapped[0], mapped[1], self.vp8.payload(packet)))

    def sent(self, packet: CachedPacket, now: float) -> None:
        """``packet`` went out as decided."""
        self.last_sent_at = now
        self.frame_open = not packet.marker
        if packet.picture_id is not None or packet.tl0 is not None:
            self.vp8.sent(packet)

    def resend(self, out_sequence: int) -> int | None:
        """The input sequence number of the current layer behind an output number a subscriber
        NACKed; None when it was dropped on purpose or belongs to a layer no longer forwarded."""
        entry = self.munger.unmap(out_sequence)
        if entry is None or self.current is None or entry[0] != self.current.position:
            return None
        return entry[1]

    def resent_as(self, packet: CachedPacket) -> tuple[int, bytes]:
        """The output timestamp and payload of a cached packet of the current layer."""
        return self.munger.timestamp_for(packet.timestamp), self.vp8.payload(packet)

    def _switch(self, layer: LayerRef, packet: CachedPacket, now: float) -> None:
        gap = int((now - self.last_sent_at) * self.clock_rate) if self.last_sent_at is not None else 0
        if self.current is not None and self.current is not layer:
            self.switches += 1
            if self.on_switch is not None:
                self.on_switch()
        # A frame of the old layer cut short by the switch must look lost, not complete.
        self.munger.start(packet.sequence, packet.timestamp, gap, layer.position, 1 if self.frame_open else 0)
        self.current = layer
        self.vp8.restart(packet)
        if self.temporal_wanted is not None:
            self.temporal, self.temporal_wanted = self.temporal_wanted, None

    def _frame_forwarded(self, packet: CachedPacket) -> bool:
        """VP8 temporal layers: decide once per frame (by picture ID) whether it goes out."""
        tid = packet.tid
        picture = packet.picture_id
        if picture is None:
            return tid is None or self.temporal is None or tid <= self.temporal
        known = self.vp8.known(picture)
        if known is not None:
            return known
        wanted = self.temporal_wanted
        if wanted is not None and (tid is None or tid == 0 or (packet.vp8 is not None and packet.vp8.layer_sync and tid <= wanted)):
            self.temporal, self.temporal_wanted = wanted, None
        forward = tid is None or self.temporal is None or tid <= self.temporal
        self.vp8.decide(picture, forward)
        return forward


class ForwardsLayers:
    """The layer now forwarded and the one wanted, read from the ``forwarder`` of its user (a
    down-track, the recorder's tap)."""

    forwarder: Forwarder

    @property
    def current(self) -> Any:
        return self.forwarder.current

    @property
    def target(self) -> Any:
        return self.forwarder.target
