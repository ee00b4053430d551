"""The update worker: a separate process that turns update tasks into weight versions.

``python -m pixelis.online ONLINE_DIR`` (started by the engine's owner, e.g. `pixelis online replay`)
reads ``ONLINE_DIR/worker.json`` (model, config, embedding size), then loops: take the oldest pending task from
``tasks.db``, load its experience from ``buffer.db``, run one corridor-guarded update (`pixelis.online.update`),
and record the outcome. An accepted update is saved as weight version v+1 and published; a rejected one leaves
the served weights at their version. Each outcome is a row of ``ONLINE_DIR/updates.jsonl``.

Crash safety: the task table is the record of truth. A task is marked finished only after its version is fully
written, and the version is published after that; on start the worker publishes the newest version a finished
task produced, deletes any unpublished leftovers, and re-writes log rows a crash cut off. A task whose update
was interrupted is still pending and runs again, from the same weights, to the same result. SIGTERM finishes the
task in hand, then exits 0.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from pixelis.agent.prompt import ToolPrompt
from pixelis.core.config import PixelisConfig, load_config
from pixelis.core.repro import enable_deterministic_mode, set_global_seed
from pixelis.core.tracing import TracedOperation, attach_context, configure_tracing, setup_logging, shutdown_tracing
from pixelis.model.load import load_policy
from pixelis.online.buffer import ExperienceBuffer
from pixelis.online.tasks import TaskQueue, UpdateTask
from pixelis.online.update import OnlineUpdater
from pixelis.online.weights import WeightStore, load_trainable, trainable_state
from pixelis.tools.base import ToolLimits
from pixelis.tools.registry import ToolRegistry

log = logging.getLogger("pixelis.online.worker")

SPEC_FILE, UPDATES_FILE = "worker.json", "updates.jsonl"


def write_spec(online_dir: Path, model_dir: str | Path, config_path: str | Path, embedding_dim: int) -> Path:
    """Write what the worker process needs to start (read by `main`)."""
    path = online_dir / SPEC_FILE
    path.write_text(json.dumps({"model": str(model_dir), "config": str(config_path),
                                "embedding_dim": embedding_dim}, indent=2), encoding="utf-8")
    return path


def worker_command(online_dir: Path) -> list[str]:
    """The command line that starts the worker on `online_dir`."""
    return [sys.executable, "-m", "pixelis.online", str(online_dir)]


class WorkerProcess:
    """The update worker as a child process of the engine's owner (a replay arm, the server); its output goes to
    ``ONLINE_DIR/worker.stderr``."""

    def __init__(self, online_dir: Path):
        self.log = open(online_dir / "worker.stderr", "ab")
        self.proc = subprocess.Popen(worker_command(online_dir), stdout=self.log, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 120.0) -> int:
        """SIGTERM and wait; the exit code, with a SIGTERM that came before the worker's handler counted as 0
        (the owner waited for the tasks it cares about, and pending tasks stay queued for the next start)."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout_s)
        self.log.close()
        return 0 if code == -signal.SIGTERM else code


