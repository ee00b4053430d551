"""Trajectory voting for online test-time learning: which of N sampled trajectories to trust and learn from.

For an unlabelled query the engine samples N complete trajectories and votes over them here. Answers are grouped
by meaning (`answer_key`): boxes by overlap (IoU >= 0.5 with the group's first box), bare numbers by value ("3",
"3.0" and "three" agree), anything else by `normalize_answer`; a trajectory without an answer joins no group.
Every trajectory weighs (`score_member`, with the `online.vote` section of the config)::

    w = 1 * (1 - validity)       if any call failed (an error observation or an unparsable turn)
          * (1 + brevity) ** -max(0, calls - 1)
          * (1 + fidelity)       if the tools' own observations support the answer (`is_supported`)

A group weighs the sum of its members plus what retrieved neighbours add: ``neighbours * similarity`` for a
neighbour whose stored answer is the group's, and `TOOLCHAIN_SHARE` of that, shared among the groups it matches,
for one whose answer matches no group but whose toolchain equals a member's. The confidence is the winning group's
share of all weight cast (every trajectory's weight, answered or not, plus the neighbour weight given to groups):
abstaining samples dilute it. A tie or no answer abstains (answer None, confidence 0). The plain TTRL majority over
answer counts is computed alongside, and `VoteConfig.learn_from` picks which vote decides what is learned; the
confidence gate is the engine's.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Literal, Sequence

from pixelis.core.config import VoteConfig
from pixelis.core.trajectory import Observation, Trajectory
from pixelis.eval.scoring import box_iou, normalize_answer, parse_box, parse_number
from pixelis.tools.properties import COLOR_NAMES, SHAPE_NAMES

__all__ = [
    "BOX_IOU",
    "TIE_EPS",
    "TOOLCHAIN_SHARE",
    "AnswerKey",
    "MemberScore",
    "NeighbourVote",
    "Vote",
    "VoteGroup",
    "answer_key",
    "is_supported",
    "is_valid",
    "mentions",
    "score_member",
    "supports_attribute",
    "supports_box",
    "supports_count",
    "supports_frame",
    "supports_text",
    "toolchain",
    "vote",
]

BOX_IOU = 0.5  # box answers agree (and a tool's box supports a box answer) at this IoU or more
TIE_EPS = 1e-9  # weights this close are equal
TOOLCHAIN_SHARE = 0.5  # share of a neighbour's weight given for a toolchain match alone (answer not matched)

AnswerKind = Literal["box", "number", "text"]
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_BARE_NUMBER = re.compile(_NUMBER)
_SEP = r"\s*(?:,\s*|\s+)"
_BARE_BOX = re.compile(rf"\s*{_NUMBER}{_SEP}{_NUMBER}{_SEP}{_NUMBER}{_SEP}{_NUMBER}\s*")
_BRACKETS = str.maketrans("", "", "[]()")
_COUNT_QUESTION = re.compile(r"\b(?:how many|number of|count)\b", re.I)
_COLORS = frozenset(COLOR_NAMES)
_SHAPES = frozenset(SHAPE_NAMES) - {"other"}
_ECHO_TOOLS = frozenset({"zoom_in", "select_frames"})  # their boxes/frames only repeat the call's arguments


# --------------------------------------------------------------------------------------------- answers

@dataclass(frozen=True)
class AnswerKey:
    """What an answer means for grouping: a box, a number or normalised text."""

    kind: AnswerKind
    value: str | float | tuple[float, ...]

    def matches(self, other: AnswerKey) -> bool:
        """Same kind and the same value (boxes: IoU >= `BOX_IOU`)."""
        if self.kind != other.kind:
            return False
        if self.kind == "box":
            return box_iou(self.value, other.value) >= BOX_IOU  # type: ignore[arg-type]
        return self.value == other.value

    def to_json(self) -> Any:
        return list(self.value) if self.kind == "box" else self.value  # type: ignore[arg-type]


def answer_key(answer: str | None) -> AnswerKey | None:
    """The grouping key of an answer; None for no answer (or one that normalises to nothing).

    A box is a JSON list / ``{"bbox": [...]}`` / bracketed or bare text of exactly four numbers with x1 < x2 and
    y1 < y2; a number is a bare number ("3", "-2.5", "3.") or one or two number words ("three", "twenty one"),
    never "no"/"none" and never a number inside other text ("AC3F7", "3 circles" stay text).
    """
    if answer is None:
        return None
    text = answer.strip()
    box = _as_box(text)
    if box is not None:
        return AnswerKey("box", box)
    number = _as_number(text)
    if number is not None:
        return AnswerKey("number", number)
    norm = normalize_answer(text)
    return AnswerKey("text", norm) if norm else None


def _as_box(text: str) -> tuple[float, ...] | None:
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError:
            return None
        if not isinstance(obj, dict) or not isinstance(obj.get("bbox", obj.get("box")), list):
            return None
        box = parse_box(text)
    elif _BARE_BOX.fullmatch(text.translate(_BRACKETS)):
        box = parse_box(text)
    else:
        return None
    if box is None or not (box[0] < box[2] and box[1] < box[3]):
        return None
    return tuple(box)


def _as_number(text: str) -> float | None:
    bare = text.rstrip(".").strip()
    if _BARE_NUMBER.fullmatch(bare):
        return float(bare)
    words = normalize_answer(bare.replace("-", " ")).split()
    if 1 <= len(words) <= 2 and all(w not in ("no", "none") and not any(c.isdigit() for c in w)
                                    and parse_number(w) is not None for w in words):
        return parse_number(" ".join(words))
    return None


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def toolchain(traj: Trajectory) -> tuple[str, ...]:
    """Names of the tools a trajectory called, in order (unparsable turns carry no call and are skipped)."""
    return tuple(s.call.name for s in traj.steps if s.call is not None)


def is_valid(traj: Trajectory) -> bool:
    """False when any call failed: an observation with an error, or a turn that did not parse (``raw_text``)."""
    return not any(s.raw_text is not None or (s.observation is not None and s.observation.error is not None)
                   for s in traj.steps)


# -------------------------------------------------------------------------------------------- fidelity

def _observations(traj: Trajectory, tool: str | None = None) -> Iterator[tuple[str, Observation]]:
    """(tool name, observation) of every successful call, optionally of one tool only."""
    for s in traj.steps:
        if s.call is not None and s.observation is not None and s.observation.error is None:
            if tool is None or s.call.name == tool:
                yield s.call.name, s.observation


def _has_phrase(haystack: str, needle: str) -> bool:
    """Whether normalised `needle` occurs in normalised `haystack` on word boundaries."""
    return bool(needle) and f" {needle} " in f" {haystack} "


def supports_text(answer: str, traj: Trajectory) -> bool:
    """OCR: the answer (normalised) is a phrase of a `read_text` line, or equals a line with spaces ignored
    ("AC3 F7" read for "AC3F7")."""
    target = normalize_answer(answer)
    compact = target.replace(" ", "")
    for _, obs in _observations(traj, "read_text"):
        lines = obs.data.get("lines")
        if isinstance(lines, list):  # the OCR lines; without them, the observation text
            texts = [str(line.get("text", "")) for line in lines if isinstance(line, dict)]
        else:
            texts = [obs.text]
        for text in texts:
            norm = normalize_answer(text)
            if _has_phrase(norm, target) or (compact and norm.replace(" ", "") == compact):
                return True
    return False


def _asked_object(question: str) -> tuple[str | None, str | None]:
    """The colour and shape a question names ("How many red circles ...?" -> red, circle), None where absent."""
    colour = shape = None
    for w in normalize_answer(question).split():
        if colour is None and w in _COLORS:
            colour = w
        singular = w[:-1] if w.endswith("s") else w
        if shape is None and (w in _SHAPES or singular in _SHAPES):
            shape = w if w in _SHAPES else singular
    return colour, shape


def _add_distinct(boxes: list[list[float]], box: Any) -> None:
    """Append `box` unless it is (IoU >= BOX_IOU) one already seen; a missing box counts as a new object."""
    if isinstance(box, (list, tuple)) and len(box) == 4:
        if any(box_iou(b, box) >= BOX_IOU for b in boxes if len(b) == 4):
            return
        boxes.append([float(v) for v in box])
    else:
        boxes.append([])


def supports_count(value: float, traj: Trajectory, question: str | None = None) -> bool:
    """Count: the number equals the distinct objects the tools reported.

    Objects are the `get_properties` observations that found an object of the colour and shape the question
    names (``data.color`` / ``data.shape``; a look-alike checked and rejected does not count), merged when their
    boxes overlap; without any `get_properties` call, the distinct `segment_object_at` boxes. No object-reporting
    observation at all supports nothing.
    """
    colour, shape = _asked_object(traj.question if question is None else question)
    found: list[list[float]] = []
    props = [obs for _, obs in _observations(traj, "get_properties")]
    if props:
        for obs in props:
            d = obs.data
            if d.get("object_found") is False or (colour and d.get("color") != colour) or (
                    shape and d.get("shape") != shape):
                continue
            _add_distinct(found, d.get("bbox"))
    else:
        segments = [obs for _, obs in _observations(traj, "segment_object_at") if obs.data.get("bbox") is not None]
        if not segments:
            return False
        for obs in segments:
            _add_distinct(found, obs.data["bbox"])
    return float(value) == len(found)


def supports_frame(value: float, traj: Trajectory) -> bool:
    """Temporal: the number is the ``start_frame`` of a `localize_event` observation that matched its event."""
    return any(obs.data.get("start_frame") is not None and float(obs.data["start_frame"]) == float(value)
               and obs.data.get("matches_event") is not False
               for _, obs in _observations(traj, "localize_event"))


def _is_attribute(norm: str) -> bool:
    words = norm.split()
    return bool(words) and all(w in _COLORS or w in _SHAPES for w in words)


def supports_attribute(answer: str, traj: Trajectory) -> bool:
    """Attribute: one `get_properties` observation of a found object reports every colour and shape the answer
    names ("red", "circle", "the green star")."""
    words = normalize_answer(answer).split()
    colours, shapes = [w for w in words if w in _COLORS], [w for w in words if w in _SHAPES]
    if not colours and not shapes:
        return False
    return any(obs.data.get("object_found") is not False
               and all(c == obs.data.get("color") for c in colours) and all(s == obs.data.get("shape") for s in shapes)
               for _, obs in _observations(traj, "get_properties"))


def _tool_boxes(name: str, obs: Observation) -> Iterator[list[float]]:
    """Boxes a tool found: ``data.bbox``, ``data.boxes`` (tracks) and ``data.lines[].bbox`` (OCR)."""
    if name in _ECHO_TOOLS:
        return
    d = obs.data
    candidates = [d.get("bbox"), *(d.get("boxes") or [])]
    candidates += [line.get("bbox") for line in d.get("lines") or [] if isinstance(line, dict)]
    for box in candidates:
        if isinstance(box, (list, tuple)) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box):
            yield [float(v) for v in box]


def supports_box(box: Sequence[float], traj: Trajectory) -> bool:
    """Box: the answer overlaps (IoU >= `BOX_IOU`) a box a tool found; boxes zoom_in merely echoes don't count."""
    return any(box_iou(box, found) >= BOX_IOU for name, obs in _observations(traj) for found in _tool_boxes(name, obs))


