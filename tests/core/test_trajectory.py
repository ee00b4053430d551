"""Trajectory schema: JSON round-trip with images, chat messages, and the strict parser."""

import json

import numpy as np
import pytest
from PIL import Image

from pixelis.core.errors import DataError
from pixelis.core.trajectory import (
    MalformedToolCall,
    MultipleToolCalls,
    NoAction,
    Observation,
    Step,
    TextAfterToolCall,
    ToolCall,
    ToolErrorInfo,
    Trajectory,
    TrajectoryFileError,
    UnknownTool,
    parse_assistant_text,
    read_jsonl,
    render_final_text,
    render_step_text,
    to_messages,
    write_jsonl,
)


def _image(seed: int, size=(40, 30)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _trajectory() -> Trajectory:
    crop = _image(2, (64, 64))
    return Trajectory(
        id="t-1",
        question="What does the label say?",
        images=[_image(1)],
        steps=[
            Step(thought="Wrong place first.", call=ToolCall("zoom_in", {"image": 0, "bbox": [900, 0, 900, 10]}),
                 observation=Observation(error=ToolErrorInfo("invalid_box", "empty box")), kind="trap"),
            Step(thought="The label is tiny.", call=ToolCall("zoom_in", {"image": 0, "bbox": [10, 20, 300, 400]}),
                 observation=Observation(text="Zoomed.", images=[crop], data={"scale": 2.5}), kind="correction"),
            Step(thought="Read it.", call=ToolCall("read_text", {"image": 1}),
                 observation=Observation(text="AB12", data={"lines": [{"text": "AB12", "confidence": 0.9}]})),
        ],
        final_thought="The OCR says AB12.",
        answer="AB12",
        target={"type": "text", "value": "AB12"},
        metadata={"family": "small_text", "difficulty": "hard"},
    )


def _pixels(im: Image.Image) -> bytes:
    return np.asarray(im.convert("RGB")).tobytes()


def test_jsonl_round_trip_is_lossless(tmp_path):
    original = _trajectory()
    video = [_image(10 + i) for i in range(3)]
    original_video = Trajectory(id="v", question="q", images=[_image(5)], video=video, answer="3")
    assert write_jsonl(tmp_path / "train.jsonl", [original, original_video]) == 2
    back, back_video = read_jsonl(tmp_path / "train.jsonl")
    assert back.question == original.question and back.answer == "AB12" and back.target == original.target
    assert [s.kind for s in back.steps] == ["trap", "correction", "normal"]
    assert back.steps[0].observation.error == ToolErrorInfo("invalid_box", "empty box")
    assert back.steps[1].call.arguments == {"image": 0, "bbox": [10, 20, 300, 400]}
    assert [_pixels(i) for i in back.conversation_images()] == [_pixels(i) for i in original.conversation_images()]
    assert [_pixels(f) for f in back_video.video] == [_pixels(f) for f in video]
    # Images are files next to the JSONL, referenced by relative path.
    row = json.loads((tmp_path / "train.jsonl").read_text().splitlines()[0])
    assert row["images"][0].startswith("media/") and (tmp_path / row["images"][0]).is_file()


def test_write_is_byte_identical(tmp_path):
    write_jsonl(tmp_path / "a" / "x.jsonl", [_trajectory()])
    write_jsonl(tmp_path / "b" / "x.jsonl", [_trajectory()])
    assert (tmp_path / "a" / "x.jsonl").read_bytes() == (tmp_path / "b" / "x.jsonl").read_bytes()


def test_bad_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    write_jsonl(path, [_trajectory()])
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(TrajectoryFileError, match=r"bad.jsonl:2"):
        read_jsonl(path)


def _written_row(tmp_path) -> dict:
    """The JSON record of `_trajectory()` as `write_jsonl` stores it (its images are in tmp_path/media)."""
    write_jsonl(tmp_path / "good.jsonl", [_trajectory()])
    return json.loads((tmp_path / "good.jsonl").read_text())


def _set(row: dict, path: str, value) -> None:
    """Set the value at a dotted path of a record ("steps.0.call.name")."""
    *parents, last = [int(k) if k.isdigit() else k for k in path.split(".")]
    for key in parents:
        row = row[key]
    row[last] = value


@pytest.mark.parametrize("path, value, message", [
    ("steps", "abc", "steps must be a list, got a string"),
    ("question", 123, "question must be a string, got a number"),
    ("images", "x.png", "images must be a list, got a string"),
    ("steps.0", "zoom", r"steps\[0\] must be an object"),
    ("steps.1.call.name", None, r"steps\[1\].call.name must be a string, got null"),
    ("steps.1.call.arguments", [1], r"steps\[1\].call.arguments must be an object"),
    ("steps.1.observation.images", ["media/a.png", 3], r"steps\[1\].observation.images\[1\] must be an image path"),
    ("steps.0.observation.error", {"kind": "invalid_box"}, r"missing field steps\[0\].observation.error.message"),
    ("steps.2.kind", "oops", r"steps\[2\].kind is 'oops'"),
    ("metadata", ["small_text"], "metadata must be an object"),
    ("metadata.family", 5, "metadata.family must be a string"),
])
def test_wrong_field_types_name_file_line_and_field(tmp_path, path, value, message):
    row = _written_row(tmp_path)
    _set(row, path, value)
    bad = tmp_path / "bad.jsonl"
    bad.write_text((tmp_path / "good.jsonl").read_text() + json.dumps(row) + "\n")
    with pytest.raises(TrajectoryFileError, match=rf"bad.jsonl:2: not a valid trajectory: .*{message}"):
        read_jsonl(bad)


def test_a_line_that_is_not_an_object_or_lacks_an_id_is_refused(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('["id", "question"]\n')
    with pytest.raises(TrajectoryFileError, match=r"bad.jsonl:1: .*the record must be an object, got a list"):
        read_jsonl(path)
    path.write_text('{"question": "q"}\n')
    with pytest.raises(TrajectoryFileError, match=r"bad.jsonl:1: .*missing field id"):
        read_jsonl(path)


@pytest.mark.parametrize("family, images, video, message", [
    ("small_text", [], None, "images is empty, but a record of family 'small_text' needs an image"),
    ("count", [], None, "needs an image"),
    ("track", ["media/frame.png"], None, "video is missing, but a record of family 'track' needs its frames"),
    ("temporal", ["media/frame.png"], [], "video is empty, but a record of family 'temporal' needs its frames"),
])
def test_a_synthetic_family_record_without_its_media_is_refused(tmp_path, family, images, video, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"id": "x", "question": "q", "images": images, "video": video,
                                "metadata": {"family": family}}) + "\n")
    with pytest.raises(TrajectoryFileError, match=rf"bad.jsonl:1: .*{message}"):
        read_jsonl(path)


