"""`count`: how many objects of a given colour and shape are in the image, among distractors.

Golden: get_properties at each target (and, at hard, at one look-alike distractor) -> answer the number;
at most 4 calls.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import ImageDraw

from pixelis.core.trajectory import Observation, ToolCall
from pixelis.data import render
from pixelis.data.synth.base import Episode, Rejected, Scene, TaskFamily, require


def properties_match(obs: Observation, shape: render.Shape) -> bool:
    """Whether a get_properties observation names the colour and kind of `shape`."""
    return obs.error is None and obs.data.get("color") == shape.color and obs.data.get("shape") == shape.kind


def properties_name(obs: Observation) -> str:
    """'<colour> <shape>' as a get_properties observation reports it."""
    return f"{obs.data.get('color')} {obs.data.get('shape')}"


def point_call(shape: render.Shape, canvas: tuple[int, int]) -> ToolCall:
    """get_properties at a point inside `shape`."""
    return ToolCall("get_properties", {"image": 0, "point": render.to_grid_point(shape.interior_point, canvas)})


class Count(TaskFamily):
    name = "count"
    tiers: dict[str, dict[str, Any]] = {
        # canvas px, number of targets, distractors, object size px, look-alike distractors, clutter lines
        "simple": {"canvas": [384, 384], "targets": [1, 3], "distractors": [3, 5], "size": [44, 60],
                   "lookalikes": 0, "lines": 0},
        "medium": {"canvas": [512, 512], "targets": [2, 4], "distractors": [6, 9], "size": [30, 44],
                   "lookalikes": 2, "lines": 8},
        "hard": {"canvas": [640, 640], "targets": [2, 3], "distractors": [10, 14], "size": [22, 32],
                 "lookalikes": 4, "lines": 16},
    }

    def make_scene(self, rng: np.random.Generator, difficulty: str) -> Scene:
        tier = self.tiers[difficulty]
        canvas = tuple(tier["canvas"])
        color = str(rng.choice(render.OBJECT_COLORS))
        kind = str(rng.choice(render.SHAPES))
        n_targets = int(rng.integers(tier["targets"][0], tier["targets"][1] + 1))
        n_distractors = int(rng.integers(tier["distractors"][0], tier["distractors"][1] + 1))
        size = lambda: int(rng.integers(tier["size"][0], tier["size"][1] + 1))  # noqa: E731
        specs = [(kind, color, size()) for _ in range(n_targets)]
        lookalikes = []
        for i in range(min(tier["lookalikes"], n_distractors)):
            if i % 2 == 0:  # neighbouring colour, same shape
                lookalikes.append((kind, str(rng.choice(render.NEIGHBOR_COLORS[color])), size()))
            else:  # same colour, neighbouring shape
                lookalikes.append((str(rng.choice(render.NEIGHBOR_SHAPES[kind])), color, size()))
        others = []
        while len(lookalikes) + len(others) < n_distractors:
            c, k = str(rng.choice(render.OBJECT_COLORS)), str(rng.choice(render.SHAPES))
            if difficulty == "simple" and (c == color or k == kind):
                continue
            if (c, k) != (color, kind):
                others.append((k, c, size()))
        img = render.background(rng, canvas)
        draw = ImageDraw.Draw(img)
        try:
            shapes = render.scatter_shapes(rng, canvas, specs + lookalikes + others, gap=10)
        except render.PlacementError as exc:
            raise Rejected("no_room", str(exc)) from None
        for s in shapes:
            render.draw_shape(draw, s)
        if tier["lines"]:
            render.add_clutter(draw, rng, canvas, tier["lines"], 0, [s.box for s in shapes])
        targets = sorted(shapes[:n_targets], key=lambda s: (s.center[1], s.center[0]))
        knobs = {"canvas": list(canvas), "targets": n_targets, "distractors": n_distractors,
                 "lookalikes": len(lookalikes), "object_fraction": round(float(np.mean(
                     [(s.box[2] - s.box[0]) / canvas[0] for s in shapes])), 3),
                 "steps": n_targets + (1 if difficulty == "hard" and lookalikes else 0)}
        return Scene(
            images=[img], question=f"How many {color} {render.plural(kind)} are in the image?",
            answer=str(n_targets), target={"type": "number", "value": n_targets}, knobs=knobs,
            info={"canvas": canvas, "targets": targets, "lookalikes": shapes[n_targets:n_targets + len(lookalikes)],
                  "color": color, "kind": kind, "difficulty": difficulty},
        )

    def first_call(self, scene: Scene) -> tuple[str, ToolCall]:
        name = f"{scene.info['color']} {render.plural(scene.info['kind'])}"
        return (f"Find all {name}. Check the first candidate's colour and shape.",
                point_call(scene.info["targets"][0], scene.info["canvas"]))

    def solve(self, ep: Episode, scene: Scene) -> str:
        targets, canvas = scene.info["targets"], scene.info["canvas"]
        name = f"{scene.info['color']} {scene.info['kind']}"
        thought, call = self.first_call(scene)
        for i, shape in enumerate(targets):
            if i > 0:
                thought = f"That is a {name} ({i} so far). Check the next candidate."
                call = point_call(shape, canvas)
            obs = ep.call(thought, call.name, call.arguments)
            require(properties_match(obs, shape), "properties_mismatch",
                    f"{shape.name} read as {properties_name(obs)}: {obs.render_text()[:120]}")
        n = len(targets)
        lookalikes = scene.info["lookalikes"]
        if scene.info["difficulty"] == "hard" and lookalikes:
            decoy = lookalikes[0]
            call = point_call(decoy, canvas)
            obs = ep.call(f"That is a {name} ({n} so far). The {decoy.name} could pass for one; check it.",
                          call.name, call.arguments)
            require(properties_match(obs, decoy), "properties_mismatch",
                    f"{decoy.name} read as {properties_name(obs)}")
            return f"It is a {decoy.name}, not a {name}. So the count of {render.plural(name)} is {n}."
        return f"That is a {name} ({n} so far), and no other object is one. So the count is {n}."

