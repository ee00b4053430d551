"""Grounding tasks for pre-training the tiny model: cheap generated scenes, answered in the agent's text forms.

Each sample is one image of coloured shapes (the suite's canvases, colours, shapes and object sizes) and one
question, answered the way the agent answers or acts:

- `box`:   "Zoom in on the red circle."             -> a `zoom_in` call with the shape's box on the 0-1000 grid
- `point`: "Point at the blue star."                -> a `get_properties` call at a point inside the shape
- `color` / `shape`: "What colour is the object at [x, y]?" -> `<answer>red</answer>`
- `label`: "What does the large label say?"         -> `<answer>KXT</answer>`

Samples are a pure function of (seed, stream, index): the `train` and `heldout` streams draw from different
seeds, so held-out images are never seen in training, and no sample is ever stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args
import numpy as np
from PIL import Image, ImageDraw

from pixelis.core.config import GroundingTask
from pixelis.core.trajectory import Step, ToolCall, Trajectory
from pixelis.data import render
from pixelis.data.synth.base import sample_rng
from pixelis.data.synth.small_text import CODE_ALPHABET

TASKS: tuple[str, ...] = get_args(GroundingTask)
STREAMS = ("train", "heldout")
# The suite's canvases (px) and object sizes (px): simple 256-384 / 40-72, hard 640 / 22-44.
CANVASES = ((256, 256), (384, 384), (512, 384), (512, 512), (640, 640))
OBJECT_PX = (22, 72)
OBJECTS = (1, 6)  # objects per scene (inclusive); one-object scenes need no search, only localisation
# Object size bins by the longer side on the 0-1000 grid; the simple tier's objects (40-72 px on 256-384 px
# canvases) are all `large`.
SIZE_BINS = (("small", 0), ("medium", 60), ("large", 110))
SCENE_BINS = ("one object", "several objects")  # localising alone, or searching too


@dataclass(frozen=True)
class GroundingSample:
    """One generated grounding task: the image, the question, and the expected call or answer."""

    id: str
    image: Image.Image
    task: str
    question: str
    box: list[int]  # the asked-about object's (or label's) box on the 0-1000 grid
    regions: list[list[int]]  # the boxes of everything drawn (every object, and the label) on the 0-1000 grid
    answer: str | None = None  # the expected <answer> text (color / shape / label tasks)
    call: ToolCall | None = None  # the expected tool call (box / point tasks)

    @property
    def size_bin(self) -> str:
        """`small`, `medium` or `large`: the object's longer side on the 0-1000 grid."""
        side = max(self.box[2] - self.box[0], self.box[3] - self.box[1])
        return [name for name, low in SIZE_BINS if side >= low][-1]

    @property
    def scene_bin(self) -> str:
        """`one object` or `several objects` in the scene (the label is not an object): localising alone, or
        searching too."""
        objects = len(self.regions) - (self.task == "label")
        return SCENE_BINS[0] if objects == 1 else SCENE_BINS[1]

    def trajectory(self, with_response: bool = True) -> Trajectory:
        """The sample as a one-turn trajectory (the expected call, or the answer); without the response it is
        the prompt to generate from."""
        steps = [Step(call=self.call)] if with_response and self.call is not None else []
        answer = self.answer if with_response else None
        return Trajectory(id=self.id, question=self.question, images=[self.image], steps=steps, answer=answer,
                          metadata={"family": "grounding", "task": self.task})


def _task(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = [t for t in TASKS if weights.get(t, 0.0) > 0]
    p = np.array([weights[t] for t in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _scene(rng: np.random.Generator, objects: tuple[int, int]) -> tuple[Image.Image, tuple[int, int],
                                                                      list[render.Shape]]:
    canvas = CANVASES[int(rng.integers(len(CANVASES)))]
    n = int(rng.integers(objects[0], objects[1] + 1))
    specs = [(kind, color, int(rng.integers(OBJECT_PX[0], OBJECT_PX[1] + 1)))
             for color, kind in render.distinct_pairs(rng, n)]
    for _ in range(20):
        try:
            shapes = render.scatter_shapes(rng, canvas, specs, gap=10)
            break
        except render.PlacementError:
            specs = specs[:-1]  # crowded: drop one object and retry
    img = render.background(rng, canvas)
    draw = ImageDraw.Draw(img)
    render.add_clutter(draw, rng, canvas, int(rng.integers(0, 9)), 0, [s.box for s in shapes])
    for s in shapes:
        render.draw_shape(draw, s)
    return img, canvas, shapes


def _label(rng: np.random.Generator, img: Image.Image, canvas: tuple[int, int],
           shapes: list[render.Shape]) -> tuple[str, render.Box]:
    """Draw one large code (small_text's alphabet without look-alikes) where it fits; returns it and its box."""
    text = "".join(rng.choice(list(CODE_ALPHABET), size=int(rng.integers(3, 5))))
    fnt = render.font_for_cap_height(float(rng.uniform(0.06, 0.1)) * min(canvas), bold=True)
    dims = render.label_dims(text, fnt)
    spot = render.place_box(rng, canvas, dims, [s.box for s in shapes], gap=6, tries=200)
    box = render.draw_label(ImageDraw.Draw(img), ((spot[0] + spot[2]) / 2, (spot[1] + spot[3]) / 2), text, fnt)
    return text, box


def grounding_sample(seed: int, stream: str, index: int, weights: dict[str, float] | None = None,
                     objects: tuple[int, int] = OBJECTS) -> GroundingSample:
    """Sample `index` of `stream` (`train` or `heldout`) for `seed`, with `objects` (min, max) shapes in the
    scene; the same arguments give the same pixels."""
    if stream not in STREAMS:
        raise ValueError(f"unknown grounding stream {stream!r}; choose one of {', '.join(STREAMS)}")
    weights = weights or {t: 1.0 for t in TASKS}
    sample_id = f"grounding-{stream}-{index:07d}"
    for attempt in range(10):
        rng = sample_rng(seed, "grounding", stream, index, attempt)
        task = _task(rng, weights)
        img, canvas, shapes = _scene(rng, objects)
        regions = [render.to_grid_box(s.box, canvas) for s in shapes]
        if task == "label":
            try:
                text, box = _label(rng, img, canvas, shapes)
            except render.PlacementError:
                continue  # no room for the label: redraw
            label_box = render.to_grid_box(box, canvas)
            return GroundingSample(sample_id, img, task, "What does the large label say?", label_box,
                                   regions + [label_box], answer=text)
        target = shapes[int(rng.integers(len(shapes)))]
        box = render.to_grid_box(target.box, canvas)
        if task == "box":
            return GroundingSample(sample_id, img, task, f"Zoom in on the {target.name}.", box, regions,
                                   call=ToolCall("zoom_in", {"image": 0, "bbox": box}))
        point = render.to_grid_point(target.interior_point, canvas)
        if task == "point":
            return GroundingSample(sample_id, img, task, f"Point at the {target.name}.", box, regions,
                                   call=ToolCall("get_properties", {"image": 0, "point": point}))
        answer = target.color if task == "color" else target.kind
        noun = "colour" if task == "color" else "shape"
        return GroundingSample(sample_id, img, task, f"What {noun} is the object at [{point[0]}, {point[1]}]?", box,
                               regions, answer=answer)
    raise RuntimeError(f"grounding sample {stream}/{index} (seed {seed}): no label placement in 10 draws")
