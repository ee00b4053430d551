"""`pixelis train`: the training phases (SFT now; RFT comes with phase 2)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from pixelis.cli.common import (ConfigOpt, DeterministicOpt, LogFormatOpt, LogLevelOpt, OutOpt, SeedOpt, SetOpt, fail,
                                start_run)


class Mode(StrEnum):
    """Training phase."""

    sft = "sft"
    rft = "rft"


def train(
    mode: Annotated[Mode, typer.Option("--mode", help="Training phase: sft (phase 1) or rft (phase 2).")] = Mode.sft,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue from RUN/checkpoint-K.")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    out: OutOpt = Path("runs/sft"),
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    seed: SeedOpt = None,
    deterministic: DeterministicOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Train a policy. SFT: masked imitation loss on golden trajectories under the curriculum.

    Example: pixelis train --mode sft --config configs/sft_tiny.yaml --out runs/sft --seed 42 --deterministic
    """
    if mode is Mode.rft:
        raise fail("--mode rft (curiosity-coherence RL) is not implemented yet; it is phase 2 of the roadmap")
    run = start_run(f"train-{mode}", out, config, overrides or [], seed, deterministic, log_level, log_format)
    from pixelis.train.sft import SFTDataError, train_sft  # heavy imports only when training
    from pixelis.train.checkpoint import CheckpointError

    try:
        result = train_sft(run.cfg, run.out_dir, resume=resume, show_progress=progress)
    except (SFTDataError, CheckpointError) as exc:
        raise fail(str(exc)) from None
    typer.echo(f"final model: {result.final_model_dir}  (steps {result.steps}, loss {result.last_loss:.4f}, "
               f"weights sha256 {result.weights_sha256[:16]})")
