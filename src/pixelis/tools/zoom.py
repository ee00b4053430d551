"""zoom_in: crop a box and enlarge it so fine detail becomes legible."""

from __future__ import annotations

import cv2
from PIL import Image

from pixelis.core.trajectory import Observation
from pixelis.tools.base import BBox, ImageIndex, Tool, ToolArgs, ToolArgumentError, ToolContext, to_array
from pixelis.tools.geometry import check_grid_box, to_grid_box, to_pixels_box

# Longest side of a zoomed crop: enlarged towards the upper value, refused when even max_zoom cannot reach
# the lower one (the crop is then a handful of pixels and nothing useful can come out of it).
ZOOM_TARGET_SIDE = (448, 672)
# Most elongated crop returned: Qwen-VL image processors refuse images beyond 200:1, and a sliver that thin
# holds nothing legible anyway.
MAX_ASPECT_RATIO = 50


class ZoomArgs(ToolArgs):
    image: ImageIndex = 0
    bbox: BBox


class ZoomIn(Tool):
    name = "zoom_in"
    description = "Crop a region of an image and enlarge it to see small details. Returns the crop as a new image."
    Args = ZoomArgs

    def run(self, ctx: ToolContext, args: ZoomArgs) -> Observation:
        check_grid_box(args.bbox)
        image = ctx.image(args.image)
        w, h = image.size
        x1, y1, x2, y2 = to_pixels_box(args.bbox, w, h)
        cw, ch = x2 - x1, y2 - y1
        if max(cw, ch) > MAX_ASPECT_RATIO * min(cw, ch):
            raise ToolArgumentError(
                "invalid_box", f"the box is a {cw}x{ch} px sliver (more elongated than {MAX_ASPECT_RATIO}:1); "
                "choose a box around the whole object")
        scale = zoom_scale(cw, ch, ctx.limits.max_output_side, ctx.limits.max_zoom)
        out_w, out_h = max(1, round(cw * scale)), max(1, round(ch * scale))
        crop = to_array(image)[y1:y2, x1:x2]
        interpolation = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
        zoomed = Image.fromarray(cv2.resize(crop, (out_w, out_h), interpolation=interpolation))
        grid = to_grid_box((x1, y1, x2, y2), w, h)
        return Observation(
            text=(
                f"Zoomed into {grid} of image {args.image} ({cw}x{ch} px crop, x{scale:.2f}) -> "
                f"image {ctx.next_image_index()} ({out_w}x{out_h} px)."
            ),
            images=[zoomed],
            data={"bbox": grid, "crop_px": [x1, y1, x2, y2], "scale": round(scale, 4), "size": [out_w, out_h]},
        )


def zoom_scale(crop_w: int, crop_h: int, max_output_side: int, max_zoom: float) -> float:
    """Scale of a crop: enlarge small ones towards ZOOM_TARGET_SIDE (≤ max_zoom), shrink ones over max_output_side."""
    low, high = (min(side, max_output_side) for side in ZOOM_TARGET_SIDE)
    longest = max(crop_w, crop_h)
    if longest >= low:
        return min(1.0, max_output_side / longest)
    scale = min(high / longest, max_zoom)
    if longest * scale < low:
        raise ToolArgumentError(
            "limit_exceeded",
            f"absurd zoom: the box is only {crop_w}x{crop_h} px; enlarging it to {low} px would need "
            f"x{low / longest:.1f} but at most x{max_zoom:g} is allowed; choose a larger box",
        )
    return scale
