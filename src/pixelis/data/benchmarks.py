"""Load evaluation data: Pixelis suites and local copies of common benchmark layouts.

Supported (`load_eval_data` picks by looking at the path):
- a Pixelis trajectory JSONL file, or a suite directory holding `<split>.jsonl` (from `pixelis data synth`);
- the V* Bench layout: a directory tree of `<name>.jpg|png` + `<name>.json` pairs whose JSON has `question` and
  `options` (the first option is the correct one, as in V*); options are shuffled deterministically per item
  and the question becomes multiple choice with letters;
- a generic VQA table: a `.jsonl` of `{"image", "question", "answer", "choices"?}` rows, or a `.tsv` with
  `image`, `question`, `answer` columns (optionally `A`..`D` option columns), image paths relative to the file.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from pathlib import Path
from typing import Any

from PIL import Image

from pixelis.core.errors import DataError
from pixelis.core.trajectory import MAX_IMAGE_PIXELS, Trajectory, load_image, read_jsonl

LETTERS = "ABCDEFGH"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


class DataFormatError(DataError):
    """Evaluation data that matches no supported layout, or a bad row or image; names file and line."""


def _open_image(path: Path, where: str, max_pixels: int) -> Image.Image:
    try:
        return load_image(path, max_pixels).convert("RGB")
    except DataError as exc:
        raise DataFormatError(f"{where}: {exc}") from None


def _multiple_choice(question: str, options: list[str], answer_index: int, key: str) -> tuple[str, dict[str, Any]]:
    order = list(range(len(options)))
    random.Random(hashlib.sha256(key.encode()).hexdigest()).shuffle(order)
    shuffled = [options[i] for i in order]
    letter = LETTERS[order.index(answer_index)]
    lines = [question] + [f"({LETTERS[i]}) {opt}" for i, opt in enumerate(shuffled)]
    lines.append("Answer with the option's letter.")
    return "\n".join(lines), {"type": "choice", "value": letter, "choices": shuffled}


def load_vstar(root: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> list[Trajectory]:
    """V* Bench layout: `<category>/<name>.jpg` with `<name>.json` holding question and options."""
    out = []
    for meta_path in sorted(root.rglob("*.json")):
        image_path = next((meta_path.with_suffix(s) for s in IMAGE_SUFFIXES if meta_path.with_suffix(s).is_file()), None)
        if image_path is None:
            continue
        try:
            meta = json.loads(meta_path.read_text())
            question, options = meta["question"], list(meta["options"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataFormatError(f"{meta_path}: not a V* item (need 'question' and 'options'): {exc}") from None
        rel = meta_path.relative_to(root).with_suffix("").as_posix()
        text, target = _multiple_choice(question, options, 0, rel)
        category = meta_path.parent.name if meta_path.parent != root else "vstar"
        image = _open_image(image_path, str(meta_path), max_pixels)
        out.append(Trajectory(id=rel, question=text, images=[image], target=target,
                              metadata={"family": category, "difficulty": "unknown", "source": "vstar"}))
    return out


def _row_to_trajectory(row: Any, base: Path, where: str, index: int, max_pixels: int) -> Trajectory:
    if not isinstance(row, dict):
        raise DataFormatError(f"{where}: a row must be a JSON object, got {type(row).__name__}")
    missing = [k for k in ("image", "question", "answer") if not row.get(k)]
    if missing:
        raise DataFormatError(f"{where}: missing field(s) {missing}")
    question, answer = str(row["question"]), str(row["answer"])
    choices = row.get("choices") or [row[k] for k in LETTERS[:4] if row.get(k)]
    if not isinstance(choices, list):
        raise DataFormatError(f"{where}: field 'choices' must be a list, got {type(choices).__name__}")
    if choices:
        if answer in LETTERS[:len(choices)]:
            value = answer
        elif answer in choices:
            value = LETTERS[choices.index(answer)]
        else:
            raise DataFormatError(f"{where}: answer {answer!r} is neither a choice letter nor one of {choices}")
        question = "\n".join([question] + [f"({LETTERS[i]}) {c}" for i, c in enumerate(choices)])
        target: dict[str, Any] = {"type": "choice", "value": value, "choices": list(choices)}
    else:
        target = {"type": "number" if _is_number(answer) else "text", "value": answer}
    return Trajectory(id=str(row.get("id", index)), question=question,
                      images=[_open_image(base / str(row["image"]), where, max_pixels)], target=target,
                      metadata={"family": str(row.get("category", "vqa")), "difficulty": "unknown",
                                "source": "vqa"})


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def load_vqa_table(path: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> list[Trajectory]:
    """Generic VQA JSONL/TSV rows with an image path, a question and an answer."""
    if path.suffix == ".tsv":
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        return [_row_to_trajectory(r, path.parent, f"{path}:{i + 2}", i, max_pixels) for i, r in enumerate(rows)]
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataFormatError(f"{path}:{lineno}: invalid JSON: {exc.msg}") from None
            out.append(_row_to_trajectory(row, path.parent, f"{path}:{lineno}", lineno - 1, max_pixels))
    return out


def _is_trajectory_jsonl(path: Path) -> bool:
    with path.open(encoding="utf-8") as f:
        first = next((line for line in f if line.strip()), "")
    try:
        row = json.loads(first)
    except json.JSONDecodeError:
        return False
    return isinstance(row, dict) and "steps" in row and isinstance(row.get("images"), list)


def load_eval_data(path: str | Path, split: str = "test", limit: int | None = None,
                   max_pixels: int = MAX_IMAGE_PIXELS) -> list[Trajectory]:
    """Samples to evaluate from a suite dir, a trajectory JSONL, a V* Bench dir or a VQA JSONL/TSV.

    An unreadable image, or one above `max_pixels` (width x height, `data.max_image_pixels`; checked before
    decoding), raises a `DataError` naming the image and the row or item that refers to it.
    """
    path = Path(path)
    if path.is_dir():
        if (path / f"{split}.jsonl").is_file():
            samples = read_jsonl(path / f"{split}.jsonl", max_pixels)
        else:
            samples = load_vstar(path, max_pixels)
            if not samples:
                raise DataFormatError(f"{path}: no {split}.jsonl and no V* Bench items (<name>.json + image) found")
    elif path.is_file():
        if path.suffix == ".jsonl" and _is_trajectory_jsonl(path):
            samples = read_jsonl(path, max_pixels)
        elif path.suffix in (".jsonl", ".tsv"):
            samples = load_vqa_table(path, max_pixels)
        else:
            raise DataFormatError(f"{path}: unsupported file type (expected .jsonl or .tsv)")
    else:
        raise DataFormatError(f"evaluation data not found: {path}")
    return samples[:limit] if limit is not None else samples
