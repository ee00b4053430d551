"""Run a policy over a data set, score every answer, and write metrics, predictions and a report."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pixelis.agent import Agent, AgentLimits, Policy, ReplayPolicy, SamplingParams
from pixelis.agent.policies import ModelPolicy
from pixelis.core.config import PixelisConfig
from pixelis.core.errors import DataError
from pixelis.core.trace_analysis import time_section
from pixelis.core.tracing import TracedOperation
from pixelis.core.trajectory import Trajectory, write_jsonl
from pixelis.data.benchmarks import load_eval_data
from pixelis.eval.metrics import compute_metrics
from pixelis.eval.report import render_report
from pixelis.eval.scoring import score_answer
from pixelis.model.load import checkpoint_dir, load_policy
from pixelis.tools.base import ToolLimits
from pixelis.tools.registry import ToolRegistry

log = logging.getLogger("pixelis.eval")


def evaluate(agent: Agent, samples: Sequence[Trajectory], out_dir: Path, iou_threshold: float = 0.5,
             numeric_tolerance: float = 0.0, title: str = "Pixelis evaluation",
             show_progress: bool = True, n_samples: int = 1, traces: Path | None = None) -> dict[str, Any]:
    """Roll out `agent` `n_samples` times on every sample (batched, see `Agent.run_many`), score each rollout
    against `sample.target`, and write into `out_dir`: `metrics.json`, `predictions.jsonl` (with images under
    `media/`) and `report.md` with PNG charts. With several samples per query every rollout counts on its own.
    When tracing exports to `traces` (default `out_dir/traces.jsonl`), the report says where this evaluation's
    time went."""
    out_dir.mkdir(parents=True, exist_ok=True)
    correct = 0
    columns = (TextColumn("[bold]eval"), BarColumn(), MofNCompleteColumn(), TextColumn("acc {task.fields[acc]}"),
               TextColumn("{task.fields[rate]} samples/s"), TimeElapsedColumn())
    with TracedOperation("eval.run", "eval", {"samples": len(samples)}) as run_span, \
            Progress(*columns, disable=not show_progress, transient=False) as progress:
        task = progress.add_task("eval", total=len(samples) * n_samples, acc="-", rate="-")

        def score(pred: Trajectory) -> None:  # a rollout keeps its sample's target and metadata
            nonlocal correct
            ok = pred.target is not None and score_answer(pred.answer, pred.target, iou_threshold=iou_threshold,
                                                          numeric_tolerance=numeric_tolerance)
            pred.metadata["correct"] = bool(ok)
            pred.metadata.setdefault("family", "unknown")
            pred.metadata.setdefault("difficulty", "unknown")
            correct += int(ok)
            finished = progress.tasks[task].completed + 1
            elapsed = progress.tasks[task].elapsed or 1e-9
            progress.update(task, advance=1, acc=f"{correct / finished:.1%}", rate=f"{finished / elapsed:.2f}")

        predictions = agent.run_many(samples, on_done=score, n=n_samples)
    metrics = compute_metrics(predictions)
    write_jsonl(out_dir / "predictions.jsonl", predictions)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    timing = time_section(out_dir / "traces.jsonl" if traces is None else traces, run_span.trace_id)
    report = render_report({"policy": metrics}, out_dir, title=title, extra_sections=timing)
    log.info("eval: accuracy %.3f on %d samples, tool-call validity %.3f, RaPR %.3f; report at %s",
             metrics["accuracy"], metrics["n"], metrics["tool_call_validity"], metrics["rapr"], report)
    return metrics


class EvalSetupError(DataError):
    """The evaluation cannot start: bad data, no model, or a policy that does not fit the data."""


def policy_checkpoint(policy: str, model_dir: Path | None) -> Path | None:
    """The checkpoint directory `--policy model` loads (`model_dir`, checked by `checkpoint_dir`); None for golden.

    Cheap: the CLI calls it before it writes anything, so a wrong `--model` costs no run directory.
    """
    if policy == "golden":
        return None
    if model_dir is None:
        raise EvalSetupError("--policy model needs --model DIR (a checkpoint, e.g. from `pixelis model tiny`)")
    return checkpoint_dir(model_dir)


def build_agent(cfg: PixelisConfig, policy: Policy) -> Agent:
    """An agent with the configured tool limits, rollout limits and sampling."""
    tool_limits = ToolLimits.from_config(cfg.tools)
    return Agent(policy, ToolRegistry.default(tool_limits), AgentLimits.from_config(cfg.agent),
                 SamplingParams.from_config(cfg.agent), seed=cfg.reproducibility.seed,
                 tool_prompt=cfg.agent.tool_prompt, batch_size=cfg.agent.batch_size,
                 tool_workers=cfg.agent.tool_workers)


def run_evaluation(cfg: PixelisConfig, data: Path, out_dir: Path, policy: str = "model", model_dir: Path | None = None,
                   split: str = "test", limit: int | None = None, show_progress: bool = True,
                   traces: Path | None = None) -> dict[str, Any]:
    """Load data and the policy (`model` or `golden`), then `evaluate` (`traces`: where spans are exported)."""
    checkpoint = policy_checkpoint(policy, model_dir)
    try:
        samples = load_eval_data(data, split=split, limit=limit, max_pixels=cfg.data.max_image_pixels)
    except FileNotFoundError as exc:  # the data-format errors are DataErrors already
        raise EvalSetupError(str(exc)) from None
    if not samples:
        raise EvalSetupError(f"{data}: no samples to evaluate")
    if policy == "golden":
        lacking = [s.id for s in samples if s.answer is None]
        if lacking:
            raise EvalSetupError(f"--policy golden needs stored trajectories with answers; {len(lacking)} samples "
                                 f"of {data} have none (e.g. {lacking[0]!r})")
        chosen: Policy = ReplayPolicy(samples)
    else:
        chosen = ModelPolicy(*load_policy(checkpoint, dtype=cfg.model.dtype, device=cfg.model.device))
    title = f"Pixelis evaluation: {policy} policy on {data}"
    return evaluate(build_agent(cfg, chosen), samples, out_dir, cfg.eval.iou_threshold, cfg.eval.numeric_tolerance,
                    title=title, show_progress=show_progress, n_samples=cfg.agent.n_samples, traces=traces)
