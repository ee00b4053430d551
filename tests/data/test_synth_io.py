"""Dataset IO on generated data: JSONL round trip, the Hugging Face view, the tokenizer corpus."""

import json

import numpy as np
import pytest

from pixelis.core.trajectory import IMAGE_FAMILIES, VIDEO_FAMILIES
from pixelis.data.io import corpus_texts, load_split, to_hf_dataset
from pixelis.data.synth.suite import FAMILIES


def same_pixels(a, b) -> bool:
    return a.size == b.size and np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))


def test_jsonl_round_trip_equals_generated(suite):
    loaded = {t.id: t for t in load_split(suite.dir, "train")}
    assert set(loaded) == {t.id for t in suite.generated}
    for orig in suite.generated:
        back = loaded[orig.id]
        assert (back.question, back.answer, back.target, back.final_thought) == (
            orig.question, orig.answer, orig.target, orig.final_thought)
        assert back.metadata == json.loads(json.dumps(orig.metadata))
        assert all(same_pixels(a, b) for a, b in zip(back.images, orig.images))
        assert (back.video is None) == (orig.video is None)
        if orig.video:
            assert len(back.video) == len(orig.video)
            assert all(same_pixels(a, b) for a, b in zip(back.video, orig.video))
        assert len(back.steps) == len(orig.steps)
        for s, o in zip(back.steps, orig.steps):
            assert (s.thought, s.kind, s.call.name, s.call.arguments) == (o.thought, o.kind, o.call.name,
                                                                           o.call.arguments)
            assert s.observation.text == o.observation.text
            assert s.observation.data == json.loads(json.dumps(o.observation.data))
            assert len(s.observation.images) == len(o.observation.images)
            assert all(same_pixels(a, b) for a, b in zip(s.observation.images, o.observation.images))


def test_media_rules_match_what_the_families_generate(suite):
    """The loader's per-family media rules (`IMAGE_FAMILIES`, `VIDEO_FAMILIES`) are what the generators produce."""
    assert IMAGE_FAMILIES == set(FAMILIES) == {t.metadata["family"] for t in suite.generated}
    assert all(t.images for t in suite.generated)
    assert VIDEO_FAMILIES == {t.metadata["family"] for t in suite.generated if t.video}
    assert all(t.video for t in suite.generated if t.metadata["family"] in VIDEO_FAMILIES)


def test_hf_dataset_columns_and_image_placeholders(suite):
    ds = to_hf_dataset(suite.generated)
    assert len(ds) == len(suite.generated)
    assert {"images", "messages", "family", "difficulty", "trap", "answer", "target", "id"} <= set(ds.column_names)
    for row, traj in zip(ds, suite.generated):
        placeholders = sum(1 for m in row["messages"] for c in m["content"] if c["type"] == "image")
        assert placeholders == len(row["images"]) == len(traj.conversation_images())
        assert row["messages"][0]["role"] == "user" and row["messages"][-1]["role"] == "assistant"
        assert f"<answer>{traj.answer}</answer>" in row["messages"][-1]["content"][0]["text"]
        assert any(m["role"] == "tool" for m in row["messages"])
        assert (row["family"], row["difficulty"]) == (traj.metadata["family"], traj.metadata["difficulty"])
        assert json.loads(row["target"]) == traj.target
        assert row["images"][0].size == traj.images[0].size


def test_corpus_holds_questions_calls_and_tool_responses(suite):
    texts = corpus_texts(suite.generated)
    joined = "\n".join(texts)
    traj = suite.generated[0]
    assert traj.question in texts
    assert "<tool_call>" in joined and "<answer>" in joined and "<think>" in joined
    assert traj.steps[0].observation.render_text() in texts
    assert all(isinstance(t, str) and t for t in texts)


def test_missing_split_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="val.jsonl"):
        load_split(tmp_path, "val")
