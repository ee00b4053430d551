"""Qwen-VL processors without a video processor, registered with `AutoProcessor`.

The stock `Qwen3VLProcessor` / `Qwen2_5_VLProcessor` require a video processor, and every video processor in
transformers needs torchvision, which does not import beside the pinned torch. Pixelis feeds videos as lists of
frames (images), so these subclasses drop the video processor. They also make the image processor return torch
tensors by default (TRL's `split_pixel_values_by_grid` fails on numpy pixel values).

Importing this module registers both classes for their config classes, so `AutoProcessor.from_pretrained(dir)`
on a checkpoint saved with one of them returns the full processor rather than just the tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoProcessor, Qwen2_5_VLConfig, Qwen3VLConfig
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor
from transformers.processing_utils import ProcessorMixin


class PixelisQwen3VLProcessor(Qwen3VLProcessor):
    """`Qwen3VLProcessor` with an image processor and a tokenizer only (no video processor)."""

    images_kwargs = {"return_tensors": "pt"}

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, video_processor=None, chat_template=chat_template, **kwargs)


class PixelisQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
    """`Qwen2_5_VLProcessor` with an image processor and a tokenizer only (no video processor)."""

    images_kwargs = {"return_tensors": "pt"}

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, video_processor=None, chat_template=chat_template, **kwargs)


# model_type (config.json) -> processor class used for that family
PROCESSOR_CLASSES: dict[str, type[ProcessorMixin]] = {
    "qwen3_vl": PixelisQwen3VLProcessor,
    "qwen2_5_vl": PixelisQwen2_5_VLProcessor,
}

AutoProcessor.register(Qwen3VLConfig, PixelisQwen3VLProcessor, exist_ok=True)
AutoProcessor.register(Qwen2_5_VLConfig, PixelisQwen2_5_VLProcessor, exist_ok=True)


def load_processor(path: str | Path) -> ProcessorMixin:
    """The processor of a local checkpoint: ours for the Qwen-VL families, `AutoProcessor` otherwise.

    Real Qwen checkpoints name the stock class (`"processor_class": "Qwen3VLProcessor"`) in their processor
    config, which `AutoProcessor` would honour and then fail on the missing video processor; so the class is
    picked from `config.json`'s `model_type` here.
    """
    path = Path(path)
    model_type = json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type")
    cls = PROCESSOR_CLASSES.get(model_type)
    if cls is None:
        return AutoProcessor.from_pretrained(path, local_files_only=True)
    return cls.from_pretrained(path, local_files_only=True)
