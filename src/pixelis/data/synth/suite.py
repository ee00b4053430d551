"""Generate the whole task suite: N samples spread over families x difficulties, split, written as JSONL.

Every sample is drawn from its own generator seeded by (seed, family, difficulty, index, attempt), so the same
seed gives byte-identical files and adding a family never changes another family's samples. A rejected draw
(tool observations disagreeing with the ground truth, ...) is redrawn with the next attempt number and counted
in the manifest.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pixelis.core.trajectory import Trajectory, write_jsonl
from pixelis.data.synth.attribute import Attribute
from pixelis.data.synth.base import DIFFICULTIES, GENERATOR_VERSION, Rejected, TaskFamily, sample_rng
from pixelis.data.synth.count import Count
from pixelis.data.synth.small_text import SmallText
from pixelis.data.synth.temporal import Temporal
from pixelis.data.synth.track import Track
from pixelis.tools.base import ToolLimits
from pixelis.tools.registry import ToolRegistry

FAMILIES: dict[str, TaskFamily] = {f.name: f for f in (SmallText(), Count(), Attribute(), Track(), Temporal())}
SPLITS = ("train", "val", "test")
MANIFEST_NAME = "manifest.json"

log = logging.getLogger(__name__)


class GenerationError(RuntimeError):
    """A sample that stayed unusable after every allowed attempt."""


@dataclass
class SuiteResult:
    """What `generate_suite` wrote: the manifest (also in manifest.json), seconds and samples per family, and
    the warnings it logged (e.g. family x difficulty cells that got no sample)."""

    manifest: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SampleKey:
    family: str
    difficulty: str
    index: int

    @property
    def id(self) -> str:
        return f"{self.family}-{self.difficulty}-{self.index:05d}"


def resolve(names: Sequence[str] | None, known: Sequence[str], what: str) -> list[str]:
    """Validate requested names and return them in canonical order (so the order given does not matter)."""
    if names is None:
        return list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; choose from {list(known)}")
    if not names:
        raise ValueError(f"no {what} selected; choose from {list(known)}")
    return [n for n in known if n in set(names)]


def plan_splits(
    seed: int, n: int, families: Sequence[str], difficulties: Sequence[str], val_fraction: float,
    test_fraction: float,
) -> dict[str, list[SampleKey]]:
    """Which samples go to which split.

    N is spread evenly over family x difficulty cells. The held-out splits get round(N * fraction) samples in
    all, stratified: each cell gets the floor of its share, and the leftover samples go to the cells with the
    largest remainders (ties broken by a seeded shuffle, so small suites do not favour the first families).
    Within a cell, a seeded permutation decides which indices are held out.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction ({val_fraction}) + test_fraction ({test_fraction}) must be in [0, 1)")
    cells = [(f, d) for f in families for d in difficulties]
    base, extra = divmod(n, len(cells))
    sizes = [base + (1 if i < extra else 0) for i in range(len(cells))]
    tie_break = sample_rng(seed, "split-ties", n).permutation(len(cells))
    held: dict[str, list[int]] = {}
    free = list(sizes)
    for split, fraction in (("test", test_fraction), ("val", val_fraction)):
        shares = [k * fraction for k in sizes]
        counts = [min(int(s), f) for s, f in zip(shares, free)]
        leftover = round(n * fraction) - sum(counts)
        for i in sorted(range(len(cells)), key=lambda i: (-(shares[i] - int(shares[i])), tie_break[i])):
            if leftover <= 0:
                break
            if counts[i] < free[i]:
                counts[i] += 1
                leftover -= 1
        free = [f - c for f, c in zip(free, counts)]
        held[split] = counts
    plan: dict[str, list[SampleKey]] = {s: [] for s in SPLITS}
    for i, (family, difficulty) in enumerate(cells):
        order = sample_rng(seed, "split", family, difficulty, sizes[i]).permutation(sizes[i])
        n_test, n_val = held["test"][i], held["val"][i]
        for rank, index in enumerate(order):
            split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            plan[split].append(SampleKey(family, difficulty, int(index)))
    for split in SPLITS:
        plan[split].sort(key=lambda key: (families.index(key.family), difficulties.index(key.difficulty), key.index))
    return plan


def generate_sample(
    key: SampleKey, seed: int, trap_rate: float, registry: ToolRegistry, max_attempts: int = 40,
    rejections: Counter | None = None,
) -> Trajectory:
    """Draw one sample (redrawing rejected attempts) with its golden trajectory."""
    family = FAMILIES[key.family]
    trap = bool(sample_rng(seed, "trap", key.family, key.difficulty, key.index).random() < trap_rate)
    reasons: Counter = Counter()
    for attempt in range(max_attempts):
        rng = sample_rng(seed, key.family, key.difficulty, key.index, attempt)
        trap_rng = sample_rng(seed, "trap-steps", key.family, key.difficulty, key.index, attempt)
        try:
            return family.generate(rng, key.difficulty, registry, trap=trap, trap_rng=trap_rng, sample_id=key.id)
        except Rejected as exc:
            reasons[exc.reason] += 1
            if rejections is not None:
                rejections[exc.reason] += 1
    raise GenerationError(f"{key.id}: no usable draw in {max_attempts} attempts; rejections: {dict(reasons)}")


@dataclass
class _Drawn:
    """One generated sample with what it cost (rejected draws, seconds)."""

    key: SampleKey
    trajectory: Trajectory
    rejections: Counter
    seconds: float


def _draw(key: SampleKey, seed: int, trap_rate: float, registry: ToolRegistry) -> _Drawn:
    start = time.perf_counter()
    rejections: Counter = Counter()
    traj = generate_sample(key, seed, trap_rate, registry, rejections=rejections)
    return _Drawn(key, traj, rejections, time.perf_counter() - start)


