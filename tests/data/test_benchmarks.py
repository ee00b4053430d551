"""Loaders for local copies of benchmark layouts: V* Bench directories and generic VQA JSONL/TSV."""

import json

import pytest
from PIL import Image

from pixelis.core.errors import DataError
from pixelis.data.benchmarks import DataFormatError, load_eval_data


def _write_image(path, colour=(200, 10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 24), colour).save(path)


def test_vstar_layout_becomes_shuffled_multiple_choice(tmp_path):
    for i in range(4):
        _write_image(tmp_path / "direct_attributes" / f"sa_{i}.jpg")
        (tmp_path / "direct_attributes" / f"sa_{i}.json").write_text(json.dumps(
            {"target_object": ["cup"], "bbox": [[1, 2, 3, 4]], "question": "What is the colour of the cup?",
             "options": ["red", "blue", "green", "white"]}))
    samples = load_eval_data(tmp_path)
    assert len(samples) == 4
    for s in samples:
        target = s.target
        assert target["type"] == "choice"
        # The correct option (the first in V*) sits behind the target letter after shuffling.
        assert target["choices"]["ABCD".index(target["value"])] == "red"
        assert f"({target['value']}) red" in s.question
        assert s.metadata["family"] == "direct_attributes" and s.images[0].size == (32, 24)
    # Deterministic shuffle, and not always the same letter.
    assert [s.target["value"] for s in load_eval_data(tmp_path)] == [s.target["value"] for s in samples]
    assert len({s.target["value"] for s in samples}) > 1


def test_vqa_jsonl_and_tsv(tmp_path):
    _write_image(tmp_path / "img" / "a.png")
    rows = [{"image": "img/a.png", "question": "How many cups?", "answer": "3"},
            {"image": "img/a.png", "question": "Colour?", "answer": "blue", "choices": ["red", "blue"]}]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    first, second = load_eval_data(tmp_path / "q.jsonl")
    assert first.target == {"type": "number", "value": "3"}
    assert second.target["value"] == "B" and "(B) blue" in second.question
    (tmp_path / "q.tsv").write_text("image\tquestion\tanswer\tA\tB\nimg/a.png\tWhich?\tA\tcat\tdog\n")
    (only,) = load_eval_data(tmp_path / "q.tsv")
    assert only.target["choices"] == ["cat", "dog"] and only.target["value"] == "A"


@pytest.mark.parametrize("content, message", [
    ('{"image": "missing.png", "question": "q", "answer": "a"}\n', r"q.jsonl:1: image file not found"),
    ('{"question": "q", "answer": "a"}\n', r"q.jsonl:1: missing field\(s\) \['image'\]"),
    ('{"image": "a.png", "question": "q", "answer": "z", "choices": ["x", "y"]}\n', r"neither a choice letter"),
    ('not json\n', r"q.jsonl:1: invalid JSON"),
    ('["a.png", "q", "a"]\n', r"q.jsonl:1: a row must be a JSON object, got list"),
    ('{"image": "a.png", "question": "q", "answer": "A", "choices": 4}\n',
     r"q.jsonl:1: field 'choices' must be a list"),
])
def test_bad_rows_name_file_and_line(tmp_path, content, message):
    _write_image(tmp_path / "a.png")
    (tmp_path / "q.jsonl").write_text(content)
    with pytest.raises(DataFormatError, match=message):
        load_eval_data(tmp_path / "q.jsonl")


def test_data_format_errors_are_data_errors():
    assert issubclass(DataFormatError, DataError) and issubclass(DataFormatError, ValueError)


def test_unknown_layouts_are_refused(tmp_path):
    with pytest.raises(DataFormatError, match="not found"):
        load_eval_data(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="no test.jsonl and no V\\* Bench items"):
        load_eval_data(tmp_path / "empty")
