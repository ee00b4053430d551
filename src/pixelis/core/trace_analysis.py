"""Where the time went: per-name span statistics, self time and the critical path of an exported trace file.

Reads the JSON lines :class:`~pixelis.core.tracing.JsonlSpanExporter` writes (``--set tracing.exporter=jsonl``,
one finished span per line). The terms, as used everywhere below:

- a **root** is a span whose parent is not in the file (none, in another process's file, or never exported);
- a span's **self time** is its duration minus the time its direct children cover, each child clipped to the
  span's interval and overlapping children (the agent's batched rollouts) counted once: the union of their
  intervals. It is never negative, and in a single-threaded trace the self times add up to the root's duration;
- the **critical path** of a root: start at the root and step, level by level, to the child that finishes last
  (its end clipped to the parent's end; a tie goes to the longer child, then the earlier start) until a span has
  no children. Each step is what its parent was still waiting on when it ended.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pixelis.core.errors import DataError

__all__ = ["Span", "SpanForest", "critical_path", "load_spans", "pick_trace", "summarize", "time_section"]

_STRING_FIELDS = ("name", "trace_id", "span_id")
_INT_FIELDS = ("start_ns", "end_ns")
REQUIRED_FIELDS = (*_STRING_FIELDS, "parent_span_id", *_INT_FIELDS)


@dataclass(frozen=True)
class Span:
    """One exported span: the fields the analysis needs, and the line it came from."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    start_ns: int
    end_ns: int
    line: int

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


def _span(path: Path, line: int, text: str) -> Span:
    where = f"{path}:{line}"
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise DataError(f"{where}: not a span record (a JSON object expected, got {type(record).__name__})")
    missing = [key for key in REQUIRED_FIELDS if key not in record]
    if missing:
        raise DataError(f"{where}: not a span record: it lacks {', '.join(repr(k) for k in missing)}")
    for key in _STRING_FIELDS:
        if not isinstance(record[key], str) or not record[key]:
            raise DataError(f"{where}: span field {key!r} must be a non-empty string, got {record[key]!r}")
    for key in _INT_FIELDS:
        if not isinstance(record[key], int) or isinstance(record[key], bool):
            raise DataError(f"{where}: span field {key!r} must be an integer (nanoseconds), got {record[key]!r}")
    parent = record["parent_span_id"]
    if parent is not None and not isinstance(parent, str):
        raise DataError(f"{where}: span field 'parent_span_id' must be a string or null, got {parent!r}")
    if record["end_ns"] < record["start_ns"]:
        raise DataError(f"{where}: span {record['name']!r} ends before it starts")
    return Span(record["name"], record["trace_id"], record["span_id"], parent, record["start_ns"],
                record["end_ns"], line)


