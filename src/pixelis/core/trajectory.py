"""The one trajectory schema used by data, SFT rendering, rollout parsing, rewards, buffer and reports.

A `Trajectory` is a question about input media (images, optionally a video given as frames), a list of
`Step`s — reasoning text and/or one tool call with its observation — and a final answer. Images are kept in
memory as PIL images; on disk they are PNG files next to the JSONL, referenced by relative path
(content-addressed, so identical images are written once).

On the wire, tool calls follow the Qwen3-VL / Hermes convention::

    <think>reasoning</think>
    <tool_call>
    {"name": "zoom_in", "arguments": {"image": 0, "bbox": [100, 200, 300, 400]}}
    </tool_call>

(the newline form Qwen3-VL emits natively) and the final turn is ``<think>...</think>\\n<answer>...</answer>``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, get_args

from PIL import Image

from pixelis.core.config import DataConfig
from pixelis.core.errors import DataError, reading

StepKind = Literal["normal", "trap", "correction"]

# The default of `data.max_image_pixels`: the largest image (width x height) a data set may hold.
MAX_IMAGE_PIXELS: int = DataConfig.model_fields["max_image_pixels"].default

# The media every record of a synthetic family (pixelis.data.synth) holds: an image (the video families show a
# storyboard of their frames) and, for the video families, the frames themselves.
IMAGE_FAMILIES = frozenset({"small_text", "count", "attribute", "track", "temporal"})
VIDEO_FAMILIES = frozenset({"track", "temporal"})

# Error kinds an observation may carry; parse errors and tool validation errors share this vocabulary.
ERROR_KINDS = (
    "malformed_call",
    "multiple_calls",
    "text_after_call",
    "no_action",
    "unknown_tool",
    "missing_argument",
    "extra_argument",
    "wrong_type",
    "out_of_bounds",
    "invalid_box",
    "frame_out_of_range",
    "limit_exceeded",
    "bad_image",
    "execution_error",
)


@dataclass
class ToolCall:
    """One call of a named tool with JSON arguments."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The canonical JSON body that goes between <tool_call> tags."""
        return json.dumps({"name": self.name, "arguments": self.arguments}, ensure_ascii=False)


@dataclass
class ToolErrorInfo:
    """Why a call could not be executed (one of ERROR_KINDS) and a message the policy can read."""

    kind: str
    message: str


@dataclass
class Observation:
    """What a tool returned: text, images, structured data, or an error."""

    text: str = ""
    images: list[Image.Image] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    error: ToolErrorInfo | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def render_text(self) -> str:
        """The text the policy sees in the tool response."""
        if self.error is not None:
            return f"Error ({self.error.kind}): {self.error.message}"
        return self.text


@dataclass
class Step:
    """One assistant turn that called a tool: reasoning, the call and its observation."""

    thought: str = ""
    call: ToolCall | None = None
    observation: Observation | None = None
    kind: StepKind = "normal"
    raw_text: str | None = None  # generated text when the call failed to parse


@dataclass
class Trajectory:
    """A question about media, the tool-using steps taken, and the final answer."""

    id: str
    question: str
    images: list[Image.Image] = field(default_factory=list)
    video: list[Image.Image] | None = None
    steps: list[Step] = field(default_factory=list)
    final_thought: str = ""
    answer: str | None = None
    target: dict[str, Any] | None = None  # ground truth: {"type": text|number|choice|box, "value": ...}
    metadata: dict[str, Any] = field(default_factory=dict)
    # What the policy was asked and sampled at each generated turn (`pixelis.agent.SampledTurn`), recorded by the
    # agent loop for training on the tokens as sampled. In memory only: the wire format stays model-agnostic.
    turns: list[Any] = field(default_factory=list, repr=False, compare=False)

    def conversation_images(self) -> list[Image.Image]:
        """Images in conversation order: inputs first, then every image a tool returned."""
        out = list(self.images)
        for step in self.steps:
            if step.observation is not None:
                out.extend(step.observation.images)
        return out

    @property
    def num_tool_calls(self) -> int:
        return sum(1 for s in self.steps if s.call is not None or s.raw_text is not None)


# ----------------------------------------------------------------------------------------- wire format

def render_step_text(step: Step) -> str:
    """Assistant text for a tool-calling step."""
    if step.call is None:
        return step.raw_text or ""
    return _with_thought(step.thought, f"<tool_call>\n{step.call.to_json()}\n</tool_call>")


