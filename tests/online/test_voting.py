"""Trajectory voting: weights, grouping, neighbours, ties, majority, and fidelity against real tool observations."""

from __future__ import annotations

import copy
import json

import pytest

from pixelis.core.config import VoteConfig
from pixelis.core.trajectory import Observation, Step, ToolCall, ToolErrorInfo, Trajectory
from pixelis.data.synth.suite import SampleKey, generate_sample
from pixelis.online.voting import (
    TOOLCHAIN_SHARE,
    AnswerKey,
    NeighbourVote,
    answer_key,
    is_supported,
    is_valid,
    score_member,
    toolchain,
    vote,
)
from pixelis.tools.base import ToolContext
from pixelis.tools.properties import COLOR_NAMES
from pixelis.tools.registry import ToolRegistry

B = 1.25  # 1 + default brevity
EXACT = dict(rel=1e-12, abs=1e-12)


def call(name: str = "zoom_in", text: str = "Zoomed in.", data: dict | None = None, error: str | None = None) -> Step:
    obs = Observation(text="" if error else text, data=data or {},
                      error=ToolErrorInfo(error, "that call failed") if error else None)
    return Step(thought="", call=ToolCall(name, {}), observation=obs)


def unparsable() -> Step:
    return Step(raw_text="<tool_call>{not json</tool_call>")


def traj(answer: str | None, *steps: Step, question: str = "What is shown?") -> Trajectory:
    return Trajectory(id="q", question=question, steps=list(steps), answer=answer)


def ocr(text: str) -> Step:
    return call("read_text", text, {"lines": [{"text": text, "bbox": [0, 0, 1000, 1000], "confidence": 0.9}]})


def props(color: str, shape: str, bbox=(100, 100, 200, 200), found: bool = True) -> Step:
    data = {"object_found": found, "color": color, "shape": shape, "bbox": list(bbox)}
    return call("get_properties", f"Properties of the object: color {color}, shape {shape}.", data)


# ---------------------------------------------------------------------------------------------- weights

def test_member_weights_and_group_weights_are_exact():
    ts = [
        traj("cat", call()),                              # 1 call, valid, unsupported: 1
        traj("cat", call(), call(), call()),              # 3 calls: 1 / 1.25^2
        traj("dog", call(), call(error="invalid_box")),   # a failed call, validity 1: 0
        traj("dog"),                                      # no calls: 1
        traj("AC3F7", call(), ocr("AC3F7")),              # 2 calls, supported by OCR: 2 / 1.25
        traj(None, call()),                               # no answer: weight 1, in no group
    ]
    v = vote(ts)
    assert v.member_weights == pytest.approx([1.0, 1 / B**2, 0.0, 1.0, 2 / B, 1.0], **EXACT)
    assert [m.valid for m in v.members] == [True, True, False, True, True, True]
    assert [m.supported for m in v.members] == [False, False, False, False, True, False]
    assert [(g.answer, g.members) for g in v.groups] == [("cat", (0, 1)), ("AC3F7", (4,)), ("dog", (2, 3))]
    weights = {g.answer: g.weight for g in v.groups}
    assert weights == pytest.approx({"cat": 1 + 1 / B**2, "AC3F7": 2 / B, "dog": 1.0}, **EXACT)
    assert v.answer == "cat" and v.winner_index == 0 and not v.tie
    total = 1 + 1 / B**2 + 0 + 1 + 2 / B + 1
    assert v.total_weight == pytest.approx(total, **EXACT)
    assert v.confidence == pytest.approx((1 + 1 / B**2) / total, **EXACT)


def test_weights_follow_the_config():
    cfg = VoteConfig(validity=0.5, brevity=1.0, fidelity=0.5)
    assert score_member(traj("x", call(), call(error="out_of_bounds")), config=cfg).weight == pytest.approx(0.25)
    assert score_member(traj("x", call(), unparsable(), call()), config=cfg).weight == pytest.approx(0.5 * 0.25)
    assert score_member(traj("AC3F7", ocr("AC3F7")), config=cfg).weight == pytest.approx(1.5)
    off = VoteConfig(validity=0.0, brevity=0.0, fidelity=0.0)
    assert score_member(traj("AC3F7", call(error="bad_image"), ocr("AC3F7")), config=off).weight == 1.0
    # validity above 1 never gives a negative weight
    assert score_member(traj("x", unparsable()), config=VoteConfig(validity=3.0)).weight == 0.0


def test_invalid_call_loses_to_valid_with_same_count():
    cfg = VoteConfig(validity=0.5)
    for bad in (call(error="missing_argument"), unparsable()):
        ts = [traj("red", bad, call()), traj("blue", call(), call())]
        assert not is_valid(ts[0]) and is_valid(ts[1])
        v = vote(ts, config=cfg)
        assert v.answer == "blue" and v.winner_index == 1
        assert v.confidence == pytest.approx((1 / B) / (1.5 / B), **EXACT)


