"""Weight versions of the online policy: written whole, then published by one atomic rename.

Layout under `root` (``RUN/online/weights``)::

    v000001/params.safetensors   the policy's trainable tensors after update 1
    v000001/ema.safetensors      the EMA policy the corridor measured against
    v000001/meta.json            version, the task it came from, its corridor KL
    CURRENT                      the published version number ("0": the base model, no file needed)

A version directory is first written as ``.v000001.partial`` (the checkpoints' staging) and renamed when complete, and ``CURRENT`` is replaced
with ``os.replace``; a reader (the engine) therefore sees the old version or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from pixelis.core.errors import PixelisError
from pixelis.train.checkpoint import commit_dir, fsync_path, staging_dir

PARAMS_FILE, EMA_FILE, META_FILE, CURRENT_FILE = "params.safetensors", "ema.safetensors", "meta.json", "CURRENT"


class WeightVersionError(PixelisError):
    """A weight version that is missing or unreadable."""


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors an online update changes: every parameter that requires grad (LoRA: the adapter only)."""
    return {name: p.detach().clone().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy `state` into the model's parameters of the same names (all of them must be there)."""
    params = dict(model.named_parameters())
    missing = sorted(set(state) - set(params))
    if missing:
        raise WeightVersionError(f"weight version holds tensors the model lacks: {', '.join(missing[:5])}")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor)


class WeightStore:
    """The versions of one online run (see the module docstring)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, version: int) -> Path:
        return self.root / f"v{version:06d}"

    def current(self) -> int:
        """The published version (0 before any accepted update)."""
        pointer = self.root / CURRENT_FILE
        if not pointer.exists():
            return 0
        text = pointer.read_text(encoding="utf-8").strip()
        if not text.isdigit():
            raise WeightVersionError(f"{pointer}: expected a version number, found {text[:40]!r}")
        return int(text)

    def save(self, version: int, params: dict[str, torch.Tensor], ema: dict[str, torch.Tensor],
             meta: dict[str, Any]) -> Path:
        """Write version `version` completely, then rename it into place (not yet published)."""
        staging = staging_dir(self.path(version))
        save_file(params, str(staging / PARAMS_FILE))
        save_file(ema, str(staging / EMA_FILE))
        (staging / META_FILE).write_text(json.dumps({"version": version, **meta}, sort_keys=True), encoding="utf-8")
        return commit_dir(staging, self.path(version))  # replaces an unpublished leftover of a crashed attempt

    def publish(self, version: int) -> None:
        """Make `version` the one the engine serves (atomic)."""
        if version and not (self.path(version) / META_FILE).exists():
            raise WeightVersionError(f"cannot publish version {version}: {self.path(version)} is not complete")
        tmp = self.root / f".{CURRENT_FILE}.tmp"
        tmp.write_text(f"{version}\n", encoding="utf-8")
        fsync_path(tmp)
        os.replace(tmp, self.root / CURRENT_FILE)
        fsync_path(self.root)

    def load(self, version: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
        """(params, ema, meta) of a saved version."""
        path = self.path(version)
        try:
            meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
            return load_file(str(path / PARAMS_FILE)), load_file(str(path / EMA_FILE)), meta
        except (OSError, ValueError) as err:
            raise WeightVersionError(f"weight version {version} at {path} is unreadable: {err}") from err

    def discard_after(self, version: int) -> list[int]:
        """Remove unpublished versions above `version` and leftover temporary directories; returns those removed."""
        removed = []
        for entry in self.root.iterdir():
            if entry.name.endswith((".partial", ".old")):  # staging left by an interrupted `save`
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.is_dir() and entry.name.startswith("v") and entry.name[1:].isdigit():
                if int(entry.name[1:]) > version:
                    shutil.rmtree(entry)
                    removed.append(int(entry.name[1:]))
        return sorted(removed)
