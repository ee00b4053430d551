"""Load a local Hugging Face VLM checkpoint (Qwen3-VL / Qwen2.5-VL family, tiny or 8B) with its processor.

Everything is local: `local_files_only=True`, no network. Only safetensors weights are accepted; pickled
`*.bin` / `*.pt` weights are refused, never opened, because unpickling can execute code. A checkpoint whose
tensors do not fit the model its `config.json` describes (missing, unexpected or wrongly shaped) is refused
too, rather than loaded with randomly initialised weights.
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

from pixelis.core.errors import CheckpointError, reading
from pixelis.model.processor import load_processor

SAFETENSORS_WEIGHTS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_PICKLE_ADVICE = ("unpickling can run arbitrary code, so pickled weights are never loaded; convert them to a "
                  "safetensors checkpoint with model.save_pretrained(DIR, safe_serialization=True) and pass DIR")
# What a checkpoint directory holds beside its weights: (description, any one of these file names).
_COMPANIONS = (
    ("config.json", ("config.json",)),
    ("tokenizer files (tokenizer.json or tokenizer_config.json)", ("tokenizer.json", "tokenizer_config.json")),
    ("processor config (processor_config.json or preprocessor_config.json)",
     ("processor_config.json", "preprocessor_config.json")),
)
_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}


def checkpoint_dir(path: str | Path) -> Path:
    """The checkpoint directory `path` names: the directory itself, or the one holding a `.safetensors` file.

    Raises `CheckpointError` for a pickle path (refused whether or not it exists, and never opened), a missing
    path, any other kind of file, a weights file that is not the one the directory loads, and a directory that
    lacks `config.json`, tokenizer or processor files.
    """
    path = Path(path)
    if path.suffix in _PICKLE_SUFFIXES and not path.is_dir():
        raise CheckpointError(f"{path}: refusing pickled weights ({path.suffix}): {_PICKLE_ADVICE}")
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir():
        _require_companions(path, f"checkpoint directory {path}")
        return path
    if path.suffix != ".safetensors":
        raise CheckpointError(f"checkpoint {path} is neither a directory nor a .safetensors weights file")
    _require_companions(path.parent, f"{path}: a weights file loads with the config and tokenizer beside it, "
                                     f"but {path.parent}")
    loaded = _weight_names(path.parent)
    if path.name not in loaded:
        raise CheckpointError(f"{path}: the checkpoint in {path.parent} loads its weights from {', '.join(loaded)}, "
                              f"not from {path.name}; pass the directory to load those, or give {path.name} a "
                              "directory of its own as model.safetensors")
    return path.parent


def _require_companions(directory: Path, subject: str) -> None:
    missing = [what for what, names in _COMPANIONS if not any((directory / n).is_file() for n in names)]
    if missing:
        raise CheckpointError(f"{subject} has no {', '.join(missing)}")


def _weight_names(directory: Path) -> list[str]:
    """The weight file names `from_pretrained` reads in `directory`: model.safetensors, or its index's shards."""
    index = directory / SAFETENSORS_INDEX
    if index.is_file():
        with reading(index, CheckpointError, "safetensors index"):
            return sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    if (directory / SAFETENSORS_WEIGHTS).is_file():
        return [SAFETENSORS_WEIGHTS]
    pickled = sorted(p.name for p in directory.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if pickled:
        raise CheckpointError(f"checkpoint {directory} has only pickled weights ({', '.join(pickled)}); refusing "
                              f"to unpickle them: {_PICKLE_ADVICE}")
    others = sorted(p.name for p in directory.glob("*.safetensors"))
    found = f" (it holds {', '.join(others)}, which are not the model's weights)" if others else ""
    raise CheckpointError(f"checkpoint directory {directory} has no weights ({SAFETENSORS_WEIGHTS} or "
                          f"{SAFETENSORS_INDEX}){found}")


def weight_files(directory: str | Path) -> list[Path]:
    """The safetensors files the checkpoint in `directory` loads, each checked to exist and to be readable.

    Raises `CheckpointError` when there are none (or only pickled ones), and naming the file when a shard listed
    in `model.safetensors.index.json` is missing, or a file is empty, truncated or not safetensors.
    """
    directory = Path(directory)
    names = _weight_names(directory)
    missing = [name for name in names if not (directory / name).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {directory}: {len(missing)} of {len(names)} weight shards listed in "
                              f"{SAFETENSORS_INDEX} are missing: {', '.join(missing)}")
    files = [directory / name for name in names]
    for file in files:
        with reading(file, CheckpointError, "safetensors weights"), safe_open(file, framework="pt"):
            pass  # opening parses the header and checks that the file holds every tensor it lists
    return files


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
    """Load a local VLM checkpoint (see `checkpoint_dir`) and its processor; returns `(model, processor)`.

    The model is in eval mode on `device` in `dtype` (see `resolve_dtype` / `resolve_device`). Raises
    `CheckpointError` when the files cannot be read or the tensors do not fit the model (see `_check_fit`).
    """
    directory = checkpoint_dir(path)
    weight_files(directory)
    dev = resolve_device(device)
    with reading(directory, CheckpointError, "checkpoint"):
        model, info = AutoModelForImageTextToText.from_pretrained(
            directory,
            dtype=resolve_dtype(dtype, dev),
            device_map={"": str(dev)},
            use_safetensors=True,
            local_files_only=True,
            trust_remote_code=trust_remote_code,
            ignore_mismatched_sizes=True,  # reported in `info` (checked below) instead of raised without names
            output_loading_info=True,
        )
        processor = load_processor(directory)
    _check_fit(directory, model, info)
    model.eval()
    return model, processor


def _check_fit(directory: Path, model: PreTrainedModel, info: dict[str, Any]) -> None:
    """Refuse weights that do not fit the model: transformers would re-initialise those tensors at random.

    Tied weights (e.g. an `lm_head` shared with the embeddings) are not reported missing by transformers.
    """
    wrong_shape = [f"{name} ({list(saved)} in the file, {list(wanted)} in the model)"
                   for name, saved, wanted in sorted(info["mismatched_keys"])]
    problems = [f"{label}: {_first(names)}" for label, names in (
        ("missing tensors", sorted(info["missing_keys"])),
        ("unexpected tensors", sorted(info["unexpected_keys"])),
        ("tensors with the wrong shape", wrong_shape),
        ("load errors", list(info["error_msgs"])),
    ) if names]
    if problems:
        raise CheckpointError(f"checkpoint {directory} does not fit the {type(model).__name__} its config.json "
                              f"describes: {'; '.join(problems)}")


def _first(names: list[str], shown: int = 5) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def checkpoint_info(path: str | Path) -> dict[str, Any]:
    """Architecture, parameter count, weight dtypes and tokenizer size of a checkpoint, read from its files only.

    `path` is a checkpoint directory or its weights file (see `checkpoint_dir`). Parameter counts come from the
    safetensors headers, so an 8B checkpoint is summarised without loading it.
    """
    directory = checkpoint_dir(path)
    files = weight_files(directory)
    with reading(directory, CheckpointError, "checkpoint"):
        config = AutoConfig.from_pretrained(directory, local_files_only=True)
        processor = load_processor(directory)
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
    tokenizer = getattr(processor, "tokenizer", processor)
    return {
        "path": str(directory),
        "model_type": config.model_type,
        "architectures": list(config.architectures or []),
        "parameters": params,
        "dtypes": dict(dtypes),
        "tokenizer_size": len(tokenizer),
        "processor": type(processor).__name__,
    }
