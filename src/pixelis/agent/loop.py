"""The multi-turn agent loop: generate -> parse -> run tool -> observe -> repeat, until an answer or a limit."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Protocol

from pixelis.agent.prompt import ToolPrompt, ToolPromptMode
from pixelis.core.repro import derive_seed
from pixelis.core.tracing import TracedOperation
from pixelis.core.trajectory import (
    Observation,
    ParseError,
    Step,
    ToolErrorInfo,
    Trajectory,
    parse_assistant_text,
    to_messages,
)
from pixelis.tools.base import ToolContext
from pixelis.tools.registry import ToolRegistry

log = logging.getLogger("pixelis.agent")

TERMINATIONS = ("answer", "max_turns", "max_tool_calls", "max_new_tokens", "max_images", "max_context_pixels",
                "wall_time")


@dataclass(frozen=True)
class AgentLimits:
    """Bounds on one rollout; hitting one ends the trajectory with that reason."""

    max_tool_calls: int = 6
    max_turns: int = 8
    max_new_tokens: int = 128
    max_images: int = 8
    max_context_pixels: int = 4_000_000
    wall_time_s: float = 120.0

    @classmethod
    def from_config(cls, agent_cfg: Any) -> "AgentLimits":
        return cls(**{f: getattr(agent_cfg, f) for f in cls.__dataclass_fields__})


@dataclass(frozen=True)
class SamplingParams:
    """How the policy samples tokens; greedy when do_sample is False."""

    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0

    @classmethod
    def from_config(cls, agent_cfg: Any) -> "SamplingParams":
        return cls(do_sample=agent_cfg.do_sample, temperature=agent_cfg.temperature, top_p=agent_cfg.top_p)


@dataclass
class GenerationRequest:
    """Everything a policy needs to produce the next assistant turn."""

    sample: Trajectory  # the partial trajectory so far (question, media, steps)
    messages: list[dict[str, Any]]
    images: list[Any]
    tools: list[dict[str, Any]] | None  # JSON schemas for the template's `tools=`; None when in the system text
    turn: int
    max_new_tokens: int
    sampling: SamplingParams
    seed: int


@dataclass
class Generation:
    """The policy's text for one turn; `truncated` when it stopped at max_new_tokens without finishing."""

    text: str
    num_tokens: int = 0
    truncated: bool = False


class Policy(Protocol):
    """Anything that writes the next assistant turn."""

    def generate(self, request: GenerationRequest) -> Generation: ...


class Agent:
    """Runs a policy against the pixel tools: `Agent(policy, tools, limits).run(sample) -> Trajectory`.

    `tools` is a `ToolRegistry` (its limits bound every tool call); `tool_prompt` picks how tools are shown.
    """

    def __init__(
        self,
        policy: Policy,
        tools: ToolRegistry | None = None,
        limits: AgentLimits | None = None,
        sampling: SamplingParams | None = None,
        seed: int = 0,
        tool_prompt: ToolPromptMode = "full",
    ):
        self.policy = policy
        self.tools = tools or ToolRegistry.default()
        self.limits = limits or AgentLimits()
        self.sampling = sampling or SamplingParams()
        self.seed = seed
        self.prompt = ToolPrompt.build(self.tools.schemas(), tool_prompt)

    def run(self, sample: Trajectory, sample_index: int = 0) -> Trajectory:
        """Roll out the policy on `sample` (its steps and answer are ignored) and return the new trajectory."""
        traj = replace(sample, steps=[], answer=None, final_thought="",
                       metadata={**sample.metadata, "policy": type(self.policy).__name__})
        with TracedOperation("agent.run", "agent", {"sample_id": sample.id}) as op:
            reason = self._loop(traj, sample_index)
            traj.metadata["termination"] = reason
            op.set_attribute("termination", reason)
            op.set_attribute("tool_calls", traj.num_tool_calls)
            log.debug("sample %s ended by %s after %d calls", sample.id, reason, traj.num_tool_calls)
        return traj

    def run_many(self, samples: Iterable[Trajectory],
                 on_done: Callable[[Trajectory], None] | None = None) -> list[Trajectory]:
        """Roll out every sample in order (seeded per sample); `on_done` is called after each one."""
        out = []
        for i, sample in enumerate(samples):
            traj = self.run(sample, sample_index=i)
            out.append(traj)
            if on_done is not None:
                on_done(traj)
        return out

    def _loop(self, traj: Trajectory, sample_index: int) -> str:
        start = time.monotonic()
        for turn in range(self.limits.max_turns):
            if time.monotonic() - start > self.limits.wall_time_s:
                return "wall_time"
            with TracedOperation("agent.turn", "agent", {"turn": turn}) as op:
                messages, images = to_messages(traj, include_answer=False, system=self.prompt.system)
                request = GenerationRequest(
                    sample=traj, messages=messages, images=images, tools=self.prompt.tools, turn=turn,
                    max_new_tokens=self.limits.max_new_tokens, sampling=self.sampling,
                    seed=derive_seed(self.seed, traj.id, sample_index, turn),
                )
                gen = self.policy.generate(request)
                op.set_attribute("generated_tokens", gen.num_tokens)
                try:
                    # Unknown tool names parse fine; the registry turns them into an error observation.
                    parsed = parse_assistant_text(gen.text)
                except ParseError as err:
                    op.set_attribute("parse_error", err.kind)
                    if gen.truncated:
                        traj.steps.append(Step(raw_text=gen.text, observation=Observation(
                            error=ToolErrorInfo("limit_exceeded", "generation hit max_new_tokens"))))
                        return "max_new_tokens"
                    traj.steps.append(Step(raw_text=gen.text,
                                           observation=Observation(error=ToolErrorInfo(err.kind, str(err)))))
                    continue
                if parsed.answer is not None:
                    traj.final_thought, traj.answer = parsed.thought, parsed.answer
                    return "answer"
                if traj.num_tool_calls >= self.limits.max_tool_calls:
                    return "max_tool_calls"
                context = ToolContext(images=traj.conversation_images(), video=traj.video, limits=self.tools.limits)
                observation = self.tools.execute(parsed.call, context)
                traj.steps.append(Step(thought=parsed.thought, call=parsed.call, observation=observation))
                over = self._context_limit(traj)
                if over:
                    return over
        return "max_turns"

    def _context_limit(self, traj: Trajectory) -> str | None:
        images = traj.conversation_images()
        if len(images) > self.limits.max_images:
            return "max_images"
        if sum(im.width * im.height for im in images) > self.limits.max_context_pixels:
            return "max_context_pixels"
        return None