_worker_registry: ToolRegistry | None = None  # the tools of one worker process, built once by _init_worker


def _init_worker(limits: ToolLimits) -> None:
    global _worker_registry
    _worker_registry = ToolRegistry.default(limits)


def _draw_in_worker(key: SampleKey, seed: int, trap_rate: float) -> _Drawn:
    assert _worker_registry is not None, "worker started without _init_worker"
    return _draw(key, seed, trap_rate, _worker_registry)


def generate_suite(
    out_dir: str | Path,
    n: int,
    seed: int,
    families: Sequence[str] | None = None,
    difficulties: Sequence[str] | None = None,
    trap_rate: float = 0.1,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    registry: ToolRegistry | None = None,
    progress: bool = True,
    on_sample: Callable[[Trajectory], None] | None = None,
    overwrite: bool = False,
    workers: int = 1,
) -> SuiteResult:
    """Write `train/val/test.jsonl`, their images under `media/`, and `manifest.json` into `out_dir`.

    An existing suite in `out_dir` is replaced only with `overwrite=True` (its old images are removed, so the
    directory holds exactly the new suite). `workers` > 1 draws samples in that many processes (0: one per CPU),
    each with the default tools under `registry`'s limits; the files are byte-identical for any worker count.
    """
    if not 0.0 <= trap_rate <= 1.0:
        raise ValueError(f"trap_rate must be in [0, 1], got {trap_rate}")
    if workers < 0:
        raise ValueError(f"workers must be 0 (one per CPU) or more, got {workers}")
    workers = workers or os.cpu_count() or 1
    fams = resolve(families, list(FAMILIES), "families")
    diffs = resolve(difficulties, DIFFICULTIES, "difficulties")
    plan = plan_splits(seed, n, fams, diffs, val_fraction, test_fraction)
    warnings = _empty_cell_warnings(plan, fams, diffs)
    for warning in warnings:
        log.warning("%s", warning)
    registry = registry or ToolRegistry.default()
    out = Path(out_dir)
    _clear_old_suite(out, overwrite)
    rejections: dict[tuple[str, str], Counter] = defaultdict(Counter)
    traps: dict[str, Counter] = defaultdict(Counter)
    seconds: Counter = Counter()
    samples: Counter = Counter()
    # spawn, not fork: the parent may already run torch/OpenCV thread pools, which fork does not copy safely.
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                               initargs=(registry.limits,)) if workers > 1 else None

    def produce(keys: list[SampleKey], advance: Callable[[str], None]) -> Iterator[Trajectory]:
        if pool is None:
            drawn: Iterator[_Drawn] = (_draw(key, seed, trap_rate, registry) for key in keys)
        else:
            drawn = pool.map(_draw_in_worker, keys, [seed] * len(keys), [trap_rate] * len(keys))
        for item in drawn:
            family, traj = item.key.family, item.trajectory
            rejections[family, item.key.difficulty].update(item.rejections)
            seconds[family] += item.seconds
            samples[family] += 1
            traps[family][item.key.difficulty] += int(traj.metadata["trap"])
            if on_sample is not None:
                on_sample(traj)
            advance(family)
            yield traj

    try:
        with _progress(progress, n) as advance:
            for split in SPLITS:
                write_jsonl(out / f"{split}.jsonl", produce(plan[split], advance))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)

    counts = {s: {f: {d: sum(1 for k in plan[s] if (k.family, k.difficulty) == (f, d)) for d in diffs}
                  for f in fams} for s in SPLITS}
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "n": n,
        "families": fams,
        "difficulties": diffs,
        "trap_rate": trap_rate,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "counts": counts,
        "totals": {s: len(plan[s]) for s in SPLITS},
        "traps": {f: {d: traps[f][d] for d in diffs} for f in fams},
        "rejections": {f: {d: dict(sorted(rejections[f, d].items())) for d in diffs} for f in fams},
        "knobs": {f: FAMILIES[f].tiers for f in fams},
    }
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return SuiteResult(manifest=manifest, seconds=dict(seconds), samples=dict(samples), warnings=warnings)


def _empty_cell_warnings(plan: dict[str, list[SampleKey]], families: Sequence[str],
                         difficulties: Sequence[str]) -> list[str]:
    """A warning naming the family x difficulty cells that get no sample (N is below the number of cells)."""
    planned = {(key.family, key.difficulty) for keys in plan.values() for key in keys}
    empty = [f"{f}/{d}" for f in families for d in difficulties if (f, d) not in planned]
    if not empty:
        return []
    n, cells = sum(map(len, plan.values())), len(families) * len(difficulties)
    return [f"no samples for {len(empty)} of {cells} family x difficulty cells ({', '.join(empty)}): n = {n} is "
            f"spread evenly over the cells; use n >= {cells} to cover them all"]


def _clear_old_suite(out: Path, overwrite: bool) -> None:
    old = [p for p in (out / MANIFEST_NAME, out / "media", *(out / f"{s}.jsonl" for s in SPLITS)) if p.exists()]
    if old and not overwrite:
        raise FileExistsError(f"{out} already holds a suite ({', '.join(p.name for p in old)}); "
                              "pass overwrite=True (--overwrite) to replace it")
    for path in old:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    out.mkdir(parents=True, exist_ok=True)


@contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Callable[[str], None]]:
    """A rich progress bar over all samples (or a no-op); yields `advance(family)`."""
    if not enabled:
        yield lambda family: None
        return
    columns = (TextColumn("[bold]synth[/] {task.description:<11}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns) as bar:
        task = bar.add_task("", total=total)
        yield lambda family: bar.update(task, advance=1, description=family)