def _quadrant(box: Sequence[float]) -> str:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return f"{'top' if cy < 500 else 'bottom'}-{'left' if cx < 500 else 'right'}"


def mentions(answer: str, traj: Trajectory) -> bool:
    """Any other answer: it occurs (normalised, on word boundaries) in a successful observation's text, its string
    data values (a track's ``direction``, a region name), or the quadrant of a track's final box."""
    target = normalize_answer(answer)
    for name, obs in _observations(traj):
        facts = [obs.text, *(v for v in obs.data.values() if isinstance(v, str))]
        if name == "track_object":
            last = [b for b in obs.data.get("boxes") or [] if isinstance(b, (list, tuple)) and len(b) == 4]
            facts += [_quadrant(last[-1])] if last else []
        if any(_has_phrase(normalize_answer(fact), target) for fact in facts):
            return True
    return False


def is_supported(traj: Trajectory) -> bool:
    """Whether the trajectory's own tool observations support its answer (the fidelity test).

    Boxes: `supports_box`. Numbers: `supports_count` for a counting question ("how many", "number of"), else
    `supports_frame` when `localize_event` was called, else `mentions`. Text naming only colours/shapes:
    `supports_attribute`; other text: `supports_text` when `read_text` was called, else `mentions`.
    """
    key = answer_key(traj.answer)
    if key is None or traj.answer is None:
        return False
    if key.kind == "box":
        return supports_box(key.value, traj)  # type: ignore[arg-type]
    if key.kind == "number":
        value = float(key.value)  # type: ignore[arg-type]
        if _COUNT_QUESTION.search(traj.question):
            return supports_count(value, traj)
        if any(True for _ in _observations(traj, "localize_event")):
            return supports_frame(value, traj)
        return mentions(_format_number(value), traj)
    if _is_attribute(str(key.value)):
        return supports_attribute(traj.answer, traj)
    if any(True for _ in _observations(traj, "read_text")):
        return supports_text(traj.answer, traj)
    return mentions(traj.answer, traj)


