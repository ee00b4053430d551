"""The micro benchmark: the hot pieces of Pixelis timed in one process, on inputs generated from one seed.

Items (`ITEMS`; `pixelis bench micro --only NAME` picks some):
- `tool.<name>`: each pixel tool through `ToolRegistry.execute` (validation, span, observation) against the raw
  library calls it makes, replayed with the very arguments it passed (recorded on a first call by wrapping those
  library functions), interleaved call by call. Goal: wrapper / raw <= 1.05.
- `trace.span_log`: a `TracedOperation` span with one log line inside (trace-id filter and formatter). Goal: 20 µs.
- `chat.render_sft`, `sft.collate_b8`: rendering a trajectory with SFT's masks, collating 8 of them.
- `model.forward_b1|b8`, `model.generate_b1|b8`: a forward pass of the tiny xs model on SFT batches, and greedy
  generation per token (16 tokens, prefill included) from the first-turn prompt.
- `agent.turn_overhead`: the agent loop's cost per turn outside generation and pixel work: a replayed policy
  calling a tool that only echoes its argument.
- `agent.parallel_tools`: one turn of 4 replayed rollouts, each segmenting the scene's shape (`get_properties` on a
  point), with the calls in one thread per CPU core against one at a time (`agent.tool_workers: 1`).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from fnmatch import fnmatch
from functools import cached_property
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw

from pixelis.bench.timing import SCHEMA, Stats, Timed, time_interleaved
from pixelis.core.errors import DataError
from pixelis.core.repro import get_system_info
from pixelis.core.trajectory import Observation, Step, ToolCall, Trajectory, to_messages
from pixelis.data.render import Mover, Shape, background, draw_label, draw_shape, font, render_video
from pixelis.tools import segment, temporal
from pixelis.tools.base import Tool, ToolArgs, ToolContext
from pixelis.tools.geometry import to_grid_box, to_grid_point
from pixelis.tools.ocr import rapidocr_engine
from pixelis.tools.registry import ToolRegistry

TOOL_RATIO_GOAL = 1.05
TRACE_GOAL_S = 20e-6
NEW_TOKENS = 16
SCENE_SIZE = (640, 480)
VIDEO_SIZE, VIDEO_FRAMES = (320, 240), 8


@dataclass(frozen=True)
class Item:
    """One timed piece: `measure(inputs, repeats, warmup)` returns its result fields."""

    name: str
    group: str
    description: str
    measure: Callable[[Inputs, int, int], dict[str, Any]]


ITEMS: dict[str, Item] = {}


def select(only: Sequence[str]) -> list[Item]:
    """The items named by `only` (exact names, groups, or globs like `tool.*`); all items when empty."""
    if not only:
        return list(ITEMS.values())
    unknown = [p for p in only if not any(fnmatch(i.name, p) or i.group == p for i in ITEMS.values())]
    if unknown:
        raise DataError(f"--only {', '.join(unknown)}: no such item; items: {', '.join(ITEMS)} (or a group: "
                        f"{', '.join(sorted({i.group for i in ITEMS.values()}))})")
    return [i for i in ITEMS.values() if any(fnmatch(i.name, p) or i.group == p for p in only)]


def run_micro(seed: int, repeats: int, warmup: int, only: Sequence[str] = (),
              on_item: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure the selected items in this process; returns the results document (`SCHEMA`)."""
    items = select(only)
    with tempfile.TemporaryDirectory(prefix="pixelis-micro-") as work:
        inputs = Inputs(seed, work)
        results = []
        for item in items:
            if on_item is not None:
                on_item(item.name)
            results.append({"name": item.name, "group": item.group, "description": item.description,
                            **item.measure(inputs, repeats, warmup)})
    info = get_system_info()
    return {"schema": SCHEMA, "seed": seed, "repeats": repeats, "warmup": warmup,
            "inputs_sha256": inputs.sha256(), "torch_threads": torch.get_num_threads(),
            "system": {k: info.get(k) for k in ("python", "torch", "cpu_model", "cpu_count", "git", "determinism")},
            "items": results}


