"""The SFU's side of recording: taps on the forwarding path, the worker process, the lifecycle.

A ``RoomRecorder`` watches one room (``sfu.room.RoomObserver``), puts a ``RecorderTap`` on every
up-track (``sfu.forwarding.MediaTap``), and writes what they see to a worker process
(``recorder.worker``) through its stdin (``recorder.wire``).  Writes are batched and never
block the event loop: when the worker falls behind by more than ``max_backlog_bytes``, packets
are dropped (and keyframes asked for once it catches up), so neither the worker's load nor its
crash reaches the media path.  For simulcast, the tap takes the layer that fits its tile,
switching on a keyframe like a subscriber.

``RecorderManager`` starts and stops recordings by meeting, keeps the recordings rows in step
(recording, processing, ready or failed) and tells everyone in the room.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from control_api.errors import conflict
from recorder import wire
from recorder.config import RecordingSettings, to_arguments
from recorder.layout import Rect, arrange, fit
from sfu.forwarder import Drop, Forwarder, ForwardsLayers
from sfu.forwarding import UpTrack
from sfu.layer import Layer
from sfu.packet_cache import CachedPacket
from sfu.room import Participant, Room, SfuNode
from sfu.tasks import TaskSet

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FLUSH_INTERVAL = 0.005
CHOOSE_INTERVAL = 1.0
FINISH_TIMEOUT = 60.0  # seconds a worker may take to finish its file after a stop
MAX_UPSCALE = 1.34  # how much a layer may be scaled up to fit its tile (320x180 into 426x240)
FILL_UPSCALE = 1 / 0.9  # the rule before 2026-12: a layer at least 90% of its tile's height


@dataclass(frozen=True)
class RecorderConfig:
    directory: Path  # where the files go
    settings: RecordingSettings


class RecordingStore(Protocol):
    """What the manager needs of the recordings service (``control_api``'s RecordingService)."""

    async def begin(self, meeting_id: uuid.UUID) -> Any: ...

    async def mark_processing(self, recording_id: uuid.UUID) -> None: ...

    async def finish(self, recording_id: uuid.UUID, *, file_name: str, duration_seconds: int, participants: list[str]) -> Any: ...

    async def fail(self, recording_id: uuid.UUID, error: str, *, file_name: str | None = None, duration_seconds: int | None = None) -> None: ...


def pick_layer(layers: list[Layer], tile: Rect | None, now: float, max_upscale: float = MAX_UPSCALE) -> Layer | None:
    """The available layer whose picture, fitted to ``tile``, is scaled least (up or down, by
    the ratio of heights), among those scaled up by at most ``max_upscale``; else the tallest
    (``layers`` lowest first).  A screen share (no tile) or layers of unknown size: the top one.

    Scaling a layer up a little costs less than decoding one twice the size and scaling it down
    (for nine tiles of 1280x720, 320x180 drawn at 405x228 rather than 640x360).  With
    ``max_upscale`` at ``FILL_UPSCALE`` this is the older rule: a layer at least 90% of the
    tile's height."""
    available = [layer for layer in layers if layer.available(now)]
    if not available:
        return None
    if tile is None or any(layer.height is None or layer.width is None for layer in available):
        return available[-1]
    best: tuple[float, Layer] | None = None
    for layer in available:
        assert layer.width is not None and layer.height is not None
        scale = fit(layer.width, layer.height, tile).h / layer.height
        if scale > max_upscale:
            continue
        distance = abs(math.log(scale))
        if best is None or distance < best[0]:
            best = (distance, layer)
    return best[1] if best is not None else available[-1]


class RecorderTap(ForwardsLayers):
    """The recorder on one up-track: one layer at a time, switched on a keyframe of the layer
    the layout wants (the same rule, and the same ``Forwarder``, as a subscriber's)."""

    def __init__(self, recorder: RoomRecorder, number: int, up: UpTrack) -> None:
        self.recorder = recorder
        self.number = number
        self.up = up
        self.forwarder = Forwarder(None)
        if up.kind == "audio" or not up.is_simulcast:
            self.retarget(up.layers[0])

    def wants(self, layer: Layer) -> bool:
        return self.forwarder.wants(layer)

    def retarget(self, layer: Layer) -> None:
        if self.forwarder.wants(layer):
            return
        self.forwarder.set_target(layer)
        if layer.ssrc is not None:
            self.up.request_keyframe_soon(layer)

    def keyframe(self, position: int) -> None:
        layer = self.current or self.target
        if layer is not None and layer.position == position:
            self.up.request_keyframe_soon(layer)

    def on_packet(self, up: UpTrack, layer: Layer, packet: CachedPacket, now: float) -> None:
        if self.forwarder.select(packet, layer, now).__class__ is Drop:
            return
        self.recorder.send(
            wire.encode_packet(
                self.number, layer.position, bool(packet.marker), packet.keyframe, packet.sequence, packet.timestamp, now, packet.payload
            )
        )

    def on_sender_report(self, up: UpTrack, layer: Layer, ntp: int, rtp: int, now: float) -> None:
        self.recorder.send(wire.encode_report(self.number, layer.position, ntp, rtp, now))


class RoomRecorder:
    """One recording of one room: the taps, the worker process, the room's events."""

    def __init__(
        self, manager: RecorderManager, room: Room, recording_id: uuid.UUID, layout: str, config: RecorderConfig
    ) -> None:
        self.manager = manager
        self.room = room
        self.recording_id = recording_id
        self.layout = layout
        self.config = config
        self.file_name = f"{recording_id}.mp4"
        self.path = config.directory / self.file_name
        self.started_at = time.time()
        self.start = time.monotonic()
        self.process: asyncio.subprocess.Process | None = None
        self.taps: dict[str, RecorderTap] = {}
        self.names: dict[str, str] = {}
        self.stopping = False
        self.result: dict[str, Any] | None = None
        self.dropped = 0
        self._numbers = 0
        self._pending: list[bytes] = []
        self._backlogged = False
        self._flush_handle: asyncio.TimerHandle | None = None
        self._tasks = TaskSet(log, "recording %s: a task failed", recording_id)
        self._stderr: list[str] = []

    # Process -----------------------------------------------------------------------------------

    async def launch(self) -> None:
        config = self.config
        config.directory.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "recorder.worker",
            "--output", str(self.path), "--start", repr(self.start),
            *to_arguments(config.settings.model_copy(update={"layout": self.layout})),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            cwd=str(PROJECT_ROOT), env=env,
        )
        self._tasks.spawn(self._read_stdout())
        self._tasks.spawn(self._read_stderr())
        self._tasks.spawn(self._watch())
        self.participants_changed()
        for participant in list(self.room.participants.values()):
            for up in list(participant.uptracks.values()):
                self.track_added(participant, up)
        self.room.observers.append(self)
        self._tasks.spawn(self._choose_layers())

    def backlog(self) -> int:
        """Bytes written to the worker that it has not read yet."""
        process = self.process
        if process is None or process.stdin is None or process.stdin.is_closing():
            return 0
        return process.stdin.transport.get_write_buffer_size()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def send(self, data: bytes) -> None:
        if self.stopping:
            return
        self._pending.append(data)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(FLUSH_INTERVAL, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        process = self.process
        pending, self._pending = self._pending, []
        if process is None or process.stdin is None or process.stdin.is_closing() or process.returncode is not None:
            return
        backlog = process.stdin.transport.get_write_buffer_size()
        if backlog > self.config.settings.max_backlog_bytes:
            # The worker is behind: drop media, keep the meeting's events.
            kept = [m for m in pending if m[4:5] == b"J"]
            self.dropped += len(pending) - len(kept)
            pending = kept
            if not self._backlogged:
                self._backlogged = True
                log.warning("recording %s: the recorder is behind by %d bytes; dropping packets", self.recording_id, backlog)
        elif self._backlogged:
            self._backlogged = False
            for tap in self.taps.values():
                if tap.up.kind == "video":
                    tap.keyframe((tap.current or tap.target or tap.up.layers[0]).position)
        if pending:
            process.stdin.write(b"".join(pending))

    def _event(self, event: dict[str, Any]) -> None:
        self.send(wire.encode_event(event))

    async def _read_stdout(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while line := await self.process.stdout.readline():
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            if message.get("event") == "keyframe":
                for tap in self.taps.values():
                    if tap.number == message.get("track"):
                        tap.keyframe(int(message.get("layer") or 0))
            elif message.get("event") == "done":
                self.result = message

    async def _read_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        while line := await self.process.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            self._stderr = (self._stderr + [text])[-20:]
            log.warning("recorder %s: %s", self.recording_id, text)

    async def _watch(self) -> None:
        assert self.process is not None
        code = await self.process.wait()
        if not self.stopping:
            reason = f"signal {-code}" if code < 0 else f"exit status {code}"
            log.error("recording %s: the recorder process died (%s)", self.recording_id, reason)
            await self.manager.crashed(self, f"the recorder process died ({reason})")

    async def _choose_layers(self) -> None:
        while not self.stopping:
            now = self.room.node.clock()
            tiles = self._tiles()
            for tap in list(self.taps.values()):
                up = tap.up
                if up.kind != "video" or not up.is_simulcast:
                    continue
                if up.source == "screen":
                    layer = pick_layer(up.order, None, now)
                elif up.owner in tiles:
                    layer = pick_layer(up.order, tiles[up.owner], now)
                else:  # not on the layout (the worker does not decode it): the cheapest
                    layer = next((candidate for candidate in up.order if candidate.available(now)), None)
                if layer is not None:
                    tap.retarget(layer)
            await asyncio.sleep(CHOOSE_INTERVAL)

    def _tiles(self) -> dict[str, Rect]:
        people = [p.identity for p in self._visible()]
        screen = next((f"screen:{t.number}" for t in self.taps.values() if t.up.source == "screen"), None)
        tiles = arrange(people, screen, self.room.current_speakers[0] if self.room.current_speakers else None,
                        self.layout, self.config.settings.width, self.config.settings.height)
        return dict(tiles)

    # Room events (sfu.room.RoomObserver) ---------------------------------------------------------

    def _visible(self) -> list[Participant]:
        people = [p for p in self.room.participants.values() if not p.hidden and not p.waiting]
        return sorted(people, key=lambda p: self.room.join_order.get(p.identity, 0))

    def participants_changed(self) -> None:
        people = self._visible()
        for p in people:
            self.names[p.identity] = p.name
        self._event({"type": "participants", "participants": [{"identity": p.identity, "name": p.name} for p in people]})

    def track_added(self, owner: Participant, up: UpTrack) -> None:
        if up.track_id in self.taps or owner.hidden or up.codec is None:
            return
        self._numbers += 1
        tap = RecorderTap(self, self._numbers, up)
        self.taps[up.track_id] = tap
        self._event({
            "type": "track", "track": tap.number, "participant": owner.identity, "kind": up.kind, "source": up.source,
            "codec": up.codec.mimeType, "clock_rate": up.codec.clockRate, "muted": up.muted or up.blocked,
        })
        up.taps.append(tap)

    def track_removed(self, up: UpTrack) -> None:
        tap = self.taps.pop(up.track_id, None)
        if tap is not None:
            if tap in up.taps:
                up.taps.remove(tap)
            self._event({"type": "untrack", "track": tap.number})

    def track_muted(self, up: UpTrack) -> None:
        tap = self.taps.get(up.track_id)
        if tap is not None:
            self._event({"type": "muted", "track": tap.number, "muted": up.muted or up.blocked})

    def speakers_changed(self, dominant: str | None) -> None:
        self._event({"type": "speakers", "dominant": dominant})

    async def room_closing(self) -> None:
        await self.manager.stop_room(self.room, "meeting_ended")

    # Stopping ----------------------------------------------------------------------------------

    def detach(self) -> None:
        if self in self.room.observers:
            self.room.observers.remove(self)
        for tap in self.taps.values():
            if tap in tap.up.taps:
                tap.up.taps.remove(tap)

    async def stop(self) -> None:
        """Tell the worker where the recording ends and close its input; it finishes the file."""
        at = time.monotonic()
        self.detach()
        self._event({"type": "stop", "at": at})
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._flush()
        self.stopping = True
        process = self.process
        if process is not None and process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()

    async def wait(self) -> dict[str, Any] | None:
        """Wait for the worker to finish (killing it after ``FINISH_TIMEOUT``); its report."""
        process = self.process
        if process is not None:
            try:
                await asyncio.wait_for(process.wait(), FINISH_TIMEOUT)
            except asyncio.TimeoutError:
                log.error("recording %s: the recorder did not finish in %.0f s; killing it", self.recording_id, FINISH_TIMEOUT)
                process.kill()
                await process.wait()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5.0)
        return self.result

    def status(self) -> dict[str, Any]:
        return {
            "recording_id": str(self.recording_id),
            "layout": self.layout,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_at)),
        }


