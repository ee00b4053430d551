"""``pixelis bench``: time the hot pieces of Pixelis in one process, and compare results across commits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from pixelis.cli.common import (DeterministicOpt, LogFormatOpt, LogLevelOpt, OutOpt, OverwriteOpt, SeedOpt,
                                command_group, fail, start_run)

app = command_group("Micro benchmarks: the tools against their libraries, tracing, rendering, the model, the agent.")

RESULTS_FILE = "micro_benchmark.json"
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the results as JSON instead of tables.")]


@app.command("micro")
def micro(
    only: Annotated[list[str] | None, typer.Option(
        "--only", metavar="NAME", help="Item, group or glob to time, e.g. tool.zoom_in, tools, 'model.*' "
                                       "(repeatable; default: all).")] = None,
    repeats: Annotated[int, typer.Option("--repeats", help="Timed repeats per item.")] = 20,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed repeats before them.")] = 3,
    compare_to: Annotated[Path | None, typer.Option(
        "--compare", metavar="OLD.json", help="Also print new/old per item against an earlier micro_benchmark.json.")
    ] = None,
    as_json: JsonOpt = False,
    out: OutOpt = None,
    overwrite: OverwriteOpt = False,
    seed: SeedOpt = None,
    deterministic: DeterministicOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Median, p95 and spread of each item, wrapper/raw ratios of the tools; writes OUT/micro_benchmark.json.

    The same --seed gives the same generated inputs (image, video, tiny model). Example:
    pixelis bench micro --seed 0 --deterministic --out runs/micro --compare runs/micro-old/micro_benchmark.json
    """
    if repeats < 1 or warmup < 0:
        raise fail(f"--repeats {repeats} --warmup {warmup}: need at least one repeat and no negative warm-up")
    from pixelis.bench.micro import run_micro, select
    from pixelis.bench.timing import compare, load_results

    old = load_results(compare_to) if compare_to is not None else None  # a bad file fails before any timing
    select(only or [])
    run = start_run("bench-micro", out, None, [], seed, deterministic, log_level, log_format, overwrite=overwrite)
    doc = run_micro(run.seed, repeats, warmup, only or [], on_item=lambda name: run.logger.info("timing %s", name))
    doc["deterministic"] = run.cfg.reproducibility.deterministic
    if old is not None:
        doc["comparison"] = {"old": str(compare_to), **compare(old, doc)}
    from pixelis.core.repro import file_sha256, record_artifact

    path = run.out_dir / RESULTS_FILE
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    record_artifact(run.out_dir, RESULTS_FILE, file_sha256(path))
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    console = Console()
    console.print(_results_table(doc))
    if old is not None:
        console.print(_comparison_table(doc["comparison"]))
    typer.echo(f"wrote {path}")


@app.command("compare")
def compare_files(
    old: Annotated[Path, typer.Argument(help="Earlier micro_benchmark.json.")],
    new: Annotated[Path, typer.Argument(help="Later micro_benchmark.json.")],
    as_json: JsonOpt = False,
) -> None:
    """Per item in both files: old and new median and new/old (below 1: faster), and the tools' ratios."""
    from pixelis.bench.timing import compare, load_results

    result = {"old": str(old), "new": str(new), **compare(load_results(old), load_results(new))}
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    Console().print(_comparison_table(result))


def _seconds(value: float | None, unit: str = "s") -> str:
    if value is None:
        return "–"
    per = unit.removeprefix("s")  # "/token", "/turn" or ""
    for scale, suffix in ((1, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {suffix}{per}"
    return f"{value * 1e9:.3g} ns{per}"


def _goal(item: dict[str, Any]) -> tuple[str, str]:
    """The goal as text and whether it was met."""
    goal = item.get("goal") or {}
    if "ratio_max" in goal:
        text = f"ratio ≤ {goal['ratio_max']:g}"
    elif "median_max_s" in goal:
        text = f"≤ {_seconds(goal['median_max_s'])}"
    else:
        return "", ""
    return text, "yes" if item["goal_met"] else "NO"


def _results_table(doc: dict[str, Any]) -> Table:
    table = Table(title=f"micro benchmark (seed {doc['seed']}, {doc['repeats']} repeats after {doc['warmup']} "
                        f"warm-up, {doc['torch_threads']} torch threads); spread = IQR / median",
                  title_justify="left")
    for column in ("item", "median", "p95", "spread", "raw", "ratio", "goal", "met"):
        table.add_column(column, justify="left" if column in ("item", "goal") else "right", no_wrap=column == "item")
    for item in doc["items"]:
        baseline = item.get("baseline") or {}
        table.add_row(item["name"], _seconds(item["median_s"], item["unit"]), _seconds(item["p95_s"], item["unit"]),
                      f"{item['spread']:.0%}", _seconds(baseline.get("median_s")),
                      "–" if item.get("ratio") is None else f"{item['ratio']:.2f}", *_goal(item))
    return table


def _comparison_table(result: dict[str, Any]) -> Table:
    inputs = "same inputs" if result["same_inputs"] else "DIFFERENT inputs (another seed?)"
    table = Table(title=f"against {result['old']} ({inputs}); new/old < 1: faster", title_justify="left")
    for column in ("item", "old median", "new median", "new/old", "old ratio", "new ratio"):
        table.add_column(column, justify="left" if column == "item" else "right", no_wrap=column == "item")
    for row in result["items"]:
        table.add_row(row["name"], _seconds(row["old_median_s"], row["unit"]), _seconds(row["new_median_s"], row["unit"]),
                      "–" if row["new_over_old"] is None else f"{row['new_over_old']:.2f}",
                      *("–" if row[k] is None else f"{row[k]:.2f}" for k in ("old_ratio", "new_ratio")))
    for name in result["only_old"]:
        table.add_row(name, "(only in old)", "", "", "", "")
    for name in result["only_new"]:
        table.add_row(name, "", "(only in new)", "", "", "")
    return table