def test_shorter_trajectory_wins():
    v = vote([traj("left", call(), call(), call()), traj("right", call())])
    assert v.answer == "right" and v.winner_index == 1
    assert v.confidence == pytest.approx(1 / (1 + 1 / B**2), **EXACT)


def test_winner_ties_break_on_fewest_calls_then_lowest_index():
    cfg = VoteConfig(brevity=0.25, fidelity=0.25)
    # index 0: 2 calls, supported -> 1.25 / 1.25 = 1; index 1: 1 call, unsupported -> 1: equal, fewer calls wins
    v = vote([traj("AC3F7", call(), ocr("AC3F7")), traj("ac3f7", call())], config=cfg)
    assert v.member_weights == pytest.approx([1.0, 1.0], **EXACT)
    assert v.winner_index == 1 and v.answer == "ac3f7"
    v = vote([traj("3", call()), traj("3.0", call()), traj("7", call(), call(), call(), call(), call())])
    assert v.winner_index == 0 and v.answer == "3"


# ---------------------------------------------------------------------------------------------- fidelity

def test_fidelity_flips_a_two_two_split():
    read = lambda: [call("zoom_in"), ocr("AC3F7")]  # noqa: E731 - every sample read the same label
    ts = [traj("AC3E7", *read()), traj("AC3F7", *read()), traj("AC3E7", *read()), traj("ac3f7", *read())]
    plain = vote(ts, config=VoteConfig(fidelity=0.0))
    assert plain.tie and plain.answer is None and plain.confidence == 0.0 and plain.winner_index is None
    v = vote(ts)
    assert v.answer == "AC3F7" and v.winner_index == 1 and not v.tie
    assert v.confidence == pytest.approx(2 / 3, **EXACT)
    assert v.majority_answer is None and v.majority_tie and v.majority_share == 0.0


def test_fidelity_per_answer_kind():
    count_q = "How many red circles are in the image?"
    two_circles = [props("red", "circle", (100, 100, 200, 200)), props("red", "circle", (600, 600, 700, 700))]
    assert is_supported(traj("2", *two_circles, question=count_q))
    assert not is_supported(traj("3", *two_circles, question=count_q))
    # a look-alike that was checked and rejected, and the same object seen twice, do not count
    checked = [*two_circles, props("orange", "circle", (300, 300, 380, 380)),
               props("red", "circle", (102, 98, 201, 203))]
    assert is_supported(traj("two", *checked, question=count_q))
    segs = [call("segment_object_at", "Segmented.", {"bbox": [10, 10, 90, 90]}),
            call("segment_object_at", "Segmented.", {"bbox": [500, 500, 600, 600]})]
    assert is_supported(traj("2", *segs, question="How many objects are there?"))

    assert is_supported(traj("green", props("green", "circle"), question="What colour is the shape left of it?"))
    assert not is_supported(traj("pink", props("green", "circle")))
    assert is_supported(traj("the green star", props("pink", "square"), props("green", "star")))
    assert not is_supported(traj("green square", props("pink", "square"), props("green", "star")))

    assert is_supported(traj("ac3 f7", ocr("AC3F7")))  # OCR match ignoring spaces
    assert is_supported(traj("AC3F7", ocr("Label AC3F7")))
    assert not is_supported(traj("AC3", ocr("AC3F7")))
    assert not is_supported(traj("AC3F7", call("read_text", error="limit_exceeded")))

    event = call("localize_event", "The frame changes at frame 5 and stays changed until frame 7 (of 0..7).",
                 {"start_frame": 5, "end_frame": 7, "matches_event": True})
    assert is_supported(traj("5", event, question="In which frame does it appear?"))
    assert not is_supported(traj("7", event, question="In which frame does it appear?"))

    track = call("track_object", "Tracked the object: moving up-left by (-80, -90) grid units.",
                 {"boxes": [[600, 600, 700, 700], [100, 100, 200, 200]], "direction": "up-left"})
    assert is_supported(traj("up left", track))
    assert is_supported(traj("top-left", track))  # quadrant of the final tracked box
    assert not is_supported(traj("down", track))
    assert is_supported(traj("[110, 95, 205, 210]", track))  # box answer overlapping a tracked box
    zoom = call("zoom_in", "Zoomed into [100, 100, 200, 200].", {"bbox": [100, 100, 200, 200]})
    assert not is_supported(traj("[100, 100, 200, 200]", zoom))  # zoom_in only echoes its argument
    assert not is_supported(traj(None, track))


# ---------------------------------------------------------------------------------------------- grouping

