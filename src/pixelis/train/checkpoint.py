"""Training checkpoints: trainable weights (safetensors), optimizer, scheduler, RNG, sampler and curriculum state.

Layout of `RUN/checkpoint-K/`:
  trainable.safetensors   every trainable parameter (all weights for full fine-tuning, adapters for LoRA)
  aux_head.safetensors    the auxiliary argument head, when enabled
  optimizer.pt scheduler.pt rng.pt   torch-serialised states
  state.json              step, sampler and curriculum state, weights hash, config hash
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pixelis.core.repro import capture_rng_state, hash_tensors, restore_rng_state


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete or does not fit the model being trained."""


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached CPU copies of the parameters that train (deduplicated for tied weights)."""
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def weights_hash(model: nn.Module) -> str:
    """sha256 over the trainable parameters' names and bytes."""
    return hash_tensors(trainable_state(model))


def save_checkpoint(path: Path, *, model: nn.Module, head: nn.Module | None, optimizer: torch.optim.Optimizer,
                    scheduler: Any, state: dict[str, Any]) -> dict[str, Any]:
    """Write a checkpoint directory; returns the state written to `state.json` (with the weights hash)."""
    path.mkdir(parents=True, exist_ok=True)
    tensors = trainable_state(model)
    save_file(tensors, str(path / "trainable.safetensors"))
    if head is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()},
                  str(path / "aux_head.safetensors"))
    torch.save(optimizer.state_dict(), path / "optimizer.pt")
    torch.save(scheduler.state_dict(), path / "scheduler.pt")
    torch.save(capture_rng_state(), path / "rng.pt")
    full = {**state, "weights_sha256": hash_tensors(tensors)}
    (path / "state.json").write_text(json.dumps(full, indent=2) + "\n")
    return full


def load_checkpoint(path: Path, *, model: nn.Module, head: nn.Module | None, optimizer: torch.optim.Optimizer,
                    scheduler: Any) -> dict[str, Any]:
    """Restore everything `save_checkpoint` wrote, in place; returns `state.json`. RNG state is restored last."""
    required = ["trainable.safetensors", "optimizer.pt", "scheduler.pt", "rng.pt", "state.json"]
    if head is not None:
        required.append("aux_head.safetensors")
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {path}")
    missing = [name for name in required if not (path / name).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: missing {', '.join(missing)}")
    tensors = load_file(str(path / "trainable.safetensors"))
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(tensors) != expected:
        diff = sorted(set(tensors) ^ expected)[:5]
        raise CheckpointError(f"checkpoint {path} does not match the model's trainable parameters (e.g. {diff}); "
                              "was it written with another model or LoRA setting?")
    model.load_state_dict(tensors, strict=False)
    if head is not None:
        head.load_state_dict(load_file(str(path / "aux_head.safetensors")))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    state = json.loads((path / "state.json").read_text())
    restore_rng_state(torch.load(path / "rng.pt", weights_only=True))
    return state
