"""`pixelis eval`: run a policy (the model, or the golden oracle) over a data set and write a report."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from pixelis.cli.common import (ConfigOpt, DeterministicOpt, LogFormatOpt, LogLevelOpt, OutOpt, OverwriteOpt, SeedOpt,
                                SetOpt, start_run)
from pixelis.core.repro import file_sha256, record_artifact
from pixelis.run_inputs import resolve_inputs

# What `pixelis repro verify` compares. Neither file holds wall-clock timings (the samples/s rate is only shown
# on the progress bar), and predictions.jsonl names its images by content hash, so hashing the bytes covers both.
ARTIFACTS = ("predictions.jsonl", "metrics.json")


class PolicyKind(StrEnum):
    """Which policy acts."""

    model = "model"
    golden = "golden"


def evaluate(
    data: Annotated[Path | None, typer.Option(
        "--data", help="Suite dir (uses --split), trajectory JSONL, V* Bench dir, or VQA JSONL/TSV (default: "
                       "data.path, else the synthetic suite of the data.* settings, generated into --out/data: "
                       "the same suite training generates with the same seed).")] = None,
    model: Annotated[Path | None, typer.Option(
        "--model", help="Checkpoint dir, or its model.safetensors (needed for --policy model; pickled "
                        ".pt/.bin weights are refused).")] = None,
    policy: Annotated[PolicyKind, typer.Option("--policy", help="model: run the checkpoint; golden: replay the "
                                                                "stored golden trajectories (oracle).")] = PolicyKind.model,
    split: Annotated[str, typer.Option("--split", help="Split of a suite directory.")] = "test",
    limit: Annotated[int | None, typer.Option("--limit", help="Evaluate only the first N samples "
                                                              "(eval.limit).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    out: OutOpt = None,
    overwrite: OverwriteOpt = False,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    seed: SeedOpt = None,
    deterministic: DeterministicOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Evaluate a policy: writes metrics.json, predictions.jsonl and report.md (with charts) into --out.

    The hashes of predictions.jsonl and metrics.json go into run.json, for `pixelis repro verify`.
    """
    from pixelis.eval.runner import policy_checkpoint, run_evaluation  # heavy imports only when evaluating

    checkpoint = policy_checkpoint(policy.value, model)  # a wrong --model fails before anything is written
    limit_override = [] if limit is None else [f"eval.limit={limit}"]  # checked like --set eval.limit=N
    run = start_run("eval", out, config, [*(overrides or []), *limit_override], seed, deterministic, log_level,
                    log_format, overwrite=overwrite)
    if data is None:
        data = Path(resolve_inputs(run.cfg, run.out_dir, need_model=False, show_progress=progress).data.path)
    metrics = run_evaluation(run.cfg, data, run.out_dir, policy=policy.value, model_dir=checkpoint, split=split,
                             limit=run.cfg.eval.limit, show_progress=progress)
    _record_artifacts(run.out_dir)
    typer.echo(f"accuracy {metrics['accuracy']:.1%} on {metrics['n']} samples; "
               f"tool-call validity {metrics['tool_call_validity']:.1%}; RaPR {metrics['rapr']:.1%}")
    typer.echo(f"report: {run.out_dir / 'report.md'}")


def _record_artifacts(out_dir: Path) -> None:
    """Hash each of `ARTIFACTS` into `out_dir/run.json`."""
    for name in ARTIFACTS:
        record_artifact(out_dir, name, file_sha256(out_dir / name))
