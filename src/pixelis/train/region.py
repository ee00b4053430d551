"""The region losses of grounding pre-training: dense signals on the visual tokens about where things are.

A tiny model trained only on the answer text learns to localise very slowly: the digits of a box are a handful
of tokens per image, and the model must discover, through them alone, both which visual tokens hold an object
and how to read their position. Two losses on the language model's hidden states of the visual tokens (at the
middle layer) give the first half a direct signal:

- coverage: a linear head predicts the share of each token's cell that the scene's objects cover (binary
  cross-entropy against the true coverage; question-independent, as the image comes before the question);
- pointer: a query from the last token before the response scores every visual token, trained with
  cross-entropy towards the asked-about object's tokens (the selection the answer's attention has to make).

The head is used only while pre-training; it is saved in checkpoints (to resume exactly), not with the final
model.

Visual tokens follow Qwen-VL's layout: an image of (t, h, w) patches gives (h / m) x (w / m) tokens for merge
size m, in row-major order, each covering one cell of the image's 0-1000 grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class RegionHead(nn.Module):
    """Two readouts of the hidden states of the visual tokens.

    `coverage`: the logit of the share of a token's cell the scene's objects cover (question-independent).
    `pointer`: a query from the hidden state before the response scores every visual token; trained towards the
    asked-about object's tokens, it is the selection an answer's attention has to make.
    """

    def __init__(self, hidden_size: int, pointer_size: int = 64):
        super().__init__()
        self.coverage = nn.Linear(hidden_size, 1)
        self.query = nn.Linear(hidden_size, pointer_size)
        self.key = nn.Linear(hidden_size, pointer_size)

    def coverage_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """(n,) coverage logits of (n, d) visual-token states."""
        return self.coverage(tokens.float())[:, 0]

    def pointer_logits(self, query: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(n,) scores of (n, d) visual-token states against one (d,) query state."""
        keys, q = self.key(tokens.float()), self.query(query.float())
        return keys @ q / keys.shape[-1] ** 0.5


def _overlaps(edges: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Length of [low, high] inside each interval between consecutive `edges`."""
    return (edges[1:].clamp(max=high) - edges[:-1].clamp(min=low)).clamp_min(0)


def coverage_grid(boxes: Sequence[Sequence[float]], rows: int, cols: int) -> torch.Tensor:
    """(rows * cols,) share of each grid cell (row-major) covered by the union of `boxes` on the 0-1000 grid.

    Overlapping boxes are summed and capped at 1 (the scenes' objects do not overlap)."""
    x_edges = torch.linspace(0.0, 1000.0, cols + 1, dtype=torch.float64)
    y_edges = torch.linspace(0.0, 1000.0, rows + 1, dtype=torch.float64)
    covered = torch.zeros(rows, cols, dtype=torch.float64)
    for x1, y1, x2, y2 in boxes:
        covered += _overlaps(y_edges, y1, y2)[:, None] * _overlaps(x_edges, x1, x2)[None, :]
    cell_area = (1000.0 / cols) * (1000.0 / rows)
    return (covered / cell_area).clamp(max=1.0).reshape(-1).float()


@dataclass
class RegionTerm:
    """The region losses of one batch (one image per sample): the head and the two loss weights, each sample's
    drawn boxes and asked-about box, and how to find the visual tokens."""

    head: RegionHead
    coverage_weight: float
    pointer_weight: float
    regions: list[list[list[int]]]  # per sample: the boxes of everything drawn, on the 0-1000 grid
    targets: list[list[int]]  # per sample: the asked-about object's box
    image_token_id: int
    merge_size: int

    @staticmethod
    def layer(num_hidden_layers: int) -> int:
        """The index into `hidden_states` the head reads: the output of the middle decoder layer."""
        return max(1, num_hidden_layers // 2)

    def losses(self, hidden_states: Sequence[torch.Tensor], input_ids: torch.Tensor, image_grid_thw: torch.Tensor,
               token_weights: torch.Tensor) -> dict[str, torch.Tensor]:
        """`loss_region`: binary cross-entropy of the coverage logits against the true coverage, over every visual
        token; `loss_pointer`: cross-entropy of the pointer's softmax over a sample's visual tokens against the
        asked-about box's coverage (normalised), queried from the last token before the response (the first
        trained token, by `token_weights`, minus one); `loss`: their weighted sum."""
        hidden = hidden_states[self.layer(len(hidden_states) - 1)]
        coverage_logits, coverage_targets, pointer_losses = [], [], []
        for row, (regions, target_box) in enumerate(zip(self.regions, self.targets)):
            positions = (input_ids[row] == self.image_token_id).nonzero()[:, 0]
            _, h, w = (int(v) for v in image_grid_thw[row])
            rows, cols = h // self.merge_size, w // self.merge_size
            if len(positions) != rows * cols:
                raise ValueError(f"sample {row}: {len(positions)} visual tokens for a {h}x{w}-patch image; the "
                                 "region loss needs exactly one untruncated image per sample")
            tokens = hidden[row, positions]
            coverage_logits.append(self.head.coverage_logits(tokens))
            coverage_targets.append(coverage_grid(regions, rows, cols))
            wanted = coverage_grid([target_box], rows, cols).to(tokens.device)
            query = int((token_weights[row] > 0).nonzero()[0, 0]) - 1
            scores = self.head.pointer_logits(hidden[row, query], tokens).log_softmax(dim=0)
            pointer_losses.append(-(wanted / wanted.sum().clamp_min(1e-6) * scores).sum())
        logits = torch.cat(coverage_logits)
        region = F.binary_cross_entropy_with_logits(logits, torch.cat(coverage_targets).to(logits.device))
        pointer = torch.stack(pointer_losses).mean()
        return {"loss_region": region, "loss_pointer": pointer,
                "loss": self.coverage_weight * region + self.pointer_weight * pointer}
