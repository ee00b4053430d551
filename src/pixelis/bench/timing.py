"""Timing in one process: warm-up, interleaved repeats, robust statistics, and results comparable across commits.

`time_interleaved` runs several callables in turn within each repeat (A B A B ...), so load from other work on a
shared machine hits each alike and their ratio stays meaningful. A `Timed` callable may have an untimed
`prepare` (e.g. fresh copies of the arrays a library call writes into) and `inner` calls per sample, for work
too short to time one call at a time.
"""

from __future__ import annotations

import gc
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pixelis.core.errors import DataError, reading

SCHEMA = "pixelis.micro_benchmark/1"


@dataclass(frozen=True)
class Timed:
    """`run(*prepare())` timed `inner` times per sample; a sample is the time of one call, in seconds."""

    run: Callable[..., Any]
    prepare: Callable[[], tuple[Any, ...]] | None = None
    inner: int = 1
    per: int = 1  # units of work per call (e.g. generated tokens): samples are divided by it


@dataclass(frozen=True)
class Stats:
    """Summary of the samples of one timed callable (seconds)."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p95(self) -> float:
        return float(np.percentile(self.samples, 95))

    @property
    def spread(self) -> float:
        """Interquartile range over the median: 0.1 means the middle half of the samples lie within ±5%."""
        q1, q3 = np.percentile(self.samples, [25, 75])
        return float((q3 - q1) / self.median) if self.median > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"median_s": self.median, "p95_s": self.p95, "min_s": min(self.samples), "max_s": max(self.samples),
                "spread": self.spread, "repeats": len(self.samples)}


def time_interleaved(timed: Sequence[Timed], repeats: int, warmup: int) -> list[Stats]:
    """`warmup` untimed then `repeats` timed rounds; each round runs every callable once (its `inner` calls)."""
    samples: list[list[float]] = [[] for _ in timed]
    gc.collect()
    for round_index in range(warmup + repeats):
        for i, t in enumerate(timed):
            args = t.prepare() if t.prepare is not None else ()
            start = time.perf_counter()
            for _ in range(t.inner):
                t.run(*args)
            elapsed = time.perf_counter() - start
            if round_index >= warmup:
                samples[i].append(elapsed / t.inner / t.per)
    return [Stats(tuple(s)) for s in samples]


# ------------------------------------------------------------------------------------ results across commits


def load_results(path: Path) -> dict[str, Any]:
    """A results file written by `pixelis bench micro`; `DataError` naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--compare {path}: no such file (pass a micro_benchmark.json from an earlier run)")
    with reading(path, DataError, "micro-benchmark results"):
        doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise DataError(f"{path}: not micro-benchmark results (schema {found!r}, expected {SCHEMA!r})")
    items = doc.get("items")
    if not isinstance(items, list) or not all(isinstance(i, dict) and isinstance(i.get("name"), str)
                                              and isinstance(i.get("median_s"), (int, float)) for i in items):
        raise DataError(f"{path}: 'items' must be a list of results, each with a name and a median_s")
    return doc


def compare(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Per item in both: old and new median and new/old; for items with a baseline, the old and new ratios."""
    old_items = {i["name"]: i for i in old["items"]}
    new_items = {i["name"]: i for i in new["items"]}
    rows = []
    for name, item in new_items.items():
        if name not in old_items:
            continue
        before = old_items[name]
        rows.append({"name": name, "unit": item.get("unit", "s"), "old_median_s": before["median_s"], "new_median_s": item["median_s"],
                     "new_over_old": item["median_s"] / before["median_s"] if before["median_s"] > 0 else None,
                     "old_ratio": before.get("ratio"), "new_ratio": item.get("ratio")})
    return {"items": rows, "only_old": sorted(set(old_items) - set(new_items)),
            "only_new": sorted(set(new_items) - set(old_items)),
            "same_inputs": old.get("inputs_sha256") == new.get("inputs_sha256")}
