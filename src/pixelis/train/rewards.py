"""The reward terms of CC-RFT: sequence-level rewards, one float per rollout of a batch.

Each reward has a `name` and maps the rollouts of one batch (`RolloutRecord`s) to one float each: task
(correctness), format (answered, all calls valid), curiosity (prediction error of an online dynamics model),
coherence (adjacent-turn consistency, repeat and loop penalties), efficiency (cost of extra calls) and
rapr_bonus (Pixel-Reasoner's tool-use bonus). `build_rewards` makes the weighted ones, `combine` sums them.
Turn t of the embeddings is ``trajectory.steps[t]`` (a final answer turn comes after); a "tool step" is a step
whose call parsed and whose observation is ok.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import skip_init

from pixelis.core.trajectory import Step, Trajectory
from pixelis.eval.metrics import call_validity
from pixelis.eval.scoring import score_answer

REWARD_NAMES = ("task", "format", "curiosity", "coherence", "efficiency", "rapr_bonus")


@dataclass
class RolloutRecord:
    """One sampled trajectory, as the rewards see it."""

    trajectory: Trajectory
    group: int  # index of the prompt it was sampled for; rollouts of one group share it
    states: torch.Tensor | None = None  # (turns + 1, d) context embedding before each turn; last row: after all
    actions: torch.Tensor | None = None  # (turns, d) embedding of generated turn t (both detached)


def tool_steps(traj: Trajectory) -> list[int]:
    """Indices of the steps whose call parsed and whose observation is ok."""
    return [t for t, s in enumerate(traj.steps)
            if s.call is not None and s.observation is not None and s.observation.ok]


class TaskReward:
    """1.0 when `score_answer` accepts the answer against the trajectory's target, else 0.0."""

    name = "task"

    def __init__(self, iou_threshold: float = 0.5, numeric_tolerance: float = 0.0):
        self.iou_threshold, self.numeric_tolerance = iou_threshold, numeric_tolerance

    def __call__(self, records: Sequence[RolloutRecord]) -> list[float]:
        missing = [r.trajectory.id for r in records if r.trajectory.target is None]
        if missing:
            raise ValueError(f"trajectory {missing[0]!r} has no target; the task reward needs its ground truth")
        return [float(score_answer(r.trajectory.answer, r.trajectory.target, self.iou_threshold,
                                   self.numeric_tolerance)) for r in records]


class FormatReward:
    """1.0 when the trajectory answered and every attempted call was valid (no attempts is fine), else 0.0."""

    name = "format"

    def __call__(self, records: Sequence[RolloutRecord]) -> list[float]:
        return [float(r.trajectory.answer is not None and all(call_validity(r.trajectory))) for r in records]


class DynamicsModel(nn.Module):
    """MLP f(s_t, a_t) -> predicted s_{t+1}, initialised from `seed` by a local generator (global RNG untouched)."""

    def __init__(self, dim: int, hidden: int = 64, seed: int = 0):
        super().__init__()
        self.net = nn.Sequential(skip_init(nn.Linear, 2 * dim, hidden), nn.GELU(), skip_init(nn.Linear, hidden, dim))
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for layer in (self.net[0], self.net[2]):
                bound = layer.in_features ** -0.5
                layer.weight.uniform_(-bound, bound, generator=gen)
                layer.bias.uniform_(-bound, bound, generator=gen)

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([state, action], dim=-1))


