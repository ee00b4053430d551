"""Pixelis's tools and rewards for TRL's `GRPOTrainer` (``environment_factory=`` and ``reward_funcs=``).

TRL runs its own tool loop and parser, so this is not how Pixelis trains (``pixelis train --mode rft`` rolls
out through the project's agent loop, token-in/token-out); it lets TRL users train on the same pixel tools and
rewards, and it is the baseline of ``benchmarks/rft_throughput.py``::

    from pixelis.integrations.trl import PixelisToolEnv, trl_dataset, trl_rewards
    trainer = GRPOTrainer(model=MODEL_DIR, args=GRPOConfig(...), train_dataset=trl_dataset(samples),
                          environment_factory=PixelisToolEnv, reward_funcs=trl_rewards({"task": 1.0}))

`PixelisToolEnv` exposes every tool of the default registry as a typed method with a Google-style docstring
generated from the tool's JSON schema (TRL reads both to render the tool list); a tool that returns images
answers with image content blocks, which TRL feeds to the VLM's next turn. Each rollout's calls and
observations are kept, so the reward functions rebuild the rollout as a Pixelis `Trajectory` and score it
with the very reward classes of the Pixelis recipe. Curiosity and coherence's embedding term need the
policy's hidden states per turn, which TRL does not give reward functions: `trl_rewards` refuses curiosity,
and coherence keeps only its repeat and loop penalties.
"""

from __future__ import annotations

import inspect
import json
from typing import Any, Callable, Mapping, Sequence

from PIL import Image

from pixelis.agent.prompt import compact_tool_text
from pixelis.core.trajectory import ParseError, Step, ToolCall, Trajectory, parse_assistant_text
from pixelis.tools.registry import ToolRegistry
from pixelis.train.rewards import RolloutRecord, build_rewards

_JSON_TYPES: dict[str, type] = {"integer": int, "number": float, "string": str, "boolean": bool}


def _python_type(schema: Mapping[str, Any]) -> Any:
    if schema.get("type") == "array":
        return list[_python_type(schema.get("items", {}))]  # type: ignore[misc]
    return _JSON_TYPES.get(schema.get("type", "string"), str)


def _tool_method(schema: Mapping[str, Any]) -> Callable[..., Any]:
    """A method `name(self, **arguments)` with the signature and docstring TRL (transformers) reads."""
    fn = schema["function"]
    name, params = fn["name"], fn.get("parameters", {})
    required = set(params.get("required", []))
    properties = params.get("properties", {})

    def method(self: PixelisToolEnv, **arguments: Any) -> str | list[dict[str, Any]]:
        return self._call(name, {k: v for k, v in arguments.items() if v is not None})

    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    annotations: dict[str, Any] = {}
    # Required arguments first: a Python signature cannot put a defaulted parameter before one without.
    for arg in sorted(properties, key=lambda a: a not in required):
        kind = _python_type(properties[arg])
        annotations[arg] = kind if arg in required else kind | None
        parameters.append(inspect.Parameter(arg, inspect.Parameter.KEYWORD_ONLY, annotation=annotations[arg],
                                            default=inspect.Parameter.empty if arg in required else None))
    method.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    method.__annotations__ = annotations
    method.__name__ = method.__qualname__ = name
    args_doc = "".join(f"\n    {arg}: {properties[arg].get('description', arg)}" for arg in properties)
    method.__doc__ = f"{fn['description']}\n\nArgs:{args_doc}" if properties else fn["description"]
    return method


class PixelisToolEnv:
    """A TRL environment over one sample's media: the registry's tools as methods, and the rollout's record.

    TRL builds one instance per concurrent rollout and calls `reset(**row)` before each; the row's `images`
    (and `video` frames, when present) are what the tools see. Images a tool returns get the next indices,
    as in the Pixelis agent loop.
    """

    registry = ToolRegistry.default()

    def __init__(self) -> None:
        self.images: list[Image.Image] = []
        self.video: list[Image.Image] | None = None
        self.steps: list[Step] = []

    def reset(self, images: Sequence[Image.Image] | None = None, video: Sequence[Image.Image] | None = None,
              **row: Any) -> None:
        """Start a rollout on this row's media."""
        self.images = list(images or [])
        self.video = list(video) if video else None
        self.steps = []

    def _call(self, name: str, arguments: dict[str, Any]) -> str | list[dict[str, Any]]:
        """Run one tool call through the registry (errors come back as text) and record it."""
        call = ToolCall(name, arguments)
        images = self.images + [img for s in self.steps for img in s.observation.images]
        observation = self.registry.execute(call, self.registry.context(images, self.video))
        self.steps.append(Step(call=call, observation=observation))
        text = observation.render_text()
        if not observation.images:
            return text
        return [*({"type": "image", "image": img} for img in observation.images), {"type": "text", "text": text}]


