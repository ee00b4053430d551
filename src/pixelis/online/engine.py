"""The online inference engine: `engine.infer(query) -> Result`, learning from unlabelled queries as they come.

Per query, under one root span (a child of the caller's ``traceparent`` when given):
embed -> retrieve neighbours from the experience buffer (skipped below `online.min_buffer`: cold start) ->
sample `online.n_samples` trajectories through the agent loop, seeded from the base seed and the query id (a
fixed stream replays bitwise) -> vote over complete trajectories (`pixelis.online.voting`) -> when the vote is
confident (`online.confidence_gate`, no tie) and the winner is valid and short (`online.max_winner_calls`):
store it in the buffer and enqueue an update task carrying the trace context for the worker.

Labels never enter: a `Query` has no target field, and the agent loop withholds targets from the policy anyway.
Weight versions published by the worker are loaded between queries (`refresh_weights`), so a query is answered
by one version from start to end; its `Result` names that version.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from PIL import Image

from pixelis.agent import Agent, AgentLimits, ModelPolicy, Policy, SamplingParams
from pixelis.core.config import PixelisConfig
from pixelis.core.tracing import TracedOperation, attach_context, inject
from pixelis.core.trajectory import Trajectory
from pixelis.online.buffer import Experience, ExperienceBuffer
from pixelis.online.embed import build_embedder
from pixelis.online.tasks import TaskQueue
from pixelis.online.voting import NeighbourVote, Vote, is_valid, toolchain, vote
from pixelis.online.weights import WeightStore, load_trainable
from pixelis.tools.base import ToolLimits
from pixelis.tools.registry import ToolRegistry

log = logging.getLogger("pixelis.online")


@dataclass
class Query:
    """An unlabelled question about images (and optionally video frames): all the engine ever sees."""

    id: str
    question: str
    images: list[Image.Image] = field(default_factory=list)
    video: list[Image.Image] | None = None

    @classmethod
    def of(cls, sample: Trajectory) -> "Query":
        """The query part of a stored sample (its steps, answer and target are dropped)."""
        return cls(sample.id, sample.question, list(sample.images), sample.video)


@dataclass
class Result:
    """The engine's answer to one query; `error` is set (and nothing else learned) for a bad query."""

    query_id: str
    answer: str | None = None
    confidence: float = 0.0
    model_version: int = 0
    trace_id: str | None = None
    vote: Vote | None = None
    trajectory: Trajectory | None = None  # the winning trajectory
    samples: list[Trajectory] = field(default_factory=list)
    neighbours: int = 0
    experience_id: int | None = None
    task_id: int | None = None
    error: str | None = None
    latency_s: float = 0.0


@dataclass
class PendingQuery:
    """A query between `InferenceEngine.begin` and `finish`: its open span, its result so far, the sample to roll
    out (None when the query was refused) and what retrieval found."""

    result: Result
    op: TracedOperation
    started: float
    sample: Trajectory | None = None
    embedding: Any = None
    neighbours: list[NeighbourVote] = field(default_factory=list)

    def end(self, exc: BaseException | None = None) -> None:
        self.result.latency_s = time.monotonic() - self.started
        self.op.end(exc)


