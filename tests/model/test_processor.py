"""Processor registration, the Hub file layout, and a full chat round trip through template and tokenizer."""

import json
import shutil

import pytest
from transformers import AutoProcessor

from pixelis.model import PixelisQwen2_5_VLProcessor, PixelisQwen3VLProcessor, load_processor
from pixelis.model.load import load_policy


def test_auto_processor_returns_full_processor(tiny_dir, tiny25_dir):
    for path, cls in [(tiny_dir, PixelisQwen3VLProcessor), (tiny25_dir, PixelisQwen2_5_VLProcessor)]:
        processor = AutoProcessor.from_pretrained(path)
        assert type(processor) is cls
        assert type(processor.image_processor).__name__ == "Qwen2VLImageProcessorPil"
        assert "tool_call" in processor.chat_template or cls is PixelisQwen2_5_VLProcessor


def _to_hub_layout(src, dst):
    """Rewrite a tiny checkpoint into the file layout of a released Qwen3-VL repository."""
    shutil.copytree(src, dst)
    processor_config = json.loads((dst / "processor_config.json").read_text())
    (dst / "processor_config.json").unlink()
    image = processor_config["image_processor"] | {
        "processor_class": "Qwen3VLProcessor", "image_processor_type": "Qwen2VLImageProcessorFast"}
    (dst / "preprocessor_config.json").write_text(json.dumps(image))
    (dst / "video_preprocessor_config.json").write_text(json.dumps({
        "processor_class": "Qwen3VLProcessor", "video_processor_type": "Qwen3VLVideoProcessor",
        "patch_size": 16, "merge_size": 2, "temporal_patch_size": 2}))
    template = (dst / "chat_template.jinja").read_text()
    (dst / "chat_template.jinja").unlink()
    (dst / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    tok_config = json.loads((dst / "tokenizer_config.json").read_text())
    tok_config |= {"tokenizer_class": "Qwen2Tokenizer", "processor_class": "Qwen3VLProcessor"}
    (dst / "tokenizer_config.json").write_text(json.dumps(tok_config))


def test_released_checkpoint_layout_loads_without_video_processor(tmp_path, tiny_dir, policy):
    hub = tmp_path / "hub"
    _to_hub_layout(tiny_dir, hub)
    # The stock processor named in the files needs torchvision for its video processor.
    with pytest.raises(ImportError, match="[Tt]orchvision"):
        AutoProcessor.from_pretrained(hub)
    model, processor = load_policy(hub)
    assert type(processor) is PixelisQwen3VLProcessor
    assert processor.chat_template == policy[1].chat_template
    text = '<think>zoom</think>\n<tool_call>{"name": "zoom_in", "arguments": {"bbox": [1, 2, 3, 4]}}</tool_call>'
    assert processor.tokenizer(text).input_ids == policy[1].tokenizer(text).input_ids
    assert load_processor(hub).image_processor.patch_size == 16


def test_conversation_round_trip(policy, make_scene):
    processor = policy[1]
    call = '{"name": "zoom_in", "arguments": {"image": 0, "bbox": [250, 250, 750, 750]}}'
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is the circle?"}]},
        {"role": "assistant",
         "content": [{"type": "text", "text": f"<think>Zoom in.</think>\n<tool_call>{call}</tool_call>"}]},
        {"role": "tool", "content": [{"type": "image"}, {"type": "text", "text": "Zoomed."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "<answer>red</answer>"}]},
    ]
    text = processor.apply_chat_template(messages, tokenize=False)
    assert text.count("<|image_pad|>") == 2
    assert "<tool_response>\n<|vision_start|><|image_pad|><|vision_end|>Zoomed.\n</tool_response>" in text
    enc = processor(text=[text], images=[make_scene(), make_scene((100, 80), "blue")], return_tensors="pt")
    ids = enc["input_ids"][0]
    pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    merge = processor.image_processor.merge_size ** 2
    assert int((ids == pad).sum()) == int(enc["image_grid_thw"].prod(dim=1).sum()) // merge
    assert enc["pixel_values"].shape[0] == int(enc["image_grid_thw"].prod(dim=1).sum())
    decoded = processor.tokenizer.decode(ids)
    assert f"<tool_call>{call}</tool_call>" in decoded
    body = decoded.split("<tool_call>")[1].split("</tool_call>")[0]
    assert json.loads(body)["arguments"]["bbox"] == [250, 250, 750, 750]