class UpdateWorker:
    """Owns the trained policy, its EMA and the corridor; `run()` serves the task queue until stopped."""

    def __init__(self, online_dir: Path, cfg: PixelisConfig, model_dir: str | Path, embedding_dim: int):
        self.dir, self.cfg = online_dir, cfg
        self.queue = TaskQueue(online_dir / "tasks.db")
        self.buffer = ExperienceBuffer.from_config(online_dir / "buffer.db", embedding_dim, cfg.online)
        self.weights = WeightStore(online_dir / "weights")
        self.model, processor = load_policy(model_dir, dtype=cfg.model.dtype, device=cfg.model.device)
        ema = copy.deepcopy(self.model)
        self.version = self._recover()
        if self.version:
            params, ema_params, _ = self.weights.load(self.version)
            load_trainable(self.model, params)
            load_trainable(ema, ema_params)
        prompt = ToolPrompt.build(ToolRegistry.default(ToolLimits.from_config(cfg.tools)).schemas(), cfg.agent.tool_prompt)
        self.updater = OnlineUpdater(self.model, ema, processor, prompt, cfg.online,
                                     action_weight=cfg.sft.action_token_weight, max_length=cfg.sft.max_length)

    def _recover(self) -> int:
        """Make the published version and the log agree with the task table; returns the version to load."""
        version = self.queue.latest_version()
        removed = self.weights.discard_after(version)
        if removed:
            log.warning("removed unpublished weight versions %s left by a crash", removed)
        if self.weights.current() != version:
            self.weights.publish(version)
        logged = set()
        log_path = self.dir / UPDATES_FILE
        if log_path.exists():
            logged = {json.loads(line)["task"] for line in log_path.read_text(encoding="utf-8").splitlines() if line}
        for task in self.queue.finished():
            if task.id not in logged:
                self._log_row(task)
        return version

    def _log_row(self, task: UpdateTask) -> None:
        row = {"task": task.id, "query_id": task.query_id, "experience_id": task.experience_id,
               "confidence": task.confidence, "status": task.status, "version": task.version, **(task.result or {})}
        with open(self.dir / UPDATES_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def process(self, task: UpdateTask) -> UpdateTask:
        """Run one task's update under a span in the request's trace, record and publish the outcome.

        A task that cannot be done (its experience was evicted, or the update raised) is recorded as failed and
        the worker goes on; the weights are left as they were.
        """
        with attach_context(task.carrier), TracedOperation(
                "online.update", "online", {"task": task.id, "query_id": task.query_id}) as op:
            try:
                self._update(task, op)
            except Exception as exc:  # one bad task must not stop the worker
                log.exception("task %d failed; weights stay at v%d", task.id, self.version)
                op.add_event("update.failed", {"error": f"{type(exc).__name__}: {exc}"})
                self.queue.finish(task.id, "failed", None, {"reason": f"{type(exc).__name__}: {exc}", "kl": None})
        done = self.queue.get(task.id)
        self._log_row(done)
        return done

    def _update(self, task: UpdateTask, op: TracedOperation) -> None:
        exemplar = self.buffer.get(task.experience_id)
        if exemplar is None:
            raise LookupError(f"experience {task.experience_id} is no longer in the buffer (evicted)")
        probes = [e.trajectory for e in self.buffer.recent(self.cfg.online.probe_size + 1)
                  if e.id != task.experience_id][: self.cfg.online.probe_size]
        outcome = self.updater.update(exemplar.trajectory, task.confidence, probes)
        op.set_attribute("kl", outcome.kl)
        op.set_attribute("accepted", outcome.accepted)
        result = {**outcome.to_dict(), "kl_max": self.cfg.online.kl_max, "trace_id": op.trace_id}
        if not outcome.accepted:
            self.queue.finish(task.id, "rejected", None, result)
            op.add_event("corridor.reject", {"kl": outcome.kl, "kl_max": self.cfg.online.kl_max})
            log.warning("task %d rejected by the corridor: KL %.4g > %.4g; weights stay at v%d", task.id,
                        outcome.kl, self.cfg.online.kl_max, self.version)
            return
        version = self.version + 1
        self.weights.save(version, trainable_state(self.model), self.updater.ema_state(),
                          {"task": task.id, "kl": outcome.kl})
        self.queue.finish(task.id, "accepted", version, result)  # the record of truth, then publish
        self.weights.publish(version)
        self.version = version
        op.set_attribute("version", version)
        log.info("task %d accepted: KL %.4g <= %.4g, weights v%d", task.id, outcome.kl, self.cfg.online.kl_max,
                 version)

    def run(self, stop: threading.Event, poll_s: float = 0.05) -> None:
        """Process tasks until `stop` is set (by SIGTERM/SIGINT); the task in hand is finished first."""
        while not stop.is_set():
            task = self.queue.next_pending()
            if task is None:
                stop.wait(poll_s)
                continue
            self.process(task)


def main(argv: list[str] | None = None, stop: threading.Event | None = None) -> int:
    """Run the worker on the online directory named in `argv` until `stop` is set (see `pixelis.online.__main__`,
    which sets it on SIGTERM/SIGINT)."""
    parser = argparse.ArgumentParser(prog="python -m pixelis.online", description=__doc__.splitlines()[0])
    parser.add_argument("online_dir", type=Path, help="The online run directory holding worker.json.")
    args = parser.parse_args(argv)
    stop = stop or threading.Event()
    spec = json.loads((args.online_dir / SPEC_FILE).read_text(encoding="utf-8"))
    cfg = load_config(spec["config"])
    repro = cfg.reproducibility
    set_global_seed(repro.seed)
    if repro.deterministic:
        enable_deterministic_mode(strict=repro.strict, num_threads=repro.torch_threads)
    setup_logging(level=cfg.logging.level, log_file=args.online_dir / "worker.log", fmt=cfg.logging.format)
    configure_tracing(exporter=cfg.tracing.exporter, endpoint=cfg.tracing.otlp_endpoint,
                      sample_ratio=cfg.tracing.sample_ratio, run_dir=args.online_dir / "worker",
                      service_name=f"{cfg.tracing.service_name}-worker")
    worker = UpdateWorker(args.online_dir, cfg, spec["model"], spec["embedding_dim"])
    log.info("update worker ready at weights v%d", worker.version)
    worker.run(stop)
    shutdown_tracing()
    return 0


