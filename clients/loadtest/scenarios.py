"""Named, parameterised load-test scenarios."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

SIMULCAST_LAYERS = ((320, 180, 150_000), (640, 360, 500_000), (1280, 720, 1_500_000))  # as Chromium sends from 720p
SINGLE_LAYER = ((640, 360, 1_000_000),)


@dataclass(frozen=True)
class Scenario:
    """What to run.  Publishers send pre-encoded media; ``viewers`` are receive-only bots.
    Every bot counts what it receives (and ``decode`` of them also decode it): a publisher gets
    the other publishers' media, as in a meeting where everyone sees everyone."""

    name: str
    description: str
    publishers: int
    viewers: int
    video_layers: tuple[tuple[int, int, int], ...] = SINGLE_LAYER  # (width, height, bitrate); () for audio only
    fps: int = 30
    audio: bool = True
    tile: tuple[int, int] | None = None  # every receiver asks for this size of every video
    join_window: float | None = None  # all viewers join spread over this many seconds (a storm)
    join_concurrency: int = 8  # otherwise, at most this many joins at a time
    decode: int = 0  # receivers that also decode and verify the pattern
    # viewers count RTP by its clear header, undecrypted (stats.count_clear): a load process
    # then holds several times the viewers, which send no receiver reports or NACKs
    clear_count: bool = False
    duration: float = 15.0  # measured window, seconds
    warmup: float = 4.0
    settings: dict[str, Any] = field(default_factory=dict)  # meeting settings

    @property
    def receivers(self) -> int:
        """Bots that receive media: the viewers, and the publishers when there are others."""
        return self.viewers + (self.publishers if self.publishers > 1 else 0)

    @property
    def video_tracks(self) -> int:
        return self.publishers if self.video_layers else 0

    @property
    def sent_fps(self) -> int:
        return self.fps if self.video_layers else 0

    def expected_streams(self, publisher: bool = False) -> tuple[int, int]:
        """(video, audio) streams a viewer, or a publisher, should receive."""
        others = self.publishers - 1 if publisher else self.publishers
        return (others if self.video_layers else 0, others if self.audio else 0)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "publishers": self.publishers,
            "viewers": self.viewers,
            "receivers": self.receivers,
            "video_layers": [f"{w}x{h}@{b // 1000}k" for w, h, b in self.video_layers],
            "fps": self.fps,
            "audio": self.audio,
            "tile": f"{self.tile[0]}x{self.tile[1]}" if self.tile else None,
            "join_window": self.join_window,
            "decode": self.decode,
            "duration": self.duration,
        }


SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario(
            "meeting", "N people with simulcast cameras and microphones, each seeing all the others as tiles",
            publishers=6, viewers=0, video_layers=SIMULCAST_LAYERS, tile=(640, 360),
        ),
        Scenario(
            "livestream", "one simulcast presenter, many viewers watching full screen",
            publishers=1, viewers=30, video_layers=SIMULCAST_LAYERS, tile=(1280, 720),
        ),
        Scenario(
            "audio", "a few speakers, many listeners, no video",
            publishers=3, viewers=30, video_layers=(),
        ),
        Scenario(
            "join-storm", "one presenter; M viewers join within a few seconds",
            publishers=1, viewers=30, join_window=3.0, duration=8.0,
        ),
    )
}


def scenario(name: str, **overrides: Any) -> Scenario:
    """A named scenario with some fields changed (None values are ignored)."""
    if name not in SCENARIOS:
        raise KeyError(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    return replace(SCENARIOS[name], **changes)
