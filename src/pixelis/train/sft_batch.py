"""SFT's rendering rules on top of `pixelis.model.chat`: which tokens imitation trains on, and how much.

- Trap steps (the deliberate mistakes before a correction) are context only: SFT imitates the recovery, not the
  mistake.
- Tool-call tokens (``<tool_call>`` through ``</tool_call>``, or to the end of the turn when a malformed call is
  never closed) of trained turns form the action mask and carry `sft.action_token_weight`.
- The ``<tool_call>`` token of every call is where the auxiliary argument head reads the hidden state.

Pre-training uses the same rules; RFT trains on its own sampled tokens (`pixelis.train.rollouts`) instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from transformers.processing_utils import ProcessorMixin

from pixelis.core.trajectory import Trajectory
from pixelis.model.chat import RenderedSample, collate, pad_right, render_trajectory

_CALL_SPAN = re.compile(r"<tool_call>.*?(?:</tool_call>|(?=<\|im_end\|>))", re.S)
_CALL_OPEN = re.compile(re.escape("<tool_call>"))


@dataclass
class SftSample:
    """A rendered trajectory with SFT's masks; per-token tensors are 1-D, as long as `rendered`."""

    rendered: RenderedSample
    action_mask: torch.Tensor  # 1 on the tool-call tokens of trained turns
    call_token_positions: list[int]  # the <tool_call> token of every call, trained or not

    def __len__(self) -> int:
        return len(self.rendered)


def render_sft_sample(
    processor: ProcessorMixin,
    traj: Trajectory,
    tools: list[dict] | None = None,
    max_length: int | None = None,
    system: str | None = None,
) -> SftSample:
    """Render `traj` for imitation: trap steps untrained, action mask and call positions located."""
    traps = {i for i, step in enumerate(traj.steps) if step.kind == "trap"}
    sample = render_trajectory(processor, traj, tools, max_length, system, untrained_turns=traps)
    text = sample.text
    trained = [span for i, span in enumerate(sample.turn_char_spans) if i not in sample.untrained_turns]
    call_spans = [m.span() for a, b in trained for m in _CALL_SPAN.finditer(text, a, b)]
    opens = [m.start() for a, b in sample.turn_char_spans for m in _CALL_OPEN.finditer(text, a, b)]
    positions = [sample.locator.position(c) for c in opens]
    return SftSample(sample, sample.locator.mask(call_spans), [p for p in positions if p is not None])


def collate_sft(samples: Sequence[SftSample], pad_token_id: int, action_weight: float = 1.0) -> dict[str, Any]:
    """`chat.collate` plus `action_mask`, `weights` (per-token loss weights: 1 on assistant tokens,
    `action_weight` on tool-call tokens, 0 elsewhere) and `call_token_positions` ((N, 2) (row, position) pairs)."""
    batch = collate([s.rendered for s in samples], pad_token_id)
    action_mask = pad_right([s.action_mask for s in samples], 0)
    batch["action_mask"] = action_mask
    batch["weights"] = batch["assistant_mask"].float() * (1.0 + (action_weight - 1.0) * action_mask.float())
    batch["call_token_positions"] = torch.tensor(
        [[i, p] for i, s in enumerate(samples) for p in s.call_token_positions], dtype=torch.long
    ).reshape(-1, 2)
    return batch
