"""Watching an RFT run: the tool-use collapse monitor and the per-step charts.

Tool-use collapse (the policy stops calling tools during RL) is what users of Pixel-Reasoner, DeepEyes and
Chain-of-Focus report; the monitor turns it into an alert: smoothed RaPR (share of rollouts with a valid tool
call, averaged over `window` steps) below `rapr_floor`, or fallen by more than `max_drop` of its first smoothed
value, for `patience` consecutive steps.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any, Sequence

from pixelis.core.config import CollapseConfig


class CollapseMonitor:
    """Feed it each step's RaPR; it returns an alert dict when tool use has collapsed (then re-arms)."""

    def __init__(self, cfg: CollapseConfig):
        self.cfg = cfg
        self.recent: deque[float] = deque(maxlen=cfg.window)
        self.start: float | None = None
        self.low_steps = 0

    def update(self, step: int, rapr: float) -> dict[str, Any] | None:
        """Record `rapr` at `step`; an alert `{step, rapr_smoothed, start, reason}` or None."""
        self.recent.append(rapr)
        smoothed = sum(self.recent) / len(self.recent)
        if len(self.recent) == self.cfg.window and self.start is None:
            self.start = smoothed
        reasons = []
        if smoothed < self.cfg.rapr_floor:
            reasons.append(f"smoothed RaPR {smoothed:.3f} < rft.collapse.rapr_floor {self.cfg.rapr_floor}")
        if self.start is not None and self.start > 0 and smoothed < self.start * (1 - self.cfg.max_drop):
            reasons.append(f"smoothed RaPR {smoothed:.3f} fell by more than {self.cfg.max_drop:.0%} from "
                           f"{self.start:.3f}")
        self.low_steps = self.low_steps + 1 if reasons else 0
        if self.low_steps < self.cfg.patience:
            return None
        self.low_steps = 0
        return {"step": step, "rapr_smoothed": smoothed, "start": self.start,
                "reason": f"{'; '.join(reasons)} for {self.cfg.patience} consecutive steps"}

    def state_dict(self) -> dict[str, Any]:
        return {"recent": list(self.recent), "start": self.start, "low_steps": self.low_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.recent = deque(state["recent"], maxlen=self.cfg.window)
        self.start, self.low_steps = state["start"], state["low_steps"]


def plot_rft_history(history: Sequence[dict[str, Any]], path: Path) -> Path:
    """Per-step charts of an RFT run: reward terms, RaPR and tool calls, KL and entropy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for key in sorted({k for r in history for k in r if k == "reward" or k.startswith("reward/")}):
        axes[0].plot(steps, [r.get(key, float("nan")) for r in history], label=key, marker=".")
    axes[0].set_title("rewards (mean over rollouts)")
    axes[1].plot(steps, [r["rapr"] for r in history], label="RaPR", marker=".")
    axes[1].plot(steps, [r["accuracy"] for r in history], label="accuracy", marker=".")
    twin = axes[1].twinx()
    twin.plot(steps, [r["tool_calls"] for r in history], color="gray", linestyle="--", label="tool calls")
    twin.set_ylabel("tool calls per rollout")
    axes[1].set_ylim(-0.05, 1.05)
    axes[1].set_title("tool use")
    axes[2].plot(steps, [r["kl"] for r in history], label="KL to start policy", marker=".")
    axes[2].plot(steps, [r["entropy"] for r in history], label="entropy", marker=".")
    axes[2].set_title("policy drift")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
