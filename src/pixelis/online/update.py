"""One online update with its safety corridor: imitate the winner, measure the drift from the EMA, keep or undo.

1. Snapshot the policy's trainable tensors.
2. `update_steps` plain-SGD steps on the masked imitation loss of SFT (reused from `pixelis.train`) toward the
   winning trajectory, plus `kl_weight` times the token KL to the EMA policy, at `learning_rate x confidence`.
   Plain SGD (no Adam normalisation) on purpose: the step grows with how surprising the exemplar is to the
   policy, which is exactly what the corridor should see.
3. Corridor: the mean token KL(policy || EMA) over the assistant tokens of the probe set (the exemplar plus a
   fixed sample of recent experiences). Above `kl_max` the snapshot is restored and the update rejected
   (TRPO's rejected step); otherwise the EMA moves toward the policy (CoTTA's teacher).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from pixelis.agent.prompt import ToolPrompt
from pixelis.core.config import OnlineConfig
from pixelis.core.trajectory import Trajectory
from pixelis.model.chat import model_inputs
from pixelis.online.weights import load_trainable, trainable_state
from pixelis.train.loss import masked_imitation_loss
from pixelis.train.sft_batch import collate_sft, render_sft_sample


@dataclass
class UpdateOutcome:
    """What one update did: accepted or not, the corridor's KL, the imitation loss before and after."""

    accepted: bool
    kl: float
    loss_before: float
    loss_after: float
    learning_rate: float

    def to_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "kl": self.kl, "loss_before": self.loss_before,
                "loss_after": self.loss_after, "learning_rate": self.learning_rate}


def token_kl(logits: torch.Tensor, ref_logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean over weighted positions of KL(p || p_ref) of the next-token distributions (full vocabulary)."""
    logp = logits[:, :-1].float().log_softmax(-1)
    ref_logp = ref_logits[:, :-1].float().log_softmax(-1)
    per_token = (logp.exp() * (logp - ref_logp)).sum(-1)
    mask = (weights[:, 1:] > 0).to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp_min(1.0)


class OnlineUpdater:
    """Applies updates to `model` against `ema` (a second model of the same architecture, kept in eval mode)."""

    def __init__(self, model: torch.nn.Module, ema: torch.nn.Module, processor: Any, prompt: ToolPrompt,
                 cfg: OnlineConfig, action_weight: float = 1.0, max_length: int | None = None):
        self.model, self.ema, self.processor, self.cfg = model, ema, processor, cfg
        self.prompt, self.action_weight, self.max_length = prompt, action_weight, max_length
        tokenizer = processor.tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.device = next(model.parameters()).device
        for p in ema.parameters():
            p.requires_grad_(False)

    def _batch(self, trajectories: Sequence[Trajectory]) -> dict[str, Any]:
        samples = [render_sft_sample(self.processor, t, self.prompt.tools, self.max_length, self.prompt.system)
                   for t in trajectories]
        return collate_sft(samples, self.pad_id, self.action_weight)

    def _inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        return model_inputs(batch, self.device)

    def probe_kl(self, probes: Sequence[Trajectory]) -> float:
        """The corridor's measure: mean token KL(policy || EMA) over the probes' assistant tokens."""
        total, count = 0.0, 0
        with torch.no_grad():
            for traj in probes:  # one at a time: probes differ in length and images
                batch = self._batch([traj])
                inputs = self._inputs(batch)
                kl = token_kl(self.model(**inputs).logits, self.ema(**inputs).logits, batch["weights"].to(self.device))
                total, count = total + float(kl), count + 1
        return total / max(count, 1)

    def _losses(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = self._inputs(batch)
        weights = batch["weights"].to(self.device)
        logits = self.model(**inputs).logits
        with torch.no_grad():
            ref = self.ema(**inputs).logits
        return masked_imitation_loss(logits, inputs["input_ids"], weights), token_kl(logits, ref, weights)

    def update(self, exemplar: Trajectory, confidence: float, probes: Sequence[Trajectory]) -> UpdateOutcome:
        """Learn from `exemplar` at `learning_rate x confidence`; keep the step only inside the corridor."""
        snapshot = trainable_state(self.model)
        try:
            outcome = self._step(exemplar, confidence, probes)
        except BaseException:
            load_trainable(self.model, snapshot)  # a failed update leaves the weights as they were
            self.model.eval()
            raise
        if outcome.accepted:
            self._refresh_ema()
        else:
            load_trainable(self.model, snapshot)
        return outcome

    def _step(self, exemplar: Trajectory, confidence: float, probes: Sequence[Trajectory]) -> UpdateOutcome:
        lr = self.cfg.learning_rate * confidence
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=lr)
        batch = self._batch([exemplar])
        self.model.train()
        loss_before = None
        for _ in range(self.cfg.update_steps):
            imitation, kl = self._losses(batch)
            loss_before = float(imitation.detach()) if loss_before is None else loss_before
            optimizer.zero_grad(set_to_none=True)
            (imitation + self.cfg.kl_weight * kl).backward()
            optimizer.step()
        self.model.eval()
        with torch.no_grad():
            loss_after = float(self._losses(batch)[0])
        kl = self.probe_kl([exemplar, *probes])
        return UpdateOutcome(kl <= self.cfg.kl_max, kl, float(loss_before), loss_after, lr)

    def ema_state(self) -> dict[str, torch.Tensor]:
        """The EMA's tensors at the names of the policy's trainable ones (what a weight version stores)."""
        ema = dict(self.ema.named_parameters())
        return {name: ema[name].detach().clone().contiguous()
                for name, p in self.model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def _refresh_ema(self) -> None:
        decay = self.cfg.ema_decay
        ema = dict(self.ema.named_parameters())
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                ema[name].mul_(decay).add_(p.detach(), alpha=1.0 - decay)

