"""Load a local Hugging Face VLM checkpoint (Qwen3-VL / Qwen2.5-VL family, tiny or 8B) with its processor.

Everything is local: `local_files_only=True`, no network. Only safetensors weights are accepted; pickled
`*.bin` / `*.pt` weights are refused because unpickling can execute code.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForImageTextToText, PreTrainedModel
from transformers.processing_utils import ProcessorMixin

from pixelis.model.processor import load_processor

SAFETENSORS_INDEX = "model.safetensors.index.json"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded; the message names the path and what is wrong."""


def weight_files(path: str | Path) -> list[Path]:
    """The safetensors weight files of a checkpoint directory, checked to be complete.

    Raises `CheckpointError` when the directory or `config.json` is missing, when a shard listed in
    `model.safetensors.index.json` is missing, or when the only weights are pickled (`*.bin`, `*.pt`, ...).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint directory {path} does not exist")
    if not path.is_dir():
        raise CheckpointError(f"checkpoint path {path} is not a directory")
    if not (path / "config.json").is_file():
        raise CheckpointError(f"checkpoint directory {path} has no config.json")
    index = path / SAFETENSORS_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index} is not a valid safetensors index: {exc}") from None
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not (path / s).is_file()]
        if missing:
            raise CheckpointError(
                f"checkpoint {path}: {len(missing)} of {len(shards)} weight shards listed in {SAFETENSORS_INDEX} "
                f"are missing: {', '.join(missing)}"
            )
        return [path / s for s in shards]
    files = sorted(path.glob("*.safetensors"))
    if files:
        return files
    pickled = sorted(p.name for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if pickled:
        raise CheckpointError(
            f"checkpoint {path} has only pickled weights ({', '.join(pickled)}); refusing to unpickle them. "
            "Convert the checkpoint to safetensors (model.save_pretrained(dir, safe_serialization=True))"
        )
    raise CheckpointError(f"checkpoint directory {path} has no weights (*.safetensors)")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """`auto` picks CUDA when available, else CPU; other values are passed to `torch.device`."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype = "auto", device: str | torch.device = "auto") -> torch.dtype:
    """`auto` is bfloat16 on a CUDA device that supports it, float32 otherwise; names like `bf16` are accepted."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        dev = resolve_device(device)
        return torch.bfloat16 if dev.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose auto or one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def load_policy(
    path: str | Path,
    dtype: str | torch.dtype = "auto",
    device: str | torch.device = "auto",
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Load a local VLM checkpoint and its processor through the Auto classes; returns `(model, processor)`.

    The model is in eval mode on `device` in `dtype` (see `resolve_dtype` / `resolve_device`).
    """
    path = Path(path)
    weight_files(path)
    dev = resolve_device(device)
    model = AutoModelForImageTextToText.from_pretrained(
        path,
        dtype=resolve_dtype(dtype, dev),
        device_map={"": str(dev)},
        use_safetensors=True,
        local_files_only=True,
        trust_remote_code=trust_remote_code,
    )
    model.eval()
    return model, load_processor(path)


def checkpoint_info(path: str | Path) -> dict[str, Any]:
    """Architecture, parameter count, weight dtypes and tokenizer size of a checkpoint, read from its files only.

    Parameter counts come from the safetensors headers, so an 8B checkpoint is summarised without loading it.
    """
    path = Path(path)
    files = weight_files(path)
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    params, dtypes = 0, Counter()
    for file in files:
        with safe_open(file, framework="pt") as f:
            for name in f.keys():
                sl = f.get_slice(name)
                n = 1
                for dim in sl.get_shape():
                    n *= dim
                params += n
                dtypes[sl.get_dtype()] += n
    processor = load_processor(path)
    tokenizer = getattr(processor, "tokenizer", processor)
    return {
        "path": str(path),
        "model_type": config.model_type,
        "architectures": list(config.architectures or []),
        "parameters": params,
        "dtypes": dict(dtypes),
        "tokenizer_size": len(tokenizer),
        "processor": type(processor).__name__,
    }
