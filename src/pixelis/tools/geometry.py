"""Coordinates: the Qwen3-VL 0–1000 relative grid in arguments and observations, pixels inside tools.

Pixel boxes are ``(x1, y1, x2, y2)`` with exclusive ends (``image[y1:y2, x1:x2]`` is the region).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from pixelis.tools.base import ToolArgumentError

GRID = 1000


def check_grid_box(bbox: Sequence[float], name: str = "bbox") -> None:
    """Raise `out_of_bounds` for coordinates outside [0, 1000] and `invalid_box` for an empty/inverted box."""
    if any(not 0 <= v <= GRID for v in bbox):
        raise ToolArgumentError("out_of_bounds", f"{name} {_show(bbox)} has coordinates outside 0..{GRID}")
    x1, y1, x2, y2 = bbox
    if x2 <= x1 or y2 <= y1:
        raise ToolArgumentError(
            "invalid_box", f"{name} {_show(bbox)} is empty or inverted; need x1 < x2 and y1 < y2"
        )


def check_grid_point(point: Sequence[float], name: str = "point") -> None:
    """Raise `out_of_bounds` for coordinates outside [0, 1000]."""
    if any(not 0 <= v <= GRID for v in point):
        raise ToolArgumentError("out_of_bounds", f"{name} {_show(point)} has coordinates outside 0..{GRID}")


def to_pixels_box(bbox: Sequence[float], w: int, h: int) -> tuple[int, int, int, int]:
    """Grid box -> pixel box covering it (floor the start, ceil the end), at least 1 px, clamped to the image."""
    x1 = min(max(math.floor(bbox[0] * w / GRID), 0), w - 1)
    y1 = min(max(math.floor(bbox[1] * h / GRID), 0), h - 1)
    x2 = min(max(math.ceil(bbox[2] * w / GRID), x1 + 1), w)
    y2 = min(max(math.ceil(bbox[3] * h / GRID), y1 + 1), h)
    return x1, y1, x2, y2


def to_grid_box(box_px: Sequence[float], w: int, h: int) -> list[int]:
    """Pixel box -> grid box (ints)."""
    x1, y1, x2, y2 = box_px
    return [round(x1 * GRID / w), round(y1 * GRID / h), round(x2 * GRID / w), round(y2 * GRID / h)]


def to_pixels_point(point: Sequence[float], w: int, h: int) -> tuple[int, int]:
    """Grid point -> the pixel it falls in."""
    return min(int(point[0] * w / GRID), w - 1), min(int(point[1] * h / GRID), h - 1)


def to_grid_point(point_px: Sequence[float], w: int, h: int) -> list[int]:
    """Pixel point (pixel centres at +0.5) -> grid point (ints)."""
    return [round((point_px[0] + 0.5) * GRID / w), round((point_px[1] + 0.5) * GRID / h)]


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight pixel box of a boolean mask, or None when it is empty."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two boxes in the same coordinates."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def region_name(point: Sequence[float]) -> str:
    """Coarse 3x3 region of a grid point: top-left, top, top-right, left, center, ..., bottom-right."""
    col = ("left", "", "right")[min(int(point[0] * 3 / GRID), 2)]
    row = ("top", "", "bottom")[min(int(point[1] * 3 / GRID), 2)]
    return "-".join(part for part in (row, col) if part) or "center"


def _show(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"
