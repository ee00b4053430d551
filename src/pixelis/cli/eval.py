"""`pixelis eval`: run a policy (the model, or the golden oracle) over a data set and write a report."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from pixelis.cli.common import (ConfigOpt, DeterministicOpt, LogFormatOpt, LogLevelOpt, OutOpt, SeedOpt, SetOpt, fail,
                                start_run)


class PolicyKind(StrEnum):
    """Which policy acts."""

    model = "model"
    golden = "golden"


def evaluate(
    data: Annotated[Path, typer.Option("--data", help="Suite dir (uses --split), trajectory JSONL, V* Bench dir, "
                                                      "or VQA JSONL/TSV.")],
    model: Annotated[Path | None, typer.Option("--model", help="Checkpoint dir (needed for --policy model).")] = None,
    policy: Annotated[PolicyKind, typer.Option("--policy", help="model: run the checkpoint; golden: replay the "
                                                                "stored golden trajectories (oracle).")] = PolicyKind.model,
    split: Annotated[str, typer.Option("--split", help="Split of a suite directory.")] = "test",
    limit: Annotated[int | None, typer.Option("--limit", help="Evaluate only the first N samples.")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    out: OutOpt = Path("runs/eval"),
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    seed: SeedOpt = None,
    deterministic: DeterministicOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Evaluate a policy: writes metrics.json, predictions.jsonl and report.md (with charts) into --out."""
    run = start_run("eval", out, config, overrides or [], seed, deterministic, log_level, log_format)
    from pixelis.eval.runner import run_evaluation, EvalSetupError  # heavy imports only when evaluating

    try:
        metrics = run_evaluation(run.cfg, data, run.out_dir, policy=policy.value, model_dir=model, split=split,
                                 limit=limit if limit is not None else run.cfg.eval.limit, show_progress=progress)
    except EvalSetupError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"accuracy {metrics['accuracy']:.1%} on {metrics['n']} samples; "
               f"tool-call validity {metrics['tool_call_validity']:.1%}; RaPR {metrics['rapr']:.1%}")
    typer.echo(f"report: {run.out_dir / 'report.md'}")