def test_numbers_group_by_value():
    assert answer_key("3") == answer_key("3.0") == answer_key(" three ") == answer_key("3.") == AnswerKey("number", 3.0)
    assert answer_key("twenty-one") == AnswerKey("number", 21.0)
    for text in ("AC3F7", "3 circles", "no", "none"):
        assert answer_key(text).kind == "text", text
    v = vote([traj("3", call()), traj("3.0", call()), traj("three", call()), traj("4", call())])
    assert [(g.answer, g.members) for g in v.groups] == [("3", (0, 1, 2)), ("4", (3,))]
    assert v.answer == "3" and v.confidence == pytest.approx(0.75) and v.majority_share == pytest.approx(0.75)


def test_boxes_group_by_iou_with_the_first_box():
    answers = ["[100, 100, 200, 200]", "(110, 105, 205, 200)", '{"bbox": [100, 100, 200, 210]}', "100,100,200,200",
               "[600, 600, 700, 700]", "[100, 100, 160, 200]", "[100, 100, 140, 200]"]
    assert [answer_key(a).kind for a in answers] == ["box"] * 7
    assert answer_key("[200, 100, 100, 200]").kind == "text"  # inverted: not a box
    v = vote([traj(a, call()) for a in answers])
    # IoU with the first box: 0.6 for [100, 100, 160, 200] (joins), 0.4 for [100, 100, 140, 200] (does not)
    assert [g.members for g in v.groups] == [(0, 1, 2, 3, 5), (4,), (6,)]
    assert v.answer == "[100, 100, 200, 200]" and v.confidence == pytest.approx(5 / 7)
    assert v.groups[0].to_dict()["key"] == [100.0, 100.0, 200.0, 200.0]


def test_ties_and_no_answers_abstain():
    v = vote([traj("red", call()), traj("blue", call())])
    assert v.tie and v.answer is None and v.confidence == 0.0 and v.winner_index is None
    assert v.learn_answer is None and v.learn_index is None and len(v.groups) == 2
    for ts in ([], [traj(None, call()), traj("  ", call()), traj("...", call())]):
        v = vote(ts)
        assert v.answer is None and v.confidence == 0.0 and v.groups == () and not v.tie
        assert v.majority_answer is None and v.majority_share == 0.0
    # all weight lost to failed calls: nothing to trust
    v = vote([traj("red", call(error="invalid_box"))])
    assert v.answer is None and v.confidence == 0.0 and v.majority_answer == "red"


# -------------------------------------------------------------------------------------------- neighbours

def test_neighbours_flip_a_close_vote():
    ts = [traj("red", call("get_properties")), traj("blue", call("zoom_in"), call("get_properties"))]
    assert vote(ts).answer == "red"  # 1.0 vs 0.8
    v = vote(ts, [NeighbourVote("Blue", ("zoom_in", "get_properties"), 0.8)])
    assert v.answer == "blue" and v.winner_index == 1
    assert v.groups[0].neighbour_weight == pytest.approx(0.4, **EXACT)
    assert v.confidence == pytest.approx(1.2 / 2.2, **EXACT)
    # a toolchain match alone gives TOOLCHAIN_SHARE of the neighbour's weight
    v = vote(ts, [NeighbourVote("green", ("zoom_in", "get_properties"), 1.0)])
    assert v.answer == "blue" and v.groups[0].weight == pytest.approx(0.8 + TOOLCHAIN_SHARE * 0.5, **EXACT)
    # neither answer nor toolchain matches, a negative similarity, or neighbours switched off: nothing changes
    for nbs, cfg in (([NeighbourVote("green", ("read_text",), 1.0)], VoteConfig()),
                     ([NeighbourVote("blue", (), -0.9)], VoteConfig()),
                     ([NeighbourVote("blue", (), 1.0)], VoteConfig(neighbours=0.0))):
        v = vote(ts, nbs, cfg)
        assert v.answer == "red" and v.total_weight == pytest.approx(1.8, **EXACT)


def test_toolchain_share_is_split_between_groups():
    ts = [traj("red", call("get_properties")), traj("blue", call("get_properties"))]
    v = vote(ts, [NeighbourVote("green", ("get_properties",), 1.0)])
    assert v.tie and [g.neighbour_weight for g in v.groups] == pytest.approx([0.125, 0.125], **EXACT)
    assert toolchain(traj("x", call("zoom_in"), unparsable(), call("read_text"))) == ("zoom_in", "read_text")


# ---------------------------------------------------------------------------------------------- majority

def _majority_case() -> list[Trajectory]:
    long = lambda: [call() for _ in range(5)]  # noqa: E731 - 5 calls: 1 / 1.25^4 = 0.4096
    return [traj("5", *long()), traj("4", call()), traj("5", *long()), traj("4", call()), traj("5", *long())]


