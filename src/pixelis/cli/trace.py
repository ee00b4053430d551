"""``pixelis trace``: performance analysis of the spans a run exported (``--set tracing.exporter=jsonl``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from pixelis.cli.common import command_group, fail

app = command_group("Analyse exported traces: where the time went.")


def _time(ms: float) -> str:
    return f"{ms:.1f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


@app.command("summarize")
def summarize(
    path: Annotated[Path, typer.Argument(help="A traces.jsonl, e.g. RUN/traces.jsonl.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON instead of tables.")] = False,
    trace: Annotated[str | None, typer.Option(
        "--trace", help="Trace id (or a unique prefix) for the waterfall and critical path (default: the trace of "
                        "the slowest root span).")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Directory for trace-waterfall.png and trace-flame.png (default: the file's directory).")
    ] = None,
) -> None:
    """Per span name: count, total and self time, p50/p95/max; the critical path of the slowest root span; a
    waterfall of one trace and a flame-style chart of all of them, as PNG."""
    from pixelis.core.trace_analysis import SpanForest, load_spans, pick_trace
    from pixelis.core.trace_analysis import summarize as summarize_spans
    from pixelis.core.trace_plots import plot_flame, plot_waterfall

    forest = SpanForest(load_spans(path))
    trace_id = pick_trace(forest, trace)
    summary = {"file": str(path), **summarize_spans(forest, trace_id)}
    out = path.parent if out is None else out
    if out.exists() and not out.is_dir():
        raise fail(f"--out {out}: is a file, not a directory")
    out.mkdir(parents=True, exist_ok=True)
    summary["charts"] = {"waterfall": str(plot_waterfall(forest, trace_id, out / "trace-waterfall.png")),
                         "flame": str(plot_flame(forest, out / "trace-flame.png"))}
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    console = Console()
    traces = f"{summary['traces']} trace{'s' if summary['traces'] != 1 else ''}"
    table = Table(title=f"{summary['spans']} spans in {traces}, by self time (seconds)", box=box.SIMPLE_HEAD)
    table.add_column("span", no_wrap=True, min_width=max(len(row["name"]) for row in summary["by_name"]))
    for column in ("count", "total", "self", "p50", "p95", "max"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in summary["by_name"]:
        table.add_row(row["name"], str(row["count"]), *(f"{row[k] / 1000:.3f}" for k in
                                                         ("total_ms", "self_ms", "p50_ms", "p95_ms", "max_ms")))
    console.print(table)
    chosen = summary["trace"]
    console.print(f"critical path of {chosen['root']} ({_time(chosen['duration_ms'])}) in trace {chosen['trace_id']}:",
                  markup=False, highlight=False, soft_wrap=True)
    for depth, step in enumerate(chosen["critical_path"]):
        console.print(f"{'  ' * depth}{step['name']}  at +{_time(step['start_ms'])}, {_time(step['duration_ms'])} "
                      f"(self {_time(step['self_ms'])})", markup=False, highlight=False, soft_wrap=True)
    for kind, chart in summary["charts"].items():
        console.print(f"{kind}: {chart}", markup=False, highlight=False, soft_wrap=True)