def load_spans(path: str | Path) -> list[Span]:
    """Every span of a ``traces.jsonl``; a missing or empty file, or a bad line (named by number), is a DataError."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such trace file (export one with --set tracing.exporter=jsonl)")
    if not path.is_file():
        raise DataError(f"{path}: not a file (give the traces.jsonl inside the run directory)")
    spans: list[Span] = []
    first_line: dict[str, int] = {}
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{path}:{number}: not UTF-8 text") from None
        if not text.strip():
            continue
        span = _span(path, number, text)
        if span.span_id in first_line:  # ids are random: a repeat means two files were mixed or a line was copied
            raise DataError(f"{path}:{number}: span id {span.span_id} appears twice (first on line "
                            f"{first_line[span.span_id]})")
        first_line[span.span_id] = number
        spans.append(span)
    if not spans:
        raise DataError(f"{path}: no spans (the file is empty)")
    return spans


def _covered_ns(parent: Span, children: list[Span]) -> int:
    """Length of the union of the children's intervals, clipped to the parent's (children sorted by start)."""
    covered, reach = 0, parent.start_ns
    for child in children:
        lo, hi = max(child.start_ns, reach), min(child.end_ns, parent.end_ns)
        if hi > lo:
            covered += hi - lo
            reach = hi
    return covered


@dataclass
class SpanForest:
    """Spans linked to their parents: roots, children (by start time) and self times."""

    spans: list[Span]
    roots: list[Span] = field(init=False)
    children: dict[str, list[Span]] = field(init=False)
    self_ns: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        ids = {s.span_id for s in self.spans}
        self.children = defaultdict(list)
        self.roots = []
        for span in sorted(self.spans, key=lambda s: (s.start_ns, s.line)):
            if span.parent_id is not None and span.parent_id in ids:
                self.children[span.parent_id].append(span)
            else:
                self.roots.append(span)
        self.self_ns = {s.span_id: s.duration_ns - _covered_ns(s, self.children[s.span_id]) for s in self.spans}

    def walk(self, span: Span, depth: int = 0) -> Iterator[tuple[Span, int]]:
        """``span`` and its descendants, depth first in start order, with their depth below ``span``."""
        yield span, depth
        for child in self.children[span.span_id]:
            yield from self.walk(child, depth + 1)

    def trace(self, trace_id: str) -> list[tuple[Span, int]]:
        """The spans of one trace, depth first from each of its roots in start order."""
        return [item for root in self.roots if root.trace_id == trace_id for item in self.walk(root)]

    def slowest_root(self, trace_id: str | None = None) -> Span:
        """The longest root span (of ``trace_id`` when given)."""
        roots = [r for r in self.roots if trace_id is None or r.trace_id == trace_id]
        return max(roots, key=lambda r: (r.duration_ns, -r.start_ns))


def critical_path(forest: SpanForest, root: Span) -> list[Span]:
    """The critical path from ``root``, as the module docstring defines it."""
    path = [root]
    while kids := forest.children[path[-1].span_id]:
        end = path[-1].end_ns
        path.append(max(kids, key=lambda c: (min(c.end_ns, end), c.duration_ns, -c.start_ns)))
    return path


def pick_trace(forest: SpanForest, wanted: str | None) -> str:
    """The trace id ``wanted`` names (whole or a unique prefix); without one, the trace of the slowest root."""
    if wanted is None:
        return forest.slowest_root().trace_id
    traces = sorted({s.trace_id for s in forest.spans})
    matches = [t for t in traces if t.startswith(wanted.lower())]
    if len(matches) != 1:
        problem = "matches no trace" if not matches else f"matches {len(matches)} traces; give more digits"
        raise DataError(f"--trace {wanted}: {problem} (the file holds {len(traces)}, the slowest root's is "
                        f"{forest.slowest_root().trace_id})")
    return matches[0]


def _ms(ns: float) -> float:
    return round(float(ns) / 1e6, 3)


def _by_name(forest: SpanForest) -> list[dict[str, Any]]:
    groups: dict[str, list[Span]] = defaultdict(list)
    for span in forest.spans:
        groups[span.name].append(span)
    rows = []
    for name, spans in groups.items():
        durations = np.array([s.duration_ns for s in spans], dtype=float)
        p50, p95 = np.percentile(durations, [50, 95])  # linear interpolation between the closest ranks
        rows.append({"name": name, "count": len(spans), "total_ms": _ms(durations.sum()),
                     "self_ms": _ms(sum(forest.self_ns[s.span_id] for s in spans)),
                     "p50_ms": _ms(p50), "p95_ms": _ms(p95), "max_ms": _ms(durations.max())})
    return sorted(rows, key=lambda r: (-r["self_ms"], r["name"]))


def summarize(forest: SpanForest, trace_id: str | None = None) -> dict[str, Any]:
    """The machine-readable summary: per-name statistics of every span (sorted by self time), and the critical
    path of the slowest root of ``trace_id`` (default: the slowest root of all)."""
    root = forest.slowest_root(trace_id)
    path = [{"name": s.name, "span_id": s.span_id, "start_ms": _ms(s.start_ns - root.start_ns),
             "duration_ms": _ms(s.duration_ns), "self_ms": _ms(forest.self_ns[s.span_id])}
            for s in critical_path(forest, root)]
    return {
        "spans": len(forest.spans),
        "traces": len({s.trace_id for s in forest.spans}),
        "roots": len(forest.roots),
        "by_name": _by_name(forest),
        "trace": {"trace_id": root.trace_id, "root": root.name, "root_span_id": root.span_id,
                  "duration_ms": _ms(root.duration_ns), "critical_path": path},
    }


def time_section(path: Path, trace_id: str | None = None, title: str = "## Where the time went",
                 top: int = 8) -> list[str]:
    """Markdown lines for a report: the ``top`` span names by self time in ``path``, only ``trace_id``'s spans when
    given, and the critical path. Empty when the file does not exist (tracing was off) or holds none of the spans."""
    if not path.is_file():
        return []
    spans = [s for s in load_spans(path) if trace_id is None or s.trace_id == trace_id]
    if not spans:
        return []
    summary = summarize(SpanForest(spans))
    total_self = sum(r["self_ms"] for r in summary["by_name"]) or 1.0
    root = summary["trace"]
    scope = f"trace `{trace_id}`" if trace_id else f"{summary['traces']} traces"
    lines = [title, "", f"{summary['spans']} spans of {scope} in `{path.name}`; the longest, `{root['root']}`, "
                        f"took {root['duration_ms'] / 1e3:.2f} s. Span names by self time (time in no child span):",
             "", "| span | count | total s | self s | self share | p95 ms |", "|---|---|---|---|---|---|"]
    for r in summary["by_name"][:top]:
        lines.append(f"| `{r['name']}` | {r['count']} | {r['total_ms'] / 1e3:.2f} | {r['self_ms'] / 1e3:.2f} | "
                     f"{r['self_ms'] / total_self:.0%} | {r['p95_ms']:.1f} |")
    chain = " → ".join(f"`{s['name']}`" for s in root["critical_path"])
    return lines + ["", f"Critical path of `{root['root']}`: {chain}. Full table and charts: "
                        f"`pixelis trace summarize {path}`.", ""]
