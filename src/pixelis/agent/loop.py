"""The multi-turn agent loop: generate -> parse -> run tool -> observe -> repeat, until an answer or a limit."""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Protocol, Sequence

from opentelemetry import context as otel_context

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
    """Everything a policy needs to produce the next assistant turn of one trajectory."""

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
    """The policy's text for one turn; `truncated` when it stopped at max_new_tokens without finishing.

    A model policy also returns the exact token ids it conditioned on and sampled (the end-of-turn token
    included) with each sampled token's log-probability, so training can use the tokens as sampled instead of
    re-tokenising the parsed text (token-in, token-out); a replay policy leaves them empty.
    """

    text: str
    num_tokens: int = 0
    truncated: bool = False
    prompt_ids: list[int] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)


@dataclass
class SampledTurn:
    """One generated turn of a rollout: the request the policy answered and what it returned."""

    request: GenerationRequest
    generation: Generation


class Policy(Protocol):
    """Anything that writes the next assistant turn of several trajectories at once (one per request)."""

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]: ...


class RolloutCancelled(Exception):
    """Recorded on the spans of a rollout that `RolloutBatch.cancel` dropped."""


@dataclass
class _Rollout:
    """One trajectory in flight inside a `RolloutBatch`."""

    traj: Trajectory
    ticket: int  # what `RolloutBatch.submit` returned for it
    index: int  # the sample's index, part of every sampling seed
    draw: int  # which of the n samples of this query
    target: dict[str, Any] | None  # held back from the policy; restored on the finished trajectory
    span: TracedOperation
    started: float
    sampling: SamplingParams
    max_new_tokens: int
    turn: int = 0
    turn_span: TracedOperation | None = None


