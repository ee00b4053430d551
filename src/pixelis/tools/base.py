"""What every tool shares: limits, the execution context, argument models and the `Tool` interface.

A tool is a class with a `name`, a short `description` (what the model reads), an `Args` pydantic model (the
JSON schema the model sees) and `run(ctx, args) -> Observation`. Coordinates in arguments use the Qwen3-VL
0–1000 relative grid; :mod:`pixelis.tools.geometry` converts them to pixels.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

import cv2
import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from pixelis.core.config import ToolsConfig
from pixelis.core.trajectory import ERROR_KINDS, Observation


class ToolArgumentError(Exception):
    """Arguments that are well-typed but unusable (a box outside the image, a frame past the end...)."""

    def __init__(self, kind: str, message: str):
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown error kind {kind!r}; expected one of {ERROR_KINDS}")
        super().__init__(message)
        self.kind = kind
        self.message = message


class ToolLimits(ToolsConfig):
    """Bounds on the work one tool call may do and on the size of what it returns (the config's `tools` section)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def from_config(cls, section: Any) -> ToolLimits:
        """Limits from any object with these attributes (e.g. the `tools` section of the Pixelis config)."""
        if section is None:
            return cls()
        return cls(**{name: getattr(section, name) for name in cls.model_fields if hasattr(section, name)})


@dataclass
class ToolContext:
    """The media a call can act on: conversation images (inputs, then tool outputs in order) and video frames."""

    images: list[Image.Image] = field(default_factory=list)
    video: list[Image.Image] | None = None
    limits: ToolLimits = field(default_factory=ToolLimits)

    def image(self, index: int) -> Image.Image:
        """Conversation image `index` as RGB; raises a `bad_image` error when there is none."""
        if not self.images:
            raise ToolArgumentError("bad_image", "this sample has no images")
        if not 0 <= index < len(self.images):
            raise ToolArgumentError(
                "bad_image", f"image {index} does not exist; valid indices are 0..{len(self.images) - 1}"
            )
        image = self.images[index]
        if image.width == 0 or image.height == 0:
            raise ToolArgumentError("bad_image", f"image {index} is empty ({image.width}x{image.height} px)")
        return image.convert("RGB")

    def frames(self) -> list[Image.Image]:
        """The video frames; raises a `bad_image` error when the sample has no video."""
        if not self.video:
            raise ToolArgumentError("bad_image", "this sample has no video")
        return self.video

    def frame(self, index: int) -> Image.Image:
        """Video frame `index` as RGB; raises `frame_out_of_range` past either end."""
        frames = self.frames()
        if not 0 <= index < len(frames):
            raise ToolArgumentError(
                "frame_out_of_range", f"frame {index} does not exist; the video has frames 0..{len(frames) - 1}"
            )
        return frames[index].convert("RGB")

    def next_image_index(self) -> int:
        """The conversation index the first image of the next observation will get."""
        return len(self.images)


class ToolArgs(BaseModel):
    """Base of every tool's argument model: strict JSON types, no unknown keys, finite numbers."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


ImageIndex = Annotated[
    int, Field(description="Which image: 0 = the input image, then images returned by tools, in order.")
]
BBox = Annotated[
    list[float],
    Field(min_length=4, max_length=4, description="Box [x1, y1, x2, y2] on the 0-1000 relative grid."),
]
Point = Annotated[
    list[float], Field(min_length=2, max_length=2, description="Point [x, y] on the 0-1000 relative grid.")
]


class Tool(ABC):
    """A pixel operation the policy can call."""

    name: ClassVar[str]
    description: ClassVar[str]
    Args: ClassVar[type[ToolArgs]]

    @abstractmethod
    def run(self, ctx: ToolContext, args: Any) -> Observation:
        """Execute on validated `args`; may raise `ToolArgumentError`."""

    def schema(self) -> dict[str, Any]:
        """The OpenAI/HF function-calling schema of this tool."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": _compact_schema(self.Args.model_json_schema()),
            },
        }


def _compact_schema(node: Any) -> Any:
    """Drop titles and collapse `anyOf [X, null]` (an optional argument) to X: chat templates want it short."""
    if isinstance(node, list):
        return [_compact_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    branches = node.get("anyOf")
    if branches is not None:
        non_null = [b for b in branches if b.get("type") != "null"]
        if len(non_null) == 1:
            rest = {k: v for k, v in node.items() if k != "anyOf" and not (k == "default" and v is None)}
            return _compact_schema({**non_null[0], **rest})
    # A string "title" is pydantic's label; an argument named "title" would be a dict under "properties".
    return {
        key: _compact_schema(value) for key, value in node.items() if not (key == "title" and isinstance(value, str))
    }


# ------------------------------------------------------------------------------------------ images


def to_array(image: Image.Image) -> np.ndarray:
    """RGB uint8 array (H, W, 3) of a PIL image."""
    return np.asarray(image.convert("RGB"))


def shrink(array: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """An array shrunk (area interpolation) so its longest side is ≤ max_side, and the scale factor applied."""
    h, w = array.shape[:2]
    factor = min(1.0, max_side / max(h, w))
    if factor == 1.0:
        return array, factor
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return cv2.resize(array, size, interpolation=cv2.INTER_AREA), factor


def fit_side(image: Image.Image | np.ndarray, max_side: int) -> Image.Image:
    """The image (PIL or RGB array) as PIL, shrunk so its longest side is ≤ max_side."""
    array, _ = shrink(image if isinstance(image, np.ndarray) else to_array(image), max_side)
    return Image.fromarray(np.ascontiguousarray(array))
