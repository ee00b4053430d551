"""``pixelis analyze``: look inside trained weights (for now: how much of its rank each LoRA module uses)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from pixelis.cli.common import (DeterministicOpt, LogFormatOpt, LogLevelOpt, OutOpt, OverwriteOpt, SeedOpt,
                                command_group, fail, start_run)

if TYPE_CHECKING:
    from pixelis.model.lora_ranks import RankReport

app = command_group("Analyse trained weights: the rank a LoRA adapter (or a fine-tune's delta) really uses.")


@app.command("lora-ranks")
def lora_ranks(
    path: Annotated[Path, typer.Argument(help="PEFT adapter directory, training checkpoint or run (RUN/checkpoint-K "
                                              "or RUN), or a fully fine-tuned model directory (with --base).")],
    base: Annotated[Path | None, typer.Option(
        "--base", help="The model a full fine-tune started from: analyse W_ft - W_base per linear module.")] = None,
    energy: Annotated[float, typer.Option(
        "--energy", help="Energy share the suggested rank_pattern keeps per module (0 < E <= 1).")] = 0.95,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON instead of the table.")] = False,
    out: OutOpt = None,
    overwrite: OverwriteOpt = False,
    seed: SeedOpt = None,
    deterministic: DeterministicOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Singular values of every adapted module's delta: energy per rank, effective rank, stable rank, rank used.

    Writes OUT/lora_ranks.json, OUT/lora_ranks.png (spectra per layer type) and OUT/rank_pattern.yaml (a
    model.lora.rank_pattern keeping --energy of each module's delta; load it with --config).
    Example: pixelis analyze lora-ranks runs/sft-lora/checkpoint-200 --energy 0.95 --out runs/ranks
    """
    if not 0 < energy <= 1:
        raise fail(f"--energy {energy}: must be in (0, 1], e.g. 0.95")
    run = start_run("analyze-lora-ranks", out, None, [], seed, deterministic, log_level, log_format,
                    overwrite=overwrite)
    from pixelis.core.repro import file_sha256, record_artifact
    from pixelis.train.lora_sources import analyse  # loads torch, PEFT and transformers

    report = analyse(path, base, energy)
    files = {"lora_ranks.json": report.to_json() + "\n", "rank_pattern.yaml": report.rank_pattern_yaml()}
    for name, text in files.items():
        (run.out_dir / name).write_text(text, encoding="utf-8")
    if report.modules:
        report.plot(run.out_dir / "lora_ranks.png")
    for name in [*files, "lora_ranks.png"]:
        if (run.out_dir / name).is_file():
            record_artifact(run.out_dir, name, file_sha256(run.out_dir / name))
    if as_json:
        typer.echo(files["lora_ranks.json"], nl=False)
        return
    console = Console()
    console.print(_table(report))
    if report.unchanged_modules:
        console.print(f"{report.unchanged_modules} linear modules are unchanged (delta exactly zero): not shown.")
    typer.echo(report.rank_pattern_yaml())  # plain: a console would wrap the YAML
    typer.echo(f"wrote {run.out_dir}/lora_ranks.json, lora_ranks.png, rank_pattern.yaml")


def _table(report: RankReport) -> Table:
    prefix = _common_prefix([m.name for m in report.modules])
    pct = f"{report.energy:.0%}"
    kind = "LoRA" if report.kind == "lora" else "fine-tune delta"
    table = Table(title=f"{kind} spectra of {report.source}" + (f", modules under {prefix}" if prefix else "")
                  + f"\n90/95/99%: effective rank at that energy; used: rank at {pct} / r", title_justify="left")
    for column in ("module", "shape", "r", "σ_max", "stable", "90%", "95%", "99%", "used", f"@{pct}"):
        table.add_column(column, justify="left" if column == "module" else "right",
                         no_wrap=column == "module")
    for m in report.modules:
        used = m.rank_used(report.energy)
        table.add_row(m.name[len(prefix):], "×".join(map(str, m.shape)), str(m.configured_rank or "–"),
                      f"{m.sigma_max:.3g}", f"{m.stable_rank:.2f}",
                      *(str(m.effective_rank(level)) for level in (0.9, 0.95, 0.99)),
                      "–" if used is None else f"{used:.0%}", str(report.suggested_rank(m)))
    return table


def _common_prefix(names: list[str]) -> str:
    """The dotted name parts all `names` share, up to (not into) a layer index: `model.language_model.`."""
    parts = [name.split(".") for name in names]
    shared = []
    for column in zip(*parts):
        if len(set(column)) > 1 or column[0].isdigit():
            break
        shared.append(column[0])
    if shared and len(shared) < min(len(p) for p in parts) and parts[0][len(shared)].isdigit():
        shared.pop()  # keep `layers.` with its index
    return "".join(f"{part}." for part in shared) if len(shared) < min((len(p) for p in parts), default=0) else ""
