"""`pixelis online replay`: an unlabelled stream through the engine and the update worker, scored afterwards.

Three arms see the same stream with the same seeds: the *frozen* engine (votes and stores, never updates), the
*online* engine (the trajectory vote decides what is learned) and the *ttrl* engine (plain answer majority decides,
as in TTRL); a learning arm's update tasks go to its own worker process, which turns them into weight versions.
Replay is synchronous
so that a seed replays bitwise: after a query that enqueued a task, the next query waits until the worker has
finished it (and then runs on whatever version that produced). Labels are read from the stream only to score
answers afterwards; the engines get `Query` objects, which have no label. Each arm works in ``RUN/<arm>/``
(buffer, tasks, weights, the worker's ``updates.jsonl`` and log); ``RUN/online/`` also gets ``queries.jsonl``
(one row per query and arm), ``report.md`` and ``report.png``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from pixelis.core.config import PixelisConfig, dump_config
from pixelis.core.errors import DataError, PixelisError
from pixelis.core.repro import file_sha256
from pixelis.core.trajectory import trajectory_from_dict
from pixelis.eval.scoring import score_answer
from pixelis.model.load import load_policy
from pixelis.online.engine import InferenceEngine, Query, Result
from pixelis.online.replay_report import write_report
from pixelis.online.tasks import TaskQueue
from pixelis.online.weights import PARAMS_FILE
from pixelis.online.worker import UPDATES_FILE, WorkerProcess, write_spec

log = logging.getLogger("pixelis.online")

TASK_TIMEOUT_S = 600.0


class ReplayError(PixelisError):
    """A stream or run that cannot be replayed."""


@dataclass
class StreamItem:
    """One line of the stream: the query (or why it is unreadable) and the hidden label used for scoring."""

    line: int
    query: Query | None
    target: dict[str, Any] | None
    problem: str | None = None


def read_stream(path: Path, max_pixels: int, limit: int | None = None) -> list[StreamItem]:
    """The stream's items; a bad line (JSON, fields, unreadable or oversize image) is kept as a `problem`."""
    if not path.is_file():
        raise ReplayError(f"stream file not found: {path}")
    items = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if limit is not None and len(items) >= limit:
            break
        try:
            sample = trajectory_from_dict(json.loads(line), path.parent, max_pixels)
        except (json.JSONDecodeError, DataError) as err:
            items.append(StreamItem(lineno, None, None, f"{path}:{lineno}: {err}"))
            continue
        items.append(StreamItem(lineno, Query.of(sample), sample.target))
    if not items:
        raise ReplayError(f"{path}: the stream holds no queries")
    return items


def _row(item: StreamItem, result: Result | None, arm: str, cfg: PixelisConfig) -> dict[str, Any]:
    def correct(answer: str | None) -> bool | None:
        if item.target is None:
            return None
        return answer is not None and score_answer(answer, item.target, cfg.eval.iou_threshold,
                                                   cfg.eval.numeric_tolerance)

    if result is None:  # an unreadable line: the same row shape, with the reason
        result = Result(query_id="", error=item.problem)
    decision = result.vote
    majority = None if decision is None else decision.majority_answer
    return {
        "arm": arm, "line": item.line, "query_id": result.query_id or None, "answer": result.answer,
        "correct": None if result.error else correct(result.answer), "majority_answer": majority,
        "majority_correct": None if result.error else correct(majority), "confidence": result.confidence,
        "model_version": result.model_version, "neighbours": result.neighbours,
        "experience_id": result.experience_id, "task_id": result.task_id, "error": result.error,
        "latency_s": round(result.latency_s, 4), "trace_id": result.trace_id,
    }


def _answers(engine: InferenceEngine, items: list[StreamItem], arm: str, cfg: PixelisConfig,
             after_query: Any = None, progress: Any = None) -> Iterator[dict[str, Any]]:
    for item in items:
        result = None if item.query is None else engine.infer(item.query)
        if result is not None and after_query is not None:
            after_query(result)
        row = _row(item, result, arm, cfg)
        row["buffer_size"] = len(engine.buffer)
        if progress is not None:
            progress()
        yield row


@dataclass
class _Arm:
    """One engine over the stream: `frozen` (no updates), `online` (the configured vote decides learning) or
    `ttrl` (answer majority decides learning: TTRL's pseudo-label)."""

    name: str
    cfg: PixelisConfig
    learn: bool