class Agent:
    """Runs a policy against the pixel tools: `Agent(policy, tools, limits).run(sample) -> Trajectory`.

    `tools` is a `ToolRegistry` (its limits bound every tool call); `tool_prompt` picks how tools are shown;
    `batch_size` is how many trajectories `run_many` keeps in flight (one batched generation per round);
    `tool_workers` is how many threads run one round's tool calls side by side (None: one per CPU core; the tools
    are pure functions of their inputs, so trajectories do not depend on it).
    """

    def __init__(
        self,
        policy: Policy,
        tools: ToolRegistry | None = None,
        limits: AgentLimits | None = None,
        sampling: SamplingParams | None = None,
        seed: int = 0,
        tool_prompt: ToolPromptMode = "full",
        batch_size: int = 1,
        tool_workers: int | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if tool_workers is not None and tool_workers < 1:
            raise ValueError(f"tool_workers must be at least 1 (or None: one per CPU core), got {tool_workers}")
        self.policy = policy
        self.tools = tools or ToolRegistry.default()
        self.limits = limits or AgentLimits()
        self.sampling = sampling or SamplingParams()
        self.seed = seed
        self.batch_size = batch_size
        self.tool_workers = tool_workers or os.cpu_count() or 1
        self.prompt = ToolPrompt.build(self.tools.schemas(), tool_prompt)

    def run(self, sample: Trajectory, sample_index: int = 0) -> Trajectory:
        """Roll out the policy on `sample` (its steps and answer are ignored) and return the new trajectory."""
        return self.run_many([sample], first_index=sample_index)[0]

    def run_many(self, samples: Iterable[Trajectory], on_done: Callable[[Trajectory], None] | None = None,
                 n: int = 1, first_index: int = 0) -> list[Trajectory]:
        """Roll out every sample `n` times, `batch_size` trajectories at a time, and return them in input order.

        Trajectories advance in turn lockstep: each round asks the policy for the next turn of every trajectory
        in flight in one batched call, then parses and runs the tools of each; a finished trajectory is replaced
        from the queue at once. Seeds depend on the sample's id and index, the draw and the turn, never on the
        batch, so a trajectory is the same whatever the batch size. `on_done` is called as each one finishes.
        """
        batch = self.batch()
        order = [batch.submit(sample, index, draw)
                 for index, sample in enumerate(samples, start=first_index) for draw in range(n)]
        done: dict[int, Trajectory] = {}
        with batch:
            while batch.pending:
                for ticket, traj in batch.step():
                    done[ticket] = traj
                    if on_done is not None:
                        on_done(traj)
        return [done[ticket] for ticket in order]

    def batch(self) -> "RolloutBatch":
        """An empty continuous batch of this agent: submit work at any time, step it, collect what finished."""
        return RolloutBatch(self)

    def _start(self, ticket: int, index: int, draw: int, sample: Trajectory, sampling: SamplingParams | None,
               max_new_tokens: int | None) -> _Rollout:
        metadata = {**sample.metadata, "policy": type(self.policy).__name__}
        if draw:
            metadata["draw"] = draw
        # The target never reaches the policy: requests carry the trajectory in flight, which has none.
        traj = replace(sample, steps=[], answer=None, final_thought="", target=None, metadata=metadata, turns=[])
        span = TracedOperation("agent.run", "agent", {"sample_id": sample.id, "draw": draw}).start()
        return _Rollout(traj, ticket, index, draw, sample.target, span, time.monotonic(), sampling or self.sampling,
                        max_new_tokens or self.limits.max_new_tokens)

    def _finish(self, rollout: _Rollout, reason: str) -> Trajectory:
        traj = rollout.traj
        traj.target = rollout.target
        traj.metadata["termination"] = reason
        rollout.span.set_attribute("termination", reason)
        rollout.span.set_attribute("tool_calls", traj.num_tool_calls)
        rollout.span.end()
        log.debug("sample %s ended by %s after %d calls", traj.id, reason, traj.num_tool_calls)
        return traj

    def _round(self, active: list[_Rollout]) -> list[tuple[_Rollout, str | None]]:
        """One turn of every trajectory in flight: returns each with its termination reason (None: continues)."""
        now = time.monotonic()
        ended: list[tuple[_Rollout, str | None]] = [
            (r, "wall_time") for r in active if now - r.started > self.limits.wall_time_s]
        live = [r for r in active if now - r.started <= self.limits.wall_time_s]
        requests = []
        for rollout in live:
            with rollout.span.activate():
                rollout.turn_span = TracedOperation("agent.turn", "agent", {"turn": rollout.turn}).start()
            requests.append(self._request(rollout))
        generations = self.policy.generate(requests) if requests else []
        if len(generations) != len(requests):
            raise RuntimeError(f"{type(self.policy).__name__}.generate returned {len(generations)} generations "
                               f"for {len(requests)} requests")
        turns = list(zip(live, requests, generations))
        workers = min(self.tool_workers, len(turns))
        if workers > 1:  # OpenCV, NumPy and scikit-image release the GIL, so the tool calls overlap
            with ThreadPoolExecutor(workers, thread_name_prefix="pixelis-tool") as pool:
                reasons = list(pool.map(lambda turn: self._advance_traced(*turn), turns))
        else:
            reasons = [self._advance_traced(*turn) for turn in turns]
        for (rollout, _, _), reason in zip(turns, reasons):
            rollout.turn_span.end()
            rollout.turn_span = None
            rollout.turn += 1
            if reason is None and rollout.turn >= self.limits.max_turns:
                reason = "max_turns"
            ended.append((rollout, reason))
        return ended

    def _request(self, rollout: _Rollout) -> GenerationRequest:
        traj = rollout.traj
        messages, images = to_messages(traj, include_answer=False, system=self.prompt.system)
        return GenerationRequest(
            sample=traj, messages=messages, images=images, tools=self.prompt.tools, turn=rollout.turn,
            max_new_tokens=rollout.max_new_tokens, sampling=rollout.sampling,
            seed=derive_seed(self.seed, traj.id, rollout.index, rollout.draw, rollout.turn),
        )

    def _advance_traced(self, rollout: _Rollout, request: GenerationRequest, gen: Generation) -> str | None:
        with rollout.turn_span.activate():  # in this thread: spans and log lines nest under the rollout's turn
            return self._advance(rollout, request, gen)

    def _advance(self, rollout: _Rollout, request: GenerationRequest, gen: Generation) -> str | None:
        """Parse one generated turn, run its tool call, and return the termination reason (None: continue)."""
        traj, op = rollout.traj, rollout.turn_span
        op.set_attribute("generated_tokens", gen.num_tokens)
        traj.turns.append(SampledTurn(request, gen))
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
            return None
        if parsed.answer is not None:
            traj.final_thought, traj.answer = parsed.thought, parsed.answer
            return "answer"
        if traj.num_tool_calls >= self.limits.max_tool_calls:
            return "max_tool_calls"
        context = ToolContext(images=traj.conversation_images(), video=traj.video, limits=self.tools.limits)
        observation = self.tools.execute(parsed.call, context)
        traj.steps.append(Step(thought=parsed.thought, call=parsed.call, observation=observation))
        return self._context_limit(traj)

    def _context_limit(self, traj: Trajectory) -> str | None:
        images = traj.conversation_images()
        if len(images) > self.limits.max_images:
            return "max_images"
        if sum(im.width * im.height for im in images) > self.limits.max_context_pixels:
            return "max_context_pixels"
        return None


class RolloutBatch:
    """Continuous batching over one `Agent`: work is added while others are in flight, finished work collected.

    `submit(sample, index, draw)` queues a rollout (optionally with its own sampling parameters and per-turn
    token limit) and returns its ticket; each `step()` fills the batch up to
    `agent.batch_size` from the queue, runs one turn of every trajectory in flight (one batched generation) and
    returns the `(ticket, trajectory)` pairs that finished. A rollout's seeds come from its sample id, index,
    draw and turn only, so its trajectory is the same whenever it was submitted and whatever it shared a batch
    with. `live()` shows the trajectories in flight (a streaming caller reads their new steps after each step);
    `cancel(ticket)` drops one. Use it as a context manager so spans of unfinished rollouts are closed if stepping
    fails.
    """

    def __init__(self, agent: Agent):
        self.agent = agent
        self._queue: deque[tuple[otel_context.Context, tuple[Any, ...]]] = deque()
        self._active: list[_Rollout] = []
        self._tickets = 0

    def submit(self, sample: Trajectory, index: int = 0, draw: int = 0, sampling: SamplingParams | None = None,
               max_new_tokens: int | None = None) -> int:
        """Queue one rollout of `sample` (its steps, answer and target are not shown to the policy); `sampling`
        and `max_new_tokens` replace the agent's for this rollout only."""
        if max_new_tokens is not None and max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        ticket = self._tickets
        self._tickets += 1
        # The rollout's span is opened when it is admitted: under the context current at submission, so it is a
        # child of the submitter's span even when another thread steps the batch.
        self._queue.append((otel_context.get_current(), (ticket, index, draw, sample, sampling, max_new_tokens)))
        return ticket

    def live(self) -> list[tuple[int, Trajectory]]:
        """The `(ticket, trajectory so far)` of every rollout in flight."""
        return [(rollout.ticket, rollout.traj) for rollout in self._active]

    def cancel(self, ticket: int) -> bool:
        """Drop a queued or in-flight rollout (its spans end as cancelled); False when it is not pending."""
        for item in self._queue:
            if item[1][0] == ticket:
                self._queue.remove(item)
                return True
        for rollout in self._active:
            if rollout.ticket == ticket:
                self._active.remove(rollout)
                self._end_spans(rollout, RolloutCancelled(f"rollout {ticket} cancelled"))
                return True
        return False

    @property
    def pending(self) -> int:
        """Rollouts submitted and not yet finished (queued or in flight)."""
        return len(self._queue) + len(self._active)

    @property
    def in_flight(self) -> int:
        """Rollouts currently being generated (at most `agent.batch_size`)."""
        return len(self._active)

    def step(self) -> list[tuple[int, Trajectory]]:
        """Admit queued rollouts, advance every one in flight by one turn, return those that finished."""
        while self._queue and len(self._active) < self.agent.batch_size:
            context, args = self._queue.popleft()
            token = otel_context.attach(context)
            try:
                self._active.append(self.agent._start(*args))
            finally:
                otel_context.detach(token)
        finished = []
        for rollout, reason in self.agent._round(self._active):
            if reason is not None:
                self._active.remove(rollout)
                finished.append((rollout.ticket, self.agent._finish(rollout, reason)))
        return finished

    def close(self, exc: BaseException | None = None) -> None:
        """End the spans of rollouts still in flight (with `exc` recorded) and drop all pending work."""
        for rollout in self._active:
            self._end_spans(rollout, exc)
        self._active.clear()
        self._queue.clear()

    @staticmethod
    def _end_spans(rollout: _Rollout, exc: BaseException | None) -> None:
        for op in (rollout.turn_span, rollout.span):
            if op is not None:
                op.end(exc)

    def __enter__(self) -> "RolloutBatch":
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is not None:
            self.close(exc)
        return False
