"""Training checkpoints: written atomically, verified on load, one file set per rank for what differs by rank.

Layout of `RUN/checkpoint-K/`:
  trainable.safetensors   every trainable parameter (all weights for full fine-tuning, adapters for LoRA)
  aux_head.safetensors    the auxiliary argument head, when enabled
  optimizer.pt            the optimizer state (torch-serialised, read back with `weights_only=True`)
  extras.pt               recipe state with tensors (RFT: the curiosity model and its optimizer), when any
  rank-R.json, rng-R.pt   per rank R: its sampler state and its python/numpy/torch RNG state
  state.json              step, world size, curriculum state, history, weights sha256, config hash + config

A checkpoint is written into a hidden staging directory `.checkpoint-K.partial`, fsynced, then renamed, so a
kill during a save leaves the previous checkpoints intact and nothing half-written under a `checkpoint-*` name.
Loading checks every file, the weights against the recorded sha256, and the world size; a bad file is one
`CheckpointError` naming it. The learning rate is a pure function of the step, so there is no scheduler state.

Written by hand rather than with accelerate's `save_state`/`load_state`: its `load_state` swallows a failure to
read the RNG states (logging only "Could not load random states") and unpickles `register_for_checkpointing`
objects with `weights_only=False`, where a damaged file must stop the resume and nothing may be unpickled.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pixelis.core.errors import CheckpointError, reading
from pixelis.core.repro import capture_rng_state, hash_tensors, record_artifact, restore_rng_state

log = logging.getLogger("pixelis.checkpoint")

__all__ = ["RESUME_SAFE_KEYS", "commit_dir", "config_changes", "latest_checkpoint", "load_checkpoint",
           "read_state", "save_checkpoint", "save_model_dir", "staging_dir", "trainable_state", "weights_hash",
           "write_rank_state", "write_shared_state"]

# Config keys (dotted prefixes) a resume may change without breaking bitwise resume-exactness.
RESUME_SAFE_KEYS = ("logging", "tracing", "sft.save_interval", "sft.report_to", "rft.save_interval", "data.workers",
                    "pretrain.render_workers")
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached CPU copies of the parameters that train (deduplicated for tied weights)."""
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def weights_hash(model: nn.Module) -> str:
    """sha256 over the trainable parameters' names and bytes."""
    return hash_tensors(trainable_state(model))


# ---------------------------------------------------------------------------------------------- saving


HEAD_FILE = "aux_head.safetensors"


def save_head(head: nn.Module, directory: Path) -> None:
    """Write `head`'s weights to `directory/aux_head.safetensors`."""
    save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}, str(directory / HEAD_FILE))


def load_head(head: nn.Module, model_dir: Path) -> bool:
    """Load `model_dir/aux_head.safetensors` (saved beside a pre-trained or fine-tuned model) into `head`, when
    it is there; returns whether it was."""
    file = model_dir / HEAD_FILE
    if not file.is_file():
        return False
    with reading(file, CheckpointError, "the aux head weights"):
        head.load_state_dict(load_file(str(file)))
    return True


def staging_dir(path: Path) -> Path:
    """The hidden directory a checkpoint is written into before it is renamed to `path`; created empty."""
    staging = path.with_name(f".{path.name}.partial")
    if staging.exists():  # left by a save that was killed
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def write_rank_state(staging: Path, rank: int, sampler_state: dict[str, Any]) -> None:
    """What differs between ranks: this rank's sampler position and RNG states (every rank calls this)."""
    (staging / f"rank-{rank}.json").write_text(json.dumps(sampler_state) + "\n")
    torch.save(capture_rng_state(), staging / f"rng-{rank}.pt")


EXTRAS_FILE = "extras.pt"


