"""Grounding samples: seeded pixels, truth that matches the drawn pixels, the agent's own text forms."""

import hashlib

import numpy as np
import pytest

from pixelis.core.trajectory import parse_assistant_text, to_messages
from pixelis.data.grounding import TASKS, grounding_sample
from pixelis.data.render import COLORS
from pixelis.tools.geometry import to_pixels_box


def _digest(sample) -> str:
    return hashlib.sha256(sample.image.tobytes()).hexdigest()


def test_a_sample_is_a_pure_function_of_seed_stream_and_index():
    a, b = grounding_sample(3, "train", 17), grounding_sample(3, "train", 17)
    assert _digest(a) == _digest(b) and a.question == b.question and a.box == b.box
    assert _digest(grounding_sample(4, "train", 17)) != _digest(a)
    assert _digest(grounding_sample(3, "train", 18)) != _digest(a)


def test_heldout_images_are_never_training_images():
    train = {_digest(grounding_sample(0, "train", i)) for i in range(300)}
    heldout = {_digest(grounding_sample(0, "heldout", i)) for i in range(100)}
    assert len(train) == 300 and len(heldout) == 100 and not train & heldout


def test_unknown_stream_is_refused():
    with pytest.raises(ValueError, match="unknown grounding stream"):
        grounding_sample(0, "test", 0)


@pytest.mark.parametrize("task", ["box", "point", "color", "shape"])
def test_the_truth_is_where_the_pixels_are(task):
    for index in range(12):
        sample = grounding_sample(1, "train", index, {task: 1.0})
        assert sample.task == task
        pixels = np.asarray(sample.image, dtype=np.int16)
        x1, y1, x2, y2 = to_pixels_box(sample.box, *sample.image.size)
        colour = sample.answer if task == "color" else sample.question.split(" the ")[-1].split()[0]
        if task in ("color", "shape"):  # the asked point is inside the object's box, the object has the colour
            x, y = (int(v) for v in sample.question.split("[")[1].split("]")[0].split(", "))
            assert sample.box[0] <= x <= sample.box[2] and sample.box[1] <= y <= sample.box[3]
            colour = None if task == "shape" else colour
        if colour is not None:
            region = pixels[y1:y2, x1:x2]
            share = (np.abs(region - np.array(COLORS[colour])).max(axis=-1) < 8).mean()
            assert share > 0.25, f"{sample.id}: only {share:.0%} of the box has the {colour} of the object"


def test_responses_are_the_agents_text_forms():
    seen = set()
    for index in range(40):
        sample = grounding_sample(2, "train", index)
        seen.add(sample.task)
        messages, images = to_messages(sample.trajectory())
        assert [m["role"] for m in messages] == ["user", "assistant"] and images == [sample.image]
        turn = parse_assistant_text(messages[1]["content"][0]["text"], known_tools={"zoom_in", "get_properties"})
        if sample.task == "box":
            assert turn.call.name == "zoom_in" and turn.call.arguments == {"image": 0, "bbox": sample.box}
        elif sample.task == "point":
            assert turn.call.name == "get_properties" and len(turn.call.arguments["point"]) == 2
        else:
            assert turn.answer == sample.answer and turn.call is None
        prompt, _ = to_messages(sample.trajectory(with_response=False))
        assert [m["role"] for m in prompt] == ["user"]
    assert seen == set(TASKS)


def test_the_large_label_is_readable_by_the_real_ocr_tool():
    from pixelis.core.trajectory import ToolCall
    from pixelis.tools.registry import ToolRegistry

    registry = ToolRegistry.default()
    for index in range(3):
        sample = grounding_sample(0, "train", index, {"label": 1.0})
        observation = registry.execute(ToolCall("read_text", {"image": 0, "bbox": sample.box}),
                                       registry.context([sample.image]))
        assert observation.error is None and observation.text.replace(" ", "") == sample.answer


def test_simple_tier_objects_are_large():
    sizes = {grounding_sample(0, "train", i).size_bin for i in range(60)}
    assert sizes == {"small", "medium", "large"}
    big = [s for s in (grounding_sample(0, "train", i) for i in range(60))
           if max(s.box[2] - s.box[0], s.box[3] - s.box[1]) >= 110]
    assert big and all(s.size_bin == "large" for s in big)


def test_regions_are_every_drawn_thing_and_scenes_can_hold_one_object():
    """`regions` lists each object's box (and the label's) with the asked-about box among them; `objects` bounds
    the scene (one-object scenes for the first pre-training steps)."""
    counts = set()
    for index in range(16):
        sample = grounding_sample(2, "train", index)
        assert sample.box in sample.regions and len(sample.regions) == len({tuple(r) for r in sample.regions})
        counts.add(len(sample.regions) - (sample.task == "label"))
        single = grounding_sample(2, "train", index, objects=(1, 1))
        assert len(single.regions) == 1 + (single.task == "label")
        pixels = np.asarray(single.image, dtype=np.int16)
        x1, y1, x2, y2 = to_pixels_box(single.regions[0], *single.image.size)
        band_outside = pixels[:y1] if y1 > 8 else pixels[y2:]  # the rows above the object, or else below it
        inside = pixels[y1:y2, x1:x2].std(axis=(0, 1)).mean()
        assert inside > band_outside.std(axis=(0, 1)).mean(), f"{single.id}: the one object is drawn inside its region"
    assert max(counts) > 1, "the default scenes hold several objects"
