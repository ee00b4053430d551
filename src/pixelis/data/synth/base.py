"""What every task family shares: per-sample seeding, the episode that runs real tools, traps, the family base.

A family draws a `Scene` (media, question, ground truth) from a seeded generator, then `solve`s it by calling
the real tools through an `Episode`; the observations are checked against the ground truth and a disagreement
raises `Rejected`, so the suite redraws the sample. Trap variants add a wrong call followed by its correction:
a plausible-but-wrong target in front of the golden steps, or a malformed version of any one golden call.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from PIL import Image

from pixelis.core.trajectory import Observation, Step, StepKind, ToolCall, Trajectory
from pixelis.tools.base import ToolContext, ToolLimits
from pixelis.tools.registry import ToolRegistry

GENERATOR_VERSION = "1.1"
DIFFICULTIES = ("simple", "medium", "hard")


class Rejected(Exception):
    """A drawn sample that cannot be used (tool observations disagree with the ground truth, no room to place
    an object, ...); `reason` is a short key counted in the suite manifest."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def sample_rng(seed: int, *keys: str | int) -> np.random.Generator:
    """A generator seeded from (seed, *keys), stable across processes and Python versions.

    Keys are hashed with sha256 (Python's `hash` is salted per process), so e.g. adding a family never
    changes the draws of another.
    """
    digest = hashlib.sha256(repr((int(seed), *keys)).encode()).digest()
    return np.random.default_rng(np.random.SeedSequence([int.from_bytes(digest[i:i + 4], "little")
                                                          for i in range(0, 16, 4)]))


@dataclass
class Scene:
    """A drawn task: input media, question, ground truth and whatever the family needs to solve it."""

    images: list[Image.Image]
    question: str
    answer: str
    target: dict[str, Any]
    knobs: dict[str, Any]
    video: list[Image.Image] | None = None
    info: dict[str, Any] = field(default_factory=dict)  # family-private ground truth (objects, boxes, ...)


class Episode:
    """Runs tool calls against the real registry and records them as steps of a trajectory."""

    def __init__(self, registry: ToolRegistry, scene: Scene, limits: ToolLimits | None = None):
        self.registry = registry
        self.scene = scene
        self.limits = limits or registry.limits
        self.steps: list[Step] = []
        self._correction: str | None = None

    @property
    def num_images(self) -> int:
        """How many images the conversation holds so far (the next tool image gets this index)."""
        return len(self.conversation_images())

    def conversation_images(self, upto: int | None = None) -> list[Image.Image]:
        """Input images, then every image a tool returned (in the first `upto` steps), in order."""
        out = list(self.scene.images)
        for s in self.steps[:upto]:
            if s.observation is not None:
                out.extend(s.observation.images)
        return out

    def execute(self, name: str, arguments: dict[str, Any], upto: int | None = None) -> Observation:
        """Run one call on the current conversation (or its first `upto` steps) without recording it."""
        ctx = ToolContext(images=self.conversation_images(upto), video=self.scene.video, limits=self.limits)
        return self.registry.execute(ToolCall(name, copy.deepcopy(arguments)), ctx)

    def call(self, thought: str, name: str, arguments: dict[str, Any], kind: StepKind = "normal") -> Observation:
        """Run a call and record it as a step. After a trap, the first normal call becomes the correction."""
        if kind == "normal" and self._correction is not None:
            thought, kind = f"{self._correction} {thought}", "correction"
            self._correction = None
        obs = self.execute(name, arguments)
        self.steps.append(Step(thought=thought, call=ToolCall(name, copy.deepcopy(arguments)), observation=obs,
                               kind=kind))
        return obs

    def record(self, thought: str, call: ToolCall, obs: Observation, kind: StepKind = "normal") -> None:
        """Record a call already executed with `execute` on this conversation (saves re-running a slow tool)."""
        self.steps.append(Step(thought=thought, call=ToolCall(call.name, copy.deepcopy(call.arguments)),
                               observation=obs, kind=kind))

    def expect_correction(self, note: str) -> None:
        """Prefix `note` to the next golden call's thought and mark that step as the correction."""
        self._correction = note


def require(condition: bool, reason: str, detail: str = "") -> None:
    """Raise `Rejected(reason)` unless `condition` holds."""
    if not condition:
        raise Rejected(reason, detail)


# ------------------------------------------------------------------------------------- malformed traps

# Each corruption turns a valid first call into one a careless policy might emit; the tool answers with an
# error observation (checked), and the hint is what the correction says to do differently.
Corruption = Callable[[str, dict[str, Any]], tuple[str, dict[str, Any], str] | None]


def _swap_box(name: str, args: dict[str, Any]):
    if "bbox" not in args:
        return None
    x1, y1, x2, y2 = args["bbox"]
    return name, {**args, "bbox": [x2, y1, x1, y2]}, "x1 must be smaller than x2"


def _beyond_grid(name: str, args: dict[str, Any]):
    key = "bbox" if "bbox" in args else "point" if "point" in args else None
    if key is None:
        return None
    return name, {**args, key: [v * 2 + 1000 for v in args[key]]}, "coordinates are on the 0-1000 grid"