class InferenceEngine:
    """Answers queries with the policy at `online_dir`'s published weights; learns through the worker's queue.

    `learn=False` keeps the engine frozen (it still stores confident experiences for retrieval but enqueues no
    update): the baseline the replay compares against. `policy` replaces the `ModelPolicy` over `model` that
    writes the turns (the seam for a faster generation engine); `model` still embeds queries and takes the
    published weights.
    """

    def __init__(self, cfg: PixelisConfig, model: Any, processor: Any, online_dir: Path, learn: bool = True,
                 policy: Policy | None = None):
        self.cfg, self.online, self.learn = cfg, cfg.online, learn
        self.model = model
        self.embedder = build_embedder(self.online.embedder, model, processor)
        self.buffer = ExperienceBuffer.from_config(online_dir / "buffer.db", self.embedder.dim, self.online)
        self.queue = TaskQueue(online_dir / "tasks.db")
        self.weights = WeightStore(online_dir / "weights")
        self.version = 0
        self.agent = Agent(policy or ModelPolicy(model, processor), ToolRegistry.default(ToolLimits.from_config(cfg.tools)),
                           AgentLimits.from_config(cfg.agent),
                           SamplingParams(do_sample=True, temperature=self.online.temperature,
                                          top_p=self.online.top_p),
                           seed=cfg.reproducibility.seed, tool_prompt=cfg.agent.tool_prompt,
                           batch_size=cfg.agent.batch_size, tool_workers=cfg.agent.tool_workers)
        self.refresh_weights()

    def refresh_weights(self) -> int:
        """Load the newest published weight version if it is newer than the one serving; returns the version."""
        published = self.weights.current()
        if published and published != self.version:
            params, _, _ = self.weights.load(published)
            load_trainable(self.model, params)
            log.info("serving weights v%d (was v%d)", published, self.version)
            self.version = published
        return self.version

    def check(self, query: Query) -> str | None:
        """Why `query` cannot be answered (empty question, no image, an oversize image), or None."""
        if not query.question.strip():
            return "the question is empty"
        if not query.images:
            return "the query has no image"
        limit = self.cfg.data.max_image_pixels
        for i, image in enumerate([*query.images, *(query.video or [])]):
            if image.width * image.height > limit:
                return (f"image {i} is {image.width}x{image.height} = {image.width * image.height:,} pixels, over "
                        f"data.max_image_pixels = {limit:,}")
        return None

    def infer(self, query: Query, carrier: Mapping[str, Any] | None = None) -> Result:
        """Answer `query` (see the module docstring); a bad query gets a Result with `error`, never an exception."""
        pending = self.begin(query, carrier)
        if pending.sample is None:
            return pending.result
        try:
            with pending.op.activate():
                samples = self.agent.run_many([pending.sample], n=self.online.n_samples)
        except BaseException as exc:
            pending.end(exc)
            raise
        return self.finish(pending, samples)

    def begin(self, query: Query, carrier: Mapping[str, Any] | None = None) -> "PendingQuery":
        """Open the query's span (a child of `carrier`'s context, else of the current span), check, embed and
        retrieve. The caller rolls out `pending.sample` `online.n_samples` times (draws 0..n-1 of index 0, as
        `infer` does) with `self.agent` and hands them to `finish`. A bad query comes back finished: `sample` is
        None and `result.error` says why."""
        started = time.monotonic()
        with attach_context(carrier) if carrier else nullcontext():
            op = TracedOperation("online.infer", "online", {"query_id": query.id}).start()
        pending = PendingQuery(Result(query.id, model_version=self.version, trace_id=op.trace_id), op, started)
        with op.activate():
            problem = self.check(query)
            if problem is not None:
                op.set_attribute("error", problem)
                log.warning("query %s refused: %s", query.id, problem)
                pending.result.error = problem
                pending.end()
                return pending
            sample = Trajectory(id=query.id, question=query.question, images=query.images, video=query.video)
            with TracedOperation("online.embed", "online"):
                pending.embedding = self.embedder.embed(sample)
            if len(self.buffer) >= self.online.min_buffer:
                with TracedOperation("online.retrieve", "online", {"k": self.online.k}):
                    found = self.buffer.search(pending.embedding, self.online.k, self.online.min_similarity)
                pending.neighbours = [NeighbourVote(n.experience.answer, toolchain(n.experience.trajectory),
                                                    n.similarity) for n in found]
            pending.sample = sample
        return pending

    def finish(self, pending: "PendingQuery", samples: list[Trajectory]) -> Result:
        """Vote over the query's rollouts, gate, store and enqueue; close its span and return its Result."""
        try:
            with pending.op.activate():
                self._conclude(pending, samples)
        except BaseException as exc:
            pending.end(exc)
            raise
        pending.end()
        return pending.result

    def _conclude(self, pending: "PendingQuery", samples: list[Trajectory]) -> None:
        result, op, neighbours = pending.result, pending.op, pending.neighbours
        with TracedOperation("online.vote", "online", {"samples": len(samples), "neighbours": len(neighbours)}):
            decision = vote(samples, neighbours, self.online.vote)
        result.vote, result.samples, result.neighbours = decision, samples, len(neighbours)
        result.answer, result.confidence = decision.answer, decision.confidence
        if decision.winner_index is not None:
            result.trajectory = samples[decision.winner_index]
        op.set_attribute("answer", decision.answer)
        op.set_attribute("confidence", decision.confidence)
        op.set_attribute("majority_answer", decision.majority_answer)
        op.set_attribute("model_version", self.version)
        winner = None if decision.learn_index is None else samples[decision.learn_index]
        reason = self._gate(decision, winner)
        op.set_attribute("learn", reason or "yes")
        if reason is not None or winner is None:
            return
        with TracedOperation("online.store", "online"):
            experience = Experience(query_id=result.query_id, trajectory=winner, answer=winner.answer or "",
                                    confidence=decision.learn_confidence, votes=decision.to_dict(),
                                    embedding=pending.embedding, model_version=self.version, trace_id=op.trace_id)
            result.experience_id = self.buffer.add(experience)
            if self.learn:
                result.task_id = self.queue.enqueue(result.experience_id, result.query_id,
                                                    decision.learn_confidence, inject())

    def _gate(self, decision: Vote, winner: Trajectory | None) -> str | None:
        """Why this vote must not be learned from (None: learn)."""
        if winner is None or decision.learn_answer is None:
            return "no answer"
        if decision.tie:
            return "tie"
        if decision.learn_confidence < self.online.confidence_gate:
            return "low confidence"
        if not is_valid(winner):
            return "invalid winner"
        if winner.num_tool_calls > self.online.max_winner_calls:
            return "winner too long"
        return None

    def close(self) -> None:
        self.buffer.close()
        self.queue.close()