def test_majority_and_trajectory_vote_disagree():
    v = vote(_majority_case())
    assert v.answer == "4" and v.winner_index == 1
    assert v.confidence == pytest.approx(2 / (2 + 3 / B**4), **EXACT)
    assert v.majority_answer == "5" and v.majority_share == pytest.approx(0.6) and v.majority_index == 0
    assert (v.learn_from, v.learn_answer, v.learn_index) == ("trajectory", "4", 1)
    assert v.learn_confidence == v.confidence


def test_learn_from_majority():
    v = vote(_majority_case(), config=VoteConfig(learn_from="majority"))
    assert v.answer == "4"  # the weighted vote is still computed and logged
    assert (v.learn_from, v.learn_answer, v.learn_index) == ("majority", "5", 0)
    assert v.learn_confidence == pytest.approx(0.6)


def test_to_dict_is_json():
    d = json.loads(json.dumps(vote(_majority_case(), [NeighbourVote("4", ("zoom_in",), 0.9)]).to_dict()))
    assert d["answer"] == "4" and d["majority_answer"] == "5" and len(d["member_weights"]) == 5
    assert d["groups"][0]["kind"] == "number" and d["groups"][0]["key"] == 4.0
    assert d["groups"][0]["neighbour_weight"] == pytest.approx(0.45)
    assert d["members"][0] == {"index": 0, "calls": 5, "valid": True, "supported": False,
                               "weight": pytest.approx(1 / B**4)}


# ------------------------------------------------------------------------------- real tool observations

@pytest.fixture(scope="module")
def registry() -> ToolRegistry:
    return ToolRegistry.default()


def _run(registry: ToolRegistry, sample: Trajectory, calls: list[ToolCall], answer: str) -> Trajectory:
    """A policy-like trajectory: `calls` executed by the real tools on the sample's media, then `answer`."""
    steps: list[Step] = []
    for c in calls:
        images = list(sample.images) + [im for s in steps for im in s.observation.images]
        obs = registry.execute(copy.deepcopy(c), ToolContext(images=images, video=sample.video, limits=registry.limits))
        steps.append(Step(thought="", call=copy.deepcopy(c), observation=obs))
    return Trajectory(id=sample.id, question=sample.question, images=list(sample.images), video=sample.video,
                      steps=steps, answer=answer)


def test_fidelity_on_real_read_text(registry):
    sample = generate_sample(SampleKey("small_text", "simple", 0), 5, 0.0, registry)
    code = sample.target["value"]
    golden = [s.call for s in sample.steps]
    assert [c.name for c in golden] == ["zoom_in", "read_text"]
    right = _run(registry, sample, golden, code)
    assert any(code in line["text"] for line in right.steps[1].observation.data["lines"])
    wrong_code = code[:-1] + ("X" if code[-1] != "X" else "Y")
    wrong = _run(registry, sample, golden, wrong_code)
    assert is_supported(right) and not is_supported(wrong)
    v = vote([wrong, right, copy.deepcopy(wrong), copy.deepcopy(right)])
    assert v.answer == code and v.winner_index == 1 and v.confidence == pytest.approx(2 / 3, **EXACT)


def test_fidelity_on_real_get_properties(registry):
    count = generate_sample(SampleKey("count", "simple", 0), 5, 0.0, registry)
    n = count.target["value"]
    calls = [s.call for s in count.steps]
    assert {c.name for c in calls} == {"get_properties"}
    assert is_supported(_run(registry, count, calls, str(n)))
    assert not is_supported(_run(registry, count, calls, str(n + 1)))
    assert is_supported(_run(registry, count, calls[:1] * 2, "1"))  # one object looked at twice is one object

    attr = next(s for i in range(6)
                if (s := generate_sample(SampleKey("attribute", "simple", i), 5, 0.0, registry)).target["value"]
                in COLOR_NAMES)
    colour = attr.target["value"]
    calls = [s.call for s in attr.steps]
    right = _run(registry, attr, calls, colour)
    assert right.steps[-1].observation.data["color"] == colour
    wrong = _run(registry, attr, calls, next(c for c in ("red", "blue") if c != colour))
    assert is_supported(right) and not is_supported(wrong)
    assert vote([wrong, right]).winner_index == 1


def test_fidelity_on_real_video_tools(registry):
    temporal = generate_sample(SampleKey("temporal", "simple", 0), 5, 0.0, registry)
    calls = [s.call for s in temporal.steps]
    frame = temporal.target["value"]
    assert is_supported(_run(registry, temporal, calls, str(frame)))
    assert not is_supported(_run(registry, temporal, calls, str(frame + 1)))
    track = generate_sample(SampleKey("track", "simple", 0), 5, 0.0, registry)
    calls = [s.call for s in track.steps]
    direction = track.target["value"]
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}[direction]
    assert is_supported(_run(registry, track, calls, direction))
    assert not is_supported(_run(registry, track, calls, opposite))
