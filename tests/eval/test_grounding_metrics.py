"""Held-out grounding scoring: what counts as a hit for boxes, points and answers, and the per-size summary."""

import json

from pixelis.data.grounding import grounding_sample
from pixelis.eval.grounding import grounding_table, heldout_samples, score_response, summarize


def _first(task):
    return grounding_sample(0, "heldout", 0, {task: 1.0})


def _call(name, **arguments):
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': {'image': 0, **arguments}})}\n</tool_call>"


def test_a_box_counts_when_its_iou_reaches_one_half():
    sample = _first("box")
    x1, y1, x2, y2 = sample.box
    assert score_response(sample, _call("zoom_in", bbox=sample.box))["correct"]
    w = x2 - x1
    shifted = score_response(sample, _call("zoom_in", bbox=[x1 + w // 2 + 1, y1, x2 + w // 2 + 1, y2]))
    assert shifted["valid"] and not shifted["correct"] and shifted["iou"] < 0.5


def test_a_point_counts_inside_the_box_only():
    sample = _first("point")
    x1, y1, x2, y2 = sample.box
    assert score_response(sample, _call("get_properties", point=[(x1 + x2) // 2, (y1 + y2) // 2]))["correct"]
    outside = score_response(sample, _call("get_properties", point=[x2 + 5 if x2 < 995 else x1 - 5, y1]))
    assert outside["valid"] and not outside["correct"]


def test_answers_are_normalised_and_wrong_forms_are_invalid():
    sample = _first("color")
    assert score_response(sample, f"<answer>The {sample.answer.upper()}.</answer>")["correct"]
    assert not score_response(sample, "<answer>nothing</answer>")["correct"]
    broken = score_response(sample, "<tool_call>{not json</tool_call>")
    assert not broken["valid"] and broken["error"] == "malformed_call"
    box = _first("box")
    assert not score_response(box, f"<answer>{box.box}</answer>")["valid"], "a box task needs the call"


def test_summary_rates_per_task_and_object_size():
    samples = heldout_samples(40)
    records = [score_response(s, _call("zoom_in", bbox=s.box) if s.task == "box" else "<answer>x</answer>")
               for s in samples]
    metrics = summarize(records)
    assert metrics["n"] == 40 and metrics["box_iou50"] == 1.0 and metrics["box_iou_mean"] == 1.0
    assert metrics["point_in_box"] == 0.0 and metrics["attribute_accuracy"] == 0.0
    assert sum(m["n"] for m in metrics["by_size"].values()) == 40
    for size, cell in metrics["by_size"].items():
        boxes = [r for r in records if r["size"] == size and r["task"] == "box"]
        assert cell["box_iou50"] == (1.0 if boxes else None)
    table = "\n".join(grounding_table(metrics))
    assert "| box_iou50 | 100.0% |" in table and "| samples | 40 |" in table


def test_one_object_scenes_are_reported_apart_from_searches():
    """Right only where the scene holds one object: the `one object` column is 100%, `several objects` 0%."""
    samples = heldout_samples(60, {"box": 1.0})
    records = [score_response(s, _call("zoom_in", bbox=s.box if s.scene_bin == "one object" else [0, 0, 1, 1]))
               for s in samples]
    scenes = summarize(records)["by_scene"]
    assert scenes["one object"]["box_iou50"] == 1.0 and scenes["several objects"]["box_iou50"] == 0.0
    assert scenes["one object"]["n"] + scenes["several objects"]["n"] == 60 and scenes["one object"]["n"] >= 3
    header = grounding_table(summarize(records))[0]
    assert header.endswith("| one object | several objects |")


def test_the_heldout_set_does_not_depend_on_the_run():
    assert [s.id for s in heldout_samples(5)] == [f"grounding-heldout-{i:07d}" for i in range(5)]
    assert heldout_samples(3)[2].image.tobytes() == heldout_samples(3)[2].image.tobytes()