def write_shared_state(staging: Path, *, model: nn.Module, head: nn.Module | None, optimizer: torch.optim.Optimizer,
                       state: dict[str, Any], extras: dict[str, Any] | None = None) -> dict[str, Any]:
    """What all ranks share (the main process calls this); returns `state.json` as written (with the hash).

    `extras` is recipe state holding tensors (e.g. RFT's curiosity model and its optimizer), saved to `extras.pt`.
    """
    tensors = trainable_state(model)
    save_file(tensors, str(staging / "trainable.safetensors"))
    if head is not None:
        save_head(head, staging)
    torch.save(optimizer.state_dict(), staging / "optimizer.pt")
    if extras is not None:
        torch.save(extras, staging / EXTRAS_FILE)
    full = {**state, "weights_sha256": hash_tensors(tensors)}
    (staging / "state.json").write_text(json.dumps(full, indent=2) + "\n")
    return full


def commit_dir(staging: Path, path: Path) -> Path:
    """fsync every file of `staging` and the directory, then rename it to `path` (replacing an older one)."""
    for file in staging.rglob("*"):
        if file.is_file():
            fsync_path(file)
    fsync_path(staging)
    if path.exists():  # a resumed run saving a step it had saved before: swap, never mix the two
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(staging, path)
        shutil.rmtree(old)
    else:
        os.replace(staging, path)
    fsync_path(path.parent)
    return path


def save_checkpoint(accelerator: Any, out_dir: Path, step: int, *, model: nn.Module, head: nn.Module | None,
                    optimizer: torch.optim.Optimizer, rank_state: dict[str, Any], state: dict[str, Any],
                    extras: dict[str, Any] | None = None) -> Path:
    """Write `out_dir/checkpoint-<step>` atomically from every rank of `accelerator` (`model` / `head` unwrapped):
    each rank adds its `rank_state` and RNG state, the main process the shared files; recorded in run.json."""
    path = out_dir / f"checkpoint-{step}"
    main = accelerator.is_main_process
    staging = staging_dir(path) if main else path.with_name(f".{path.name}.partial")
    accelerator.wait_for_everyone()
    write_rank_state(staging, accelerator.process_index, rank_state)
    if main:
        written = write_shared_state(staging, model=model, head=head, optimizer=optimizer, state=state, extras=extras)
    accelerator.wait_for_everyone()
    if main:
        commit_dir(staging, path)
        record_artifact(out_dir, path.name, written["weights_sha256"])
        log.info("checkpoint %s (weights sha256 %s)", path, written["weights_sha256"][:16])
    accelerator.wait_for_everyone()
    return path


def save_model_dir(accelerator: Any, directory: Path, *, model: nn.Module, processor: Any,
                   head: nn.Module | None = None, merge_lora: bool = False,
                   files: dict[str, str] | None = None) -> Path:
    """Write a loadable model directory (weights, processor, optional aux head and text `files`) atomically
    from the main process; with `merge_lora` a PEFT model is merged first."""
    if accelerator.is_main_process:
        staging = staging_dir(directory)
        (model.merge_and_unload() if merge_lora else model).save_pretrained(staging, safe_serialization=True)
        processor.save_pretrained(staging)
        if head is not None:
            save_head(head, staging)
        for name, text in (files or {}).items():
            (staging / name).write_text(text, encoding="utf-8")
        commit_dir(staging, directory)
    accelerator.wait_for_everyone()
    return directory


def fsync_path(path: Path) -> None:
    """fsync a file or directory."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------- loading


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step in `run_dir` (staging directories never count)."""
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := _CHECKPOINT_NAME.match(p.name)) and p.is_dir()]
    return max(found)[1] if found else None


def resume_target(resume: Path) -> Path:
    """The checkpoint `--resume` names: `RUN/checkpoint-K` itself, or the latest checkpoint of a run directory."""
    if resume.is_dir() and not (resume / "state.json").is_file():
        latest = latest_checkpoint(resume)
        if latest is None:
            raise CheckpointError(f"--resume {resume}: no checkpoint-K directory in it to resume from")
        return latest
    return resume


