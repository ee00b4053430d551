import importlib.resources
import json

import numpy as np
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from PIL import Image

from pixelis.core.config import load_config
from pixelis.core.tracing import TracedOperation, configure_tracing, shutdown_tracing
from pixelis.core.trajectory import ERROR_KINDS, Observation, ToolCall
from pixelis.tools.base import Tool, ToolArgs, ToolContext, ToolLimits
from pixelis.tools.registry import ToolRegistry

NAMES = ["zoom_in", "segment_object_at", "read_text", "get_properties", "track_object", "select_frames",
         "localize_event"]


def walk(node):
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def test_schemas_are_compact_function_schemas(registry):
    assert registry.names() == NAMES
    schemas = registry.schemas()
    assert [s["function"]["name"] for s in schemas] == NAMES
    for schema in schemas:
        assert schema["type"] == "function"
        fn = schema["function"]
        assert fn["description"] and len(fn["description"]) < 250
        params = fn["parameters"]
        assert params["type"] == "object" and params["properties"]
        assert set(params.get("required", [])) <= set(params["properties"])
        for prop in params["properties"].values():
            assert "type" in prop and prop["description"]
        for node in walk(params):
            if isinstance(node, dict):
                assert not {"$defs", "$ref", "anyOf", "title"} & set(node), node
    by_name = {s["function"]["name"]: s["function"]["parameters"] for s in schemas}
    assert by_name["zoom_in"]["required"] == ["bbox"]
    assert by_name["localize_event"]["properties"]["event"]["enum"] == ["appear", "disappear", "change"]
    assert "required" not in by_name["read_text"]
    json.dumps(schemas)


def test_schemas_render_in_the_qwen3_vl_chat_template(registry):
    from transformers.utils.chat_template_utils import render_jinja_template

    template = (importlib.resources.files("trl") / "chat_templates" / "qwen3_vl.jinja").read_text()
    conversation = [{"role": "user", "content": [{"type": "text", "text": "What is written on the sign?"}]}]
    (text,), _ = render_jinja_template([conversation], tools=registry.schemas(), chat_template=template,
                                       add_generation_prompt=True)
    assert text.count('"type": "function"') == len(NAMES)
    assert '"name": "track_object"' in text and "<tool_call>" in text


GARBAGE = [
    ToolCall("zoom_in", None),
    ToolCall("zoom_in", [1, 2, 3]),
    ToolCall("zoom_in", "bbox"),
    ToolCall("zoom_in", {"bbox": None}),
    ToolCall("zoom_in", {"bbox": [1e308, 1e308, 1e309, 2]}),
    ToolCall("zoom_in", {"bbox": [float("nan"), 0, 10, 10]}),
    ToolCall("zoom_in", {"bbox": [0, 0, 10, 10], "image": 10**30}),
    ToolCall("zoom_in", {"bbox": {"x": 1}}),
    ToolCall("zoom_in", {"bbox": [0, 0, 1000, 1000], "image": True}),
    ToolCall("zoom_in", {"bbox": [object(), 0, 1, 1]}),
    ToolCall(None, {}),
    ToolCall(123, {}),
    ToolCall("", {}),
    ToolCall("read_text", {"bbox": [[0, 0], [1, 1]]}),
    ToolCall("get_properties", {"point": [1, 2, 3]}),
    ToolCall("track_object", {"bbox": [0, 0, 10, 10], "end_frame": "last"}),
    ToolCall("select_frames", {"frames": list(range(10_000))}),
    ToolCall("localize_event", {"event": None}),
    ToolCall("segment_object_at", {"point": [0, 0], "image": "0"}),
]


@pytest.mark.parametrize("call", GARBAGE, ids=range(len(GARBAGE)))
def test_execute_never_raises(registry, call):
    image = Image.fromarray(np.zeros((64, 64, 3), np.uint8))
    obs = registry.execute(call, ToolContext(images=[image], video=[image] * 3))
    assert isinstance(obs, Observation) and obs.error is not None
    assert obs.error.kind in ERROR_KINDS and obs.error.message
    assert not obs.images


