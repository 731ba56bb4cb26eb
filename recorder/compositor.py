"""Drawing the recording's frames: a YUV 4:2:0 canvas with video tiles, placeholders for
cameras that are off, name labels and the active speaker's outline.

The canvas is one ``av.VideoFrame`` that lives as long as the recording, drawn in place and
handed to the encoder as it is (x264 copies its input, so nothing is copied here).  It is
never cleared between frames: ``TileDamage`` says which tiles changed (a new decoded picture,
another name, the outline) and only those are drawn again; a new layout clears it all.

Scaling is libswscale's (through PyAV's ``reformat``); pasting is a plane copy.  Text is drawn
once per name with Pillow (the PyAV wheels have no ``drawtext``) and kept as a mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter
from PIL import Image, ImageDraw, ImageFont

from recorder.layout import Rect, fit

BACKGROUND = (16, 128, 128)  # near black
TILE = (40, 128, 128)  # dark grey
OUTLINE = (170, 54, 40)  # green, as Y, U, V
CROP_SLACK = 1.1
LABEL_HEIGHT = 22
OUTLINE_WIDTH = 4


@lru_cache(maxsize=256)
def text_mask(text: str, size: int) -> np.ndarray:
    """``text`` in white (video white, 235) on black as 8-bit luma (even width and height)."""
    font = ImageFont.load_default(size=size)
    left, top, right, bottom = font.getbbox(text)
    width, height = right - left + 4, bottom - top + 4
    width += width % 2
    height += height % 2
    image = Image.new("L", (width, height), 0)
    ImageDraw.Draw(image).text((2 - left, 2 - top), text, fill=235, font=font)
    return np.asarray(image)


def _plane(frame: av.VideoFrame, index: int, width: int, height: int) -> np.ndarray:
    """A view of one plane of a yuv420p frame, ``width`` x ``height`` from its centre."""
    plane = frame.planes[index]
    full = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
    top = (plane.height - height) // 2
    left = (plane.width - width) // 2
    return full[top : top + height, left : left + width]


def initials(name: str) -> str:
    parts = [p for p in name.replace("_", " ").split() if p]
    return "".join(p[0] for p in parts[:2]).upper() or "?"


@dataclass(frozen=True, slots=True)
class TileState:
    """What one tile shows: enough to tell whether it must be drawn again."""

    key: str
    picture: int | None  # the serial number of the decoded frame drawn, None for a placeholder
    name: str
    outlined: bool


class TileDamage:
    """Which tiles of the canvas must be drawn for the next frame.  Pure logic."""

    def __init__(self) -> None:
        self.layout: tuple[Rect, ...] | None = None
        self.drawn: dict[Rect, TileState] = {}

    def plan(self, tiles: list[tuple[Rect, TileState]]) -> tuple[bool, list[int]]:
        """(whether to clear the whole canvas, indices of ``tiles`` to draw); remembers them as
        drawn.  Another set of rectangles clears everything; otherwise a tile is drawn again
        when what it shows changed."""
        rects = tuple(rect for rect, _ in tiles)
        clear = rects != self.layout
        if clear:
            self.layout, self.drawn = rects, {}
        todo = [index for index, (rect, state) in enumerate(tiles) if self.drawn.get(rect) != state]
        for index in todo:
            rect, state = tiles[index]
            self.drawn[rect] = state
        return clear, todo

    def forget(self) -> None:
        """Draw everything next time."""
        self.layout, self.drawn = None, {}


def _view(plane: av.video.plane.VideoPlane, width: int, height: int) -> np.ndarray:
    """A writable ``width`` x ``height`` view of one plane (its rows may be padded)."""
    return np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:height, :width]


class Canvas:
    def __init__(self, width: int, height: int) -> None:
        if width % 2 or height % 2 or width < 16 or height < 16:
            raise ValueError("the frame size must be even and at least 16x16")
        self.width, self.height = width, height
        self._frame = av.VideoFrame(width, height, "yuv420p")
        planes = self._frame.planes
        self.y = _view(planes[0], width, height)
        self.u = _view(planes[1], width // 2, height // 2)
        self.v = _view(planes[2], width // 2, height // 2)
        self._scaler = VideoReformatter()
        self.clear()

    def clear(self) -> None:
        self.y.fill(BACKGROUND[0])
        self.u.fill(BACKGROUND[1])
        self.v.fill(BACKGROUND[2])

    def fill(self, r: Rect, color: tuple[int, int, int]) -> None:
        if r.w <= 0 or r.h <= 0:  # the margins around a picture that fills its tile are empty
            return
        self.y[r.y : r.y + r.h, r.x : r.x + r.w] = color[0]
        self.u[r.y // 2 : (r.y + r.h) // 2, r.x // 2 : (r.x + r.w) // 2] = color[1]
        self.v[r.y // 2 : (r.y + r.h) // 2, r.x // 2 : (r.x + r.w) // 2] = color[2]

    def video(self, frame: av.VideoFrame, tile: Rect) -> None:
        """``frame`` fitted to ``tile`` (aspect kept) on the tile's background.  A frame up to
        ``CROP_SLACK`` larger than its place is cropped around its centre instead of scaled."""
        r = fit(frame.width, frame.height, tile)
        if r != tile:  # the tile's background around the picture, not under it
            self.fill(Rect(tile.x, tile.y, tile.w, r.y - tile.y), TILE)
            self.fill(Rect(tile.x, r.y + r.h, tile.w, tile.y + tile.h - r.y - r.h), TILE)
            self.fill(Rect(tile.x, r.y, r.x - tile.x, r.h), TILE)
            self.fill(Rect(r.x + r.w, r.y, tile.x + tile.w - r.x - r.w, r.h), TILE)
        if r.w <= frame.width <= r.w * CROP_SLACK and r.h <= frame.height <= r.h * CROP_SLACK:
            source = frame if frame.format.name == "yuv420p" else frame.reformat(format="yuv420p")
        else:
            source = self._scaler.reformat(
                frame, width=r.w, height=r.h, format="yuv420p", interpolation=Interpolation.FAST_BILINEAR
            )
        self.y[r.y : r.y + r.h, r.x : r.x + r.w] = _plane(source, 0, r.w, r.h)
        self.u[r.y // 2 : (r.y + r.h) // 2, r.x // 2 : (r.x + r.w) // 2] = _plane(source, 1, r.w // 2, r.h // 2)
        self.v[r.y // 2 : (r.y + r.h) // 2, r.x // 2 : (r.x + r.w) // 2] = _plane(source, 2, r.w // 2, r.h // 2)

    def placeholder(self, tile: Rect, name: str) -> None:
        self.fill(tile, TILE)
        size = max(12, min(tile.h // 3, 96))
        self._text(initials(name), size, tile.x + tile.w // 2, tile.y + tile.h // 2, centred=True, box=False)

    def label(self, tile: Rect, name: str) -> None:
        size = LABEL_HEIGHT if tile.h >= 200 else 14
        self._text(name[:40], size, tile.x + 8, tile.y + tile.h - 8, centred=False, box=True)

    def outline(self, tile: Rect) -> None:
        w = OUTLINE_WIDTH
        for edge in (
            Rect(tile.x, tile.y, tile.w, w), Rect(tile.x, tile.y + tile.h - w, tile.w, w),
            Rect(tile.x, tile.y, w, tile.h), Rect(tile.x + tile.w - w, tile.y, w, tile.h),
        ):
            self.fill(edge, OUTLINE)

    def _text(self, text: str, size: int, x: int, y: int, *, centred: bool, box: bool) -> None:
        mask = text_mask(text, size)
        h, w = mask.shape
        if centred:
            left, top = x - w // 2, y - h // 2
        else:
            left, top = x, y - h  # y is the baseline of the box's bottom
        left, top = max(0, left) // 2 * 2, max(0, top) // 2 * 2
        h, w = min(h, self.height - top), min(w, self.width - left)
        if h <= 0 or w <= 0:
            return
        mask = mask[:h, :w]
        region = self.y[top : top + h, left : left + w]
        if box:
            np.floor_divide(region, 3, out=region)  # darken behind the text
            self.u[top // 2 : (top + h) // 2, left // 2 : (left + w) // 2] = 128
            self.v[top // 2 : (top + h) // 2, left // 2 : (left + w) // 2] = 128
        np.maximum(region, mask, out=region)

    def frame(self) -> av.VideoFrame:
        """The canvas itself (not a copy): encode it before drawing the next frame."""
        return self._frame
