"""What `pixelis analyze lora-ranks` reads, resolved to a `RankReport` (`pixelis.model.lora_ranks`).

- a PEFT adapter directory (`adapter_config.json` + `adapter_model.safetensors`, as `PeftModel.save_pretrained`
  writes it; a model directory holding an adapter counts as one);
- a Pixelis training checkpoint (`RUN/checkpoint-K`) or run directory (its latest checkpoint): LoRA runs save the
  adapter factors in `trainable.safetensors` and their `model.lora` settings in `state.json`;
- a fully fine-tuned model directory or checkpoint, with `base` (the model it started from): the weight delta of
  every linear module is analysed. A LoRA run's `final/` is merged, so it is analysed this way too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftConfig
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForImageTextToText

from pixelis.core.config import LoraConfig as LoraSettings
from pixelis.core.errors import CheckpointError, reading
from pixelis.model.load import checkpoint_dir, weight_files
from pixelis.model.lora_ranks import RankReport, delta_spectra, is_lora_factor, lora_spectra, tensor_index
from pixelis.train.checkpoint import latest_checkpoint, read_state

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
CHECKPOINT_WEIGHTS = "trainable.safetensors"


def analyse(path: Path, base: Path | None = None, energy: float = 0.95) -> RankReport:
    """The rank report of the adapter or fine-tune at `path` (see the module docstring); `CheckpointError` when
    `path` is none of those, `base` is missing or given for an adapter, or `base` does not fit `path`."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a directory (expected a LoRA adapter, a training checkpoint or run, "
                              "or a fine-tuned model directory)")
    if (path / ADAPTER_CONFIG).is_file():
        _no_base(path, base)
        return _peft_adapter(path, energy)
    checkpoint = path if (path / "state.json").is_file() else latest_checkpoint(path)
    if checkpoint is not None:
        return _training_checkpoint(checkpoint, base, energy)
    if (path / "config.json").is_file():
        return _full_delta(weight_files(checkpoint_dir(path)), path, base, energy)
    final = " (its final/ holds the merged model: pass RUN/final with --base)" if (path / "final").is_dir() else ""
    raise CheckpointError(f"{path} is not a LoRA adapter ({ADAPTER_CONFIG}), a training checkpoint or run "
                          f"(state.json, checkpoint-K/), nor a model directory (config.json){final}")


def _no_base(path: Path, base: Path | None) -> None:
    if base is not None:
        raise CheckpointError(f"{path} is a LoRA adapter: its delta is B·A alone, so --base is not needed; "
                              "--base is for full fine-tunes")


def _peft_adapter(path: Path, energy: float) -> RankReport:
    with reading(path / ADAPTER_CONFIG, CheckpointError, "the adapter config"):
        config = PeftConfig.from_pretrained(str(path))
    if not isinstance(config, LoraConfig):
        raise CheckpointError(f"{path / ADAPTER_CONFIG}: a {config.peft_type} adapter; only LoRA adapters have "
                              "a B·A delta to analyse")
    if config.use_dora:
        raise CheckpointError(f"{path / ADAPTER_CONFIG}: a DoRA adapter, whose delta also rescales the base "
                              "weights' columns; only plain LoRA adapters are analysed")
    weights = path / ADAPTER_WEIGHTS
    if not weights.is_file():
        found = sorted(p.name for p in path.glob("adapter_model.*"))
        pickled = f" (it has {', '.join(found)}: pickled weights are never unpickled)" if found else ""
        raise CheckpointError(f"adapter {path} has no {ADAPTER_WEIGHTS}{pickled}")
    with reading(weights, CheckpointError, "the adapter weights"):
        tensors = load_file(str(weights))
    return RankReport(str(path), "lora", lora_spectra(tensors, config, str(weights)), energy,
                      lora=_lora_settings(config))


def _training_checkpoint(checkpoint: Path, base: Path | None, energy: float) -> RankReport:
    state = read_state(checkpoint)
    weights = checkpoint / CHECKPOINT_WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"checkpoint {checkpoint} is incomplete: missing {CHECKPOINT_WEIGHTS}")
    names = tensor_index([weights])
    if not any(is_lora_factor(name) for name in names):
        return _full_delta([weights], checkpoint, base, energy)
    _no_base(checkpoint, base)
    with reading(checkpoint / "state.json", CheckpointError, "the checkpoint's model.lora settings"):
        settings = LoraSettings.model_validate(state["config"].get("model", {}).get("lora", {}))
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, rank_pattern=dict(settings.rank_pattern),
                        target_modules=list(settings.target_modules))
    with reading(weights, CheckpointError, "the weights"):
        tensors = load_file(str(weights))
    return RankReport(str(checkpoint), "lora", lora_spectra(tensors, config, str(weights)), energy,
                      lora=_lora_settings(config))


def _full_delta(files: list[Path], source: Path, base: Path | None, energy: float) -> RankReport:
    if base is None:
        raise CheckpointError(f"{source} holds full weights, not a LoRA adapter: pass --base DIR (the model it was "
                              "fine-tuned from) to analyse the delta W_ft - W_base")
    base_dir = checkpoint_dir(base)
    spectra, unchanged = delta_spectra(tensor_index(files), tensor_index(weight_files(base_dir)),
                                       _linear_modules(base_dir), str(source), str(base_dir))
    return RankReport(str(source), "delta", spectra, energy, base=str(base_dir), unchanged_modules=unchanged)


def _linear_modules(model_dir: Path) -> list[str]:
    """Names of the `nn.Linear` modules of the model `model_dir` describes (built on the meta device: no memory)."""
    with reading(model_dir / "config.json", CheckpointError, "the model config"):
        config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
        with torch.device("meta"):
            model = AutoModelForImageTextToText.from_config(config)
    return [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]


def _lora_settings(config: LoraConfig) -> dict[str, Any]:
    targets = config.target_modules
    return {"r": config.r, "alpha": config.lora_alpha, "rank_pattern": dict(config.rank_pattern or {}),
            "alpha_pattern": dict(config.alpha_pattern or {}), "use_rslora": bool(config.use_rslora),
            "target_modules": sorted(targets) if isinstance(targets, (set, list, tuple)) else targets}
