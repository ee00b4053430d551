"""``pixelis model``: build the tiny offline checkpoint, and summarise any local checkpoint."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from pixelis.cli.common import OverwriteOpt, command_group
from pixelis.core.errors import DataError
from pixelis.core.rundir import prepare_out_dir

app = command_group("Model checkpoints: build the tiny offline model, inspect a checkpoint.")

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
        out, seed=seed, size=size.value, corpus=texts, family=family.value, min_pixels=min_pixels, max_pixels=max_pixels
    )
    info = checkpoint_info(path)
    typer.echo(f"parameters: {info['parameters']:,}")
    typer.echo(f"path: {path}")


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
