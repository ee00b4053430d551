"""Video tools: select_frames (look at given frames) and localize_event (when does a region change)."""

from __future__ import annotations

from typing import Annotated, Literal

import cv2
import numpy as np
from PIL import Image
from pydantic import Field
from skimage.filters import threshold_otsu

from pixelis.core.trajectory import Observation
from pixelis.tools.base import BBox, Tool, ToolArgs, ToolArgumentError, ToolContext, fit_side, shrink, to_array
from pixelis.tools.geometry import check_grid_box, to_pixels_box

SCAN_SIDE = 256  # frames are compared on copies of the region at most this many px on a side
PIXEL_CHANGE = 30  # a pixel changed when a blurred channel differs from the first frame by more than this
MIN_CHANGED_FRACTION = 0.001  # a frame changed when more than this share of the region's pixels changed


class SelectFramesArgs(ToolArgs):
    frames: Annotated[list[int], Field(min_length=1, description="Frame indices to look at (0 = first frame).")]


class SelectFrames(Tool):
    name = "select_frames"
    description = "Look at the given video frames. Returns each frame as a new image."
    Args = SelectFramesArgs

    def run(self, ctx: ToolContext, args: SelectFramesArgs) -> Observation:
        limit = ctx.limits.max_frames_per_call
        if len(args.frames) > limit:
            raise ToolArgumentError("limit_exceeded", f"{len(args.frames)} frames requested; at most {limit} per call")
        images = [fit_side(ctx.frame(i), ctx.limits.max_output_side) for i in args.frames]
        first = ctx.next_image_index()
        return Observation(
            text=f"Frames {args.frames} of {len(ctx.frames())} -> images {first}..{first + len(images) - 1}.",
            images=images,
            data={"frames": list(args.frames)},
        )


class LocalizeEventArgs(ToolArgs):
    bbox: BBox | None = Field(None, description="Region [x1, y1, x2, y2] on the 0-1000 grid (default: whole frame).")
    event: Literal["appear", "disappear", "change"] = Field(
        "change", description="What to look for in the region: something appears, disappears, or any change."
    )


class LocalizeEvent(Tool):
    name = "localize_event"
    description = (
        "Find when a region of the video (default: the whole frame) changes from the first frame. "
        "Returns the frame interval and the frames just before and at the change."
    )
    Args = LocalizeEventArgs

    def run(self, ctx: ToolContext, args: LocalizeEventArgs) -> Observation:
        frames = ctx.frames()
        w, h = frames[0].size
        if args.bbox is None:
            box, where = (0, 0, w, h), "the frame"
        else:
            check_grid_box(args.bbox)
            box, where = to_pixels_box(args.bbox, w, h), f"region {[round(v) for v in args.bbox]}"
        regions = [_region(frame, box) for frame in frames]
        scores = np.array([_changed_fraction(regions[0], r) for r in regions])
        data = {"event": args.event, "start_frame": None, "end_frame": None,
                "scores": [round(float(s), 4) for s in scores]}
        if scores.max() <= MIN_CHANGED_FRACTION:
            return Observation(text=f"No change found in {where} over frames 0..{len(frames) - 1}.", data=data)
        threshold = max(MIN_CHANGED_FRACTION, float(threshold_otsu(scores)))
        changed = scores > threshold
        start = int(np.argmax(changed))
        end = start
        while end + 1 < len(frames) and changed[end + 1]:
            end += 1
        grew = _detail(regions[start]) > _detail(regions[start - 1])
        data.update(start_frame=start, end_frame=end, threshold=round(threshold, 4))
        text = (
            f"{where.capitalize()} changes at frame {start} and stays changed until frame {end} "
            f"(of 0..{len(frames) - 1})."
        )
        if args.event != "change":
            matches = grew == (args.event == "appear")
            data["matches_event"] = matches
            seen = "appears" if grew else "disappears"
            text += f" Something {seen} there" + ("." if matches else f", which is not the '{args.event}' asked for.")
        first = ctx.next_image_index()
        text += f" Frames {start - 1} and {start} -> images {first} and {first + 1}."
        size = ctx.limits.max_output_side
        images = [fit_side(ctx.frame(start - 1), size), fit_side(ctx.frame(start), size)]
        return Observation(text=text, images=images, data=data)


def _region(frame: Image.Image, box: tuple[int, int, int, int]) -> np.ndarray:
    x1, y1, x2, y2 = box
    region, _ = shrink(to_array(frame)[y1:y2, x1:x2], SCAN_SIDE)
    return cv2.GaussianBlur(region, (5, 5), 0).astype(np.int16)


def _changed_fraction(reference: np.ndarray, region: np.ndarray) -> float:
    if region.shape != reference.shape:
        raise ToolArgumentError("bad_image", "video frames differ in size; every frame must have the same size")
    return float((np.abs(region - reference).max(axis=2) > PIXEL_CHANGE).mean())


def _detail(region: np.ndarray) -> float:
    """Mean gradient magnitude: rises when an object appears on a plainer background, falls when it leaves."""
    gray = cv2.cvtColor(region.astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1)).mean())