class CuriosityReward:
    """Prediction-error curiosity: how badly an online dynamics model predicts s_{t+1} from (s_t, a_t).

    Per tool step t, error = MSE(f(s_t, a_t), s_{t+1}) under the model before this batch's update. Errors are
    standardised, (e - mean) / std, by a running Welford mean and std over every error seen (this batch's
    included) and clipped to [0, clip]: only steps more surprising than usual earn. A rollout earns the MEAN over
    its tool steps (0 without any), so the term does not grow with the number of calls. Then the model takes
    `updates_per_batch` Adam steps on the batch's transitions. The model lives on CPU in float32; it is built at
    the first batch from the embedding dim unless `dim` is given.
    """

    name = "curiosity"

    def __init__(self, dim: int | None = None, hidden: int = 64, lr: float = 1e-3, clip: float = 3.0,
                 updates_per_batch: int = 1, seed: int = 0):
        self.hidden, self.lr, self.clip, self.updates_per_batch, self.seed = hidden, lr, clip, updates_per_batch, seed
        self.dim: int | None = None
        self.model: DynamicsModel | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.count, self.mean, self.m2 = 0, 0.0, 0.0  # the Welford normaliser
        if dim is not None:
            self._build(dim)

    def _build(self, dim: int) -> None:
        self.dim = dim
        self.model = DynamicsModel(dim, self.hidden, self.seed)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.lr)

    def _transitions(self, records: Sequence[RolloutRecord]) -> tuple[list[torch.Tensor], list[int]]:
        """(s_t, a_t, s_{t+1}) stacked over every tool step of the batch, and the record each belongs to."""
        parts: list[tuple[torch.Tensor, ...]] = []
        owner: list[int] = []
        dim = self.dim
        for i, r in enumerate(records):
            steps = tool_steps(r.trajectory)
            if not steps:
                continue
            if r.states is None or r.actions is None:
                raise ValueError(f"trajectory {r.trajectory.id!r} has tool steps but no states/actions embeddings")
            s, a = r.states.detach().float().cpu(), r.actions.detach().float().cpu()
            if (s.dim() != 2 or a.dim() != 2 or s.shape[0] != a.shape[0] + 1 or a.shape[0] < len(r.trajectory.steps)
                    or s.shape[1] != a.shape[1] or s.shape[1] != (dim or s.shape[1])):
                raise ValueError(f"trajectory {r.trajectory.id!r}: states {tuple(s.shape)} and actions "
                                 f"{tuple(a.shape)} must be (turns + 1, d) and (turns, d) with turns >= "
                                 f"{len(r.trajectory.steps)} steps and d = {dim or s.shape[1]}")
            dim, idx = s.shape[1], torch.tensor(steps)
            parts.append((s[idx], a[idx], s[idx + 1]))
            owner += [i] * len(steps)
        return [torch.cat(p) for p in zip(*parts)], owner

    def _errors(self, s: torch.Tensor, a: torch.Tensor, nxt: torch.Tensor) -> list[float]:
        if self.model is None:
            self._build(s.shape[1])
        with torch.no_grad():
            return ((self.model(s, a) - nxt) ** 2).mean(-1).tolist()

    def errors(self, records: Sequence[RolloutRecord]) -> list[list[float]]:
        """The raw prediction error of each tool step, per rollout, under the current model (nothing updated)."""
        batch, owner = self._transitions(records)
        out: list[list[float]] = [[] for _ in records]
        for i, e in zip(owner, self._errors(*batch) if owner else []):
            out[i].append(e)
        return out

    def __call__(self, records: Sequence[RolloutRecord]) -> list[float]:
        batch, owner = self._transitions(records)
        if not owner:
            return [0.0] * len(records)
        errors = self._errors(*batch)
        for e in errors:
            self.count += 1
            delta = e - self.mean
            self.mean += delta / self.count
            self.m2 += delta * (e - self.mean)
        std = math.sqrt(self.m2 / self.count)
        sums, counts = [0.0] * len(records), [0] * len(records)
        for i, e in zip(owner, errors):
            sums[i] += min(max((e - self.mean) / (std + 1e-8), 0.0), self.clip)
            counts[i] += 1
        with torch.enable_grad():
            for _ in range(self.updates_per_batch):
                self.optimizer.zero_grad()
                F.mse_loss(self.model(batch[0], batch[1]), batch[2]).backward()
                self.optimizer.step()
        return [s / c if c else 0.0 for s, c in zip(sums, counts)]

    def state_dict(self) -> dict[str, Any]:
        """A deep copy of the model, its optimizer and the normaliser."""
        return copy.deepcopy({"dim": self.dim, "normaliser": {"count": self.count, "mean": self.mean, "m2": self.m2},
                              "model": None if self.model is None else self.model.state_dict(),
                              "optimizer": None if self.optimizer is None else self.optimizer.state_dict()})

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        state = copy.deepcopy(dict(state))
        self.model = self.optimizer = self.dim = None
        if state["dim"] is not None:
            self._build(state["dim"])
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.count, self.mean, self.m2 = (state["normaliser"][k] for k in ("count", "mean", "m2"))


def _call_key(step: Step) -> tuple[str, str]:
    return step.call.name, json.dumps(step.call.arguments, sort_keys=True, default=str)


class CoherenceReward:
    """Adjacent-turn consistency, minus penalties for repeated calls and loops.

    With action embeddings, each adjacent pair (actions[t], actions[t+1]) of generated turns scores +1 when its
    cosine similarity lies in [low, high] (related, not a copy) and -1 outside; the term is the mean over pairs
    (0 with fewer than two turns or no embeddings). Over the parsed calls in order (parse errors skipped), each
    call equal in name and arguments to an earlier one costs `repeat_penalty`, and each window of four
    consecutive calls A, B, A, B with A != B costs `loop_penalty` (windows overlap: A-B-A-B-A holds two; a loop's
    third and fourth calls are repeats too, so a loop pays both).
    """

    name = "coherence"

    def __init__(self, low: float = 0.3, high: float = 0.95, repeat_penalty: float = 0.2, loop_penalty: float = 0.5):
        self.low, self.high, self.repeat_penalty, self.loop_penalty = low, high, repeat_penalty, loop_penalty

    def _one(self, r: RolloutRecord) -> float:
        value = 0.0
        if r.actions is not None and r.actions.shape[0] >= 2:
            a = r.actions.detach().float()
            cos = F.cosine_similarity(a[:-1], a[1:], dim=-1)
            value = (((cos >= self.low) & (cos <= self.high)).float() * 2 - 1).mean().item()
        keys = [_call_key(s) for s in r.trajectory.steps if s.call is not None]
        repeats = sum(1 for i, k in enumerate(keys) if k in keys[:i])
        loops = sum(1 for i in range(len(keys) - 3)
                    if keys[i] == keys[i + 2] and keys[i + 1] == keys[i + 3] and keys[i] != keys[i + 1])
        return value - self.repeat_penalty * repeats - self.loop_penalty * loops

    def __call__(self, records: Sequence[RolloutRecord]) -> list[float]:
        return [self._one(r) for r in records]