def render_final_text(thought: str, answer: str) -> str:
    """Assistant text for the final answering turn."""
    return _with_thought(thought, f"<answer>{answer}</answer>")


def _with_thought(thought: str, action: str) -> str:
    return f"<think>{thought}</think>\n{action}" if thought else action


class ParseError(ValueError):
    """Generated assistant text that is not exactly one valid action; `kind` is one of ERROR_KINDS."""

    kind = "malformed_call"

    def __init__(self, message: str, text: str = ""):
        super().__init__(message)
        self.text = text


class MalformedToolCall(ParseError):
    kind = "malformed_call"


class MultipleToolCalls(ParseError):
    kind = "multiple_calls"


class TextAfterToolCall(ParseError):
    kind = "text_after_call"


class NoAction(ParseError):
    kind = "no_action"


class UnknownTool(ParseError):
    kind = "unknown_tool"


@dataclass
class ParsedTurn:
    """A successfully parsed assistant turn: a thought and either a tool call or an answer."""

    thought: str
    call: ToolCall | None = None
    answer: str | None = None


_THINK = re.compile(r"<think>(.*?)</think>", re.S)
_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)


def parse_assistant_text(text: str, known_tools: Iterable[str] | None = None) -> ParsedTurn:
    """Parse one generated assistant turn strictly.

    Accepts an optional ``<think>`` block followed by exactly one ``<tool_call>{json}</tool_call>`` or one
    ``<answer>...</answer>``. Raises a `ParseError` subclass naming what was rejected.
    """
    thought_match = _THINK.search(text)
    thought = thought_match.group(1).strip() if thought_match else ""
    body = text[thought_match.end():] if thought_match else text
    calls = list(_CALL.finditer(body))
    if len(calls) > 1:
        raise MultipleToolCalls(f"{len(calls)} tool calls in one turn; make exactly one call per turn", text)
    if "<tool_call>" in body and not calls:
        raise MalformedToolCall("<tool_call> is not closed by </tool_call>", text)
    if calls:
        call = _parse_call_json(calls[0].group(1), text)
        trailing = body[calls[0].end():].strip()
        if trailing:
            raise TextAfterToolCall(f"text after </tool_call>: {trailing[:60]!r}; stop after the call", text)
        if known_tools is not None and call.name not in set(known_tools):
            raise UnknownTool(f"unknown tool {call.name!r}; known tools: {', '.join(sorted(known_tools))}", text)
        return ParsedTurn(thought=thought, call=call)
    answer = _ANSWER.search(body)
    if answer:
        return ParsedTurn(thought=thought, answer=answer.group(1).strip())
    raise NoAction("neither a <tool_call> nor an <answer> was found", text)


def _parse_call_json(body: str, text: str) -> ToolCall:
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as exc:
        raise MalformedToolCall(f"tool call is not valid JSON: {exc.msg} at char {exc.pos}", text) from None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        raise MalformedToolCall('tool call must be an object with a string "name"', text)
    arguments = obj.get("arguments", {})
    if not isinstance(arguments, dict):
        raise MalformedToolCall('"arguments" must be an object', text)
    extra = set(obj) - {"name", "arguments"}
    if extra:
        raise MalformedToolCall(f"unexpected keys in tool call: {sorted(extra)}", text)
    return ToolCall(name=obj["name"], arguments=arguments)


def to_messages(traj: Trajectory, include_answer: bool = True,
                system: str | None = None) -> tuple[list[dict[str, Any]], list[Image.Image]]:
    """Chat messages (HF multimodal format) and the images their ``{"type": "image"}`` parts refer to, in order.

    An optional system message comes first. Tool responses are ``tool`` messages whose content holds the
    observation's images and text.
    """
    user_content: list[dict[str, Any]] = [{"type": "image"} for _ in traj.images]
    user_content.append({"type": "text", "text": traj.question})
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
    messages.append({"role": "user", "content": user_content})
    for step in traj.steps:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": render_step_text(step)}]})
        if step.observation is not None:
            content: list[dict[str, Any]] = [{"type": "image"} for _ in step.observation.images]
            content.append({"type": "text", "text": step.observation.render_text()})
            messages.append({"role": "tool", "content": content})
    if include_answer and traj.answer is not None:
        final = render_final_text(traj.final_thought, traj.answer)
        messages.append({"role": "assistant", "content": [{"type": "text", "text": final}]})
    return messages, traj.conversation_images()


