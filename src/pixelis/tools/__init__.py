"""Pixel tools the policy calls: zoom, segment, OCR, properties, tracking and temporal localization.

Arguments use the Qwen3-VL 0–1000 relative grid; `ToolRegistry.default().execute(call, ctx)` runs any call and
always returns an `Observation` (errors included).
"""

from pixelis.tools.base import Tool, ToolArgs, ToolArgumentError, ToolContext, ToolLimits
from pixelis.tools.geometry import box_iou, to_grid_box, to_grid_point, to_pixels_box, to_pixels_point
from pixelis.tools.registry import ToolRegistry

__all__ = [
    "Tool",
    "ToolArgs",
    "ToolArgumentError",
    "ToolContext",
    "ToolLimits",
    "ToolRegistry",
    "box_iou",
    "to_grid_box",
    "to_grid_point",
    "to_pixels_box",
    "to_pixels_point",
]