class EfficiencyReward:
    """-lam per attempted call (valid or not) beyond the first `max_free_calls`."""

    name = "efficiency"

    def __init__(self, lam: float = 0.1, max_free_calls: int = 3):
        self.lam, self.max_free_calls = lam, max_free_calls

    def __call__(self, records: Sequence[RolloutRecord]) -> list[float]:
        return [-self.lam * max(0, len(call_validity(r.trajectory)) - self.max_free_calls) for r in records]


class RaprBonusReward:
    """Pixel-Reasoner's curiosity bonus: tool use pays in groups that rarely use tools.

    Per group, RaPR = share of its rollouts with at least one valid call. Such a rollout earns
    scale * max(H - RaPR, 0) - extra_call_penalty * max(0, n_valid_calls - 1); the others earn 0.
    Defaults: H = 0.3 (the target tool-use rate), scale = 1.0, extra_call_penalty = 0.05.
    """

    name = "rapr_bonus"

    def __init__(self, H: float = 0.3, scale: float = 1.0, extra_call_penalty: float = 0.05):
        self.H, self.scale, self.extra_call_penalty = H, scale, extra_call_penalty

    def __call__(self, records: Sequence[RolloutRecord]) -> list[float]:
        valid = [sum(call_validity(r.trajectory)) for r in records]
        groups: dict[int, list[bool]] = {}
        for r, n in zip(records, valid):
            groups.setdefault(r.group, []).append(n > 0)
        rapr = {g: sum(used) / len(used) for g, used in groups.items()}
        return [self.scale * max(self.H - rapr[r.group], 0.0) - self.extra_call_penalty * max(0, n - 1) if n else 0.0
                for r, n in zip(records, valid)]


_CLASSES: dict[str, type] = dict(zip(REWARD_NAMES, (TaskReward, FormatReward, CuriosityReward, CoherenceReward,
                                                    EfficiencyReward, RaprBonusReward)))


def build_rewards(weights: Mapping[str, float], params: Mapping[str, Mapping[str, Any]] | None = None,
                  seed: int = 0) -> dict[str, Callable]:
    """The reward callables for the names with non-zero weight, in `REWARD_NAMES` order; params[name] are
    constructor kwargs (checked for every name given). `seed` seeds curiosity unless params give its own.

    Unknown names (in weights or params) raise ValueError listing the known ones; unknown kwargs raise
    ValueError naming the reward and the kwarg.
    """
    params = params or {}
    unknown = sorted((set(weights) | set(params)) - set(REWARD_NAMES))
    if unknown:
        raise ValueError(f"unknown reward name(s) {unknown}; known: {', '.join(REWARD_NAMES)}")
    for name, kwargs in params.items():
        accepted = list(inspect.signature(_CLASSES[name]).parameters)
        for key in kwargs:
            if key not in accepted:
                raise ValueError(f"reward {name!r} has no parameter {key!r}; it takes: {', '.join(accepted) or 'none'}")
    out: dict[str, Callable] = {}
    for name in REWARD_NAMES:
        if weights.get(name, 0.0):
            kwargs = dict(params.get(name, {}))
            if name == "curiosity":
                kwargs.setdefault("seed", seed)
            out[name] = _CLASSES[name](**kwargs)
    return out


def combine(terms: Mapping[str, list[float]], weights: Mapping[str, float]) -> list[float]:
    """Per-rollout weighted sum of the terms; a term without a weight counts 0, a weighted name without a
    term or terms of different lengths raise ValueError."""
    missing = sorted(name for name, w in weights.items() if w and name not in terms)
    if missing:
        raise ValueError(f"weighted reward term(s) {missing} missing; terms given: {sorted(terms)}")
    lengths = {name: len(v) for name, v in terms.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"reward terms differ in length: {lengths}")
    n = next(iter(lengths.values()), 0)
    return [sum(weights.get(name, 0.0) * values[i] for name, values in terms.items()) for i in range(n)]
