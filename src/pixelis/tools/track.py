"""track_object: follow a box through video frames with OpenCV template matching.

The template is the box in the start frame plus a small margin of context (a uniform object alone has no
texture to correlate); each later frame is searched with TM_CCOEFF_NORMED in a window around the last box,
or in the whole frame after the object was lost. Matching runs on copies at most WORK_SIDE px wide.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image
from pydantic import Field

from pixelis.core.trajectory import Observation
from pixelis.tools.base import BBox, Tool, ToolArgs, ToolArgumentError, ToolContext, shrink, to_array
from pixelis.tools.geometry import check_grid_box, to_grid_box, to_pixels_box

WORK_SIDE = 512
MIN_SCORE = 0.5  # normalized correlation below which the object counts as lost in a frame
TEMPLATE_MARGIN = 0.15  # context around the box, relative to its size
SEARCH_RADIUS = 1.0  # search window around the last box, in box sizes
STILL_GRID = 20  # displacements shorter than this (grid units) are "stationary"
BOX_RGB = {"ok": (0, 220, 0), "lost": (230, 0, 0)}


class TrackArgs(ToolArgs):
    bbox: BBox = Field(description="Box [x1, y1, x2, y2] of the object in start_frame, on the 0-1000 grid.")
    start_frame: int = Field(0, description="Frame where bbox is given.")
    end_frame: int | None = Field(None, description="Last frame to track (default: the last frame of the video).")


class TrackObject(Tool):
    name = "track_object"
    description = (
        "Track the object in bbox from start_frame to end_frame of the video. "
        "Returns its box in each frame, its direction of motion and a strip of the frames."
    )
    Args = TrackArgs

    def run(self, ctx: ToolContext, args: TrackArgs) -> Observation:
        check_grid_box(args.bbox)
        frames = ctx.frames()
        end = len(frames) - 1 if args.end_frame is None else args.end_frame
        for index in (args.start_frame, end):
            ctx.frame(index)  # range check
        if end < args.start_frame:
            raise ToolArgumentError("frame_out_of_range", f"end_frame {end} is before start_frame {args.start_frame}")
        indices = list(range(args.start_frame, end + 1))
        if len(indices) > ctx.limits.max_frames_per_call:
            raise ToolArgumentError(
                "limit_exceeded",
                f"frames {args.start_frame}..{end} are {len(indices)} frames; at most "
                f"{ctx.limits.max_frames_per_call} per call: set end_frame <= "
                f"{args.start_frame + ctx.limits.max_frames_per_call - 1}",
            )
        images = [to_array(ctx.frame(i)) for i in indices]
        h, w = images[0].shape[:2]
        boxes_px, scores = track_boxes(images, to_pixels_box(args.bbox, w, h))
        status = ["ok" if s >= MIN_SCORE else "lost" for s in scores]
        boxes = [to_grid_box(b, w, h) if st == "ok" else None for b, st in zip(boxes_px, status)]
        last_ok = max(i for i, st in enumerate(status) if st == "ok")  # the start frame always matches itself
        dx, dy = (_center(boxes[last_ok])[k] - _center(boxes[0])[k] for k in (0, 1))
        direction = motion_direction(dx, dy)
        lost = [f for f, st in zip(indices, status) if st == "lost"]
        text = (
            f"Tracked the object over frames {indices[0]}..{indices[-1]}: from {boxes[0]} to {boxes[last_ok]} "
            f"(frame {indices[last_ok]}), moving {direction} by ({dx:+.0f}, {dy:+.0f}) grid units."
            + (f" Lost in frames {lost}." if lost else "")
            + f" Strip of tracked frames -> image {ctx.next_image_index()}."
        )
        return Observation(
            text=text,
            images=[contact_sheet(images, boxes_px, status, indices, ctx.limits.max_output_side)],
            data={
                "frames": indices,
                "boxes": boxes,
                "status": status,
                "scores": [round(s, 3) for s in scores],
                "displacement": [round(dx), round(dy)],
                "direction": direction,
            },
        )


def track_boxes(
    frames: list[np.ndarray], box_px: tuple[int, int, int, int]
) -> tuple[list[tuple[int, ...]], list[float]]:
    """Pixel box and match score per frame, starting from `box_px` in the first frame (score 1)."""
    shrunk = [shrink(frame, WORK_SIDE) for frame in frames]
    work, f = [array for array, _ in shrunk], shrunk[0][1]
    wh, ww = work[0].shape[:2]
    x1, y1, x2, y2 = (int(v * f) for v in box_px)
    bw, bh = max(1, x2 - x1), max(1, y2 - y1)
    mx, my = max(2, int(TEMPLATE_MARGIN * bw)), max(2, int(TEMPLATE_MARGIN * bh))
    tx1, ty1, tx2, ty2 = max(0, x1 - mx), max(0, y1 - my), min(ww, x1 + bw + mx), min(wh, y1 + bh + my)
    template = work[0][ty1:ty2, tx1:tx2]
    offset = (x1 - tx1, y1 - ty1)  # box corner inside the template
    th, tw = template.shape[:2]
    boxes, scores = [box_px], [1.0]
    last = (tx1, ty1)  # template position of the last confident match
    found = True
    for frame in work[1:]:
        if found:
            rx, ry = int(SEARCH_RADIUS * bw) + mx, int(SEARCH_RADIUS * bh) + my
            sx1, sy1 = max(0, last[0] - rx), max(0, last[1] - ry)
            sx2, sy2 = min(ww, last[0] + tw + rx), min(wh, last[1] + th + ry)
        else:
            sx1, sy1, sx2, sy2 = 0, 0, ww, wh
        result = cv2.matchTemplate(frame[sy1:sy2, sx1:sx2], template, cv2.TM_CCOEFF_NORMED)
        _, score, _, (px, py) = cv2.minMaxLoc(result)
        score = float(np.nan_to_num(score))
        found = score >= MIN_SCORE
        if found:
            last = (sx1 + px, sy1 + py)
        bx, by = last[0] + offset[0], last[1] + offset[1]
        boxes.append(tuple(int(round(v / f)) for v in (bx, by, bx + bw, by + bh)))
        scores.append(score)
    return boxes, scores


def motion_direction(dx: float, dy: float) -> str:
    """Compass name of a displacement in image axes (y down): right, up-right, up, ..., or stationary."""
    if math.hypot(dx, dy) < STILL_GRID:
        return "stationary"
    horizontal, vertical = ("right" if dx > 0 else "left"), ("down" if dy > 0 else "up")
    tan_22_5 = math.tan(math.radians(22.5))
    if abs(dy) < tan_22_5 * abs(dx):
        return horizontal
    if abs(dx) < tan_22_5 * abs(dy):
        return vertical
    return f"{vertical}-{horizontal}"


def contact_sheet(
    frames: list[np.ndarray], boxes: list[tuple[int, ...]], status: list[str], labels: list[int], max_side: int
) -> Image.Image:
    """A grid of frame thumbnails with their boxes drawn, at most `max_side` px on each side."""
    h, w = frames[0].shape[:2]
    cols = math.ceil(math.sqrt(len(frames)))
    rows = math.ceil(len(frames) / cols)
    scale = min(max_side / (cols * w), max_side / (rows * h), 1.0)
    tw, th = max(1, int(w * scale)), max(1, int(h * scale))
    sheet = np.full((rows * th, cols * tw, 3), 255, np.uint8)
    for i, (frame, box, st, label) in enumerate(zip(frames, boxes, status, labels)):
        thumb = cv2.resize(frame, (tw, th), interpolation=cv2.INTER_AREA)
        x1, y1, x2, y2 = (int(v * scale) for v in box)
        if st == "ok":
            cv2.rectangle(thumb, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), BOX_RGB[st], max(1, tw // 100))
        cv2.putText(thumb, f"{label}{'' if st == 'ok' else ' lost'}", (3, max(10, th // 10)),
                    cv2.FONT_HERSHEY_SIMPLEX, max(0.3, tw / 400), BOX_RGB[st], 1, cv2.LINE_AA)
        r, c = divmod(i, cols)
        sheet[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = thumb
    return Image.fromarray(sheet)


def _center(box: list[int]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
