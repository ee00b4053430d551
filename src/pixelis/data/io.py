"""Dataset IO: load a generated split, convert trajectories to a Hugging Face dataset, collect tokenizer text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import datasets

from pixelis.core.trajectory import (MAX_IMAGE_PIXELS, Trajectory, read_jsonl, render_final_text, render_step_text,
                                     to_messages)

SPLITS = ("train", "val", "test")

# Arrow needs one struct type for every content part, so text is None on image parts.
HF_FEATURES = datasets.Features({
    "id": datasets.Value("string"),
    "images": datasets.List(datasets.Image()),
    "messages": [{"role": datasets.Value("string"),
                  "content": [{"type": datasets.Value("string"), "text": datasets.Value("string")}]}],
    "answer": datasets.Value("string"),
    "target": datasets.Value("string"),  # JSON of the trajectory target
    "family": datasets.Value("string"),
    "difficulty": datasets.Value("string"),
    "trap": datasets.Value("bool"),
})


def load_split(directory: str | Path, split: str, max_pixels: int = MAX_IMAGE_PIXELS) -> list[Trajectory]:
    """Trajectories of `<directory>/<split>.jsonl` (images loaded from `<directory>/media`, at most `max_pixels`
    each, `data.max_image_pixels`)."""
    path = Path(directory) / f"{split}.jsonl"
    if not path.is_file():
        present = sorted(p.stem for p in Path(directory).glob("*.jsonl")) if Path(directory).is_dir() else []
        raise FileNotFoundError(f"split {split!r} not found: {path} does not exist "
                                f"(splits present: {present or 'none'})")
    return read_jsonl(path, max_pixels)


def hf_row(traj: Trajectory) -> dict[str, Any]:
    """One dataset row: conversation images in order and the chat messages that reference them."""
    messages, images = to_messages(traj)
    meta = traj.metadata
    return {
        "id": traj.id,
        "images": [im.convert("RGB") for im in images],
        "messages": [{"role": m["role"], "content": [{"type": c["type"], "text": c.get("text")}
                                                     for c in m["content"]]} for m in messages],
        "answer": traj.answer,
        "target": json.dumps(traj.target, sort_keys=True),
        "family": str(meta.get("family", "")),
        "difficulty": str(meta.get("difficulty", "")),
        "trap": bool(meta.get("trap", False)),
    }


def to_hf_dataset(trajectories: Sequence[Trajectory]) -> datasets.Dataset:
    """A `datasets.Dataset` with `images` + `messages` (TRL's VLM format) and family/difficulty columns."""
    rows = [hf_row(t) for t in trajectories]
    columns = {name: [row[name] for row in rows] for name in HF_FEATURES}
    return datasets.Dataset.from_dict(columns, features=HF_FEATURES)


def corpus_texts(trajectories: Iterable[Trajectory]) -> list[str]:
    """Every text a model reads or writes: questions, assistant turns (thoughts, calls, answers), tool responses."""
    texts: list[str] = []
    for traj in trajectories:
        texts.append(traj.question)
        for step in traj.steps:
            texts.append(render_step_text(step))
            if step.observation is not None:
                texts.append(step.observation.render_text())
        if traj.answer is not None:
            texts.append(render_final_text(traj.final_thought, traj.answer))
    return [t for t in texts if t]
