"""Aggregate metrics over scored trajectories: accuracy by slice, tool-call validity, RaPR, terminations."""

from __future__ import annotations

from collections import Counter, defaultdict
from statistics import mean
from typing import Any, Iterable

from pixelis.core.trajectory import Trajectory


def call_validity(traj: Trajectory) -> list[bool]:
    """One flag per attempted call, in order: valid when it parsed and passed tool validation."""
    return [step.call is not None and step.observation is not None and step.observation.ok
            for step in traj.steps if step.call is not None or step.raw_text is not None]


def _accuracy(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0


def compute_metrics(predictions: Iterable[Trajectory]) -> dict[str, Any]:
    """Metrics over predictions whose `metadata["correct"]` was set by scoring.

    Returns accuracy overall, by family, by difficulty and by family×difficulty; tool-call validity (share of
    attempted calls that parse and validate), per trajectory too (`first_call_validity`: the first attempt is
    valid; `all_calls_valid_rate`: at least one call and every attempt valid); mean tool calls; RaPR (share of trajectories with at least one
    valid tool call); mean trajectory length in assistant turns; termination reasons; error categories.
    """
    preds = list(predictions)
    by_family: dict[str, list[bool]] = defaultdict(list)
    by_difficulty: dict[str, list[bool]] = defaultdict(list)
    by_cell: dict[str, list[bool]] = defaultdict(list)
    attempted_total = valid_total = 0
    calls, lengths, used_tool, first_valid, all_valid = [], [], [], [], []
    terminations: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for p in preds:
        correct = bool(p.metadata.get("correct", False))
        family = p.metadata.get("family", "unknown")
        difficulty = p.metadata.get("difficulty", "unknown")
        by_family[family].append(correct)
        by_difficulty[difficulty].append(correct)
        by_cell[f"{family}/{difficulty}"].append(correct)
        flags = call_validity(p)
        attempted_total += len(flags)
        valid_total += sum(flags)
        calls.append(len(flags))
        used_tool.append(any(flags))
        first_valid.append(bool(flags) and flags[0])
        all_valid.append(bool(flags) and all(flags))
        lengths.append(len(p.steps) + (1 if p.answer is not None else 0))
        terminations[p.metadata.get("termination", "unknown")] += 1
        errors.update(s.observation.error.kind for s in p.steps if s.observation and s.observation.error)
    correct_all = [bool(p.metadata.get("correct", False)) for p in preds]
    return {
        "n": len(preds),
        "accuracy": _accuracy(correct_all),
        "accuracy_by_family": {k: _accuracy(v) for k, v in sorted(by_family.items())},
        "accuracy_by_difficulty": {k: _accuracy(v) for k, v in sorted(by_difficulty.items())},
        "accuracy_by_family_difficulty": {k: _accuracy(v) for k, v in sorted(by_cell.items())},
        "count_by_family_difficulty": {k: len(v) for k, v in sorted(by_cell.items())},
        "tool_call_validity": valid_total / attempted_total if attempted_total else 0.0,
        "tool_calls_attempted": attempted_total,
        "first_call_validity": _accuracy(first_valid),
        "all_calls_valid_rate": _accuracy(all_valid),
        "mean_tool_calls": mean(calls) if calls else 0.0,
        "rapr": _accuracy(used_tool),
        "mean_trajectory_length": mean(lengths) if lengths else 0.0,
        "answered_rate": _accuracy([p.answer is not None for p in preds]),
        "terminations": dict(sorted(terminations.items())),
        "error_categories": dict(sorted(errors.items())),
        "tool_call_histogram": dict(sorted(Counter(calls).items())),
    }
