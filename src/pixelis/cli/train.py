"""`pixelis train`: the training phases, SFT (phase 1) and RFT (phase 2)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from pixelis.cli.common import (ConfigOpt, DeterministicOpt, LogFormatOpt, LogLevelOpt, OutOpt, OverwriteOpt, SeedOpt,
                                SetOpt, fail, start_run)


class Mode(StrEnum):
    """Training phase."""

    sft = "sft"
    rft = "rft"


def train(
    mode: Annotated[Mode, typer.Option("--mode", help="Training phase: sft (phase 1) or rft (phase 2).")] = Mode.sft,
    resume: Annotated[Path | None, typer.Option(
        "--resume", help="Continue from RUN/checkpoint-K (or RUN: its latest checkpoint); --out defaults to RUN.")
    ] = None,
    allow_config_change: Annotated[bool, typer.Option(
        "--allow-config-change", help="Resume even though config keys that break resume-exactness changed.")
    ] = False,
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
    """Train a policy. SFT: masked imitation loss on golden trajectories under the curriculum. RFT: GRPO over
    the agent's own multi-turn tool rollouts, rewarded by the rft.rewards terms (start it from an SFT model).

    Unset data.path / model.path generate the synthetic suite and build the tiny model inside the run directory.
    Example: pixelis train --mode sft --config configs/sft_tiny.yaml --out runs/sft --seed 42 --deterministic
    Example: pixelis train --mode rft --config configs/rft_tiny.yaml --set model.path=runs/sft/final --out runs/rft
    """
    if mode is Mode.rft and allow_config_change:
        raise fail("--allow-config-change applies to --mode sft only: an RFT resume must keep its config")
    from pixelis.train.checkpoint import resume_target

    if resume is not None:
        resume = resume_target(resume)
        out = out if out is not None else resume.parent
    run = start_run(f"train-{mode}", out, config, overrides or [], seed, deterministic, log_level, log_format,
                    overwrite=overwrite, resume=resume, resumable=True)
    if mode is Mode.rft:
        from pixelis.train.rft import train_rft  # heavy imports only when training

        result = train_rft(run.cfg, run.out_dir, resume=resume, show_progress=progress)
    else:
        from pixelis.train.sft import train_sft

        result = train_sft(run.cfg, run.out_dir, resume=resume, show_progress=progress,
                           allow_config_change=allow_config_change)
    typer.echo(f"final model: {result.final_model_dir}  (steps {result.steps}, loss {result.last_loss:.4f}, "
               f"weights sha256 {result.weights_sha256[:16]})")
