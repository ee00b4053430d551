"""Model layer: load local HF VLM checkpoints, build tiny offline ones, LoRA, and chat rendering of trajectories.

Importing this package registers the Pixelis processors with `AutoProcessor` (see `pixelis.model.processor`).
"""

from pixelis.model.chat import (
    ChatTemplateError,
    RenderedSample,
    build_generation_batch,
    build_generation_prompt,
    collate,
    render_conversation,
    render_trajectory,
)
from pixelis.model.load import checkpoint_info, load_policy
from pixelis.model.lora import apply_lora, lora_from_config, trainable_parameter_summary
from pixelis.model.processor import PixelisQwen2_5_VLProcessor, PixelisQwen3VLProcessor, load_processor
from pixelis.model.tiny import SIZES, build_tiny_model

__all__ = [
    "ChatTemplateError",
    "PixelisQwen2_5_VLProcessor",
    "PixelisQwen3VLProcessor",
    "RenderedSample",
    "SIZES",
    "apply_lora",
    "build_generation_batch",
    "build_generation_prompt",
    "build_tiny_model",
    "checkpoint_info",
    "collate",
    "load_policy",
    "load_processor",
    "lora_from_config",
    "render_conversation",
    "render_trajectory",
    "trainable_parameter_summary",
]