# ---------------------------------------------------------------------------------------------- voting

@dataclass(frozen=True)
class NeighbourVote:
    """A retrieved experience as the vote sees it: its stored answer, its toolchain and its similarity."""

    answer: str
    toolchain: tuple[str, ...]
    similarity: float


@dataclass(frozen=True)
class MemberScore:
    """One trajectory's part in the vote: its calls, validity, fidelity and resulting weight."""

    index: int
    calls: int
    valid: bool
    supported: bool
    weight: float

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "calls": self.calls, "valid": self.valid, "supported": self.supported,
                "weight": self.weight}


@dataclass(frozen=True)
class VoteGroup:
    """Trajectories that gave the same answer; `weight` = their weights + `neighbour_weight`."""

    answer: str  # the answer text of the group's best member
    key: AnswerKey
    weight: float
    members: tuple[int, ...]
    neighbour_weight: float = 0.0

    @property
    def count(self) -> int:
        return len(self.members)

    def to_dict(self) -> dict[str, Any]:
        return {"answer": self.answer, "kind": self.key.kind, "key": self.key.to_json(), "weight": self.weight,
                "neighbour_weight": self.neighbour_weight, "members": list(self.members)}


@dataclass(frozen=True)
class Vote:
    """The outcome of voting over one query's trajectories (weighted vote and plain majority)."""

    answer: str | None
    confidence: float
    winner_index: int | None
    groups: tuple[VoteGroup, ...]
    tie: bool
    member_weights: tuple[float, ...]
    majority_answer: str | None
    majority_share: float
    majority_index: int | None
    learn_from: Literal["trajectory", "majority"]
    learn_answer: str | None
    learn_index: int | None
    total_weight: float = 0.0
    majority_tie: bool = False
    members: tuple[MemberScore, ...] = field(default=(), repr=False)

    @property
    def learn_confidence(self) -> float:
        """The confidence of the vote that decides learning: `confidence` or `majority_share`."""
        return self.majority_share if self.learn_from == "majority" else self.confidence

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary for logs and reports."""
        return {
            "answer": self.answer, "confidence": self.confidence, "winner_index": self.winner_index,
            "tie": self.tie, "total_weight": self.total_weight, "groups": [g.to_dict() for g in self.groups],
            "member_weights": list(self.member_weights), "members": [m.to_dict() for m in self.members],
            "majority_answer": self.majority_answer, "majority_share": self.majority_share,
            "majority_index": self.majority_index, "majority_tie": self.majority_tie, "learn_from": self.learn_from,
            "learn_answer": self.learn_answer, "learn_index": self.learn_index,
        }


def score_member(traj: Trajectory, index: int = 0, config: VoteConfig | None = None) -> MemberScore:
    """A trajectory's weight: validity factor x brevity factor x fidelity factor (see the module docstring).

    The validity factor is clamped at 0, so a `validity` above 1 never makes a weight negative.
    """
    config = config or VoteConfig()
    calls, valid = traj.num_tool_calls, is_valid(traj)
    supported = traj.answer is not None and is_supported(traj)
    weight = 1.0
    if not valid:
        weight *= max(0.0, 1.0 - config.validity)
    weight /= (1.0 + config.brevity) ** max(0, calls - 1)
    if supported:
        weight *= 1.0 + config.fidelity
    return MemberScore(index=index, calls=calls, valid=valid, supported=supported, weight=weight)


def _find_group(keys: Sequence[AnswerKey], key: AnswerKey) -> int | None:
    """Index of the group `key` belongs to: equal key; for boxes the best IoU >= BOX_IOU (earliest on a tie)."""
    if key.kind != "box":
        return next((i for i, k in enumerate(keys) if k.matches(key)), None)
    best, best_iou = None, BOX_IOU
    for i, k in enumerate(keys):
        if k.kind == "box":
            iou = box_iou(k.value, key.value)  # type: ignore[arg-type]
            if iou >= best_iou and (best is None or iou > best_iou):
                best, best_iou = i, iou
    return best


def _best_member(members: Sequence[int], scores: Sequence[MemberScore]) -> int:
    """Highest weight; ties (within TIE_EPS) -> fewest calls -> lowest index."""
    best = members[0]
    for m in members[1:]:
        wm, wb = scores[m].weight, scores[best].weight
        if wm > wb + TIE_EPS or (abs(wm - wb) <= TIE_EPS and scores[m].calls < scores[best].calls):
            best = m
    return best


def vote(trajectories: Sequence[Trajectory], neighbours: Iterable[NeighbourVote] = (),
         config: VoteConfig = VoteConfig()) -> Vote:
    """Vote over one query's complete trajectories (and retrieved neighbours); see the module docstring.

    `neighbours` may be any objects with ``answer``, ``toolchain`` and ``similarity``; a negative similarity
    counts as 0, and a neighbour matching no group by answer or toolchain adds nothing (not even to the total).
    """
    scores = [score_member(t, i, config) for i, t in enumerate(trajectories)]
    chains = [toolchain(t) for t in trajectories]
    keys: list[AnswerKey] = []
    members: list[list[int]] = []
    for i, traj in enumerate(trajectories):
        key = answer_key(traj.answer)
        if key is None:
            continue
        g = _find_group(keys, key)
        if g is None:
            keys.append(key)
            members.append([i])
        else:
            members[g].append(i)

    extra = [0.0] * len(keys)
    for nb in neighbours:
        w = config.neighbours * max(0.0, float(nb.similarity))
        if w <= 0.0 or not keys:
            continue
        key = answer_key(nb.answer)
        g = _find_group(keys, key) if key is not None else None
        if g is not None:
            extra[g] += w
            continue
        chain = tuple(nb.toolchain or ())
        hits = [g for g, ms in enumerate(members) if chain and any(chains[m] == chain for m in ms)]
        for g in hits:
            extra[g] += TOOLCHAIN_SHARE * w / len(hits)

    groups = []
    for key, ms, nw in zip(keys, members, extra):
        best = _best_member(ms, scores)
        groups.append(VoteGroup(answer=str(trajectories[best].answer).strip(), key=key,
                                weight=sum(scores[m].weight for m in ms) + nw, members=tuple(ms),
                                neighbour_weight=nw))
    groups.sort(key=lambda g: (-g.weight, -g.count, g.members[0]))
    total = sum(s.weight for s in scores) + sum(extra)

    tie = len(groups) >= 2 and abs(groups[0].weight - groups[1].weight) <= TIE_EPS
    won = bool(groups) and not tie and groups[0].weight > 0.0 and total > 0.0
    answer = groups[0].answer if won else None
    confidence = groups[0].weight / total if won else 0.0
    winner = _best_member(groups[0].members, scores) if won else None

    by_count = sorted(groups, key=lambda g: (-g.count, g.members[0]))
    majority_tie = len(by_count) >= 2 and by_count[0].count == by_count[1].count
    majority = by_count[0] if by_count and not majority_tie else None
    majority_index = _best_member(majority.members, scores) if majority else None

    learn_majority = config.learn_from == "majority"
    return Vote(
        answer=answer,
        confidence=confidence,
        winner_index=winner,
        groups=tuple(groups),
        tie=tie,
        member_weights=tuple(s.weight for s in scores),
        majority_answer=majority.answer if majority else None,
        majority_share=majority.count / len(trajectories) if majority else 0.0,
        majority_index=majority_index,
        learn_from=config.learn_from,
        learn_answer=(majority.answer if majority else None) if learn_majority else answer,
        learn_index=majority_index if learn_majority else winner,
        total_weight=total,
        majority_tie=majority_tie,
        members=tuple(scores),
    )