def _item(name: str, group: str, description: str) -> Callable[[Callable[..., dict[str, Any]]], Any]:
    def register(measure: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        ITEMS[name] = Item(name, group, description, measure)
        return measure
    return register


def _result(stats: Stats, unit: str = "s", work: dict[str, Any] | None = None, baseline: dict[str, Any] | None = None,
            ratio: float | None = None, goal: dict[str, float] | None = None,
            goal_met: bool | None = None) -> dict[str, Any]:
    """One item's fields: its statistics (seconds per `unit`), the raw baseline and ratio, the goal, its work."""
    return {"unit": unit, **stats.to_dict(), "baseline": baseline, "ratio": ratio, "goal": goal, "goal_met": goal_met,
            "work": work or {}}


# ------------------------------------------------------------------------------------------------ inputs


@dataclass
class Scene:
    """The fixed image: a shape and a text label on a generated background, with their pixel boxes."""

    image: Image.Image
    shape_box: tuple[int, int, int, int]
    label_box: tuple[int, int, int, int]
    label: str

    def grid(self, box: tuple[int, int, int, int], margin: int = 0) -> list[int]:
        w, h = self.image.size
        x1, y1, x2, y2 = box
        return to_grid_box((max(0, x1 - margin), max(0, y1 - margin), min(w, x2 + margin), min(h, y2 + margin)), w, h)


@dataclass
class Inputs:
    """Everything the items run on, built on first use from `seed` (the same seed gives the same inputs)."""

    seed: int
    work_dir: str
    registry: ToolRegistry = field(default_factory=ToolRegistry.default)

    @cached_property
    def scene(self) -> Scene:
        rng = np.random.default_rng(self.seed)
        image = background(rng, SCENE_SIZE)
        draw = ImageDraw.Draw(image)
        x, y = int(rng.integers(40, 200)), int(rng.integers(60, 300))
        shape = Shape(str(rng.choice(["circle", "square", "star"])), str(rng.choice(["red", "blue", "green"])),
                      (x, y, x + 96, y + 96))
        draw_shape(draw, shape)
        label = "".join(rng.choice(list("ABCDEFGHJKLMNPRSTUVWXYZ"), 5))
        center = (float(rng.integers(400, 520)), float(rng.integers(100, 380)))
        return Scene(image, shape.box, draw_label(draw, center, label, font(26, bold=True)), label)

    @cached_property
    def video(self) -> list[Image.Image]:
        """Frames of a square moving right and of a circle appearing half-way, on a generated background."""
        rng = np.random.default_rng([self.seed, 1])
        newcomer = Mover(Shape("circle", "green", (200, 150, 244, 194)), visible=(VIDEO_FRAMES // 2, 10**9))
        return render_video(background(rng, VIDEO_SIZE), [self.mover, newcomer], VIDEO_FRAMES)

    @cached_property
    def mover(self) -> Mover:
        rng = np.random.default_rng([self.seed, 2])
        x, y = int(rng.integers(10, 40)), int(rng.integers(20, 70))
        return Mover(Shape("square", "blue", (x, y, x + 40, y + 40)), velocity=(12.0, 0.0))

    @cached_property
    def policy(self) -> tuple[Any, Any]:
        """The tiny xs model (float32, CPU) and its processor, built offline from the seed."""
        from pixelis.model.load import load_policy
        from pixelis.model.tiny import build_tiny_model

        return load_policy(build_tiny_model(os.path.join(self.work_dir, "tiny"), seed=self.seed, size="xs"),
                           dtype="float32", device="cpu")

    @cached_property
    def system_prompt(self) -> str:
        from pixelis.agent.prompt import ToolPrompt

        return ToolPrompt.build(self.registry.schemas(), "compact").system or ""

    @cached_property
    def trajectory(self) -> Trajectory:
        """A golden-style trajectory on the scene: zoom_in and get_properties with their real observations."""
        scene = self.scene
        images: list[Image.Image] = [scene.image]
        steps = []
        for thought, call in (("Zoom in on the label.", self.tool_calls["zoom_in"]),
                              ("Check the shape.", self.tool_calls["get_properties"])):
            observation = self.registry.execute(call, self.registry.context(images))
            images += observation.images
            steps.append(Step(thought=thought, call=call, observation=observation))
        return Trajectory(id=f"micro-{self.seed}", question="What does the label next to the shape say?",
                          images=[scene.image], steps=steps, final_thought=f"The label reads {scene.label}.",
                          answer=scene.label)

    @cached_property
    def tool_calls(self) -> dict[str, ToolCall]:
        scene = self.scene
        w, h = scene.image.size
        sx1, sy1, sx2, sy2 = scene.shape_box
        vw, vh = VIDEO_SIZE
        return {
            "zoom_in": ToolCall("zoom_in", {"image": 0, "bbox": scene.grid(scene.label_box, 12)}),
            "read_text": ToolCall("read_text", {"image": 0, "bbox": scene.grid(scene.label_box, 12)}),
            "segment_object_at": ToolCall("segment_object_at", {
                "image": 0, "point": to_grid_point(((sx1 + sx2) / 2, (sy1 + sy2) / 2), w, h)}),
            "get_properties": ToolCall("get_properties", {"image": 0, "bbox": scene.grid(scene.shape_box, 10)}),
            "track_object": ToolCall("track_object", {"bbox": to_grid_box(self.mover.shape.box, vw, vh)}),
            "localize_event": ToolCall("localize_event", {"bbox": to_grid_box((180, 130, 264, 214), vw, vh),
                                                          "event": "appear"}),
            "select_frames": ToolCall("select_frames", {"frames": [0, VIDEO_FRAMES - 1]}),
        }

    def sha256(self) -> str:
        """Fingerprint of the generated scene and video (what `same seed, same inputs` is checked on)."""
        digest = hashlib.sha256()
        for image in [self.scene.image, *self.video]:
            digest.update(image.tobytes())
        return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- tools


@contextmanager
def _recording(targets: Sequence[tuple[Any, str]]) -> Iterator[list[tuple[Callable[..., Any], tuple, dict]]]:
    """Wrap each `owner.name` so that outermost calls are recorded (function, args, kwargs; arrays copied as
    they were on entry, since e.g. GrabCut writes into its mask); the originals come back on exit."""
    calls: list[tuple[Callable[..., Any], tuple, dict]] = []
    depth = [0]
    saved = [(owner, name, vars(owner).get(name), getattr(owner, name)) for owner, name in targets]

    def recorder(original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if depth[0] == 0:
                calls.append((original, _fresh(args), _fresh(kwargs)))
            depth[0] += 1
            try:
                return original(*args, **kwargs)
            finally:
                depth[0] -= 1
        return wrapped

    try:
        for owner, name, _, original in saved:
            setattr(owner, name, recorder(original))
        yield calls
    finally:
        for owner, name, own, _ in saved:
            if own is None:
                delattr(owner, name)
            else:
                setattr(owner, name, own)


def _fresh(value: Any) -> Any:
    """A copy of every numpy array in `value` (tuples, lists and dicts walked); anything else as is."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, (tuple, list)):
        return type(value)(_fresh(v) for v in value)
    if isinstance(value, dict):
        return {k: _fresh(v) for k, v in value.items()}
    return value


def _replay(calls: list[tuple[Callable[..., Any], tuple, dict]], *prepared: tuple[tuple, dict]) -> None:
    for (fn, _, _), (args, kwargs) in zip(calls, prepared):
        fn(*args, **kwargs)


def _tool_measure(tool: str, raw: str, targets: Callable[[], Sequence[tuple[Any, str]]]) -> None:
    """Register `tool.<tool>`: the registry call vs the replayed library calls `targets()` names (`raw` says which)."""

    def measure(inputs: Inputs, repeats: int, warmup: int) -> dict[str, Any]:
        call, registry = inputs.tool_calls[tool], inputs.registry
        images, video = [inputs.scene.image], inputs.video

        def wrapper() -> Observation:
            return registry.execute(call, registry.context(images, video))

        with _recording(targets()) as calls:
            observation = wrapper()
        if observation.error is not None:
            raise RuntimeError(f"micro benchmark: {tool} failed on its input: {observation.render_text()}")
        replayed = Timed(lambda *prepared: _replay(calls, *prepared),
                         prepare=lambda: tuple((_fresh(args), _fresh(kwargs)) for _, args, kwargs in calls))
        ours, theirs = time_interleaved([Timed(wrapper), replayed], repeats, warmup)
        ratio = ours.median / theirs.median
        return _result(ours, work={"observation": observation.text[:120], "library_calls": len(calls),
                                   "images_out": len(observation.images)},
                       baseline={"name": raw, **theirs.to_dict()}, ratio=ratio,
                       goal={"ratio_max": TOOL_RATIO_GOAL}, goal_met=ratio <= TOOL_RATIO_GOAL)

    _item(f"tool.{tool}", "tools", f"{tool} through the registry vs {raw}")(measure)


_tool_measure("zoom_in", "cv2.resize of the crop", lambda: [(cv2, "resize")])
_tool_measure("read_text", "RapidOCR on the region", lambda: [(type(rapidocr_engine()), "__call__")])
# GrabCut's result and time depend on OpenCV's RNG, which the tool seeds first: the seeding is replayed too.
_tool_measure("segment_object_at", "skimage felzenszwalb + cv2.grabCut",
              lambda: [(segment, "felzenszwalb"), (cv2, "setRNGSeed"), (cv2, "grabCut")])
_tool_measure("get_properties", "cv2.grabCut in the box", lambda: [(cv2, "setRNGSeed"), (cv2, "grabCut")])
_tool_measure("track_object", "cv2.matchTemplate per frame", lambda: [(cv2, "matchTemplate")])
_tool_measure("localize_event", "cv2.GaussianBlur per frame + skimage threshold_otsu",
              lambda: [(cv2, "GaussianBlur"), (temporal, "threshold_otsu")])
_tool_measure("select_frames", "PIL convert of the frames", lambda: [(Image.Image, "convert")])


# ---------------------------------------------------------------------------------------- tracing


@_item("trace.span_log", "tracing", "a TracedOperation span with one log line inside (trace-id filter + formatter)")
def _span_and_log(inputs: Inputs, repeats: int, warmup: int) -> dict[str, Any]:
    from pixelis.core.tracing import TraceContextFilter, TracedOperation, TracingFormatter

    logger = logging.getLogger("pixelis.bench.micro")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TracingFormatter())
    handler.addFilter(TraceContextFilter())
    saved = (logger.handlers[:], logger.level, logger.propagate)
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.INFO)

    def span_and_log() -> None:
        with TracedOperation("bench.step", "bench", {"seed": inputs.seed}):
            logger.info("micro benchmark step %d", inputs.seed)

    def rewind() -> tuple[()]:
        stream.seek(0)
        stream.truncate()
        return ()

    try:
        (stats,) = time_interleaved([Timed(span_and_log, prepare=rewind, inner=200)], repeats, warmup)
        last_line = stream.getvalue().splitlines()[-1]
    finally:
        logger.handlers, logger.level, logger.propagate = saved
    return _result(stats, work={"log_line": last_line}, goal={"median_max_s": TRACE_GOAL_S},
                   goal_met=stats.median <= TRACE_GOAL_S)


# ----------------------------------------------------------------------------- rendering and collating


@_item("chat.render_sft", "chat", "render_sft_sample: a 2-call trajectory with its images through the processor")
def _render(inputs: Inputs, repeats: int, warmup: int) -> dict[str, Any]:
    from pixelis.train.sft_batch import render_sft_sample

    _, processor = inputs.policy
    traj = inputs.trajectory

    def render() -> Any:
        return render_sft_sample(processor, traj, system=inputs.system_prompt)

    sample = render()
    (stats,) = time_interleaved([Timed(render)], repeats, warmup)
    return _result(stats, work={"tokens": len(sample), "trained_tokens": int(sample.rendered.assistant_mask.sum()),
                                "images": len(traj.conversation_images())})


@_item("sft.collate_b8", "chat", "collate_sft of 8 rendered trajectories (padding, masks, weights)")
def _collate(inputs: Inputs, repeats: int, warmup: int) -> dict[str, Any]:
    from pixelis.train.sft_batch import collate_sft

    samples, pad_id = _rendered(inputs, 8)
    batch = collate_sft(samples, pad_id, 2.0)
    (stats,) = time_interleaved([Timed(lambda: collate_sft(samples, pad_id, 2.0))], repeats, warmup)
    return _result(stats, work={"input_ids": list(batch["input_ids"].shape)})


def _rendered(inputs: Inputs, batch: int) -> tuple[list[Any], int]:
    from pixelis.train.sft_batch import render_sft_sample

    _, processor = inputs.policy
    sample = render_sft_sample(processor, inputs.trajectory, system=inputs.system_prompt)
    return [sample] * batch, processor.tokenizer.pad_token_id


# ------------------------------------------------------------------------------------------ the model


def _forward_measure(batch_size: int) -> None:
    def measure(inputs: Inputs, repeats: int, warmup: int) -> dict[str, Any]:
        from pixelis.model.chat import MODEL_INPUT_KEYS
        from pixelis.train.sft_batch import collate_sft

        model, _ = inputs.policy
        samples, pad_id = _rendered(inputs, batch_size)
        batch = collate_sft(samples, pad_id)
        model_inputs = {k: batch[k] for k in MODEL_INPUT_KEYS if k in batch}

        @torch.no_grad()
        def forward() -> Any:
            return model(**model_inputs)

        loss = float(forward().loss)
        (stats,) = time_interleaved([Timed(forward)], repeats, warmup)
        return _result(stats, work={"input_ids": list(batch["input_ids"].shape), "loss": loss})

    _item(f"model.forward_b{batch_size}", "model",
          f"tiny xs model forward (no grad, with loss) on an SFT batch of {batch_size}")(measure)


def _generate_measure(batch_size: int) -> None:
    def measure(inputs: Inputs, repeats: int, warmup: int) -> dict[str, Any]:
        from pixelis.model.chat import build_generation_batch

        model, processor = inputs.policy
        first_turn = Trajectory(id="prompt", question=inputs.trajectory.question, images=[inputs.scene.image])
        messages, images = to_messages(first_turn, include_answer=False, system=inputs.system_prompt)
        prompt = build_generation_batch(processor, [(messages, images, None)] * batch_size)

        @torch.no_grad()
        def generate() -> torch.Tensor:
            return model.generate(**prompt, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                                  pad_token_id=processor.tokenizer.pad_token_id)

        new = generate().shape[1] - prompt["input_ids"].shape[1]
        (stats,) = time_interleaved([Timed(generate, per=NEW_TOKENS)], repeats, warmup)
        return _result(stats, unit="s/token", work={"batch": batch_size, "prompt_tokens": prompt["input_ids"].shape[1],
                                                    "new_tokens": new})

    _item(f"model.generate_b{batch_size}", "model",
          f"tiny xs model greedy generation at batch {batch_size}, per token ({NEW_TOKENS} tokens, prefill "
          "included)")(measure)


for _batch in (1, 8):
    _forward_measure(_batch)
for _batch in (1, 8):
    _generate_measure(_batch)


# ------------------------------------------------------------------------------------------ the agent


class EchoArgs(ToolArgs):
    text: str


class Echo(Tool):
    """A tool without pixel work: what remains of a turn is the agent loop's and the registry's own cost."""

    name = "echo"
    description = "Repeat the text."
    Args = EchoArgs

    def run(self, ctx: ToolContext, args: EchoArgs) -> Observation:
        return Observation(text=args.text)


@_item("agent.turn_overhead", "agent", "Agent.run per turn outside generation and pixel work (replayed policy, "
                                       "an echo tool, 4 calls + answer)")
def _agent_turns(inputs: Inputs, repeats: int, warmup: int) -> dict[str, Any]:
    from pixelis.agent.loop import Agent
    from pixelis.agent.policies import ReplayPolicy

    steps = [Step(thought=f"Step {i}.", call=ToolCall("echo", {"text": f"turn {i}"}), observation=Observation())
             for i in range(4)]
    script = Trajectory(id="micro-agent", question="Echo four times, then answer.", images=[inputs.scene.image],
                        steps=steps, answer="done")
    agent = Agent(ReplayPolicy([script]), tools=ToolRegistry([Echo()]), seed=inputs.seed, tool_prompt="compact")
    rollout = agent.run(script)
    turns = len(rollout.steps) + 1
    (stats,) = time_interleaved([Timed(lambda: agent.run(script), per=turns)], repeats, warmup)
    return _result(stats, unit="s/turn", work={"turns": turns, "termination": rollout.metadata["termination"],
                                               "observations": [s.observation.text for s in rollout.steps]})


PARALLEL_ROLLOUTS = 4


@_item("agent.parallel_tools", "agent", f"one turn of {PARALLEL_ROLLOUTS} rollouts calling get_properties on a point: "
                                        "tool calls in one thread per core vs one at a time")
def _agent_parallel_tools(inputs: Inputs, repeats: int, warmup: int) -> dict[str, Any]:
    from pixelis.agent.loop import Agent
    from pixelis.agent.policies import ReplayPolicy

    point = inputs.tool_calls["segment_object_at"].arguments["point"]
    call = ToolCall("get_properties", {"image": 0, "point": point})
    scripts = [Trajectory(id=f"micro-parallel-{i}", question="What shape is it?", images=[inputs.scene.image],
                          steps=[Step(call=call, observation=Observation())], answer="done")
               for i in range(PARALLEL_ROLLOUTS)]
    agents = {workers: Agent(ReplayPolicy(scripts), tools=inputs.registry, seed=inputs.seed, tool_prompt="compact",
                             batch_size=PARALLEL_ROLLOUTS, tool_workers=workers) for workers in (None, 1)}
    observations = {w: [t.steps[0].observation.text for t in agent.run_many(scripts)] for w, agent in agents.items()}
    parallel, serial = time_interleaved([Timed(lambda a=agent: a.run_many(scripts), per=PARALLEL_ROLLOUTS)
                                         for agent in agents.values()], repeats, warmup)
    ratio = parallel.median / serial.median
    return _result(parallel, unit="s/call", ratio=ratio,
                   baseline={"name": "tool_workers=1 (one call at a time)", **serial.to_dict()},
                   work={"tool_workers": agents[None].tool_workers, "calls": PARALLEL_ROLLOUTS,
                         "same_observations": observations[None] == observations[1],
                         "observation": observations[None][0]})
