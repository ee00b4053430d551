"""Shared fixtures: tiny offline checkpoints of both families and trajectories of every step shape."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # any accidental Hub access fails loudly

import pytest
from PIL import Image, ImageDraw

from pixelis.core.trajectory import Observation, Step, ToolCall, ToolErrorInfo, Trajectory
from pixelis.model.load import load_policy
from pixelis.model.tiny import build_tiny_model

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "zoom_in",
            "description": "Zoom into a box of an image (0-1000 grid).",
            "parameters": {
                "type": "object",
                "properties": {"image": {"type": "integer"}, "bbox": {"type": "array", "items": {"type": "integer"}}},
                "required": ["image", "bbox"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "read_text",
            "description": "Read the text in an image.",
            "parameters": {"type": "object", "properties": {"image": {"type": "integer"}}, "required": ["image"]},
        },
    },
]


def scene(size=(224, 224), colour="red", shape="circle") -> Image.Image:
    """A white image with one coloured shape."""
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    w, h = size
    box = (w // 4, h // 4, 3 * w // 4, 3 * h // 4)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=colour)
    return img


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny_qwen3_vl"), seed=0, size="xs")


@pytest.fixture(scope="session")
def tiny25_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny_qwen2_5_vl"), seed=0, size="xs", family="qwen2_5_vl")


@pytest.fixture(scope="session")
def policy(tiny_dir):
    return load_policy(tiny_dir)


@pytest.fixture(scope="session")
def policy25(tiny25_dir):
    return load_policy(tiny25_dir)


@pytest.fixture(scope="session", params=["qwen3_vl", "qwen2_5_vl"])
def any_policy(request, policy, policy25):
    """Both families, for behaviour that must hold on each."""
    return policy if request.param == "qwen3_vl" else policy25


def trajectories() -> dict[str, Trajectory]:
    """Trajectories covering every step shape: no steps, tool images, errors, failed parses, no thoughts."""
    crop = scene((96, 64), "blue", "square")
    return {
        "direct": Trajectory(
            id="direct", question="What colour is the circle?", images=[scene()],
            final_thought="The circle is red.", answer="red",
        ),
        "multi": Trajectory(
            id="multi", question="What colour is the small square?", images=[scene(), scene((320, 240), "green")],
            steps=[
                Step(thought="Let me zoom in on the left part.",
                     call=ToolCall("zoom_in", {"image": 1, "bbox": [0, 0, 500, 1000]}),
                     observation=Observation(text="Zoomed crop.", images=[crop])),
                Step(thought="",
                     call=ToolCall("read_text", {"image": 2}),
                     observation=Observation(error=ToolErrorInfo("out_of_bounds", "image 2 does not exist"))),
                Step(raw_text='<tool_call>{"name": zoom_in}</tool_call>',
                     observation=Observation(error=ToolErrorInfo("malformed_call", "tool call is not valid JSON"))),
                Step(raw_text='<think>Retry.</think>\n<tool_call>{"name": "read_text", "arguments": {',
                     observation=Observation(error=ToolErrorInfo("malformed_call", "<tool_call> is not closed"))),
                Step(thought="Read the label.", call=ToolCall("read_text", {"image": 0}),
                     observation=Observation(text="LABEL: 42")),
            ],
            final_thought="The square is blue.", answer="blue",
        ),
        "no_thought": Trajectory(
            id="no_thought", question="Count the shapes.", images=[scene((448, 448))],
            steps=[Step(call=ToolCall("zoom_in", {"image": 0, "bbox": [100, 100, 900, 900]}),
                        observation=Observation(images=[scene((64, 64), "red")]))],
            answer="1",
        ),
    }


@pytest.fixture
def trajs() -> dict[str, Trajectory]:
    return trajectories()


@pytest.fixture
def tools() -> list[dict]:
    return TOOLS


@pytest.fixture
def make_scene():
    return scene
