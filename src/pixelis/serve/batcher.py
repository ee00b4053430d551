"""The micro-batcher: one thread owns the model and steps one continuous `RolloutBatch` for every request.

An idle batcher waits up to `serve.max_wait_ms` after the first request for more (until `agent.batch_size`
rollouts are ready), then starts stepping; requests that arrive while others are in flight join at the next step.
A request's rollouts are seeded from its `seed` only (sample id ``seed-<seed>``, index 0, draws 0..n-1), never from
what it shares a batch with. With an online engine a request is `engine.begin` -> its `online.n_samples`
rollouts in the shared batch -> `engine.finish`; a newly published weight version is loaded only when nothing is
in flight (new requests wait meanwhile), so each request is answered by one version.

The handler thread talks to a `Job` through its `emit(kind, payload)` callback: ``step`` (a streamed step),
``done`` (a `Completion`) or ``error`` (an `ApiError`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from pixelis.agent import Agent, RolloutBatch
from pixelis.core.config import PixelisConfig
from pixelis.core.tracing import TracedOperation
from pixelis.core.trajectory import Trajectory
from pixelis.online.engine import InferenceEngine, PendingQuery, Query
from pixelis.online.voting import vote
from pixelis.serve.metrics import ServerMetrics
from pixelis.serve.protocol import ApiError, ChatRequest, step_view

log = logging.getLogger("pixelis.serve")

GATHER_POLL_S = 0.25  # how often an idle batcher looks at its stop flag and the published weight version


@dataclass
class Completion:
    """A finished request: one trajectory per choice, and what the `pixelis` field reports."""

    choices: list[Trajectory]
    answers: list[str | None]
    confidence: float | None
    model_version: int
    rollouts: list[Trajectory]  # every rollout of the request (the online engine's votes included)
    online: dict[str, Any] | None = None


@dataclass
class Job:
    """One accepted request on its way through the batcher."""

    id: str
    request: ChatRequest
    seed: int
    op: TracedOperation  # the request's root span, started and ended by the handler
    emit: Callable[[str, Any], None]  # thread-safe: delivers ("step" | "done" | "error", payload) to the handler
    cancelled: threading.Event = field(default_factory=threading.Event)
    tickets: dict[int, int] = field(default_factory=dict)  # batch ticket -> draw
    done: dict[int, Trajectory] = field(default_factory=dict)  # draw -> finished trajectory
    streamed: dict[int, int] = field(default_factory=dict)  # draw -> steps sent
    pending: PendingQuery | None = None  # the online engine's half-answered query

    @property
    def sample_id(self) -> str:
        return f"seed-{self.seed}"


class Batcher:
    """Owns the agent (and the online engine): `submit` jobs from any thread; `run` in its own thread."""

    def __init__(self, load: Callable[[], tuple[Agent, InferenceEngine | None]], cfg: PixelisConfig,
                 metrics: ServerMetrics):
        self._load, self.cfg, self.metrics = load, cfg, metrics
        self.agent: Agent | None = None
        self.engine: InferenceEngine | None = None
        self.state, self.error = "loading", ""
        self._inbox: queue.Queue[Job] = queue.Queue()
        self._open, self._lock = 0, threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.run, name="pixelis-batcher", daemon=True)

    # -- any thread -------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, job: Job) -> None:
        """Accept a job, or refuse it: 503 while the model loads, 429 (with Retry-After) when the queue is full."""
        if self.state != "ready" or self._stop.is_set():
            raise ApiError(503, f"the server is {'stopping' if self._stop.is_set() else self.state}; retry shortly",
                           type="server_error", code="unavailable")
        with self._lock:
            if self._open >= self.cfg.serve.max_queue:
                raise ApiError(429, f"the server has {self._open} requests in hand (serve.max_queue); retry later",
                               type="rate_limit_error", code="queue_full",
                               headers={"Retry-After": str(self.cfg.serve.retry_after_s)})
            self._open += 1
            self.metrics.queue.set(self._open)
        self._inbox.put(job)

    def release(self) -> None:
        """A submitted job was answered (or given up): it no longer counts against `serve.max_queue`."""
        with self._lock:
            self._open -= 1
            self.metrics.queue.set(self._open)

    def stop(self, timeout_s: float | None = None) -> None:
        """Finish what is in flight, then end the thread (and close the engine's buffer and queue)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    # -- the batcher thread -----------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self.agent, self.engine = self._load()
        except Exception as exc:  # reported by /health; the CLI checked the ordinary mistakes before
            log.exception("loading the model failed")
            self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"
            return
        self.state = "ready"
        self._refresh_gauges()
        log.info("ready: batch size %d, %s", self.agent.batch_size,
                 "online learning" if self.engine is not None else "frozen weights")
        try:
            self._loop()
        finally:
            if self.engine is not None:
                self.engine.close()

    def _loop(self) -> None:
        batch = self.agent.batch()
        jobs: dict[int, Job] = {}  # ticket -> job, for rollouts pending in the batch
        waiting: deque[Job] = deque()  # accepted, not yet admitted
        last_gauges = time.monotonic()
        while True:
            if not jobs and not waiting:
                if self._stop.is_set() and self._inbox.empty():
                    return
                self._gather(waiting)
            else:
                while not self._inbox.empty():
                    waiting.append(self._inbox.get_nowait())
            self._drop_cancelled(batch, jobs)
            if not self._swap_weights(busy=bool(jobs)):
                while waiting:
                    self._admit(waiting.popleft(), batch, jobs)
            if time.monotonic() - last_gauges > 1.0:
                self._refresh_gauges()
                last_gauges = time.monotonic()
            if not batch.pending:
                continue
            self.metrics.batch_size.observe(min(batch.pending, self.agent.batch_size))
            try:
                finished = batch.step()
            except Exception as exc:  # a bug or a broken model: fail what is in flight, keep serving
                log.exception("a batch step failed; failing %d requests", len({id(j) for j in jobs.values()}))
                batch.close(exc)
                for job in {id(j): j for j in jobs.values()}.values():
                    job.emit("error", ApiError(500, f"generation failed: {type(exc).__name__}: {exc}",
                                               type="server_error"))
                jobs.clear()
                batch = self.agent.batch()
                continue
            for ticket, traj in batch.live():
                self._stream(jobs[ticket], ticket, traj)
            for ticket, traj in finished:
                job = jobs.pop(ticket)
                self._stream(job, ticket, traj)
                job.done[job.tickets[ticket]] = traj
                if len(job.done) == len(job.tickets):
                    self._complete(job)

    def _gather(self, waiting: deque[Job]) -> None:
        """Wait for a first job, then up to `serve.max_wait_ms` for more, until a batch's worth of rollouts."""
        try:
            waiting.append(self._inbox.get(timeout=GATHER_POLL_S))
        except queue.Empty:
            return
        deadline = time.monotonic() + self.cfg.serve.max_wait_ms / 1000
        while sum(self._rollouts(j) for j in waiting) < self.agent.batch_size:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                waiting.append(self._inbox.get(timeout=left))
            except queue.Empty:
                break

    def _rollouts(self, job: Job) -> int:
        return self.cfg.online.n_samples if self.engine is not None else job.request.n

    def _swap_weights(self, busy: bool) -> bool:
        """Load a newly published weight version when nothing is in flight; True while one waits for that."""
        if self.engine is None or self.engine.weights.current() in (None, self.engine.version):
            return False
        if busy:
            return True
        self.engine.refresh_weights()
        self.metrics.model_version.set(self.engine.version)
        return False

    def _admit(self, job: Job, batch: RolloutBatch, jobs: dict[int, Job]) -> None:
        if job.cancelled.is_set():
            return
        req = job.request
        parent = job.op
        if self.engine is not None:
            with job.op.activate():
                job.pending = self.engine.begin(Query(job.sample_id, req.question, req.images))
            if job.pending.sample is None:
                job.emit("error", ApiError(400, job.pending.result.error or "the query was refused", "messages"))
                return
            sample, parent = job.pending.sample, job.pending.op  # rollouts nest under online.infer, as in infer()
            draws, sampling = self.cfg.online.n_samples, None  # the engine's agent samples for voting
        else:
            sample = Trajectory(id=job.sample_id, question=req.question, images=req.images)
            draws, sampling = req.n, req.sampling
        with parent.activate():
            for draw in range(draws):
                ticket = batch.submit(sample, 0, draw, sampling=sampling, max_new_tokens=req.max_tokens)
                job.tickets[ticket] = draw
                jobs[ticket] = job

    def _drop_cancelled(self, batch: RolloutBatch, jobs: dict[int, Job]) -> None:
        """Cancel the rollouts of jobs whose handler gave up (timeout, client gone)."""
        for ticket, job in list(jobs.items()):
            if job.cancelled.is_set():
                batch.cancel(ticket)
                del jobs[ticket]
                if job.pending is not None and not any(j is job for j in jobs.values()):
                    job.pending.end(TimeoutError("request cancelled"))

    def _stream(self, job: Job, ticket: int, traj: Trajectory) -> None:
        if not job.request.stream:
            return
        draw = job.tickets[ticket]
        for index in range(job.streamed.get(draw, 0), len(traj.steps)):
            job.emit("step", (draw, step_view(traj, index, job.request.tool_images)))
        job.streamed[draw] = len(traj.steps)

    def _complete(self, job: Job) -> None:
        rollouts = [job.done[draw] for draw in sorted(job.done)]
        self.metrics.count_tools(rollouts)
        try:
            if self.engine is None:
                confidence = vote(rollouts, [], self.cfg.online.vote).confidence if len(rollouts) > 1 else None
                done = Completion(rollouts, [t.answer for t in rollouts], confidence, 0, rollouts)
            else:
                with job.op.activate():
                    result = self.engine.finish(job.pending, rollouts)
                winner = result.trajectory or rollouts[0]
                done = Completion([winner], [result.answer], result.confidence, result.model_version, rollouts,
                                  online={"neighbours": result.neighbours, "learned": result.task_id is not None,
                                          "experience_id": result.experience_id, "task_id": result.task_id,
                                          "majority_answer": result.vote.majority_answer if result.vote else None})
        except Exception as exc:
            log.exception("finishing request %s failed", job.id)
            job.emit("error", ApiError(500, f"finishing the request failed: {type(exc).__name__}: {exc}",
                                       type="server_error"))
            return
        job.emit("done", done)

    def _refresh_gauges(self) -> None:
        if self.engine is None:
            return
        self.metrics.model_version.set(self.engine.version)
        self.metrics.buffer.set(len(self.engine.buffer))
        for status, count in self.engine.queue.counts().items():
            self.metrics.updates.labels(status).set(count)