def read_state(path: Path) -> dict[str, Any]:
    """`state.json` of the checkpoint at `path` (a `checkpoint-K` directory), checked to be readable."""
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {path}")
    file = path / "state.json"
    if not file.is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete: missing state.json")
    with reading(file, CheckpointError, "the checkpoint state"):
        state = json.loads(file.read_text(encoding="utf-8"))
        missing = [k for k in ("step", "world_size", "weights_sha256", "config", "history")
                   if k not in state]
        if missing:
            raise CheckpointError(f"{file}: not a Pixelis checkpoint state (missing {', '.join(missing)})")
    return state


def config_changes(saved: dict[str, Any], current: dict[str, Any], within: tuple[str, ...] | None = None) -> list[str]:
    """Dotted keys whose values differ between two resolved configs, except `RESUME_SAFE_KEYS`, as `key: a -> b`;
    with `within`, only keys starting with one of those prefixes (the sections a recipe depends on)."""
    flat_saved, flat_current = _flatten(saved), _flatten(current)
    changed = []
    for key in sorted(set(flat_saved) | set(flat_current)):
        if any(key == safe or key.startswith(f"{safe}.") for safe in RESUME_SAFE_KEYS):
            continue
        if within is not None and not key.startswith(within):
            continue
        before, after = flat_saved.get(key, "<unset>"), flat_current.get(key, "<unset>")
        if before != after:
            changed.append(f"{key}: {before!r} -> {after!r}")
    return changed


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, dotted))
        else:
            flat[dotted] = value
    return flat


def load_checkpoint(path: Path, *, model: nn.Module, head: nn.Module | None, optimizer: torch.optim.Optimizer,
                    rank: int, world_size: int) -> dict[str, Any]:
    """Restore everything the save wrote, in place, after checking it; returns `state.json` with this rank's
    sampler state under `"sampler"`. RNG state is restored last."""
    state = read_state(path)
    if state["world_size"] != world_size:
        raise CheckpointError(f"checkpoint {path} was written by {state['world_size']} process(es); resume it with "
                              f"the same number (this run has {world_size})")
    required = ["trainable.safetensors", "optimizer.pt", f"rank-{rank}.json", f"rng-{rank}.pt"]
    if head is not None:
        required.append(HEAD_FILE)
    missing = [name for name in required if not (path / name).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: missing {', '.join(missing)}")
    file = path / "trainable.safetensors"
    with reading(file, CheckpointError, "the weights"):
        tensors = load_file(str(file))
    if hash_tensors(tensors) != state["weights_sha256"]:
        raise CheckpointError(f"{file}: the weights do not match the sha256 recorded in state.json "
                              f"({state['weights_sha256'][:16]}...): the file was changed or is corrupt")
    expected = {n: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad}
    wrong = sorted(set(tensors) ^ set(expected)) + sorted(n for n in set(tensors) & set(expected)
                                                          if tuple(tensors[n].shape) != expected[n])
    if wrong:
        raise CheckpointError(f"checkpoint {path} does not match the model's trainable parameters (e.g. "
                              f"{wrong[:5]}); was it written with another model or LoRA setting?")
    model.load_state_dict(tensors, strict=False)
    if head is not None:
        load_head(head, path)
    file = path / "optimizer.pt"
    with reading(file, CheckpointError, "the optimizer state"):
        optimizer.load_state_dict(torch.load(file, weights_only=True))
    file = path / f"rank-{rank}.json"
    with reading(file, CheckpointError, "the sampler state"):
        sampler = json.loads(file.read_text(encoding="utf-8"))
    extras = None
    if (path / EXTRAS_FILE).is_file():
        with reading(path / EXTRAS_FILE, CheckpointError, "the recipe state"):
            extras = torch.load(path / EXTRAS_FILE, weights_only=True)
    file = path / f"rng-{rank}.pt"
    with reading(file, CheckpointError, "the RNG state"):
        restore_rng_state(torch.load(file, weights_only=True))
    return {**state, "sampler": sampler, "extras": extras}