Notify = Callable[[Room, dict[str, Any]], Awaitable[None]]


class RecorderManager:
    """Recordings of this node's rooms, one at a time per room."""

    def __init__(self, node: SfuNode, store: RecordingStore, config: RecorderConfig) -> None:
        self.node = node
        self.store = store
        self.config = config
        self.recorders: dict[str, RoomRecorder] = {}
        self._finishing = TaskSet(log, "finishing a recording failed")
        self.failures = 0  # recordings that failed, since the start
        self.dropped = 0  # packets dropped by recordings that have ended (a recorder behind)

    def collect(self) -> Iterator[Metric]:
        """The recorder's metrics, read at each scrape."""
        running = [r for r in self.recorders.values() if not r.stopping]
        yield GaugeMetricFamily("videoconf_recorder_recordings", "Recordings in progress on this node", value=len(running))
        yield GaugeMetricFamily(
            "videoconf_recorder_backlog_bytes", "Bytes written to recorder workers and not yet read by them",
            value=sum(r.backlog() for r in self.recorders.values()),
        )
        yield CounterMetricFamily(
            "videoconf_recorder_dropped_packets", "Media packets dropped because a recorder worker was behind",
            value=self.dropped + sum(r.dropped for r in self.recorders.values()),
        )
        yield CounterMetricFamily("videoconf_recorder_failures", "Recordings that failed", value=self.failures)

    def status(self, room_id: str) -> dict[str, Any] | None:
        recorder = self.recorders.get(room_id)
        return recorder.status() if recorder is not None and not recorder.stopping else None

    async def start(self, meeting_id: uuid.UUID, layout: str | None = None, by: str | None = None) -> Any:
        room_id = str(meeting_id)
        room = self.node.rooms.get(room_id)
        if room is None or room.closed or not room.participants:
            raise conflict("nobody_in_meeting", "nobody is in the meeting's room yet, so there is nothing to record")
        if room_id in self.recorders:
            raise conflict("already_recording", "the meeting is being recorded already")
        layout = layout or self.config.settings.layout
        recording = await self.store.begin(meeting_id)
        if room_id in self.recorders:  # started by someone else meanwhile
            await self.store.fail(recording.id, "another recording started at the same time")
            raise conflict("already_recording", "the meeting is being recorded already")
        recorder = RoomRecorder(self, room, recording.id, layout, self.config)
        self.recorders[room_id] = recorder
        try:
            await recorder.launch()
        except Exception as exc:
            self.recorders.pop(room_id, None)
            recorder.detach()
            await self.store.fail(recording.id, f"the recorder could not start: {exc}")
            raise
        log.info("recording %s of meeting %s started (pid %s)", recording.id, meeting_id, recorder.pid)
        await room.broadcast({"type": "recording-started", **recorder.status(), "by": by})
        return recording

    async def stop(self, meeting_id: uuid.UUID, reason: str = "stopped") -> uuid.UUID:
        room = self.node.rooms.get(str(meeting_id))
        recorder = self.recorders.get(str(meeting_id))
        if room is None or recorder is None or recorder.stopping:
            raise conflict("not_recording", "the meeting is not being recorded")
        await self.stop_room(room, reason)
        return recorder.recording_id

    async def stop_room(self, room: Room, reason: str) -> None:
        recorder = self.recorders.get(room.room_id)
        if recorder is None or recorder.stopping:
            return
        await recorder.stop()
        await self.store.mark_processing(recorder.recording_id)
        await room.broadcast({"type": "recording-stopped", "recording_id": str(recorder.recording_id), "reason": reason})
        self._finishing.spawn(self._finish(recorder))

    async def _finish(self, recorder: RoomRecorder) -> None:
        try:
            result = await recorder.wait()
            code = recorder.process.returncode if recorder.process is not None else None
            if result is None or code != 0:
                await self._fail(recorder, f"the recorder ended without finishing the file (exit status {code})")
                return
            await self.store.finish(
                recorder.recording_id, file_name=recorder.file_name, duration_seconds=round(float(result["duration"])),
                participants=sorted(set(recorder.names.values())),
            )
            log.info("recording %s ready: %.1f s", recorder.recording_id, float(result["duration"]))
        except Exception:
            log.exception("recording %s could not be finished", recorder.recording_id)
            with contextlib.suppress(Exception):
                await self._fail(recorder, "the recording could not be finished")
        finally:
            if self.recorders.get(recorder.room.room_id) is recorder:
                del self.recorders[recorder.room.room_id]
            self.dropped += recorder.dropped

    async def _fail(self, recorder: RoomRecorder, error: str) -> None:
        """Mark the recording failed, keeping a partial file that holds anything."""
        self.failures += 1
        keep = recorder.path.is_file() and recorder.path.stat().st_size > 0
        await self.store.fail(
            recorder.recording_id, error, file_name=recorder.file_name if keep else None,
            duration_seconds=round(time.monotonic() - recorder.start) if keep else None,
        )

    async def crashed(self, recorder: RoomRecorder, error: str) -> None:
        """The worker died while recording: the meeting goes on, unrecorded, and is told so."""
        recorder.stopping = True
        recorder.detach()
        if self.recorders.get(recorder.room.room_id) is recorder:
            del self.recorders[recorder.room.room_id]
            self.dropped += recorder.dropped
        await self._fail(recorder, error)
        await recorder.room.broadcast(
            {"type": "recording-stopped", "recording_id": str(recorder.recording_id), "reason": "recorder_failed"}
        )

    async def close(self) -> None:
        """Server shutdown: finish every recording's file."""
        for recorder in list(self.recorders.values()):
            if not recorder.stopping:
                await self.stop_room(recorder.room, "server_shutdown")
        await self._finishing.wait()
