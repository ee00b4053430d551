"""The GRPO loss of TRL's `GRPOTrainer` (trl 1.16.0), as pure tensor functions: no trainer, no model.

Only the token-level importance ratio (`importance_sampling_level="token"`), one process and no gradient
accumulation (TRL's accumulation and multi-process rescalings are then all 1). Line numbers below refer to
`trl/trainer/grpo_trainer.py` (and `trl/trainer/utils.py` for `nanstd`) of trl 1.16.0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch

ScaleRewards = Literal["group", "batch", "none"]
LossType = Literal["dapo", "grpo", "dr_grpo"]

STD_EPS = 1e-4  # TRL's constant: advantages / (std + 1e-4)


# trl/trainer/utils.py 1.16, lines 1021-1054 (nanstd: Bessel-corrected, NaN entries ignored)
def _nanstd(x: torch.Tensor, dim: int) -> torch.Tensor:
    mean = torch.nanmean(x, dim=dim, keepdim=True)
    count = (~torch.isnan(x)).sum(dim=dim, keepdim=True)
    var = torch.nanmean((x - mean) ** 2, dim=dim, keepdim=True) * count / (count - 1)
    return torch.sqrt(torch.where(count > 1, var, torch.full_like(var, float("nan")))).squeeze(dim)


# trl/trainer/grpo_trainer.py 1.16, lines 2761-2788 (sum_then_normalize) and 2810 (NaN advantages -> 0)
def group_advantages(rewards: torch.Tensor, num_generations: int,
                     scale_rewards: ScaleRewards = "group") -> torch.Tensor:
    """(B,) rewards, consecutive runs of `num_generations` rows forming a group, to (B,) advantages.

    reward - group mean, divided by (std + 1e-4) with the group's ("group") or the whole batch's ("batch")
    Bessel-corrected std, or not divided ("none"). A NaN reward (unscorable) is left out of the statistics and
    gets advantage 0, as in TRL. One deviation: a group whose rewards are all equal gets exactly 0 (TRL can leave
    float noise there, e.g. 8 rewards of 0.7 give ~6e-4 because the float32 mean is not exactly 0.7).
    """
    if scale_rewards not in get_args(ScaleRewards):
        raise ValueError(f"unknown scale_rewards {scale_rewards!r}; expected one of {get_args(ScaleRewards)}")
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (B,), got shape {tuple(rewards.shape)}")
    if num_generations < 2:
        raise ValueError(f"num_generations must be >= 2 for group-relative advantages, got {num_generations}")
    if rewards.numel() == 0 or rewards.numel() % num_generations:
        raise ValueError(f"batch of {rewards.numel()} rewards is not a positive multiple of "
                         f"num_generations={num_generations}")
    grouped = (rewards if rewards.is_floating_point() else rewards.float()).view(-1, num_generations)
    advantages = (grouped - torch.nanmean(grouped, dim=1, keepdim=True)).reshape(-1)
    if scale_rewards == "group":
        advantages = advantages / (_nanstd(grouped, dim=1).repeat_interleave(num_generations) + STD_EPS)
    elif scale_rewards == "batch":
        advantages = advantages / (_nanstd(grouped.reshape(-1), dim=0) + STD_EPS)
    nan = torch.isnan(grouped)
    flat = grouped.masked_fill(nan, -torch.inf).amax(1) == grouped.masked_fill(nan, torch.inf).amin(1)
    advantages = advantages.masked_fill(flat.repeat_interleave(num_generations), 0.0)
    return torch.nan_to_num(advantages, nan=0.0)


# trl/trainer/grpo_trainer.py 1.16, lines 3100-3102 (per_token_kl)
def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(policy || ref): exp(ref - logp) - (ref - logp) - 1, >= 0, same shape."""
    delta = ref_logps - logps
    return torch.exp(delta) - delta - 1


@dataclass
class GrpoLossConfig:
    """The GRPOConfig fields the loss reads (TRL's defaults for epsilon / epsilon_high / beta)."""

    loss_type: LossType = "dapo"
    epsilon: float = 0.2  # epsilon_low
    epsilon_high: float | None = None  # None -> epsilon, as TRL (grpo_trainer.py line 946)
    beta: float = 0.0  # KL coefficient; 0 skips the reference entirely, as TRL
    max_completion_length: int = 128  # dr_grpo's constant normaliser