def test_unknown_tool_lists_the_known_ones(registry):
    obs = registry.execute(ToolCall("crop", {}), ToolContext())
    assert obs.error.kind == "unknown_tool" and "zoom_in" in obs.error.message


def test_wrong_type_message_names_argument_and_usage(registry):
    obs = registry.execute(ToolCall("track_object", {"bbox": [0, 0, 10, 10], "end_frame": "last"}), ToolContext())
    assert obs.error.kind == "wrong_type"
    assert "'end_frame'" in obs.error.message
    assert "usage: track_object(bbox, start_frame=0, end_frame=null)" in obs.error.message


class Exploding(Tool):
    name = "explode"
    description = "Fails with a bug."
    Args = ToolArgs

    def run(self, ctx, args):
        return 1 / 0


def test_execution_errors_are_observations(registry):
    obs = ToolRegistry([Exploding()]).execute(ToolCall("explode", {}), ToolContext())
    assert obs.error.kind == "execution_error"
    assert obs.error.message == "explode failed: ZeroDivisionError: division by zero"
    empty_ctx = ToolContext(images=[Image.new("RGB", (0, 0))])
    empty = registry.execute(ToolCall("zoom_in", {"bbox": [0, 0, 500, 500]}), empty_ctx)
    assert empty.error.kind == "bad_image" and "empty" in empty.error.message


def test_registry_limits_and_config():
    class Section:  # any object with the attributes, like the tools section of the config
        max_output_side = 200
        max_zoom = 4.0

    limits = ToolLimits.from_config(Section())
    assert (limits.max_output_side, limits.max_zoom, limits.max_frames_per_call) == (200, 4.0, 16)
    registry = ToolRegistry.default(limits)
    ctx = registry.context([Image.fromarray(np.zeros((400, 400, 3), np.uint8))])
    assert ctx.limits is limits
    obs = registry.execute(ToolCall("zoom_in", {"bbox": [0, 0, 500, 500]}), ctx)
    assert obs.images[0].size == (200, 200)
    assert registry.execute(ToolCall("zoom_in", {"bbox": [0, 0, 20, 20]}), ctx).error.kind == "limit_exceeded"
    from_file = ToolLimits.from_config(load_config(None, ["tools.max_zoom=8", "tools.ocr_backend=tesseract"]).tools)
    assert (from_file.max_zoom, from_file.ocr_backend, from_file.max_output_side) == (8.0, "tesseract", 1024)


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    configure_tracing(extra_processors=[SimpleSpanProcessor(exporter)])
    yield exporter
    shutdown_tracing()


def test_every_execution_is_a_span(registry, spans):
    image = Image.fromarray(np.zeros((64, 64, 3), np.uint8))
    ctx = ToolContext(images=[image])
    with TracedOperation("rollout.step", "agent"):
        registry.execute(ToolCall("zoom_in", {"bbox": [0, 0, 1000, 1000]}), ctx)
        registry.execute(ToolCall("zoom_in", {"bbox": [0, 0, 2000, 1000]}), ctx)
        registry.execute(ToolCall("nope", {"x": 1}), ctx)
    finished = {s.name: s for s in spans.get_finished_spans()}
    ok, parent = finished["tool.zoom_in"], finished["rollout.step"]
    assert [s.name for s in spans.get_finished_spans()].count("tool.zoom_in") == 2
    tool_spans = [s for s in spans.get_finished_spans() if s.name.startswith("tool.")]
    assert [s.attributes["outcome"] for s in tool_spans] == ["ok", "out_of_bounds", "unknown_tool"]
    assert all(s.parent.span_id == parent.context.span_id for s in tool_spans)
    assert all(s.attributes["pixelis.component"] == "tools" for s in tool_spans)
    assert json.loads(tool_spans[0].attributes["arguments"]) == {"bbox": [0, 0, 1000, 1000]}
    (event,) = tool_spans[1].events
    assert event.name == "tool.error" and event.attributes["kind"] == "out_of_bounds"
    assert tool_spans[2].name == "tool.unknown" and tool_spans[2].attributes["tool.requested"] == "nope"
    assert ok.attributes["images_out"] in (0, 1)
