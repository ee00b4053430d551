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
from typing import Any, Iterable, Iterator, Literal

from PIL import Image

StepKind = Literal["normal", "trap", "correction"]

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


def _image_from_file(rel: str, base_dir: Path) -> Image.Image:
    path = base_dir / rel
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} referenced by the trajectory is missing")
    with Image.open(path) as img:
        img.load()
        return img.copy()


def trajectory_to_dict(traj: Trajectory, base_dir: Path, media_dir: Path) -> dict[str, Any]:
    """JSON-ready dict; images are written as PNG files under `media_dir`, stored relative to `base_dir`."""
    save = lambda im: _image_to_file(im, media_dir, base_dir)  # noqa: E731
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


def trajectory_from_dict(d: dict[str, Any], base_dir: Path) -> Trajectory:
    """Inverse of `trajectory_to_dict`; image paths are resolved against `base_dir`."""
    load = lambda rel: _image_from_file(rel, base_dir)  # noqa: E731
    steps = []
    for s in d.get("steps", []):
        o = s.get("observation")
        obs = None if o is None else Observation(
            text=o.get("text", ""),
            images=[load(p) for p in o.get("images", [])],
            data=o.get("data", {}),
            error=None if o.get("error") is None else ToolErrorInfo(**o["error"]),
        )
        call = s.get("call")
        steps.append(Step(
            thought=s.get("thought", ""),
            call=None if call is None else ToolCall(call["name"], call.get("arguments", {})),
            observation=obs,
            kind=s.get("kind", "normal"),
            raw_text=s.get("raw_text"),
        ))
    return Trajectory(
        id=d["id"],
        question=d["question"],
        images=[load(p) for p in d.get("images", [])],
        video=None if d.get("video") is None else [load(p) for p in d["video"]],
        steps=steps,
        final_thought=d.get("final_thought", ""),
        answer=d.get("answer"),
        target=d.get("target"),
        metadata=d.get("metadata", {}),
    )


class TrajectoryFileError(ValueError):
    """A JSONL line that is not a valid trajectory; names the file and line."""


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


def iter_jsonl(path: str | Path) -> Iterator[Trajectory]:
    """Read trajectories lazily; a bad line raises `TrajectoryFileError` naming file and line number."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"trajectory file not found: {path}")
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield trajectory_from_dict(json.loads(line), path.parent)
            except (json.JSONDecodeError, KeyError, TypeError, FileNotFoundError) as exc:
                raise TrajectoryFileError(f"{path}:{lineno}: not a valid trajectory: {exc}") from None


def read_jsonl(path: str | Path) -> list[Trajectory]:
    """All trajectories of a JSONL file."""
    return list(iter_jsonl(path))
