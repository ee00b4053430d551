"""Metric aggregation over scored trajectories, and the markdown report with its charts."""

from PIL import Image

from pixelis.core.trajectory import Observation, Step, ToolCall, ToolErrorInfo, Trajectory
from pixelis.eval.metrics import compute_metrics
from pixelis.eval.report import render_report


def _pred(family, difficulty, correct, steps, answer="x", termination="answer"):
    return Trajectory(id=f"{family}-{difficulty}-{len(steps)}-{correct}", question="q", steps=steps, answer=answer,
                      metadata={"family": family, "difficulty": difficulty, "correct": correct,
                                "termination": termination})


def _ok_call():
    return Step(call=ToolCall("zoom_in", {"bbox": [0, 0, 10, 10]}), observation=Observation(text="ok"))


def _bad_call():
    return Step(call=ToolCall("zoom_in", {"bbox": [10, 0, 0, 10]}),
                observation=Observation(error=ToolErrorInfo("invalid_box", "inverted")))


def _unparsed():
    return Step(raw_text="<tool_call>{oops", observation=Observation(error=ToolErrorInfo("malformed_call", "bad")))


def test_metrics_count_what_they_claim():
    preds = [
        _pred("count", "simple", True, [_ok_call(), _ok_call()]),
        _pred("count", "hard", False, [_bad_call(), _unparsed()]),
        _pred("track", "simple", True, []),
        _pred("track", "simple", False, [_ok_call()], answer=None, termination="max_turns"),
    ]
    m = compute_metrics(preds)
    assert m["n"] == 4 and m["accuracy"] == 0.5
    assert m["accuracy_by_family"] == {"count": 0.5, "track": 0.5}
    assert m["accuracy_by_family_difficulty"]["count/simple"] == 1.0
    assert m["accuracy_by_difficulty"]["simple"] == 2 / 3
    assert m["tool_calls_attempted"] == 5 and m["tool_call_validity"] == 3 / 5
    assert m["rapr"] == 0.5  # two trajectories made at least one valid call
    assert m["first_call_validity"] == 0.5 and m["all_calls_valid_rate"] == 0.5  # no calls counts as not valid
    assert m["mean_tool_calls"] == 5 / 4
    assert m["mean_trajectory_length"] == (3 + 3 + 1 + 1) / 4
    assert m["terminations"] == {"answer": 3, "max_turns": 1}
    assert m["error_categories"] == {"invalid_box": 1, "malformed_call": 1}
    assert m["tool_call_histogram"] == {0: 1, 1: 1, 2: 2}
    assert m["answered_rate"] == 0.75


def test_report_compares_runs_with_tables_and_charts(tmp_path):
    before = compute_metrics([_pred("count", "simple", False, [_unparsed()])])
    after = compute_metrics([_pred("count", "simple", True, [_ok_call()])])
    path = render_report({"before": before, "after": after}, tmp_path, title="SFT")
    text = path.read_text()
    assert text.startswith("# SFT")
    assert "| Accuracy | 0.0% | 100.0% |" in text
    assert "| count | 0% (1) | – | – |" in text and "| count | 100% (1) | – | – |" in text
    for png in ("accuracy_by_family_difficulty.png", "tool_call_histogram.png"):
        assert f"]({png})" in text
        with Image.open(tmp_path / png) as im:
            assert im.width > 200 and im.height > 100
