"""Markdown reports with PNG charts, readable without running anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DIFFICULTIES = ("simple", "medium", "hard")
SUMMARY_KEYS = (
    ("accuracy", "Accuracy", "{:.1%}"),
    ("tool_call_validity", "Tool-call validity (share of calls)", "{:.1%}"),
    ("first_call_validity", "Trajectories whose first call is valid", "{:.1%}"),
    ("all_calls_valid_rate", "Trajectories with only valid calls", "{:.1%}"),
    ("rapr", "RaPR (trajectories using a tool)", "{:.1%}"),
    ("mean_tool_calls", "Mean tool calls", "{:.2f}"),
    ("mean_trajectory_length", "Mean trajectory length (turns)", "{:.2f}"),
    ("answered_rate", "Answered", "{:.1%}"),
)


def _families(metrics: dict[str, Any]) -> list[str]:
    return sorted(metrics["accuracy_by_family"])


def _grouped_bars(series: dict[str, list[float]], labels: list[str], path: Path, figsize: tuple[float, float],
                  xlabel: str, ylabel: str, title: str = "", rotate: bool = False, ylim: float | None = None) -> Path:
    """One group of bars per label, one bar per named series; saved as PNG."""
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=figsize)
    x = np.arange(len(labels))
    for i, (name, values) in enumerate(series.items()):
        ax.bar(x + i * width - 0.4 + width / 2, values, width, label=name)
    ax.set_xticks(x, labels, rotation=45 if rotate else 0, ha="right" if rotate else "center", fontsize=8)
    if ylim is not None:
        ax.set_ylim(0, ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_accuracy_grid(runs: dict[str, dict[str, Any]], path: Path) -> Path:
    """Grouped bars: accuracy per family × difficulty, one bar per run (e.g. before/after)."""
    cells = sorted({c for m in runs.values() for c in m["accuracy_by_family_difficulty"]},
                   key=lambda c: (c.split("/")[0], DIFFICULTIES.index(c.split("/")[1])
                                  if c.split("/")[1] in DIFFICULTIES else 9))
    series = {name: [m["accuracy_by_family_difficulty"].get(c, 0.0) for c in cells] for name, m in runs.items()}
    width = min(12.0, max(6.0, 0.55 * len(cells) * max(len(runs), 1)))
    return _grouped_bars(series, cells, path, (width, 3.6), "", "accuracy", "Accuracy by family / difficulty",
                         rotate=True, ylim=1.05)


def plot_tool_call_histogram(runs: dict[str, dict[str, Any]], path: Path) -> Path:
    """Histogram of tool calls per trajectory, one series per run."""
    counts = sorted({int(k) for m in runs.values() for k in m["tool_call_histogram"]})
    series = {name: [{int(k): v for k, v in m["tool_call_histogram"].items()}.get(c, 0) for c in counts]
              for name, m in runs.items()}
    return _grouped_bars(series, [str(c) for c in counts], path, (5, 3.2), "tool calls per trajectory",
                         "trajectories")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render_report(runs: dict[str, dict[str, Any]], out_dir: Path, title: str = "Pixelis evaluation",
                  extra_sections: list[str] | None = None) -> Path:
    """Write `report.md` and its charts into `out_dir`, comparing one or more named metric sets."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(runs)
    grid = plot_accuracy_grid(runs, out_dir / "accuracy_by_family_difficulty.png")
    hist = plot_tool_call_histogram(runs, out_dir / "tool_call_histogram.png")
    parts = [f"# {title}", ""]
    n = ", ".join(f"{k}: {m['n']} samples" for k, m in runs.items())
    parts += [n, "", "## Summary", ""]
    parts.append(_table(["metric", *names],
                        [[label, *(fmt.format(runs[r][key]) for r in names)] for key, label, fmt in SUMMARY_KEYS]))
    parts += ["", "## Accuracy by family and difficulty", ""]
    families = sorted({f for m in runs.values() for f in _families(m)})
    for name in names:
        cells = runs[name]["accuracy_by_family_difficulty"]
        counts = runs[name]["count_by_family_difficulty"]
        if len(names) > 1:
            parts += [f"**{name}**", ""]
        rows = [[fam, *(f"{cells[f'{fam}/{d}']:.0%} ({counts[f'{fam}/{d}']})" if f"{fam}/{d}" in cells else "–"
                        for d in DIFFICULTIES)] for fam in families]
        parts += [_table(["family", *DIFFICULTIES], rows), ""]
    parts += [f"![accuracy]({grid.name})", "", "## Tool use", "", f"![tool calls]({hist.name})", ""]
    parts.append(_table(["", *names], [
        ["terminations", *("; ".join(f"{k} {v}" for k, v in runs[r]["terminations"].items()) for r in names)],
        ["error categories", *("; ".join(f"{k} {v}" for k, v in runs[r]["error_categories"].items()) or "none"
                               for r in names)],
    ]))
    parts.append("")
    parts += extra_sections or []
    path = out_dir / "report.md"
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path
