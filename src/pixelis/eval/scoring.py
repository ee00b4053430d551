"""Answer scoring against a trajectory target: text, number, multiple choice and box answers.

A target is ``{"type": "text"|"number"|"choice"|"box", "value": ..., "choices": [...]}`` (choices only for
"choice"). `score_answer` is the single judge used by evaluation, rewards and voting.
"""

from __future__ import annotations

import json
import re
import string
from typing import Any, Sequence

__all__ = ["box_iou", "normalize_answer", "parse_box", "parse_number", "score_answer"]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation})
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}
_WORD_NUMBERS = {w: i for i, w in enumerate(_ONES)} | _TENS | {"none": 0, "no": 0}
_LETTER = re.compile(r"^\s*(?:option\s+)?\(?([A-Za-z])\s*[\).:]?(?:\s+(.*))?$", re.S)


def normalize_answer(text: str) -> str:
    """Lowercase; punctuation to spaces; drop the articles a/an/the; collapse whitespace."""
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def parse_number(text: str) -> float | None:
    """The first number in `text`: digits ("3", "-2.5") or an English word ("three", "twenty one")."""
    digit = _NUMBER.search(text)
    words = normalize_answer(text.replace("-", " ")).split()
    word_value, word_pos = None, None
    for i, w in enumerate(words):
        if w in _WORD_NUMBERS and not (w in ("no", "none") and len(words) > 1):
            value = _WORD_NUMBERS[w]
            if w in _TENS and i + 1 < len(words) and words[i + 1] in _ONES[1:10]:
                value += _WORD_NUMBERS[words[i + 1]]
            word_value, word_pos = value, i
            break
    if digit is None:
        return None if word_value is None else float(word_value)
    if word_value is not None:
        # Whichever comes first in the text wins ("three of the 5 shapes" -> 3).
        digit_word_pos = len(normalize_answer(text[: digit.start()].replace("-", " ")).split())
        if word_pos is not None and word_pos < digit_word_pos:
            return float(word_value)
    return float(digit.group())


def parse_box(text: str | Sequence[float]) -> list[float] | None:
    """A box [x1, y1, x2, y2] from a list, a JSON list, or text holding four numbers ("x1,y1,x2,y2")."""
    if isinstance(text, str):
        try:
            obj = json.loads(text)
        except (json.JSONDecodeError, ValueError):
            obj = None
        if isinstance(obj, dict):
            obj = obj.get("bbox") or obj.get("box")
        if isinstance(obj, list) and len(obj) == 1 and isinstance(obj[0], list):
            obj = obj[0]
        if isinstance(obj, list) and len(obj) == 4 and all(isinstance(v, (int, float)) for v in obj):
            return [float(v) for v in obj]
        nums = _NUMBER.findall(text)
        return [float(v) for v in nums[:4]] if len(nums) >= 4 else None
    values = list(text)
    return [float(v) for v in values] if len(values) == 4 else None


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes; 0 when either is empty or inverted."""
    if len(a) != 4 or len(b) != 4:
        raise ValueError(f"boxes need 4 coordinates, got {list(a)} and {list(b)}")
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    if area_a <= 0 or area_b <= 0:
        return 0.0
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (area_a + area_b - inter)


def _score_choice(prediction: str, value: Any, choices: Sequence[Any]) -> bool:
    norm_choices = [normalize_answer(str(c)) for c in choices]
    target = normalize_answer(str(value))
    if target not in norm_choices:
        raise ValueError(f"choice target value {value!r} is not one of its choices {list(choices)}")
    pred = normalize_answer(prediction)
    if pred == target:
        return True
    if pred in norm_choices:
        return False
    letter = _LETTER.match(prediction.strip())
    if letter:
        index = ord(letter.group(1).lower()) - ord("a")
        rest = normalize_answer(letter.group(2) or "")
        if 0 <= index < len(choices) and (not rest or rest == norm_choices[index]):
            return norm_choices[index] == target
    # A sentence naming exactly one option ("it moves up left"); options inside longer matched options
    # ("left" inside "up left") do not count separately.
    named, rest = set(), f" {pred} "
    for choice in sorted(set(norm_choices), key=len, reverse=True):
        if choice and f" {choice} " in rest:
            named.add(choice)
            rest = rest.replace(f" {choice} ", " | ")
    return named == {target}


def score_answer(
    prediction: str | None, target: dict[str, Any], iou_threshold: float = 0.5, numeric_tolerance: float = 0.0
) -> bool:
    """Whether `prediction` answers `target` correctly.

    text: normalised exact match; number: first number (digits or words) within `numeric_tolerance`;
    choice: the option text or its letter (A, B, ...); box: IoU >= `iou_threshold`.
    """
    if not isinstance(target, dict) or "type" not in target or "value" not in target:
        raise ValueError(f"target must be a dict with 'type' and 'value', got {target!r}")
    if prediction is None:
        return False
    kind, value = target["type"], target["value"]
    if kind == "text":
        return normalize_answer(prediction) == normalize_answer(str(value))
    if kind == "number":
        number = parse_number(prediction)
        return number is not None and abs(number - float(value)) <= numeric_tolerance
    if kind == "choice":
        choices = target.get("choices")
        if not choices:
            raise ValueError(f"choice target needs a non-empty 'choices' list, got {target!r}")
        return _score_choice(prediction, value, choices)
    if kind == "box":
        box = parse_box(prediction)
        return box is not None and box_iou(box, [float(v) for v in value]) >= iou_threshold
    raise ValueError(f"unknown target type {kind!r}; expected text, number, choice or box")
