"""`track`: which way a shape moves in a short video, or in which quadrant it ends up.

The video is 8–12 frames; the conversation image is a storyboard of all frames. Golden:
track_object(box of the shape in frame 0) -> answer.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pixelis.core.trajectory import ToolCall
from pixelis.data import render
from pixelis.data.synth.base import Episode, Rejected, Scene, TaskFamily, require

QUADRANTS = ["top-left", "top-right", "bottom-left", "bottom-right"]
STORYBOARD_THUMB = 192


def velocity(direction: str, speed: float) -> tuple[float, float]:
    """Per-frame displacement for a compass direction at `speed` px/frame (diagonals keep the speed)."""
    ux, uy = render.DIRECTIONS[direction]
    norm = math.hypot(ux, uy)
    return (ux * speed / norm, uy * speed / norm)


def grid_quadrant(box: list[float]) -> str:
    """Quadrant of a 0–1000 grid box's centre."""
    return render.region_name(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), (1000, 1000))


class Track(TaskFamily):
    name = "track"
    tiers: dict[str, dict[str, Any]] = {
        # canvas px, frames, object size px, target speed px/frame, distractors (moving or not), directions
        "simple": {"canvas": [256, 256], "frames": [8, 8], "size": [40, 52], "speed": [9.0, 12.0],
                   "distractors": 1, "distractor_speed": [0.0, 0.0], "directions": 4},
        "medium": {"canvas": [288, 288], "frames": [9, 10], "size": [30, 40], "speed": [8.0, 11.0],
                   "distractors": 2, "distractor_speed": [0.0, 5.0], "directions": 8},
        "hard": {"canvas": [320, 320], "frames": [11, 12], "size": [20, 30], "speed": [11.0, 15.0],
                 "distractors": 3, "distractor_speed": [4.0, 9.0], "directions": 8},
    }

    def make_scene(self, rng: np.random.Generator, difficulty: str) -> Scene:
        tier = self.tiers[difficulty]
        canvas = tuple(tier["canvas"])
        n_frames = int(rng.integers(tier["frames"][0], tier["frames"][1] + 1))
        directions = list(render.DIRECTIONS)[: tier["directions"]]
        qkind = "direction" if difficulty == "simple" or rng.random() < 0.6 else "quadrant"
        pairs = render.distinct_pairs(rng, 1 + tier["distractors"])
        size = lambda: int(rng.integers(tier["size"][0], tier["size"][1] + 1))  # noqa: E731
        direction = str(rng.choice(directions))
        speed = float(rng.uniform(*tier["speed"]))
        color, kind = pairs[0]
        try:
            target = render.plan_mover(rng, canvas, kind, color, size(), velocity(direction, speed), n_frames)
            movers = [target]
            for c, k in pairs[1:]:
                d_speed = float(rng.uniform(*tier["distractor_speed"]))
                d_vel = velocity(str(rng.choice(list(render.DIRECTIONS))), d_speed)
                movers.append(render.plan_mover(rng, canvas, k, c, size(), d_vel, n_frames, movers, gap=8))
        except render.PlacementError as exc:
            raise Rejected("no_room", str(exc)) from None
        end = target.at(n_frames - 1)
        end_quadrant = render.region_name(end.center, canvas)
        if qkind == "quadrant":
            margin = 0.1 * canvas[0]
            require(min(abs(end.center[0] - canvas[0] / 2), abs(end.center[1] - canvas[1] / 2)) >= margin
                    and render.region_name(target.shape.center, canvas) != end_quadrant, "ambiguous_quadrant")
        bg = render.background(rng, canvas)
        frames = render.render_video(bg, movers, n_frames)
        if qkind == "direction":
            question = (f"Which way does the {target.shape.name} move? Answer with one of: "
                        f"{', '.join(directions)}.")
            answer, choices = direction, directions
        else:
            question = f"In which quadrant of the frame does the {target.shape.name} end up?"
            answer, choices = end_quadrant, QUADRANTS
        knobs = {"canvas": list(canvas), "frames": n_frames, "speed_px": round(speed, 2), "question": qkind,
                 "distractors": tier["distractors"], "directions": tier["directions"], "steps": 1,
                 "object_fraction": round((target.shape.box[2] - target.shape.box[0]) / canvas[0], 3)}
        return Scene(
            images=[render.storyboard(frames, thumb=STORYBOARD_THUMB)], video=frames, question=question,
            answer=answer, target={"type": "choice", "value": answer, "choices": list(choices)}, knobs=knobs,
            info={"canvas": canvas, "movers": movers, "qkind": qkind, "n_frames": n_frames},
        )

    def _track_call(self, scene: Scene, mover: render.Mover) -> ToolCall:
        box = render.expand_box(mover.shape.box, scene.info["canvas"], pixels=3)
        return ToolCall("track_object", {"bbox": render.to_grid_box(box, scene.info["canvas"]), "start_frame": 0})

    def first_call(self, scene: Scene) -> tuple[str, ToolCall]:
        name = scene.info["movers"][0].shape.name
        return (f"Find the {name} in frame 0 and track it to the last frame.",
                self._track_call(scene, scene.info["movers"][0]))

    def solve(self, ep: Episode, scene: Scene) -> str:
        thought, call = self.first_call(scene)
        obs = ep.call(thought, call.name, call.arguments)
        require(obs.error is None, "track_failed", obs.render_text())
        name = scene.info["movers"][0].shape.name
        if scene.info["qkind"] == "direction":
            seen = obs.data.get("direction")
            require(seen == scene.answer, "track_disagrees", f"{seen} vs {scene.answer}")
            return f"The track of the {name} heads {seen} over the frames."
        boxes = obs.data.get("boxes") or []
        require(bool(boxes) and boxes[-1] is not None, "track_failed", "no final box")
        seen = grid_quadrant(boxes[-1])
        require(seen == scene.answer, "track_disagrees", f"{seen} vs {scene.answer}")
        return f"In the last frame the tracked {name} is in the {seen} quadrant."

    def semantic_trap(self, ep: Episode, scene: Scene, rng: np.random.Generator) -> bool:
        movers = scene.info["movers"]
        if len(movers) < 2:
            return False
        decoy = movers[1 + int(rng.integers(len(movers) - 1))]
        thought, _ = self.first_call(scene)
        call = self._track_call(scene, decoy)
        obs = ep.execute(call.name, call.arguments)
        if obs.error is not None:
            return False
        ep.record(thought, call, obs, kind="trap")
        ep.expect_correction(f"That box held the {decoy.shape.name}, not the {movers[0].shape.name}; "
                             f"track the {movers[0].shape.name} instead.")
        return True