def test_a_record_without_family_may_be_text_only(tmp_path):
    write_jsonl(tmp_path / "text.jsonl", [Trajectory(id="t", question="What is 2 + 2?", answer="4")])
    (back,) = read_jsonl(tmp_path / "text.jsonl")
    assert back.images == [] and back.answer == "4"


def test_trajectory_file_errors_are_data_errors():
    assert issubclass(TrajectoryFileError, DataError) and issubclass(TrajectoryFileError, ValueError)


def test_messages_text_parser_round_trip():
    traj = _trajectory()
    messages, images = to_messages(traj)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "tool", "assistant", "tool", "assistant"]
    n_placeholders = sum(1 for m in messages for part in m["content"] if part["type"] == "image")
    assert n_placeholders == len(images) == 2
    assert "Error (invalid_box)" in messages[2]["content"][-1]["text"]
    assistant_texts = [m["content"][0]["text"] for m in messages if m["role"] == "assistant"]
    for text, step in zip(assistant_texts, traj.steps):
        parsed = parse_assistant_text(text, known_tools={"zoom_in", "read_text"})
        assert parsed.thought == step.thought and parsed.call == step.call
    final = parse_assistant_text(assistant_texts[-1])
    assert final.answer == "AB12" and final.call is None and final.thought == traj.final_thought


@pytest.mark.parametrize(
    "text, error",
    [
        ('<tool_call>{"name": "zoom_in", "arguments": {</tool_call>', MalformedToolCall),
        ('<tool_call>{"name": "zoom_in"', MalformedToolCall),
        ('<tool_call>["zoom_in"]</tool_call>', MalformedToolCall),
        ('<tool_call>{"name": "zoom_in", "arguments": [1]}</tool_call>', MalformedToolCall),
        ('<tool_call>{"name": "a", "arguments": {}}</tool_call><tool_call>{"name": "a", "arguments": {}}</tool_call>',
         MultipleToolCalls),
        ('<tool_call>{"name": "zoom_in", "arguments": {}}</tool_call> and then more', TextAfterToolCall),
        ('<tool_call>{"name": "fly", "arguments": {}}</tool_call>', UnknownTool),
        ("I think the answer is 3", NoAction),
    ],
)
def test_parser_rejects_with_typed_errors(text, error):
    with pytest.raises(error) as info:
        parse_assistant_text(text, known_tools={"zoom_in"})
    assert info.value.kind in {"malformed_call", "multiple_calls", "text_after_call", "unknown_tool", "no_action"}


def test_render_helpers():
    step = Step(thought="", call=ToolCall("read_text", {}))
    assert render_step_text(step) == '<tool_call>\n{"name": "read_text", "arguments": {}}\n</tool_call>'
    assert render_final_text("so", "4") == "<think>so</think>\n<answer>4</answer>"
