"""The masked imitation loss of SFT and the auxiliary argument-regression head.

Token weights: 0 outside assistant turns (system, user, tool responses, every image placeholder), 1 on assistant
text, `action_token_weight` on the tokens of tool calls (`<tool_call>` through `</tool_call>`). The head reads
the hidden state at each call's opening `<tool_call>` token and regresses the call's box or point, normalised
to [0, 1], with a smooth-L1 loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pixelis.core.trajectory import Trajectory
from pixelis.model.chat import model_inputs
from pixelis.train.region import RegionTerm


def masked_imitation_loss(logits: torch.Tensor, input_ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted next-token cross-entropy: position t predicts token t+1 with the weight of token t+1.

    Normalised by the total weight, so the loss is a weighted mean over assistant tokens.
    """
    shift_logits = logits[:, :-1].float()
    shift_targets = input_ids[:, 1:]
    shift_weights = weights[:, 1:].to(shift_logits.dtype)
    ce = F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)), shift_targets.reshape(-1), reduction="none")
    total = shift_weights.sum().clamp_min(1e-8)
    return (ce * shift_weights.reshape(-1)).sum() / total


def call_argument_target(arguments: dict[str, Any]) -> list[float] | None:
    """The normalised [x1, y1, x2, y2] of a call's box (a point becomes a zero-size box), or None."""
    if isinstance(arguments.get("bbox"), list) and len(arguments["bbox"]) == 4:
        values = arguments["bbox"]
    elif isinstance(arguments.get("point"), list) and len(arguments["point"]) == 2:
        values = [*arguments["point"], *arguments["point"]]
    else:
        return None
    try:
        return [min(max(float(v) / 1000.0, 0.0), 1.0) for v in values]
    except (TypeError, ValueError):
        return None


def call_targets(traj: Trajectory) -> list[list[float] | None]:
    """One regression target (or None) per `<tool_call>` the rendered trajectory contains, in order.

    A trap step's deliberately wrong arguments get None: like its tokens, they are not learned."""
    targets = []
    for step in traj.steps:
        if step.call is not None:
            targets.append(None if step.kind == "trap" else call_argument_target(step.call.arguments))
        elif step.raw_text is not None:
            targets.extend([None] * step.raw_text.count("<tool_call>"))
    return targets


class ArgumentHead(nn.Module):
    """Regresses a tool call's normalised box from the hidden state at its `<tool_call>` token."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, 4))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.proj(hidden.float()))


@dataclass
class AuxBatch:
    """Where the calls with spatial arguments are in a batch, and their targets."""

    batch_index: torch.Tensor  # (n,)
    position: torch.Tensor  # (n,)
    target: torch.Tensor  # (n, 4)

    @classmethod
    def build(cls, call_positions: torch.Tensor, targets: list[list[list[float] | None]]) -> "AuxBatch":
        """From the batch's (row, position) pairs of `<tool_call>` tokens (in order) and per-sample targets.

        Calls without a spatial argument (target None) or cut off by truncation are skipped.
        """
        rows, cols, values = [], [], []
        seen = [0] * len(targets)
        for row, pos in call_positions.tolist():
            k = seen[row]
            seen[row] += 1
            if k < len(targets[row]) and targets[row][k] is not None:
                rows.append(row)
                cols.append(pos)
                values.append(targets[row][k])
        return cls(torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long),
                   torch.tensor(values, dtype=torch.float32).reshape(-1, 4))


def aux_argument_loss(head: ArgumentHead, hidden_states: torch.Tensor, aux: AuxBatch) -> torch.Tensor:
    """Smooth-L1 between the head's predictions at the call tokens and the true normalised boxes."""
    if aux.target.numel() == 0:
        return hidden_states.sum() * 0.0
    picked = hidden_states[aux.batch_index.to(hidden_states.device), aux.position.to(hidden_states.device)]
    return F.smooth_l1_loss(head(picked), aux.target.to(hidden_states.device))


def batch_losses(model: nn.Module, head: ArgumentHead | None, batch: dict[str, Any],
                 targets: list[list[list[float] | None]] | None, aux_weight: float,
                 device: torch.device, region: RegionTerm | None = None) -> dict[str, torch.Tensor]:
    """`loss_lm` (masked imitation) of a collated batch, plus `loss_aux` when a head and the per-sample call
    targets are given, and `loss_region` and `loss_pointer` when a `region` term is (pre-training);
    `loss` is `loss_lm + aux_weight * loss_aux` plus the region term's weighted losses."""
    inputs = model_inputs(batch, device)
    out = model(**inputs, output_hidden_states=head is not None or region is not None)
    lm = masked_imitation_loss(out.logits, inputs["input_ids"], batch["weights"].to(device))
    losses = {"loss_lm": lm}
    total = lm
    if head is not None and targets is not None:
        aux = aux_argument_loss(head, out.hidden_states[-1], AuxBatch.build(batch["call_token_positions"], targets))
        losses["loss_aux"] = aux
        total = lm + aux_weight * aux
    if region is not None:
        terms = region.losses(out.hidden_states, inputs["input_ids"], inputs["image_grid_thw"], batch["weights"])
        losses.update(loss_region=terms["loss_region"], loss_pointer=terms["loss_pointer"])
        total = total + terms["loss"]
    losses["loss"] = total
    return losses
