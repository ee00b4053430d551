"""Scoring of every answer type, including the edge cases a policy's free-form answers hit."""

import pytest

from pixelis.eval.scoring import box_iou, normalize_answer, parse_box, parse_number, score_answer


def test_normalize_answer_drops_case_punctuation_articles_and_spaces():
    assert normalize_answer("  The  Red,   Circle! ") == "red circle"
    assert normalize_answer("An apple.") == "apple"
    assert normalize_answer("theatre") == "theatre"  # articles only as whole words


@pytest.mark.parametrize("prediction,ok", [
    ("K7WQ", True), (" k7wq. ", True), ("The K7WQ", True), ("K7WQX", False), ("K7 WQ", False), ("", False),
])
def test_text_is_normalised_exact_match(prediction, ok):
    assert score_answer(prediction, {"type": "text", "value": "K7WQ"}) is ok


def test_none_prediction_is_wrong():
    assert score_answer(None, {"type": "text", "value": "x"}) is False


@pytest.mark.parametrize("text,value", [
    ("3", 3), ("There are 3 red circles.", 3), ("three", 3), ("Three.", 3), ("twenty-one", 21),
    ("-2.5", -2.5), ("frame 7", 7), ("three of the 5 shapes", 3), ("5 of three", 5), ("none", 0),
])
def test_parse_number(text, value):
    assert parse_number(text) == value


def test_parse_number_without_number():
    assert parse_number("many") is None
    assert parse_number("no idea at all") is None


def test_number_scoring_with_and_without_tolerance():
    target = {"type": "number", "value": 4}
    assert score_answer("4", target)
    assert score_answer("four", target)
    assert not score_answer("5", target)
    assert score_answer("5", target, numeric_tolerance=1.0)
    assert not score_answer("6", target, numeric_tolerance=1.0)
    assert not score_answer("several", target)


def test_choice_by_text_letter_and_sentence():
    target = {"type": "choice", "value": "up-left", "choices": ["left", "right", "up", "down", "up-left"]}
    assert score_answer("up-left", target)
    assert score_answer("Up left", target)
    assert score_answer("E", target)
    assert score_answer("(e)", target)
    assert score_answer("E) up-left", target)
    assert score_answer("It moves up-left.", target)  # "left" inside "up-left" does not count separately
    assert not score_answer("left", target)
    assert not score_answer("A", target)
    assert not score_answer("E) left", target)  # letter and text disagree
    assert not score_answer("left or up-left", target)  # two options named
    assert not score_answer("Z", target)


def test_choice_with_article_options():
    target = {"type": "choice", "value": "the red circle", "choices": ["the blue square", "the red circle"]}
    assert score_answer("red circle", target)
    assert score_answer("B", target)
    assert not score_answer("the blue square", target)


def test_choice_target_must_be_among_choices():
    with pytest.raises(ValueError, match="not one of its choices"):
        score_answer("a", {"type": "choice", "value": "x", "choices": ["a", "b"]})


def test_box_iou_values():
    assert box_iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert box_iou([0, 0, 10, 10], [20, 20, 30, 30]) == 0.0
    assert box_iou([10, 0, 0, 10], [0, 0, 10, 10]) == 0.0  # inverted box is empty


def test_parse_box_formats():
    assert parse_box("[1, 2, 3, 4]") == [1, 2, 3, 4]
    assert parse_box("1,2,3,4") == [1, 2, 3, 4]
    assert parse_box('{"bbox": [1, 2, 3, 4]}') == [1, 2, 3, 4]
    assert parse_box("box: (10, 20) to (30, 40)") == [10, 20, 30, 40]
    assert parse_box("1,2,3") is None


def test_box_scoring_threshold():
    target = {"type": "box", "value": [100, 100, 200, 200]}
    assert score_answer("[100, 100, 200, 200]", target)
    assert score_answer("110,100,210,200", target)  # IoU 0.82
    assert not score_answer("150,100,250,200", target)  # IoU 0.33
    assert score_answer("150,100,250,200", target, iou_threshold=0.3)
    assert not score_answer("no box", target)


def test_bad_targets_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown target type"):
        score_answer("x", {"type": "colour", "value": "red"})
    with pytest.raises(ValueError, match="'type' and 'value'"):
        score_answer("x", {"value": "red"})
    with pytest.raises(ValueError, match="choices"):
        score_answer("x", {"type": "choice", "value": "x"})