# ------------------------------------------------------------------------------------------ JSON IO

def _image_to_file(image: Image.Image, media_dir: Path, base_dir: Path) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    data = buf.getvalue()
    path = media_dir / f"{hashlib.sha1(data).hexdigest()[:20]}.png"
    if not path.exists():
        media_dir.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return path.relative_to(base_dir).as_posix()


def load_image(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode one image file; one above `max_pixels` (width x height) is refused from its header, undecoded.

    A missing, empty, truncated, undecodable or too large file raises `DataError` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    with reading(path, DataError, "image"), Image.open(path) as img:
        width, height = img.size
        if width * height > max_pixels:
            raise DataError(f"{path}: image of {width}x{height} = {width * height:,} pixels is larger than "
                            f"data.max_image_pixels = {max_pixels:,}")
        img.load()
        return img.copy()


def trajectory_to_dict(traj: Trajectory, base_dir: Path | None = None, media_dir: Path | None = None, *,
                       save_image: Callable[[Image.Image], str] | None = None) -> dict[str, Any]:
    """JSON-ready dict; images are written as PNG files under `media_dir`, stored relative to `base_dir`.

    `save_image` replaces the files: it stores one image and returns the string the record keeps for it (e.g. a
    content hash, as the experience buffer does); `base_dir` and `media_dir` are then unused.
    """
    if save_image is None and (base_dir is None or media_dir is None):
        raise TypeError("trajectory_to_dict needs base_dir and media_dir, or save_image")
    save = save_image or (lambda im: _image_to_file(im, media_dir, base_dir))
    steps = []
    for s in traj.steps:
        obs = s.observation
        steps.append({
            "thought": s.thought,
            "call": None if s.call is None else {"name": s.call.name, "arguments": s.call.arguments},
            "observation": None if obs is None else {
                "text": obs.text,
                "images": [save(im) for im in obs.images],
                "data": obs.data,
                "error": None if obs.error is None else {"kind": obs.error.kind, "message": obs.error.message},
            },
            "kind": s.kind,
            "raw_text": s.raw_text,
        })
    return {
        "id": traj.id,
        "question": traj.question,
        "images": [save(im) for im in traj.images],
        "video": None if traj.video is None else [save(im) for im in traj.video],
        "steps": steps,
        "final_thought": traj.final_thought,
        "answer": traj.answer,
        "target": traj.target,
        "metadata": traj.metadata,
    }


def trajectory_from_dict(d: Any, base_dir: Path | None = None, max_pixels: int = MAX_IMAGE_PIXELS, *,
                         open_image: Callable[[str], Image.Image] | None = None) -> Trajectory:
    """Inverse of `trajectory_to_dict`; image paths are resolved against `base_dir`.

    `open_image` replaces the files: it returns the image a record's string refers to (the inverse of
    `trajectory_to_dict`'s `save_image`); `base_dir` and `max_pixels` are then unused.

    Every field is type-checked, and a wrong type, a missing `id`/`question` or an unreadable image raises
    `DataError` naming the field (e.g. ``steps[1].call.name``) or the image file. A record of a synthetic
    family (`metadata.family` in `IMAGE_FAMILIES`) must hold an image, and one of a video family
    (`VIDEO_FAMILIES`) its frames too; a record of another family, or of none (e.g. a text-only benchmark
    item), may hold no media.
    """
    d = _mapping(d, "the record")
    metadata = _get(d, "metadata", dict, {})
    images, video = _paths(d, "images", []), _paths(d, "video", None)
    _check_media(_get(metadata, "family", str, None, "metadata."), images, video)
    if open_image is None and base_dir is None:
        raise TypeError("trajectory_from_dict needs base_dir, or open_image")
    load = open_image or (lambda rel: load_image(base_dir / rel, max_pixels))
    return Trajectory(
        id=_get(d, "id", str),
        question=_get(d, "question", str),
        images=[load(p) for p in images],
        video=None if video is None else [load(p) for p in video],
        steps=[_step_from_dict(s, f"steps[{i}].", load) for i, s in enumerate(_get(d, "steps", list, []))],
        final_thought=_get(d, "final_thought", str, ""),
        answer=_get(d, "answer", str, None),
        target=_get(d, "target", dict, None),
        metadata=metadata,
    )


def _step_from_dict(s: Any, where: str, load: Callable[[str], Image.Image]) -> Step:
    s = _mapping(s, f"field {where.rstrip('.')}")
    call, obs = _get(s, "call", dict, None, where), _get(s, "observation", dict, None, where)
    kind = _get(s, "kind", str, "normal", where)
    if kind not in get_args(StepKind):
        raise DataError(f"field {where}kind is {kind!r}; expected one of {list(get_args(StepKind))}")
    return Step(
        thought=_get(s, "thought", str, "", where),
        call=None if call is None else ToolCall(_get(call, "name", str, where=f"{where}call."),
                                                _get(call, "arguments", dict, {}, f"{where}call.")),
        observation=None if obs is None else _observation_from_dict(obs, f"{where}observation.", load),
        kind=kind,
        raw_text=_get(s, "raw_text", str, None, where),
    )


def _observation_from_dict(o: dict[str, Any], where: str, load: Callable[[str], Image.Image]) -> Observation:
    error = _get(o, "error", dict, None, where)
    return Observation(
        text=_get(o, "text", str, "", where),
        images=[load(p) for p in _paths(o, "images", [], where)],
        data=_get(o, "data", dict, {}, where),
        error=None if error is None else ToolErrorInfo(_get(error, "kind", str, where=f"{where}error."),
                                                       _get(error, "message", str, where=f"{where}error.")),
    )


_REQUIRED = object()
_JSON_TYPES = {dict: "an object", list: "a list", str: "a string"}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number" if isinstance(value, (int, float)) else _JSON_TYPES.get(type(value), type(value).__name__)


def _mapping(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DataError(f"{name} must be an object, got {_json_type(value)}")
    return value


def _get(d: dict[str, Any], key: str, kind: type, default: Any = _REQUIRED, where: str = "") -> Any:
    """`d[key]` if it is a `kind`; `default` when it is absent (or null, when the default is None)."""
    value = d.get(key)
    if key not in d or (value is None and default is None):
        if default is _REQUIRED:
            raise DataError(f"missing field {where}{key}")
        return default
    if not isinstance(value, kind):
        raise DataError(f"field {where}{key} must be {_JSON_TYPES[kind]}, got {_json_type(value)}")
    return value


def _paths(d: dict[str, Any], key: str, default: list[str] | None, where: str = "") -> list[str] | None:
    """A list of image paths (file names relative to the JSONL)."""
    paths = _get(d, key, list, default, where)
    for i, p in enumerate(paths or []):
        if not isinstance(p, str):
            raise DataError(f"field {where}{key}[{i}] must be an image path (a string), got {_json_type(p)}")
    return paths


def _check_media(family: str | None, images: list[str], video: list[str] | None) -> None:
    if family in IMAGE_FAMILIES and not images:
        raise DataError(f"field images is empty, but a record of family {family!r} needs an image")
    if family in VIDEO_FAMILIES and not video:
        raise DataError(f"field video is {'empty' if video == [] else 'missing'}, but a record of family "
                        f"{family!r} needs its frames")


class TrajectoryFileError(DataError):
    """A JSONL line that is not a valid trajectory, or one of its images; names the file and line."""


def write_jsonl(path: str | Path, trajectories: Iterable[Trajectory], media_dirname: str = "media") -> int:
    """Write trajectories as JSON lines; images go to `<dir>/<media_dirname>/`. Returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    media_dir = path.parent / media_dirname
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for traj in trajectories:
            row = trajectory_to_dict(traj, path.parent, media_dir)
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            n += 1
    return n


def iter_jsonl(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS) -> Iterator[Trajectory]:
    """Read trajectories lazily; a bad line or image raises `TrajectoryFileError` naming file and line number.

    Images above `max_pixels` (width x height, `data.max_image_pixels`) are refused before they are decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"trajectory file not found: {path}")
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                yield _parse_line(line, path, lineno, max_pixels)


def _parse_line(line: str, path: Path, lineno: int, max_pixels: int) -> Trajectory:
    try:
        return trajectory_from_dict(json.loads(line), path.parent, max_pixels)
    except json.JSONDecodeError as exc:
        raise TrajectoryFileError(f"{path}:{lineno}: not valid JSON: {exc.msg} at char {exc.pos}") from None
    except DataError as exc:
        raise TrajectoryFileError(f"{path}:{lineno}: not a valid trajectory: {exc}") from None


def read_jsonl(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS) -> list[Trajectory]:
    """All trajectories of a JSONL file (see `iter_jsonl`)."""
    return list(iter_jsonl(path, max_pixels))
