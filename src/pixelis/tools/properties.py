"""get_properties: colour, size, shape and position of the object in a box or under a point."""

from __future__ import annotations

import math

import cv2
import numpy as np

from pixelis.core.trajectory import Observation
from pixelis.tools.base import BBox, ImageIndex, Point, Tool, ToolArgs, ToolArgumentError, ToolContext, to_array
from pixelis.tools.geometry import (
    check_grid_box,
    check_grid_point,
    mask_box,
    region_name,
    to_grid_box,
    to_grid_point,
    to_pixels_box,
    to_pixels_point,
)
from pixelis.tools.segment import segment_at_point, segment_in_box

COLOR_NAMES = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "white", "gray", "black", "brown")
# A prototype RGB per name, each classified as its own name (tests check it): for generators that draw colours.
COLOR_PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (240, 220, 30),
    "green": (40, 170, 60),
    "cyan": (0, 200, 210),
    "blue": (30, 70, 220),
    "purple": (130, 50, 190),
    "pink": (255, 105, 180),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "black": (15, 15, 15),
    "brown": (130, 80, 30),
}
SHAPE_NAMES = ("circle", "triangle", "square", "rectangle", "star", "other")
MAX_COLOR_SAMPLES = 20_000  # pixels looked at for the dominant colour


def color_names(rgb: np.ndarray) -> np.ndarray:
    """Index into COLOR_NAMES for every pixel of an (..., 3) uint8 RGB array (HSV rules)."""
    hsv = cv2.cvtColor(rgb.reshape(-1, 1, 3).astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV).reshape(-1, 3)
    h, s, v = hsv[:, 0], hsv[:, 1], hsv[:, 2]  # h in degrees, s and v in [0, 1]
    red_hue = (h < 15) | (h >= 340)
    hue_name = np.select(
        [red_hue, h < 40, h < 70, h < 165, h < 195, h < 255, h < 290],
        [0, 1, 2, 3, 4, 5, 6],
        default=7,
    )
    hue_name = np.where(red_hue & (s < 0.5) & (v > 0.7), 7, hue_name)  # light red reads as pink
    conditions = [
        v < 0.2,
        (s < 0.2) & (v > 0.85),
        s < 0.2,
        (((h >= 10) & (h < 45)) | (red_hue & (s < 0.6))) & (v < 0.65),  # dark orange or dull dark red
    ]
    names = np.select(conditions, [10, 8, 9, 11], default=hue_name)
    return names.reshape(rgb.shape[:-1])


def dominant_color(rgb: np.ndarray, mask: np.ndarray) -> tuple[str, list[int], float]:
    """Most frequent colour name among the masked pixels, their mean RGB and the share of pixels it covers."""
    pixels = rgb[mask]
    pixels = pixels[:: max(1, len(pixels) // MAX_COLOR_SAMPLES)]
    names = color_names(pixels)
    counts = np.bincount(names, minlength=len(COLOR_NAMES))
    best = int(counts.argmax())
    mean_rgb = pixels[names == best].mean(axis=0)
    return COLOR_NAMES[best], [int(round(c)) for c in mean_rgb], round(float(counts[best] / len(names)), 3)


def shape_descriptors(mask: np.ndarray) -> dict[str, float | int | str]:
    """Shape of the largest blob of a mask: circularity, solidity, polygon vertices, aspect and a shape name."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=cv2.contourArea)
    area = max(cv2.contourArea(contour), 1.0)
    perimeter = max(cv2.arcLength(contour, True), 1.0)
    vertices = len(cv2.approxPolyDP(contour, 0.03 * perimeter, True))
    solidity = area / max(cv2.contourArea(cv2.convexHull(contour)), 1.0)
    (_, _), (rw, rh), _ = cv2.minAreaRect(contour)
    elongation = max(rw, rh) / max(min(rw, rh), 1.0)
    extent = area / max(rw * rh, 1.0)
    circularity = 4 * math.pi * area / perimeter**2
    if solidity < 0.75 and vertices >= 8:
        shape = "star"
    elif vertices == 3:
        shape = "triangle"
    elif vertices == 4 and extent > 0.85:
        shape = "square" if elongation < 1.15 else "rectangle"
    elif vertices > 4 and circularity > 0.8 and elongation < 1.15:
        shape = "circle"
    else:
        shape = "other"
    x, y, w, h = cv2.boundingRect(contour)
    return {
        "shape": shape,
        "vertices": vertices,
        "circularity": round(circularity, 3),
        "solidity": round(solidity, 3),
        "aspect": round(w / h, 3),
    }


class PropertiesArgs(ToolArgs):
    image: ImageIndex = 0
    bbox: BBox | None = None
    point: Point | None = None


class GetProperties(Tool):
    name = "get_properties"
    description = (
        "Describe the object in a box (bbox) or under a point (give exactly one): colour, size, shape and position."
    )
    Args = PropertiesArgs

    def run(self, ctx: ToolContext, args: PropertiesArgs) -> Observation:
        if (args.bbox is None) == (args.point is None):
            kind = "missing_argument" if args.bbox is None else "extra_argument"
            raise ToolArgumentError(kind, "give exactly one of bbox or point")
        image = ctx.image(args.image)
        rgb = to_array(image)
        h, w = rgb.shape[:2]
        if args.bbox is not None:
            check_grid_box(args.bbox)
            x1, y1, x2, y2 = to_pixels_box(args.bbox, w, h)
            mask = segment_in_box(rgb, (x1, y1, x2, y2))
            fallback = np.s_[y1:y2, x1:x2]
        else:
            check_grid_point(args.point)
            x, y = to_pixels_point(args.point, w, h)
            mask = segment_at_point(rgb, (x, y), ctx.limits).mask
            fallback = np.s_[y, x]
        found = bool(mask.any())
        if not found:  # nothing stands out: describe the box (or the pixel) itself
            mask[fallback] = True
        x1, y1, x2, y2 = mask_box(mask)
        moments = cv2.moments(mask.astype(np.uint8), binaryImage=True)
        center = to_grid_point((moments["m10"] / moments["m00"], moments["m01"] / moments["m00"]), w, h)
        color, mean_rgb, share = dominant_color(rgb, mask)
        area = int(mask.sum())
        data = {
            "object_found": found,
            "color": color,
            "rgb": mean_rgb,
            "color_share": share,
            "bbox": to_grid_box((x1, y1, x2, y2), w, h),
            "area_px": area,
            "area_fraction": round(area / (w * h), 4),
            "size_px": [x2 - x1, y2 - y1],
            **shape_descriptors(mask),
            "center": center,
            "region": region_name(center),
        }
        subject = "the object" if found else "the region (no distinct object found)"
        text = (
            f"Properties of {subject}: color {color} (RGB {tuple(mean_rgb)}), shape {data['shape']} "
            f"({data['vertices']} vertices, circularity {data['circularity']:.2f}), size {x2 - x1}x{y2 - y1} px, "
            f"area {area} px ({100 * data['area_fraction']:.1f}% of the image), box {data['bbox']}, "
            f"center {center} ({data['region']})."
        )
        return Observation(text=text, data=data)
