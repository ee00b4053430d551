"""How much of its rank each adapted module uses: singular values of a LoRA delta or of a fine-tune's W_ft - W_base.

A LoRA module adds Δ = scale · B·A (scale = alpha/r, or alpha/√r with rsLoRA; `rank_pattern` / `alpha_pattern`
give a module its own r and alpha, matched the way PEFT matches them). Its singular values come from the r×r core
R_B·R_Aᵀ of the QR factorisations B = Q_B·R_B and Aᵀ = Q_A·R_A, so an 8B adapter is analysed without forming any
d×d matrix. A full fine-tune's delta is decomposed directly (`torch.linalg.svdvals`, float32).

Per module: the energy captured at each rank k (Σ_{i≤k} σ_i² / Σ σ_i²), the effective rank at an energy level
(the smallest k reaching it), the stable rank ‖Δ‖_F² / σ_max², and the share of the configured rank the target
energy needs; `RankReport.rank_pattern_yaml` turns the ranks into a `model.lora.rank_pattern` config snippet.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from peft import LoraConfig
from peft.utils.other import get_pattern_key
from safetensors import safe_open

from pixelis.core.errors import CheckpointError, reading

ENERGY_LEVELS = (0.9, 0.95, 0.99)
MAX_STORED_VALUES = 256  # singular values kept per module in the report (a full delta has up to d of them)
SCHEMA = "pixelis.lora_ranks/1"
# `...<module>.lora_A[.<adapter>].weight` (linear/conv) or `...<module>.lora_embedding_A[.<adapter>]` (embedding),
# optionally under PEFT's `base_model.model.` prefix; <module> is then the module's name in the base model.
_FACTOR_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+?)\.lora_(?P<embedding>embedding_)?(?P<factor>[AB])"
                         r"(?:\.(?P<adapter>(?!weight$)[^.]+))?(?:\.weight)?$")
_LAYER_INDEX = re.compile(r"\.(?:layers|blocks|h)\.(\d+)\.")
_ENERGY_TOLERANCE = 1e-9  # float rounding: a rank-2 delta must reach energy 1.0 at rank 2


@dataclass
class ModuleSpectrum:
    """The singular values of one module's delta, largest first, with what they say about its rank."""

    name: str  # module path in the base model, e.g. model.language_model.layers.0.self_attn.q_proj
    shape: tuple[int, int]  # (out, in) of the delta
    singular_values: torch.Tensor  # float64, all of them
    configured_rank: int | None = None  # the adapter's r for this module (None: a full fine-tune delta)
    scale: float | None = None  # LoRA scale applied to B·A

    @property
    def layer_type(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    @property
    def layer(self) -> int | None:
        match = _LAYER_INDEX.search(f".{self.name}.")
        return int(match.group(1)) if match else None

    @property
    def energy(self) -> torch.Tensor:
        """Share of the squared Frobenius norm captured by the top k singular values, k = 1..n (zeros: all 0)."""
        squares = self.singular_values.square()
        total = squares.sum()
        return squares.cumsum(0) / total if total > 0 else torch.zeros_like(squares)

    @property
    def sigma_max(self) -> float:
        return float(self.singular_values[0]) if len(self.singular_values) else 0.0

    @property
    def stable_rank(self) -> float:
        """‖Δ‖_F² / σ_max² (0 for a zero delta)."""
        top = self.sigma_max
        return float(self.singular_values.square().sum() / top**2) if top > 0 else 0.0

    def effective_rank(self, level: float) -> int:
        """The smallest k whose top-k singular values hold `level` of the energy (0 for a zero delta)."""
        if self.sigma_max == 0:
            return 0
        reached = (self.energy >= level - _ENERGY_TOLERANCE).nonzero()
        return int(reached[0]) + 1

    def rank_used(self, level: float) -> float | None:
        """Effective rank at `level` over the configured rank (None without one)."""
        return self.effective_rank(level) / self.configured_rank if self.configured_rank else None

    def to_dict(self, levels: Iterable[float]) -> dict[str, Any]:
        stored = min(len(self.singular_values), MAX_STORED_VALUES)
        return {
            "name": self.name, "layer_type": self.layer_type, "layer": self.layer, "shape": list(self.shape),
            "configured_rank": self.configured_rank, "scale": self.scale,
            "sigma_max": self.sigma_max, "frobenius_norm": float(self.singular_values.square().sum().sqrt()),
            "stable_rank": self.stable_rank,
            "effective_rank": {f"{level:g}": self.effective_rank(level) for level in levels},
            "rank_used": {f"{level:g}": self.rank_used(level) for level in levels},
            "num_singular_values": len(self.singular_values),
            "singular_values": self.singular_values[:stored].tolist(),
            "energy": self.energy[:stored].tolist(),
        }


def is_lora_factor(name: str) -> bool:
    """Whether a tensor name is a LoRA A or B factor."""
    return _FACTOR_KEY.match(name) is not None


def lora_singular_values(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """Singular values of scale · B·A (B: out×r, A: r×in; conv factors are flattened) without forming B·A."""
    b = b.detach().reshape(b.shape[0], -1).double()
    a = a.detach().reshape(a.shape[0], -1).double()
    _, r_b = torch.linalg.qr(b)
    _, r_a = torch.linalg.qr(a.T)
    return abs(scale) * torch.linalg.svdvals(r_b @ r_a.T)


def lora_spectra(tensors: Mapping[str, torch.Tensor], config: LoraConfig, source: str) -> list[ModuleSpectrum]:
    """One spectrum per adapted module of a LoRA state dict (PEFT's saved names, or a PeftModel's parameters).

    Raises `CheckpointError` when a module lacks one of its factors, the file holds several adapters, or a
    module's rank disagrees with `config` (`r` / `rank_pattern`).
    """
    factors: dict[str, dict[str, torch.Tensor]] = {}
    embeddings, adapters = set(), set()
    for key, tensor in tensors.items():
        match = _FACTOR_KEY.match(key)
        if match is None:
            continue
        adapters.add(match["adapter"])
        factors.setdefault(match["module"], {})[match["factor"]] = tensor
        if match["embedding"]:
            embeddings.add(match["module"])
    if len(adapters) > 1:
        raise CheckpointError(f"{source}: holds several adapters ({', '.join(sorted(map(str, adapters)))}); "
                              "save one adapter per directory")
    spectra = []
    for name, pair in sorted(factors.items()):
        if set(pair) != {"A", "B"}:
            raise CheckpointError(f"{source}: module {name} has lora_{''.join(pair)} but not "
                                  f"lora_{'B' if 'A' in pair else 'A'}; the adapter is incomplete")
        a, b = pair["A"], pair["B"]
        if name in embeddings:
            a, b = b.T, a.T  # an embedding adapter stores A as (r, vocab) and B as (dim, r): Δ = (B·A)ᵀ
        rank = a.shape[0]
        expected = _pattern_value(config.rank_pattern, name, config.r)
        if rank != expected:
            raise CheckpointError(f"{source}: module {name} has rank {rank} in the weights but the adapter config "
                                  f"gives it r={expected}; the config does not belong to these weights")
        alpha = _pattern_value(config.alpha_pattern, name, config.lora_alpha)
        scale = alpha / math.sqrt(rank) if config.use_rslora else alpha / rank
        spectra.append(ModuleSpectrum(name, (b.shape[0], int(math.prod(a.shape[1:]))),
                                      lora_singular_values(a, b, scale), configured_rank=rank, scale=scale))
    if not spectra:
        raise CheckpointError(f"{source}: no LoRA weights (lora_A / lora_B tensors) found")
    return spectra


def _pattern_value(pattern: Mapping[str, Any] | None, name: str, default: Any) -> Any:
    """PEFT's per-module override: the value of the first pattern key matching `name`, else `default`."""
    if not pattern:
        return default
    key = get_pattern_key(list(pattern), name)
    return pattern.get(key, default)


def delta_spectra(tuned: Mapping[str, Path], base: Mapping[str, Path], linear_names: Iterable[str],
                  source: str, base_source: str) -> tuple[list[ModuleSpectrum], int]:
    """Spectra of W_tuned - W_base for every linear module whose weight differs; also how many were unchanged.

    `tuned` and `base` map tensor names to the safetensors file holding them. Raises `CheckpointError` when a
    tuned tensor is missing from the base or has another shape (the base is not the model that was fine-tuned).
    """
    strangers = sorted(set(tuned) - set(base))
    if strangers:
        raise CheckpointError(f"{source} does not fit the base {base_source}: {len(strangers)} of its tensors are "
                              f"not in the base (e.g. {', '.join(strangers[:3])}); pass the model it was "
                              "fine-tuned from as --base")
    spectra, unchanged = [], 0
    for name in sorted(set(linear_names)):
        key = f"{name}.weight"
        if key not in tuned:
            continue
        w_tuned, w_base = _tensor(tuned[key], key), _tensor(base[key], key)
        if w_tuned.shape != w_base.shape:
            raise CheckpointError(f"{source} does not fit the base {base_source}: {key} is {list(w_tuned.shape)} "
                                  f"there and {list(w_base.shape)} in the base; pass the model it was fine-tuned "
                                  "from as --base")
        delta = w_tuned.float() - w_base.float()
        if not delta.any():
            unchanged += 1
            continue
        values = torch.linalg.svdvals(delta.reshape(delta.shape[0], -1)).double()
        spectra.append(ModuleSpectrum(name, (delta.shape[0], int(math.prod(delta.shape[1:]))), values))
    if not spectra and not unchanged:
        raise CheckpointError(f"{source} holds none of the linear-module weights of the base {base_source}")
    return spectra, unchanged


def tensor_index(files: Iterable[Path]) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it (headers only; the tensors stay on disk)."""
    index = {}
    for file in files:
        with reading(file, CheckpointError, "safetensors weights"), safe_open(str(file), framework="pt") as f:
            index.update({name: file for name in f.keys()})
    return index


def _tensor(file: Path, name: str) -> torch.Tensor:
    with reading(file, CheckpointError, "safetensors weights"), safe_open(str(file), framework="pt") as f:
        return f.get_tensor(name)


@dataclass
class RankReport:
    """The spectra of one adapter (kind `lora`) or fine-tune delta (kind `delta`) and the energy target."""

    source: str
    kind: str  # "lora" | "delta"
    modules: list[ModuleSpectrum]
    energy: float = 0.95
    base: str | None = None
    lora: dict[str, Any] | None = None  # r, alpha, rank_pattern, alpha_pattern, use_rslora of the adapter
    unchanged_modules: int = 0
    levels: tuple[float, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.levels = tuple(sorted({*ENERGY_LEVELS, self.energy}))

    def suggested_rank(self, module: ModuleSpectrum) -> int:
        """The rank that keeps `energy` of the module's delta (at least 1: PEFT has no rank 0)."""
        return max(1, module.effective_rank(self.energy))

    def rank_pattern(self) -> dict[str, int]:
        """`model.lora.rank_pattern`: the suggested rank of every module, keyed by its name in the base model."""
        return {m.name: self.suggested_rank(m) for m in self.modules}

    def rank_pattern_yaml(self) -> str:
        """A config snippet (valid for `pixelis ... --config`) setting `model.lora.rank_pattern`."""
        what = (f"the adapter's r={self.lora['r']}, alpha={self.lora['alpha']}" if self.lora
                else f"the full fine-tune delta against {self.base}")
        header = (f"# pixelis analyze lora-ranks {self.source}: the rank keeping {self.energy:.0%} of each module's "
                  f"delta energy ({what}).\n# rank_pattern sets the rank of modules model.lora.target_modules "
                  "adapts; alpha stays model.lora.alpha,\n# so PEFT's scale alpha/r grows where a rank shrinks.\n")
        body = {"model": {"lora": {"rank_pattern": self.rank_pattern()}}}
        return header + yaml.safe_dump(body, sort_keys=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA, "source": self.source, "kind": self.kind, "base": self.base,
            "energy_target": self.energy, "lora": self.lora, "unchanged_modules": self.unchanged_modules,
            "modules": [{**m.to_dict(self.levels), "suggested_rank": self.suggested_rank(m)} for m in self.modules],
            "rank_pattern": self.rank_pattern(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def plot(self, path: Path) -> Path:
        """A PNG with, per layer type, the normalised spectra (top) and energy curves (bottom) of its modules."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        types = sorted({m.layer_type for m in self.modules})
        fig, axes = plt.subplots(2, len(types), figsize=(3.2 * len(types) + 0.8, 5.6), squeeze=False)
        depth = max((m.layer or 0) for m in self.modules) or 1
        for col, layer_type in enumerate(types):
            spec_ax, energy_ax = axes[0, col], axes[1, col]
            group = [m for m in self.modules if m.layer_type == layer_type]
            for m in group:
                shown = min(len(m.singular_values), MAX_STORED_VALUES)
                ranks = range(1, shown + 1)
                colour = plt.cm.viridis((m.layer or 0) / depth)
                if m.sigma_max > 0:
                    spec_ax.semilogy(ranks, (m.singular_values[:shown] / m.sigma_max).clamp_min(1e-12), color=colour,
                                     lw=1)
                energy_ax.plot(ranks, m.energy[:shown], color=colour, lw=1)
            configured = {m.configured_rank for m in group if m.configured_rank}
            spec_ax.set_title(f"{layer_type}" + (f" (r={'/'.join(map(str, sorted(configured)))})" if configured
                                                 else "") + f", {len(group)} modules", fontsize=9)
            energy_ax.axhline(self.energy, color="gray", ls="--", lw=0.8)
            energy_ax.set_ylim(0, 1.02)
            energy_ax.set_xlabel("rank k")
        axes[0, 0].set_ylabel("σ_k / σ_1")
        axes[1, 0].set_ylabel("energy captured")
        fig.suptitle(f"{'LoRA' if self.kind == 'lora' else 'fine-tune delta'} spectra per layer type "
                     f"(colour: layer depth; dashed: {self.energy:.0%} target)", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path