def _arms(cfg: PixelisConfig) -> list[_Arm]:
    arms = [_Arm("frozen", cfg, False), _Arm("online", cfg, True)]
    if cfg.online.vote.learn_from != "majority":  # otherwise the online arm is TTRL already
        ttrl = cfg.model_copy(deep=True)
        ttrl.online.vote.learn_from = "majority"
        arms.append(_Arm("ttrl", ttrl, True))
    return arms


def _run_arm(arm: _Arm, model_dir: Path, items: list[StreamItem], arm_dir: Path,
             progress: Any) -> tuple[list[dict[str, Any]], dict[str, int], int]:
    """Stream `items` through one engine (with its worker process when it learns): rows, task counts, version."""
    arm_dir.mkdir(parents=True, exist_ok=True)
    model, processor = load_policy(model_dir, dtype=arm.cfg.model.dtype, device=arm.cfg.model.device)
    engine = InferenceEngine(arm.cfg, model, processor, arm_dir, learn=arm.learn)
    if not arm.learn:
        rows = list(_answers(engine, items, arm.name, arm.cfg, progress=progress))
        engine.close()
        return rows, {}, 0
    dump_config(arm.cfg, arm_dir / "config.yaml")
    write_spec(arm_dir, model_dir, arm_dir / "config.yaml", engine.embedder.dim)
    worker = WorkerProcess(arm_dir)
    queue = TaskQueue(arm_dir / "tasks.db")

    def learn(result: Result) -> None:
        if result.task_id is not None:
            queue.wait_finished(result.task_id, TASK_TIMEOUT_S, alive=worker.alive)
            engine.refresh_weights()

    try:
        rows = list(_answers(engine, items, arm.name, arm.cfg, after_query=learn, progress=progress))
    finally:
        code = worker.stop()
        engine.close()
    if code != 0:
        raise ReplayError(f"the {arm.name} arm's update worker exited with code {code}; see "
                          f"{arm_dir / 'worker.stderr'}")
    counts = queue.counts()
    queue.close()
    return rows, counts, engine.version


def run_replay(cfg: PixelisConfig, model_dir: Path, stream: Path, out_dir: Path,
               show_progress: bool = True) -> dict[str, Any]:
    """Replay the first `online.replay_limit` queries of `stream` through the frozen, the online and the TTRL
    engine; writes ``out_dir/<arm>/`` (the report in ``out_dir/online``) and returns the summary, with the hashes
    to record under ``artifacts``."""
    from rich.progress import Progress

    items = read_stream(stream, cfg.data.max_image_pixels, cfg.online.replay_limit)
    rows: list[dict[str, Any]] = []
    counts: dict[str, dict[str, int]] = {}
    versions: dict[str, int] = {}
    with Progress(disable=not show_progress, transient=True) as bar:
        for arm in _arms(cfg):
            task = bar.add_task(f"{arm.name} engine", total=len(items))
            arm_rows, counts[arm.name], versions[arm.name] = _run_arm(
                arm, model_dir, items, out_dir / arm.name, lambda: bar.advance(task))
            rows.extend(arm_rows)
    online_dir = out_dir / "online"
    with open(online_dir / "queries.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps({k: v for k, v in row.items() if k not in ("latency_s", "trace_id")},
                               sort_keys=True) + "\n")
    updates = {name: _read_jsonl(out_dir / name / UPDATES_FILE) for name in counts if name != "frozen"}
    summary = write_report(online_dir, rows, updates, cfg, counts)
    summary["artifacts"] = _artifacts(out_dir, versions)
    return summary


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _artifacts(out_dir: Path, versions: dict[str, int]) -> dict[str, str]:
    """What `pixelis repro verify` compares: every arm's answers, each learning arm's updates and final weights
    (sha256; no weights entry for an arm without an accepted update: its weights are the start model's)."""
    hashes = {"queries.jsonl": file_sha256(out_dir / "online" / "queries.jsonl")}
    for name, version in versions.items():
        if name == "frozen":
            continue
        updates = [{k: v for k, v in row.items() if k != "trace_id"}
                   for row in _read_jsonl(out_dir / name / UPDATES_FILE)]
        hashes[f"{name}_updates"] = hashlib.sha256(json.dumps(updates, sort_keys=True).encode()).hexdigest()
        if version:
            hashes[f"{name}_weights"] = file_sha256(out_dir / name / "weights" / f"v{version:06d}" / PARAMS_FILE)
    return hashes
