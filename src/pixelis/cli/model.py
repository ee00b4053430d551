"""``pixelis model``: build the tiny offline checkpoint, and summarise any local checkpoint."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from pixelis.cli.common import (ConfigOpt, DeterministicOpt, LogFormatOpt, LogLevelOpt, OutOpt, OverwriteOpt, SeedOpt,
                                SetOpt, command_group, start_run)
from pixelis.core.errors import DataError
from pixelis.core.rundir import prepare_out_dir

app = command_group("Model checkpoints: build the tiny offline model, pre-train it on grounding, inspect one.")

# The sizes of pixelis.model.tiny.SIZES, listed here because importing that module loads transformers (seconds).
Size = StrEnum("Size", {name: name for name in ("xs", "s", "m")})


class Family(StrEnum):
    """Architectures the tiny factory builds."""

    qwen3_vl = "qwen3_vl"
    qwen2_5_vl = "qwen2_5_vl"


@app.command()
def tiny(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the checkpoint into (new or empty).")],
    overwrite: OverwriteOpt = False,
    seed: Annotated[int, typer.Option("--seed", help="Weight initialisation seed.")] = 0,
    size: Annotated[Size, typer.Option("--size", help="Model size.")] = Size("s"),
    corpus: Annotated[
        Path | None, typer.Option("--corpus", help="Text file, one text per line, added to the tokenizer corpus.")
    ] = None,
    family: Annotated[Family, typer.Option("--family", help="Architecture family.")] = Family.qwen3_vl,
    min_pixels: Annotated[int, typer.Option("--min-pixels", help="Smallest image area after resizing.")] = 64 * 64,
    max_pixels: Annotated[int, typer.Option("--max-pixels", help="Largest image area after resizing.")] = 256 * 256,
    coordinate_tokens: Annotated[bool, typer.Option(
        "--coordinate-tokens/--digit-tokens",
        help="One token per grid value 0-1000 (sine-cosine initialised), or one per digit as in Qwen's tokenizer.",
    )] = False,
) -> None:
    """Build a random tiny checkpoint of the real architecture, offline."""
    from pixelis.model.load import checkpoint_info
    from pixelis.model.tiny import build_tiny_model

    texts = None
    if corpus is not None:
        if not corpus.is_file():
            raise DataError(f"corpus file {corpus} does not exist")
        texts = corpus.read_text(encoding="utf-8").splitlines()
    prepare_out_dir(out, overwrite=overwrite)  # never replaces a trained checkpoint with random weights unasked
    path = build_tiny_model(
        out, seed=seed, size=size.value, corpus=texts, family=family.value, min_pixels=min_pixels, max_pixels=max_pixels,
        coordinate_tokens=coordinate_tokens,
    )
    info = checkpoint_info(path)
    typer.echo(f"parameters: {info['parameters']:,}")
    typer.echo(f"path: {path}")


@app.command()
def pretrain(
    model: Annotated[Path, typer.Option("--model", help="Checkpoint directory to start from (`pixelis model tiny`).")],
    steps: Annotated[int | None, typer.Option("--steps", help="Optimizer steps (default: pretrain.max_steps).")] = None,
    resume: Annotated[Path | None, typer.Option(
        "--resume", help="Continue from RUN/checkpoint-K (or RUN: its latest checkpoint); --out defaults to RUN.")
    ] = None,
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
    """Grounding pre-training on generated images (boxes, points, colours, shapes, large labels).

    Writes RUN/final (the pre-trained checkpoint, its aux head and grounding.json), RUN/grounding.json and
    grounding.png (held-out metrics on images never trained on, per object size) and checkpoints.
    Example: pixelis model pretrain --model runs/tiny --out runs/pretrain --steps 3000 --seed 0 --deterministic
    """
    from pixelis.model.load import checkpoint_dir
    from pixelis.train.checkpoint import resume_target

    model_dir = checkpoint_dir(model)
    if resume is not None:
        resume = resume_target(resume)
        out = out if out is not None else resume.parent
    step_override = [f"pretrain.max_steps={steps}"] if steps is not None else []
    run = start_run("model-pretrain", out, config, [*(overrides or []), *step_override], seed, deterministic,
                    log_level, log_format, overwrite=overwrite, resume=resume, resumable=True)
    from pixelis.eval.grounding import grounding_table
    from pixelis.train.pretrain import pretrain as run_pretrain  # heavy imports only when training

    result = run_pretrain(run.cfg, run.out_dir, model_dir, resume=resume, show_progress=progress)
    typer.echo("\n".join(grounding_table(result.heldout)))
    typer.echo(f"pre-trained model: {result.final_model_dir}  (steps {result.steps}, loss {result.last_loss:.4f}, "
               f"weights sha256 {result.weights_sha256[:16]})")


@app.command()
def info(path: Annotated[Path, typer.Argument(help="Checkpoint directory, or its model.safetensors.")]) -> None:
    """Print architecture, parameter count, weight dtypes and tokenizer size of a local checkpoint."""
    from pixelis.model.load import checkpoint_info

    summary = checkpoint_info(path)
    rows = {
        "path": summary["path"],
        "architecture": ", ".join(summary["architectures"]) or summary["model_type"],
        "model_type": summary["model_type"],
        "parameters": f"{summary['parameters']:,}",
        "dtype": ", ".join(f"{k} ({v:,} params)" for k, v in summary["dtypes"].items()),
        "tokenizer size": str(summary["tokenizer_size"]),
        "processor": summary["processor"],
    }
    for key, value in rows.items():
        typer.echo(f"{key}: {value}")
