"""Where each tile goes in the recording's frame.

``grid`` puts every participant in an even grid (recomputed as people join and leave);
``speaker`` shows the active speaker large with the others in a strip below.  A screen share
always takes the large tile, with everyone in the strip.  All sizes are even, because the frame
is YUV 4:2:0.

Pure logic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GAP = 8
STRIP_FRACTION = 0.2  # of the frame's height, for the strip under the large tile
TILE_ASPECT = 16 / 9
LAYOUTS = ("grid", "speaker")


@dataclass(frozen=True, slots=True)
class Rect:
    x: int
    y: int
    w: int
    h: int


def _even(value: float) -> int:
    """A size: even and at least 2."""
    return max(2, int(value) // 2 * 2)


def _at(value: float) -> int:
    """A position: even."""
    return max(0, int(value) // 2 * 2)


def fit(width: int, height: int, box: Rect) -> Rect:
    """The largest rectangle of ``width``:``height`` inside ``box``, centred (even sizes)."""
    if width <= 0 or height <= 0:
        return box
    scale = min(box.w / width, box.h / height)
    w, h = min(box.w, _even(width * scale)), min(box.h, _even(height * scale))
    return Rect(_at(box.x + (box.w - w) / 2), _at(box.y + (box.h - h) / 2), w, h)


def grid(count: int, area: Rect) -> list[Rect]:
    """``count`` cells in rows (the last one centred), as close to 16:9 tiles as the area allows."""
    if count <= 0:
        return []
    best: tuple[float, int, int] | None = None
    for columns in range(1, count + 1):
        rows = math.ceil(count / columns)
        w = (area.w - GAP * (columns + 1)) / columns
        h = (area.h - GAP * (rows + 1)) / rows
        if w <= 0 or h <= 0:
            continue
        tile_w = min(w, h * TILE_ASPECT)  # the 16:9 tile that fits the cell
        score = tile_w * tile_w / TILE_ASPECT
        if best is None or score > best[0]:
            best = (score, columns, rows)
    if best is None:
        return [area] * count
    _, columns, rows = best
    w = _even((area.w - GAP * (columns + 1)) / columns)
    h = _even((area.h - GAP * (rows + 1)) / rows)
    top = area.y + (area.h - rows * h - (rows - 1) * GAP) // 2
    cells = []
    for row in range(rows):
        in_row = min(columns, count - row * columns)
        left = area.x + (area.w - in_row * w - (in_row - 1) * GAP) // 2
        for column in range(in_row):
            cells.append(Rect(_at(left + column * (w + GAP)), _at(top + row * (h + GAP)), w, h))
    return cells


def strip(count: int, area: Rect) -> list[Rect]:
    """Up to as many 16:9 tiles as fit side by side in ``area``, centred."""
    h = _even(area.h - 2 * GAP)
    w = _even(h * TILE_ASPECT)
    fits = max(1, (area.w - GAP) // (w + GAP))
    shown = min(count, fits)
    left = area.x + (area.w - shown * w - (shown - 1) * GAP) // 2
    return [Rect(_at(left + i * (w + GAP)), _at(area.y + GAP), w, h) for i in range(shown)]


def arrange(
    people: list[str], screen: str | None, speaker: str | None, mode: str, width: int, height: int
) -> list[tuple[str, Rect]]:
    """Tiles for ``people`` (in join order) and a screen share key, as (key, rect) pairs, the
    large tile first.  Keys of people who do not fit in the strip are left out."""
    frame = Rect(0, 0, width, height)
    if screen is None and (mode == "grid" or not people):
        return list(zip(people, grid(len(people), frame), strict=True))
    if screen is not None:
        main, others = screen, people
    else:
        main = speaker if speaker in people else people[0]
        others = [p for p in people if p != main]
    if not others:
        return [(main, Rect(GAP, GAP, width - 2 * GAP, height - 2 * GAP))]
    strip_h = _even(height * STRIP_FRACTION)
    large = Rect(GAP, GAP, width - 2 * GAP, height - strip_h - GAP)
    small = strip(len(others), Rect(0, height - strip_h, width, strip_h))
    return [(main, large), *zip(others, small, strict=False)]
