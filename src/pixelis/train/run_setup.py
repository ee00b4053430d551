"""What every training recipe does the same way before and while it runs: inputs on every rank, the manifest of
a library call, and the step progress bar."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from pixelis.core.config import PixelisConfig
from pixelis.core.repro import write_run_manifest
from pixelis.run_inputs import resolve_inputs


def resolve_on_every_rank(accelerator: Any, cfg: PixelisConfig, out_dir: Path, show_progress: bool) -> PixelisConfig:
    """`cfg` with unset data/model paths built by rank 0 (`resolve_inputs`); the other ranks then reuse them."""
    if accelerator.is_main_process:
        cfg = resolve_inputs(cfg, out_dir, show_progress=show_progress)
    if accelerator.num_processes > 1:
        accelerator.wait_for_everyone()
        cfg = resolve_inputs(cfg, out_dir, show_progress=False)
    return cfg


def ensure_manifest(accelerator: Any, out_dir: Path, cfg: PixelisConfig, command: str) -> None:
    """Called as a library (not through the CLI), a run still gets a `run.json` to record its hashes in."""
    if accelerator.is_main_process and not (out_dir / "run.json").is_file():
        out_dir.mkdir(parents=True, exist_ok=True)
        write_run_manifest(out_dir, cfg.reproducibility.seed, cfg.reproducibility.deterministic, cfg, sys.argv,
                           extra={"command": f"{command} (library call)"})


def step_progress(name: str, show: bool) -> Progress:
    """The rich bar of a training loop: steps done of total, a free-text `info` field, elapsed and remaining."""
    return Progress(TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), disable=not show)
