"""The recorder's settings: the ``[recording]`` section of the VideoConf configuration.

Declared once.  ``WorkerSettings`` is how a worker process draws and encodes; the manager hands
them to each worker as command-line options (``to_arguments``), which the worker reads back
(``add_arguments``, ``from_arguments``) into the same model.  ``RecordingSettings`` adds what only
the SFU's side reads.
"""

from __future__ import annotations

import argparse
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, Field


class WorkerSettings(BaseModel):
    """How a worker process draws and encodes one recording."""

    model_config = {"extra": "forbid"}
    width: int = Field(default=1280, ge=160, le=3840, multiple_of=2)
    height: int = Field(default=720, ge=120, le=2160, multiple_of=2)
    fps: int = Field(default=30, ge=5, le=60)
    video_bitrate: int = Field(default=2_000_000, ge=100_000, le=50_000_000, description="cap, bits/s")
    audio_bitrate: int = Field(default=64_000, ge=16_000, le=320_000)
    layout: Literal["grid", "speaker"] = "grid"
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = Field(
        default="superfast", description="x264 preset"
    )
    delay: float = Field(default=0.5, ge=0.1, le=5.0, description="seconds a packet may be late and still be used")


class RecordingSettings(WorkerSettings):
    """The recorder's output: one MP4 of H.264 and AAC per recording."""

    max_backlog_bytes: int = Field(default=32 * 1024 * 1024, ge=1024 * 1024, description="unread data before packets are dropped")


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def to_arguments(settings: WorkerSettings) -> list[str]:
    """The worker's settings as its command-line options: ``["--width", "1280", ...]``."""
    return [part for name in WorkerSettings.model_fields for part in (_option(name), str(getattr(settings, name)))]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One option for each of the worker's settings, with the setting's default, type and choices."""
    for name, field in WorkerSettings.model_fields.items():
        kind: Any = field.annotation
        if get_origin(kind) is Literal:
            parser.add_argument(_option(name), choices=get_args(kind), default=field.default, help=field.description)
        else:
            parser.add_argument(_option(name), type=kind, default=field.default, help=field.description)


def from_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The worker's settings among parsed options, as keyword arguments of a ``WorkerSettings``."""
    return {name: getattr(args, name) for name in WorkerSettings.model_fields}
