"""Held-out grounding metrics: box IoU >= 0.5, point inside the box, attribute and label accuracy, per object size.

The held-out set is the `heldout` stream of `pixelis.data.grounding` with a fixed seed, the same for every run,
so runs with different seeds and settings are compared on the same images, none of which any run trains on.
The policy answers each prompt by greedy generation, and its text is parsed the way the agent parses a turn.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from pixelis.agent.loop import GenerationRequest, SamplingParams
from pixelis.agent.policies import ModelPolicy
from pixelis.core.trajectory import ParseError, parse_assistant_text, to_messages
from pixelis.data.grounding import SCENE_BINS, SIZE_BINS, GroundingSample, grounding_sample
from pixelis.eval.scoring import box_iou, normalize_answer

HELDOUT_SEED = 0
MAX_NEW_TOKENS = 48  # the longest expected turn (a zoom_in call) is ~35 tokens
# metric name -> the tasks it averages over
METRICS = {"box_iou50": ("box",), "point_in_box": ("point",), "attribute_accuracy": ("color", "shape"),
           "label_accuracy": ("label",)}


def heldout_samples(n: int, weights: dict[str, float] | None = None) -> list[GroundingSample]:
    """The first `n` held-out samples (task mix `weights`)."""
    return [grounding_sample(HELDOUT_SEED, "heldout", i, weights) for i in range(n)]


def score_response(sample: GroundingSample, text: str) -> dict[str, Any]:
    """One scored held-out answer: whether it parses (`valid`), and whether it is right (`correct`)."""
    record: dict[str, Any] = {"id": sample.id, "task": sample.task, "size": sample.size_bin,
                              "scene": sample.scene_bin, "box": sample.box,
                              "text": text, "valid": False, "correct": False}
    try:
        turn = parse_assistant_text(text)
    except ParseError as err:
        return {**record, "error": err.kind}
    args = turn.call.arguments if turn.call is not None else {}
    if sample.task == "box" and _numbers(args.get("bbox"), 4):
        record["iou"] = round(box_iou(args["bbox"], sample.box), 4)
        record.update(valid=True, correct=record["iou"] >= 0.5)
    elif sample.task == "point" and _numbers(args.get("point"), 2):
        x, y = args["point"]
        x1, y1, x2, y2 = sample.box
        record.update(valid=True, correct=bool(x1 <= x <= x2 and y1 <= y <= y2))
    elif sample.answer is not None and turn.answer is not None:
        record.update(valid=True, correct=normalize_answer(turn.answer) == normalize_answer(sample.answer))
    return record


def _numbers(value: Any, n: int) -> bool:
    return isinstance(value, list) and len(value) == n and all(isinstance(v, (int, float)) for v in value)


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Rates over the scored records, overall and per object size (None where a cell has no samples)."""

    def rates(rows: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"n": len(rows), "valid": _mean([r["valid"] for r in rows])}
        for name, tasks in METRICS.items():
            out[name] = _mean([r["correct"] for r in rows if r["task"] in tasks])
        ious = [r["iou"] for r in rows if "iou" in r]
        out["box_iou_mean"] = _mean(ious)
        return out

    by_size: dict[str, list[dict[str, Any]]] = defaultdict(list)
    by_scene: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_size[r["size"]].append(r)
        by_scene[r["scene"]].append(r)
    return {**rates(records), "by_size": {name: rates(by_size[name]) for name, _ in SIZE_BINS if by_size[name]},
            "by_scene": {name: rates(by_scene[name]) for name in SCENE_BINS if by_scene[name]}}


def _mean(values: list[Any]) -> float | None:
    return sum(float(v) for v in values) / len(values) if values else None


@torch.no_grad()
def evaluate_grounding(model: Any, processor: Any, n: int, weights: dict[str, float] | None = None,
                       batch_size: int = 16) -> dict[str, Any]:
    """Generate and score answers to the first `n` held-out samples: `{"metrics": ..., "samples": [...]}`."""
    was_training = model.training
    model.eval()
    policy = ModelPolicy(model, processor)
    records = []
    samples = heldout_samples(n, weights)
    for start in range(0, n, batch_size):
        chunk = samples[start:start + batch_size]
        requests = []
        for s in chunk:
            prompt = s.trajectory(with_response=False)
            messages, images = to_messages(prompt)
            requests.append(GenerationRequest(prompt, messages, images, None, 0, MAX_NEW_TOKENS, SamplingParams(), 0))
        records += [score_response(s, g.text) for s, g in zip(chunk, policy.generate(requests))]
    model.train(was_training)
    return {"metrics": summarize(records), "samples": records}


def grounding_table(metrics: dict[str, Any]) -> list[str]:
    """Markdown table of held-out metrics: one row per metric; columns: all, each object size, then one-object
    and several-object scenes."""
    groups = [metrics]
    names = ["all"]
    for split in ("by_size", "by_scene"):
        for name, cell in metrics.get(split, {}).items():
            groups.append(cell)
            names.append(name)
    lines = ["| held-out metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for name in ("box_iou50", "point_in_box", "attribute_accuracy", "label_accuracy", "box_iou_mean", "valid"):
        cells = [group.get(name) for group in groups]
        shown = ["–" if v is None else (f"{v:.2f}" if name == "box_iou_mean" else f"{v:.1%}") for v in cells]
        lines.append(f"| {name} | " + " | ".join(shown) + " |")
    lines.append("| samples | " + " | ".join(str(group.get("n", 0)) for group in groups) + " |")
    return lines


def plot_history(history: list[dict[str, Any]], path: Path) -> Path:
    """Training loss and the held-out rates over the steps of a pre-training run, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_rates) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot([r["step"] for r in history], [r["loss"] for r in history], lw=0.8)
    ax_loss.set(xlabel="step", ylabel="training loss", yscale="log", title="loss")
    evals = [r for r in history if "heldout" in r]
    for name in METRICS:
        points = [(r["step"], r["heldout"][name]) for r in evals if r["heldout"].get(name) is not None]
        if points:
            ax_rates.plot(*zip(*points), marker="o", label=name)
    ax_rates.set(xlabel="step", ylabel="rate on held-out images", ylim=(0, 1), title="held-out grounding")
    ax_rates.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
