"""`temporal`: in which frame a shape first appears (or disappears) in a short video.

The conversation image is a storyboard of the numbered frames. Golden: localize_event(event, box around the
shape's place; no box at simple) -> answer the frame index.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pixelis.core.trajectory import ToolCall
from pixelis.data import render
from pixelis.data.synth.base import Episode, Rejected, Scene, TaskFamily, require
from pixelis.data.synth.track import STORYBOARD_THUMB, velocity

NEVER = 10**9


class Temporal(TaskFamily):
    name = "temporal"
    tiers: dict[str, dict[str, Any]] = {
        # canvas px, frames, object size px, static / moving distractors, a distractor with its own event,
        # whether the call restricts the search to a box, question events
        "simple": {"canvas": [256, 256], "frames": [8, 8], "size": [40, 52], "static": 2, "moving": 0,
                   "event_distractor": False, "use_box": False, "events": ["appear"]},
        "medium": {"canvas": [288, 288], "frames": [9, 10], "size": [30, 42], "static": 1, "moving": 1,
                   "event_distractor": False, "use_box": True, "events": ["appear", "disappear"]},
        "hard": {"canvas": [320, 320], "frames": [11, 12], "size": [22, 32], "static": 1, "moving": 2,
                 "event_distractor": True, "use_box": True, "events": ["appear", "disappear"]},
    }

    def make_scene(self, rng: np.random.Generator, difficulty: str) -> Scene:
        tier = self.tiers[difficulty]
        canvas = tuple(tier["canvas"])
        n_frames = int(rng.integers(tier["frames"][0], tier["frames"][1] + 1))
        event = str(rng.choice(tier["events"]))
        frame = int(rng.integers(2, n_frames - 1))  # the event frame: first frame with (appear) / without it
        n_obj = 1 + tier["static"] + tier["moving"] + int(tier["event_distractor"])
        pairs = render.distinct_pairs(rng, n_obj)
        size = lambda: int(rng.integers(tier["size"][0], tier["size"][1] + 1))  # noqa: E731
        visible = (frame, NEVER) if event == "appear" else (0, frame)
        color, kind = pairs[0]
        try:
            target = render.plan_mover(rng, canvas, kind, color, size(), (0.0, 0.0), n_frames, visible=visible)
            movers = [target]
            rest = iter(pairs[1:])
            for _ in range(tier["static"]):
                c, k = next(rest)
                movers.append(render.plan_mover(rng, canvas, k, c, size(), (0.0, 0.0), n_frames, movers, gap=12))
            for _ in range(tier["moving"]):
                c, k = next(rest)
                vel = velocity(str(rng.choice(list(render.DIRECTIONS))), float(rng.uniform(6, 12)))
                movers.append(render.plan_mover(rng, canvas, k, c, size(), vel, n_frames, movers, gap=12))
            if tier["event_distractor"]:
                c, k = next(rest)
                other = int(rng.choice([f for f in range(1, n_frames) if abs(f - frame) >= 2]))
                vis = (other, NEVER) if rng.random() < 0.5 else (0, other)
                movers.append(render.plan_mover(rng, canvas, k, c, size(), (0.0, 0.0), n_frames, movers, gap=12,
                                                visible=vis))
        except render.PlacementError as exc:
            raise Rejected("no_room", str(exc)) from None
        bg = render.background(rng, canvas)
        frames = render.render_video(bg, movers, n_frames)
        name = target.shape.name
        if event == "appear":
            question = f"In which frame does the {name} first appear? Frames are numbered from 0."
        else:
            question = (f"In which frame does the {name} disappear (the first frame without it)? "
                        "Frames are numbered from 0.")
        knobs = {"canvas": list(canvas), "frames": n_frames, "event": event, "event_frame": frame,
                 "static_distractors": tier["static"], "moving_distractors": tier["moving"],
                 "event_distractor": tier["event_distractor"], "use_box": tier["use_box"], "steps": 1,
                 "object_fraction": round((target.shape.box[2] - target.shape.box[0]) / canvas[0], 3)}
        return Scene(
            images=[render.storyboard(frames, thumb=STORYBOARD_THUMB)], video=frames, question=question,
            answer=str(frame), target={"type": "number", "value": frame}, knobs=knobs,
            info={"canvas": canvas, "movers": movers, "event": event, "frame": frame, "use_box": tier["use_box"]},
        )

    def _call(self, scene: Scene, with_box: bool) -> ToolCall:
        args: dict[str, Any] = {"event": scene.info["event"]}
        if with_box:
            canvas = scene.info["canvas"]
            box = render.expand_box(scene.info["movers"][0].shape.box, canvas, fraction=0.3)
            args["bbox"] = render.to_grid_box(box, canvas)
        return ToolCall("localize_event", args)

    def first_call(self, scene: Scene) -> tuple[str, ToolCall]:
        name, event = scene.info["movers"][0].shape.name, scene.info["event"]
        where = "at its place" if scene.info["use_box"] else "over the whole frame"
        verb = "appears" if event == "appear" else "disappears"
        return (f"Find the frame where the {name} {verb}, searching {where}.",
                self._call(scene, scene.info["use_box"]))

    def solve(self, ep: Episode, scene: Scene) -> str:
        thought, call = self.first_call(scene)
        obs = ep.call(thought, call.name, call.arguments)
        require(obs.error is None, "event_failed", obs.render_text())
        seen = obs.data.get("start_frame")
        require(seen == scene.info["frame"] and obs.data.get("matches_event") is True, "event_disagrees",
                f"{seen} vs {scene.info['frame']}, matches_event={obs.data.get('matches_event')}")
        verb = "appears" if scene.info["event"] == "appear" else "is gone"
        return f"The {scene.info['movers'][0].shape.name} {verb} from frame {seen} on."

    def semantic_trap(self, ep: Episode, scene: Scene, rng: np.random.Generator) -> bool:
        if not scene.info["use_box"]:
            return False
        thought, _ = self.first_call(scene)
        call = self._call(scene, with_box=False)
        obs = ep.execute(call.name, call.arguments)
        seen = obs.data.get("start_frame")
        if obs.error is not None or seen is None or seen == scene.info["frame"]:
            return False
        ep.record(thought.replace("at its place", "over the whole frame"), call, obs, kind="trap")
        name = scene.info["movers"][0].shape.name
        ep.expect_correction(f"Frame {seen} may come from another object's change; restrict the search to "
                             f"the {name}'s place.")
        return True
