"""LoRA adapters on the language model of a VLM, through PEFT."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model

# Adapters go on the language model only: the vision tower (`model.visual` in Qwen-VL) is excluded by default,
# since Qwen2.5-VL's vision MLP also has gate/up/down_proj layers that a suffix list would catch.
VISION_TOWER_PATTERN = r".*\bvisual\b.*"
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class ParameterSummary:
    """Trainable vs total parameter counts."""

    trainable: int
    total: int

    @property
    def fraction(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:
        return f"trainable {self.trainable:,} / {self.total:,} parameters ({100 * self.fraction:.2f}%)"


def trainable_parameter_summary(model: torch.nn.Module) -> ParameterSummary:
    """Count trainable (requires_grad) and total parameters."""
    trainable = total = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return ParameterSummary(trainable=trainable, total=total)


def apply_lora(
    model: torch.nn.Module,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.05,
    target_modules: list[str] | tuple[str, ...] | str = DEFAULT_TARGET_MODULES,
    rank_pattern: dict[str, int] | None = None,
    exclude_modules: str | list[str] | None = VISION_TOWER_PATTERN,
) -> PeftModel:
    """Wrap `model` with LoRA adapters; only adapter weights stay trainable.

    `target_modules` are module-name suffixes (or one regex); `rank_pattern` maps a module-name pattern to its
    own rank (PEFT semantics); `exclude_modules` keeps the vision tower free of adapters unless set to None.
    """
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules if isinstance(target_modules, str) else list(target_modules),
        rank_pattern=dict(rank_pattern or {}),
        exclude_modules=exclude_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def lora_from_config(model: torch.nn.Module, cfg: Any) -> torch.nn.Module:
    """Apply LoRA from a config object with fields enabled/r/alpha/dropout/target_modules/rank_pattern.

    Returns `model` unchanged when `cfg.enabled` is false, else the `PeftModel`.
    """
    if not cfg.enabled:
        return model
    return apply_lora(
        model,
        r=cfg.r,
        alpha=cfg.alpha,
        dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        rank_pattern=dict(cfg.rank_pattern),
    )
