"""Charts of exported spans: the waterfall of one trace and an icicle (flame-style) chart of all of them."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402

from pixelis.core.trace_analysis import Span, SpanForest, critical_path  # noqa: E402

MAX_ROWS = 80  # a waterfall taller than this is unreadable; the title says how many rows were left out


def _colours(names: list[str]) -> dict[str, tuple[float, ...]]:
    cmap = plt.get_cmap("tab20")
    return {name: cmap(i % cmap.N) for i, name in enumerate(sorted(set(names)))}


def plot_waterfall(forest: SpanForest, trace_id: str, path: Path) -> Path:
    """One row per span of the trace (depth first, in start order) from its start to its end, in ms since the
    trace's first span; the critical path of its slowest root is outlined in black."""
    rows = forest.trace(trace_id)
    shown = rows[:MAX_ROWS]
    t0 = min(span.start_ns for span, _ in rows)
    on_path = {s.span_id for s in critical_path(forest, forest.slowest_root(trace_id))}
    colours = _colours([span.name for span, _ in shown])
    fig, ax = plt.subplots(figsize=(10, 0.8 + 0.24 * len(shown)))
    for y, (span, _) in enumerate(shown):
        critical = span.span_id in on_path
        ax.barh(y, max(span.duration_ns, 1) / 1e6, left=(span.start_ns - t0) / 1e6, height=0.7,
                color=colours[span.name], edgecolor="black" if critical else "none", linewidth=1.2 if critical else 0)
    ax.set_yticks(range(len(shown)), ["· " * depth + span.name for span, depth in shown], fontsize=7)
    ax.set_ylim(len(shown) - 0.5, -0.5)
    ax.set_xlabel("ms since the trace's first span")
    more = f", the first {MAX_ROWS} of {len(rows)} spans" if len(rows) > MAX_ROWS else f", {len(rows)} spans"
    ax.set_title(f"trace {trace_id[:16]}{more} (critical path outlined)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _path_totals(forest: SpanForest) -> dict[tuple[str, ...], int]:
    """Total duration (ns) of the spans at each name path (root name, ..., span name)."""
    totals: dict[tuple[str, ...], int] = defaultdict(int)

    def visit(span: Span, prefix: tuple[str, ...]) -> None:
        key = (*prefix, span.name)
        totals[key] += span.duration_ns
        for child in forest.children[span.span_id]:
            visit(child, key)

    for root in forest.roots:
        visit(root, ())
    return totals


def plot_flame(forest: SpanForest, path: Path) -> Path:
    """An icicle of name paths over all traces: roots on top, each box as wide as the total time of its path.

    Children share their parent's width in proportion to their totals; concurrent children whose totals add up to
    more than the parent's are scaled down to fit under it, so the axis is a share of the roots' time and each
    box's label gives its true total.
    """
    totals = _path_totals(forest)
    kids: dict[tuple[str, ...], list[tuple[str, ...]]] = defaultdict(list)
    for key in totals:
        kids[key[:-1]].append(key)
    boxes: list[tuple[float, float, int, tuple[str, ...]]] = []

    def layout(key: tuple[str, ...], x: float, width: float) -> None:
        children = sorted(kids[key], key=lambda k: -totals[k])
        own = totals[key] if key else 0
        scale = width / max(sum(totals[k] for k in children), own, 1)
        for child in children:
            w = totals[child] * scale
            boxes.append((x, w, len(child) - 1, child))
            layout(child, x, w)
            x += w

    layout((), 0.0, 1.0)
    colours = _colours([key[-1] for *_, key in boxes])
    depth = max(d for _, _, d, _ in boxes) + 1
    fig, ax = plt.subplots(figsize=(11, 0.9 + 0.45 * depth))
    for x, w, d, key in boxes:
        ax.barh(d, w, left=x, height=0.92, color=colours[key[-1]], edgecolor="white", linewidth=0.5)
        if w > 0.06:
            ax.text(x + w / 2, d, f"{key[-1]} {totals[key] / 1e9:.3g} s", ha="center", va="center", fontsize=7,
                    clip_on=True)
    ax.set_ylim(depth - 0.5, -0.5)
    ax.set_yticks(range(depth), [f"depth {d}" for d in range(depth)], fontsize=7)
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("share of the root spans' total time (labels: total time of the spans on that name path)")
    ax.set_title("where the time went: span name paths, width = total time", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