def _missing_argument(name: str, args: dict[str, Any]):
    for key in ("bbox", "point", "frames", "event"):
        if key in args:
            return name, {k: v for k, v in args.items() if k != key}, f"'{key}' is required"
    return None


def _wrong_image(name: str, args: dict[str, Any]):
    if "image" not in args:
        return None
    return name, {**args, "image": int(args["image"]) + 3}, "that image index does not exist yet"


def _wrong_frame(name: str, args: dict[str, Any]):
    if name == "track_object":
        return name, {**args, "start_frame": 99}, "frames are numbered from 0 to the last frame shown"
    if "frames" in args:
        return name, {**args, "frames": [99]}, "frames are numbered from 0 to the last frame shown"
    return None


def _unknown_tool(name: str, args: dict[str, Any]):
    wrong = {"zoom_in": "zoom", "read_text": "ocr", "get_properties": "properties", "track_object": "track",
             "segment_object_at": "segment", "localize_event": "find_event", "select_frames": "frames"}
    return wrong.get(name, name + "_tool"), args, f"the tool is called {name}"


CORRUPTIONS: tuple[Corruption, ...] = (_swap_box, _beyond_grid, _missing_argument, _wrong_image, _wrong_frame,
                                       _unknown_tool)


def add_malformed_trap(ep: Episode, rng: np.random.Generator) -> None:
    """Put a malformed version of one golden call (drawn at random) in front of it, and make it the correction.

    The tool must answer the malformed call with an error; an error adds no image, so the image indices of
    every later step stay right. Later turns matter as much as the first: a policy's mistakes come anywhere.
    """
    golden = [i for i, s in enumerate(ep.steps) if s.kind == "normal" and s.call is not None]
    require(bool(golden), "trap_not_possible", "the golden trajectory makes no call")
    at = golden[int(rng.integers(len(golden)))]
    step = ep.steps[at]
    for i in rng.permutation(len(CORRUPTIONS)):
        made = CORRUPTIONS[int(i)](step.call.name, copy.deepcopy(step.call.arguments))
        if made is None:
            continue
        name, args, hint = made
        obs = ep.execute(name, args, upto=at)
        if obs.error is None:
            continue
        note = f"That call failed ({obs.error.kind}): {hint}. Retrying with fixed arguments."
        ep.steps[at:at + 1] = [
            Step(thought=step.thought, call=ToolCall(name, args), observation=obs, kind="trap"),
            Step(thought=f"{note} {step.thought}", call=step.call, observation=step.observation,
                 kind="correction"),
        ]
        return
    raise Rejected("trap_not_possible", f"no corruption of {step.call.name} produced an error")


# ------------------------------------------------------------------------------------------ families

class TaskFamily:
    """Base of a task family: subclasses draw scenes and solve them with real tool calls.

    Subclasses set `name`, `tiers` (nominal knobs per difficulty) and implement `make_scene`, `first_call`
    and `solve`; `semantic_trap` is optional.
    """

    name: str = ""
    tiers: dict[str, dict[str, Any]] = {}

    def make_scene(self, rng: np.random.Generator, difficulty: str) -> Scene:
        """Draw the media, question and ground truth."""
        raise NotImplementedError

    def first_call(self, scene: Scene) -> tuple[str, ToolCall]:
        """Thought and call of the first golden step (semantic traps reuse its thought)."""
        raise NotImplementedError

    def solve(self, ep: Episode, scene: Scene) -> str:
        """Run the golden steps, checking observations against the ground truth; return the final thought."""
        raise NotImplementedError

    def semantic_trap(self, ep: Episode, scene: Scene, rng: np.random.Generator) -> bool:
        """Record plausible-but-wrong steps and set up their correction; False when this scene offers none."""
        return False

    def generate(
        self, rng: np.random.Generator, difficulty: str, registry: ToolRegistry, trap: bool = False,
        trap_rng: np.random.Generator | None = None, sample_id: str = "",
    ) -> Trajectory:
        """One complete sample with its golden trajectory; raises `Rejected` when the draw is unusable."""
        if difficulty not in self.tiers:
            raise ValueError(f"family {self.name!r} has no difficulty {difficulty!r}; known: {list(self.tiers)}")
        scene = self.make_scene(rng, difficulty)
        ep = Episode(registry, scene)
        trap_rng = trap_rng if trap_rng is not None else rng
        semantic = trap and trap_rng.random() < 0.5 and self.semantic_trap(ep, scene, trap_rng)
        final_thought = self.solve(ep, scene)
        if trap and not semantic:
            add_malformed_trap(ep, trap_rng)
        return Trajectory(
            id=sample_id or f"{self.name}-{difficulty}",
            question=scene.question,
            images=list(scene.images),
            video=None if scene.video is None else list(scene.video),
            steps=ep.steps,
            final_thought=final_thought,
            answer=scene.answer,
            target=scene.target,
            metadata={"family": self.name, "difficulty": difficulty, "knobs": scene.knobs, "source": "synth",
                      "trap": trap, "generator_version": GENERATOR_VERSION},
        )
