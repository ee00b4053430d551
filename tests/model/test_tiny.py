"""The tiny offline checkpoint: determinism, reload fidelity, tokenizer, image budget, size configs."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText

from pixelis.model.tiny import ADDED_TOKENS, SIZES, SPECIAL_TOKENS, build_tiny_model, build_tokenizer, tiny_config


def test_same_seed_byte_identical_different_seed_differs(tmp_path, tiny_dir):
    state = torch.random.get_rng_state()
    again = build_tiny_model(tmp_path / "again", seed=0, size="xs")
    other = build_tiny_model(tmp_path / "other", seed=1, size="xs")
    assert torch.equal(torch.random.get_rng_state(), state), "building must not consume the caller's RNG"
    assert (again / "model.safetensors").read_bytes() == (tiny_dir / "model.safetensors").read_bytes()
    assert (again / "tokenizer.json").read_bytes() == (tiny_dir / "tokenizer.json").read_bytes()
    assert (other / "model.safetensors").read_bytes() != (tiny_dir / "model.safetensors").read_bytes()
    assert (other / "tokenizer.json").read_bytes() == (tiny_dir / "tokenizer.json").read_bytes()


def test_reload_gives_identical_weights_and_consistent_token_ids(tiny_dir, policy):
    model, processor = policy
    saved = load_file(tiny_dir / "model.safetensors")
    state = model.state_dict()
    assert saved.keys() == state.keys()
    assert all(torch.equal(saved[k], state[k]) for k in saved)
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    assert model.dtype == torch.float32 and model.device.type == "cpu" and not model.training
    tok = processor.tokenizer
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert model.config.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert model.config.text_config.vocab_size == len(tok)
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])


def test_tokenizer_special_and_added_tokens(policy):
    tok = policy[1].tokenizer
    assert len(tok) <= 4096
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    for t in SPECIAL_TOKENS + ADDED_TOKENS:
        assert tok.convert_ids_to_tokens(tok(t).input_ids) == [t], t
    text = '<|im_start|>assistant\n<think>zoom</think>\n<tool_call>{"name": "zoom_in"}</tool_call><|im_end|>'
    ids = tok(text).input_ids
    assert tok.decode(ids) == text
    # Qwen control tokens are dropped by skip_special_tokens; the tags the agent parses are kept.
    kept = 'assistant\n<think>zoom</think>\n<tool_call>{"name": "zoom_in"}</tool_call>'
    assert tok.decode(ids, skip_special_tokens=True) == kept


def test_corpus_words_become_tokens():
    word = " glorptastic"
    plain = build_tokenizer(vocab_size=2048)
    trained = build_tokenizer(corpus=[f"the{word} frobnicator"] * 50, vocab_size=2048)
    assert len(plain(word).input_ids) > 1
    assert trained.convert_ids_to_tokens(trained(word).input_ids) == ["Ġglorptastic"]


def test_coordinate_tokens_make_each_grid_value_one_token_with_smooth_embeddings(tmp_path):
    digits = build_tokenizer(vocab_size=2048)
    assert digits.convert_ids_to_tokens(digits("523", add_special_tokens=False).input_ids) == ["5", "2", "3"]
    tok = build_tokenizer(vocab_size=2048, coordinate_tokens=True)
    for v in (0, 7, 42, 523, 999, 1000):
        assert tok.convert_ids_to_tokens(tok(str(v), add_special_tokens=False).input_ids) == [str(v)]
    text = '{"bbox": [523, 11, 1000, 2048]}'
    pieces = tok.convert_ids_to_tokens(tok(text).input_ids)
    assert pieces[pieces.index("523"):][:8] == ["523", ",", "Ġ", "11", ",", "Ġ", "1000", ","]
    assert "204" in pieces and "8" in pieces
    assert tok.decode(tok(text).input_ids) == text

    model = AutoModelForImageTextToText.from_pretrained(
        build_tiny_model(tmp_path / "m", size="xs", coordinate_tokens=True))
    ids = [tok.convert_tokens_to_ids(str(v)) for v in (500, 504, 900)]
    for table in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
        near, far = (torch.cosine_similarity(table[ids[0]], table[i], dim=0) for i in ids[1:])
        assert near > 0.6 and far < 0.3


def test_rare_random_strings_stay_in_pieces():
    """A label seen a few times is not merged: train and test labels tokenize alike (character pieces)."""
    tok = build_tokenizer(corpus=["the label reads QXZTV"] * 3 + ["the label reads"] * 50, vocab_size=2048)
    assert len(tok(" QXZTV").input_ids) >= 4
    assert tok.convert_ids_to_tokens(tok(" label").input_ids) == ["Ġlabel"]


def test_image_budget_and_torch_tensors(policy, make_scene):
    processor = policy[1]
    text = ["<|vision_start|><|image_pad|><|vision_end|>"] * 2
    out = processor(text=text, images=[make_scene(), make_scene((448, 448))])
    assert isinstance(out["pixel_values"], torch.Tensor) and isinstance(out["image_grid_thw"], torch.Tensor)
    grid = out["image_grid_thw"]
    assert grid[0].tolist() == [1, 14, 14]  # 224 px / patch 16; 49 visual tokens after the 2x2 merge
    assert int(grid[1].prod()) // 4 <= 64  # a 448 px image is scaled down to the 256*256 budget
    tok = processor.tokenizer
    pad = tok.convert_tokens_to_ids("<|image_pad|>")
    assert [row.count(pad) for row in out["input_ids"]] == [int(g.prod()) // 4 for g in grid]


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen2_5_vl"])
def test_size_configs_are_consistent_and_grow(family):
    tok = build_tokenizer(vocab_size=2048)
    counts = []
    for size in SIZES:
        cfg = tiny_config(family, size, tok)
        text, vision = cfg.text_config, cfg.vision_config
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2
        assert vision.out_hidden_size == text.hidden_size and vision.depth == 2 and vision.spatial_merge_size == 2
        if family == "qwen3_vl":
            assert max(vision.deepstack_visual_indexes) < vision.depth
            assert int(vision.num_position_embeddings**0.5) ** 2 == vision.num_position_embeddings
        with torch.device("meta"):
            counts.append(sum(p.numel() for p in AutoModelForImageTextToText.from_config(cfg).parameters()))
    assert counts == sorted(counts) and len(set(counts)) == len(counts)


def test_unknown_size_and_family_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown tiny model size 'xl'"):
        build_tiny_model(tmp_path, size="xl")
    with pytest.raises(ValueError, match="unknown model family 'llava'"):
        build_tiny_model(tmp_path, family="llava")


def test_qwen2_5_vl_tiny_builds_and_loads(tmp_path, tiny25_dir, policy25):
    model, processor = policy25
    assert json.loads((tiny25_dir / "config.json").read_text())["model_type"] == "qwen2_5_vl"
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert type(processor).__name__ == "PixelisQwen2_5_VLProcessor"
    # Qwen2.5-VL checkpoints use the legacy key layout on disk: re-saving the loaded model must give the same bytes.
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == (tiny25_dir / "model.safetensors").read_bytes()