for _schema in PixelisToolEnv.registry.schemas():
    setattr(PixelisToolEnv, _schema["function"]["name"], _tool_method(_schema))


def trl_dataset(samples: Sequence[Trajectory], system: str | None = None) -> Any:
    """A `datasets.Dataset` TRL's GRPOTrainer can train on: `prompt` (the user turn, after a `system` message
    when given), `images`, `video`, `sample_id`, `question` and `target` (JSON) per sample."""
    from datasets import Dataset

    head = [{"role": "system", "content": system}] if system else []
    rows = []
    for sample in samples:
        rows.append({"prompt": [*head, {"role": "user", "content": sample.question}], "images": list(sample.images),
                     "video": list(sample.video) if sample.video else None, "sample_id": sample.id,
                     "question": sample.question, "target": json.dumps(sample.target)})
    return Dataset.from_list(rows)


def compact_tool_prompt(processor: Any) -> str:
    """Show TRL's policy the compact tool list (`agent.tool_prompt: compact`) instead of the JSON schemas: makes
    `processor`'s template ignore `tools=` (in place) and returns the system text for `trl_dataset(system=...)`.

    TRL renders tools only through the chat template and cannot be given another text for them, so the template
    drops them; TRL still runs and parses the environment's calls, with the parser it derives from the original
    template (set here, before the change)."""
    from trl.chat_template_utils import add_response_schema

    add_response_schema(processor)
    drop_tools = "{%- set tools = none %}"
    processor.chat_template = drop_tools + processor.chat_template
    processor.tokenizer.chat_template = drop_tools + processor.tokenizer.chat_template
    return compact_tool_text(PixelisToolEnv.registry.schemas())


def _final_text(completion: Any) -> str:
    """The text of the last assistant message of a TRL completion (a message list, or plain text)."""
    if isinstance(completion, str):
        return completion
    message = next((m for m in reversed(completion) if m.get("role") == "assistant"), {})
    content = message.get("content") or ""
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if part.get("type") == "text")
    return content


def rollout_records(completions: Sequence[Any], environments: Sequence[PixelisToolEnv], sample_id: Sequence[str],
                    question: Sequence[str], target: Sequence[str]) -> list[RolloutRecord]:
    """Rebuild TRL's rollouts as Pixelis `RolloutRecord`s; rollouts of one sample share a group."""
    groups: dict[str, int] = {}
    records = []
    for completion, env, sid, q, tgt in zip(completions, environments, sample_id, question, target, strict=True):
        traj = Trajectory(id=sid, question=q, images=env.images, video=env.video, steps=list(env.steps),
                          target=json.loads(tgt))
        text = _final_text(completion)
        try:
            parsed = parse_assistant_text(text)
            if parsed.answer is not None:
                traj.final_thought, traj.answer = parsed.thought, parsed.answer
        except ParseError:
            traj.steps.append(Step(raw_text=text))
        records.append(RolloutRecord(traj, groups.setdefault(sid, len(groups))))
    return records


def trl_rewards(weights: Mapping[str, float], params: Mapping[str, Mapping[str, Any]] | None = None
                ) -> list[Callable[..., list[float]]]:
    """The Pixelis reward terms with a non-zero weight in `weights`, each as a TRL reward function returning
    weight * term (so TRL's default `reward_weights` of 1 sum them as the Pixelis recipe does); `params` are
    the terms' constructor arguments, as in `rft.reward_params`."""
    if "curiosity" in weights:
        raise ValueError("the curiosity reward needs the policy's per-turn hidden states, which TRL does not pass "
                         "to reward functions; use `pixelis train --mode rft` for it")
    terms = build_rewards(weights, params)

    def as_trl(term: Any, weight: float) -> Callable[..., list[float]]:
        def reward(prompts: Any, completions: Sequence[Any], environments: Sequence[PixelisToolEnv],
                   sample_id: Sequence[str], question: Sequence[str], target: Sequence[str],
                   **_: Any) -> list[float]:
            records = rollout_records(completions, environments, sample_id, question, target)
            return [weight * value for value in term(records)]

        reward.__name__ = f"pixelis_{term.name}"
        return reward

    return [as_trl(term, weights[name]) for name, term in terms.items()]
