"""A tiny random checkpoint of the real Qwen3-VL (or Qwen2.5-VL) architecture, built fully offline.

`build_tiny_model` writes a directory that loads exactly like a real checkpoint (config, safetensors weights,
generation config, tokenizer, image processor, chat template), so every code path that serves an 8B model is
exercised on a 2-core CPU. The tokenizer is a byte-level BPE trained on a built-in seed corpus (tool-call JSON,
tool names, digits, colour and shape words, the tool-calling system prompt) plus an optional task corpus.
"""

from __future__ import annotations

import importlib.resources
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForImageTextToText,
    GenerationConfig,
    PreTrainedConfig,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen3VLConfig,
)
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.processing_utils import ProcessorMixin

from pixelis.model.chat import tools_system_text
from pixelis.model.processor import PROCESSOR_CLASSES

Family = Literal["qwen3_vl", "qwen2_5_vl"]

# Qwen special tokens (control tokens, skipped on decode) in Qwen's id order.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Plain added tokens: atomic, but kept on decode because the agent parses them.
ADDED_TOKENS = (
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
)
# The values of the 0-1000 coordinate grid the agent writes boxes and points in.
COORDINATE_VALUES = range(1001)
# The pre-tokenizer split of Qwen2/Qwen3 tokenizers, so tokens break at the same places as in the real models.
QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# The chat templates TRL ships as files inside its package (read at build time, never copied into our source).
CHAT_TEMPLATE_FILES: dict[str, str] = {"qwen3_vl": "qwen3_vl.jinja", "qwen2_5_vl": "qwen2_5_vl.jinja"}


@dataclass(frozen=True)
class TinySize:
    """Dimensions of one tiny model size."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vision_hidden: int
    vision_heads: int
    vision_intermediate: int
    vocab_size: int


SIZES: dict[str, TinySize] = {
    "xs": TinySize(64, 2, 4, 2, 16, 128, 64, 4, 128, 2048),
    "s": TinySize(256, 4, 8, 4, 32, 512, 128, 4, 256, 3072),
    "m": TinySize(512, 6, 8, 4, 64, 1024, 256, 4, 512, 4096),
}

# Image budget of the tiny models: a 224x224 image gives 49 visual tokens, anything larger at most 64.
DEFAULT_MIN_PIXELS = 64 * 64
DEFAULT_MAX_PIXELS = 256 * 256

_TOOL_NAMES = (
    "zoom_in", "crop", "segment_object", "segment_object_at", "get_properties", "read_text", "ocr",
    "track_object", "temporal_localize", "select_frame", "count_objects", "measure_distance", "compare_colors",
)
_COLOURS = ("red", "green", "blue", "yellow", "orange", "purple", "pink", "brown", "black", "white", "gray", "cyan")
_SHAPES = ("circle", "square", "triangle", "rectangle", "star", "ellipse", "hexagon", "cross", "diamond", "line")
_WORDS = (
    "What colour is the", "How many", "Which object is", "left of", "right of", "above", "below", "largest",
    "smallest", "frame", "image", "text", "says", "the answer is", "Let me zoom in on", "I will segment",
    "The region contains", "moving", "appears", "first", "last", "between", "object", "area", "count", "point",
)


def _seed_corpus() -> list[str]:
    """Built-in texts so the tokenizer works without a task corpus; deterministic."""
    rng = random.Random(0)
    lines = [" ".join(_TOOL_NAMES), " ".join(_COLOURS), " ".join(_SHAPES), " ".join(_WORDS)]
    lines += [" ".join(str(i) for i in range(k, k + 50)) for k in range(0, 1001, 50)]
    for _ in range(400):
        name = rng.choice(_TOOL_NAMES)
        x0, y0 = rng.randrange(0, 900), rng.randrange(0, 900)
        args = rng.choice([
            {"image": rng.randrange(3), "bbox": [x0, y0, x0 + rng.randrange(20, 100), y0 + rng.randrange(20, 100)]},
            {"image": rng.randrange(3), "point": [x0, y0]},
            {"frame": rng.randrange(32), "text": rng.choice(_COLOURS)},
        ])
        call = json.dumps({"name": name, "arguments": args})
        colour, shape = rng.choice(_COLOURS), rng.choice(_SHAPES)
        lines.append(f"<think>{rng.choice(_WORDS)} the {colour} {shape}.</think>\n<tool_call>{call}</tool_call>")
        lines.append(f"<think>The {colour} {shape} is {rng.choice(_WORDS)}.</think>\n<answer>{colour}</answer>")
        lines.append(f"<tool_response>\n{shape} at [{x0}, {y0}] area {rng.randrange(10000)}\n</tool_response>")
    tool = {"type": "function", "function": {"name": "zoom_in", "description": "Zoom into a region of an image.",
            "parameters": {"type": "object", "properties": {"bbox": {"type": "array", "items": {"type": "integer"}}},
                           "required": ["bbox"]}}}
    lines.append(tools_system_text([tool]))
    return lines


def build_tokenizer(corpus: Iterable[str] | None = None, vocab_size: int = 3072,
                    min_frequency: int = 10, coordinate_tokens: bool = False) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer with the Qwen pre-tokenizer and special tokens on seed + `corpus`.

    Only pairs seen `min_frequency` times are merged: a task's random strings (OCR labels) occur a few times
    each, and merging them would make every training label one token while unseen test labels split into
    characters -- the model could then never learn to copy a label it has not memorised.

    With `coordinate_tokens` every integer 0-1000 (a value of the coordinate grid) is one added token, as
    location tokens in Pix2Seq or PaliGemma, instead of one token per digit as in Qwen's tokenizer: a
    coordinate is then one prediction over the grid, not three digits of which the last two are periodic in
    the position. Longer digit runs split into such pieces (``2048`` -> ``204``, ``8``); the text is unchanged.
    """
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = _seed_corpus() + [t for t in (corpus or ()) if t]
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in ADDED_TOKENS])
    if coordinate_tokens:
        tok.add_tokens([AddedToken(str(v), special=False, normalized=False) for v in COORDINATE_VALUES])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )


def _mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 rotary frequencies over (t, h, w) in Qwen3-VL's 24:20:20 proportion."""
    half = head_dim // 2
    h = w = round(half * 20 / 64)
    return [half - h - w, h, w]


def tiny_config(family: Family, size: str, tokenizer: PreTrainedTokenizerFast) -> PreTrainedConfig:
    """The model config of a tiny `family` model of `size`, with token ids taken from `tokenizer`."""
    if size not in SIZES:
        raise ValueError(f"unknown tiny model size {size!r}; choose one of {', '.join(SIZES)}")
    d = SIZES[size]
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in [
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"),
    ]}
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=d.hidden,
        num_hidden_layers=d.layers,
        num_attention_heads=d.heads,
        num_key_value_heads=d.kv_heads,
        intermediate_size=d.intermediate,
        max_position_embeddings=32768,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    vision = dict(
        depth=2,
        hidden_size=d.vision_hidden,
        num_heads=d.vision_heads,
        intermediate_size=d.vision_intermediate,
        spatial_merge_size=2,
        temporal_patch_size=2,
        out_hidden_size=d.hidden,
    )
    if family == "qwen3_vl":
        text.update(head_dim=d.head_dim, rope_parameters={
            "rope_type": "default", "rope_theta": 5_000_000.0,
            "mrope_section": _mrope_section(d.head_dim), "mrope_interleaved": True,
        })
        deepstack = [0] if size == "xs" else [0, 1]
        vision.update(patch_size=16, num_position_embeddings=256, deepstack_visual_indexes=deepstack)
        return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **ids)
    if family == "qwen2_5_vl":
        # Qwen2.5-VL derives head_dim = hidden / heads; its mrope_section is in the default 16:24:24 proportion.
        half = d.hidden // d.heads // 2
        t = half // 4
        text.update(bos_token_id=None, rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0,
                                     "mrope_section": [t, (half - t) // 2, half - t - (half - t) // 2]})
        vision.update(patch_size=14, window_size=56, fullatt_block_indexes=[1])
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **ids)
    raise ValueError(f"unknown model family {family!r}; choose qwen3_vl or qwen2_5_vl")


def sincos_position_table(side: int, dim: int) -> torch.Tensor:
    """A (side*side, dim) table of 2D sine-cosine features of each grid cell's (row, column), as in MAE.

    Half the channels encode the row, half the column, at geometrically spaced frequencies.
    """
    quarter = dim // 4
    omega = 1.0 / (10000.0 ** (torch.arange(quarter, dtype=torch.float64) / max(1, quarter)))
    rows, cols = torch.meshgrid(torch.arange(side, dtype=torch.float64), torch.arange(side, dtype=torch.float64),
                                indexing="ij")
    parts = []
    for axis in (rows.reshape(-1), cols.reshape(-1)):
        angles = axis[:, None] * omega[None, :]
        parts += [angles.sin(), angles.cos()]
    table = torch.cat(parts, dim=1)
    return torch.nn.functional.pad(table, (0, dim - table.shape[1])).float()


def coordinate_table(values: torch.Tensor, dim: int, std: float) -> torch.Tensor:
    """A (len(values), dim) table of 1D sine-cosine features of grid values, entries of standard deviation `std`.

    Periods are geometrically spaced from 8 to 4,000 grid units, so nearby values get nearby rows.
    """
    half = dim // 2
    periods = 8.0 * (500.0 ** (torch.arange(half, dtype=torch.float64) / max(1, half - 1)))
    angles = values.double()[:, None] * (2 * torch.pi / periods)[None, :]
    table = torch.cat([angles.sin(), angles.cos()], dim=1) * (std * 2 ** 0.5)
    return torch.nn.functional.pad(table, (0, dim - table.shape[1])).float()


def _init_coordinate_embeddings(model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast) -> None:
    """Start the input and output embeddings of the coordinate tokens from sine-cosine features of their value.

    With random rows, each of the 1,001 values is a class of its own, learned from the few examples that hit it;
    with smooth rows, a hidden state that encodes a position scores the values near it highest from the start.
    """
    ids = torch.tensor(tokenizer.convert_tokens_to_ids([str(v) for v in COORDINATE_VALUES]))
    values = torch.tensor(list(COORDINATE_VALUES))
    std = model.config.text_config.initializer_range
    with torch.no_grad():
        for embedding in (model.get_input_embeddings(), model.get_output_embeddings()):
            embedding.weight[ids] = coordinate_table(values, embedding.weight.shape[1], std)


def _init_vision_positions(model: torch.nn.Module) -> None:
    """Start Qwen3-VL's learned vision position table from 2D sine-cosine features instead of noise.

    The table is resampled to every image's patch grid with corners aligned, so each patch then carries its
    position relative to the image -- what the 0-1000 coordinate grid measures. From random noise a 4M-parameter
    model did not learn to localise in 10k images (box IoU >= 0.5 on 0% of held-out objects).
    """
    visual = model.model.visual
    side = visual.num_grid_per_side
    with torch.no_grad():
        visual.pos_embed.weight.copy_(sincos_position_table(side, visual.pos_embed.embedding_dim))


def build_processor(
    family: Family,
    tokenizer: PreTrainedTokenizerFast,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ProcessorMixin:
    """A Pixelis processor for `family`: PIL image processor, `tokenizer`, TRL's chat template for the family."""
    template = (importlib.resources.files("trl") / "chat_templates" / CHAT_TEMPLATE_FILES[family]).read_text()
    if family == "qwen3_vl":  # Qwen3-VL: patch 16, mean/std 0.5 (as in the released preprocessor config)
        image_processor = Qwen2VLImageProcessorPil(
            patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3,
            min_pixels=min_pixels, max_pixels=max_pixels,
        )
    else:  # Qwen2.5-VL: patch 14, CLIP mean/std
        image_processor = Qwen2VLImageProcessorPil(
            patch_size=14, merge_size=2, temporal_patch_size=2, image_mean=OPENAI_CLIP_MEAN,
            image_std=OPENAI_CLIP_STD, min_pixels=min_pixels, max_pixels=max_pixels,
        )
    return PROCESSOR_CLASSES[family](image_processor=image_processor, tokenizer=tokenizer, chat_template=template)


def build_tiny_model(
    out_dir: str | Path,
    seed: int = 0,
    size: str = "s",
    corpus: Iterable[str] | None = None,
    family: Family = "qwen3_vl",
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    coordinate_tokens: bool = False,
) -> Path:
    """Build and save a random tiny checkpoint of `family` into `out_dir`; returns the directory.

    The same arguments give byte-identical files (weights are initialised under `torch.manual_seed(seed)` in a
    forked RNG, so the caller's random state is untouched). `coordinate_tokens`: see `build_tokenizer`.
    """
    out = Path(out_dir)
    if size not in SIZES:
        raise ValueError(f"unknown tiny model size {size!r}; choose one of {', '.join(SIZES)}")
    if family not in CHAT_TEMPLATE_FILES:
        raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(CHAT_TEMPLATE_FILES)}")
    tokenizer = build_tokenizer(corpus, vocab_size=SIZES[size].vocab_size, coordinate_tokens=coordinate_tokens)
    config = tiny_config(family, size, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    if family == "qwen3_vl":
        _init_vision_positions(model)
    if coordinate_tokens:
        _init_coordinate_embeddings(model, tokenizer)
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    build_processor(family, tokenizer, min_pixels, max_pixels).save_pretrained(out)
    return out