@dataclass
class GrpoLossOutput:
    """The loss and the cheap statistics TRL logs for it (all scalars, stats detached)."""

    loss: torch.Tensor
    kl: torch.Tensor  # masked mean per-token KL; 0 when beta == 0
    clip_ratio: torch.Tensor  # TRL's clip_ratio/region_mean
    clip_ratio_low: torch.Tensor  # clip_ratio/low_mean: ratio < 1 - eps_low with A < 0
    clip_ratio_high: torch.Tensor  # clip_ratio/high_mean: ratio > 1 + eps_high with A > 0


# trl/trainer/grpo_trainer.py 1.16, lines 3083-3095 (token ratio), 3097-3102 (KL), 3112-3120 (clipped
# surrogate), 3149-3150 (+ beta * KL), 3153-3174 (aggregation), 3259-3279 (kl and clip_ratio metrics)
def grpo_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, completion_mask: torch.Tensor,
              config: GrpoLossConfig, ref_logps: torch.Tensor | None = None,
              num_items_in_batch: float | torch.Tensor | None = None) -> GrpoLossOutput:
    """TRL's clipped GRPO loss for (B, T) per-token log-probs and (B,) advantages.

    grpo: mean over sequences of each sequence's masked mean; dr_grpo: masked sum / (B * max_completion_length);
    dapo: masked sum / num_items_in_batch (clamped to >= 1). In TRL that is the active-token count of the whole
    generation batch over all processes, rescaled to one accumulation window; on one process with one step per
    generation it is this batch's active-token count, the default here.
    """
    if config.loss_type not in get_args(LossType):
        raise ValueError(f"unknown loss_type {config.loss_type!r}; expected one of {get_args(LossType)}")
    if logps.dim() != 2:
        raise ValueError(f"logps must be (B, T), got shape {tuple(logps.shape)}")
    named = {"old_logps": old_logps, "completion_mask": completion_mask, "ref_logps": ref_logps}
    for name, tensor in named.items():
        if tensor is not None and tensor.shape != logps.shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {tuple(logps.shape)} like logps")
    if advantages.shape != logps.shape[:1]:
        raise ValueError(f"advantages must be ({logps.shape[0]},), got shape {tuple(advantages.shape)}")
    if config.beta != 0.0 and ref_logps is None:
        raise ValueError(f"beta={config.beta} needs ref_logps (the frozen reference's per-token log-probs)")
    eps_low = config.epsilon
    eps_high = config.epsilon if config.epsilon_high is None else config.epsilon_high
    mask = completion_mask.to(logps.dtype)
    adv = advantages.to(logps.dtype).unsqueeze(1)

    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    per_token_loss = -torch.min(ratio * adv, clipped * adv)
    kl = logps.new_zeros(())
    if config.beta != 0.0:
        per_token_kl = k3_kl(logps, ref_logps)
        per_token_loss = per_token_loss + config.beta * per_token_kl
        kl = _masked_mean(per_token_kl.detach(), mask)

    if config.loss_type == "grpo":
        loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif config.loss_type == "dr_grpo":
        loss = (per_token_loss * mask).sum() / (logps.shape[0] * config.max_completion_length)
    else:
        total = mask.sum() if num_items_in_batch is None else num_items_in_batch
        total = torch.as_tensor(total, dtype=logps.dtype, device=logps.device)
        loss = (per_token_loss * mask).sum() / total.clamp(min=1.0)

    low = ((ratio < 1 - eps_low) & (adv < 0)).to(logps.dtype).detach()
    high = ((ratio > 1 + eps_high) & (adv > 0)).to(logps.dtype).detach()
    return GrpoLossOutput(loss=loss, kl=kl, clip_ratio=_masked_mean(torch.maximum(low, high), mask),
                          clip_ratio_low=_masked_mean(low, mask), clip_ratio_high=_masked_mean(high, mask))


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1.0)
