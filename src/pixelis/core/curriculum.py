"""Curriculum over difficulty pools (simple -> medium -> hard), usable by any training phase.

The manager is fed real evaluation metrics, smoothed over a window, and follows one of two strategies.

staged: it advances when every exit criterion of the current stage holds on the smoothed metrics for
`patience_cycles` evaluations in a row; it pauses all changes for `cooldown_cycles` evaluations after each change;
and it rolls back when the smoothed primary metric drops after an advance.

learning_progress (teacher-student curriculum learning, Matiisen et al. 2017): it samples each pool with a weight
proportional to the absolute slope of that pool's smoothed primary metric, mixed with a uniform floor; see
:meth:`CurriculumManager._decide_progress` for the exact rule.

Every decision is logged, added as an OpenTelemetry span event and appended to a JSONL file.
Framework-agnostic: no torch import. Written by hand because no library offers metric-gated curricula.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

POOLS = ("simple", "medium", "hard")
"""Difficulty pools a stage mixture may draw from, in sampling order."""

Action = Literal["hold", "advance", "rollback", "reweight"]


class ExitCriterion(BaseModel):
    """One condition on a smoothed metric that must hold before leaving a stage."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    metric: str = Field(default="accuracy", min_length=1, description="Name of the evaluation metric.")
    threshold: float = Field(default=0.6, description="Value the smoothed metric is compared with.")
    mode: Literal["higher", "lower"] = Field(
        default="higher", description="higher: metric must be >= threshold; lower: metric must be <= threshold."
    )

    def met(self, value: float) -> bool:
        """Whether `value` satisfies this criterion."""
        return value >= self.threshold if self.mode == "higher" else value <= self.threshold

    def describe(self) -> str:
        """Short human form, e.g. 'accuracy >= 0.6'."""
        return f"{self.metric} {'>=' if self.mode == 'higher' else '<='} {self.threshold:g}"


class CurriculumStage(BaseModel):
    """A curriculum stage: a sampling mixture over difficulty pools and the conditions to leave it."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(default="simple", min_length=1, description="Unique stage name.")
    mixture: dict[str, float] = Field(
        default_factory=lambda: {"simple": 1.0},
        description="Sampling weights over difficulty pools (simple/medium/hard); normalised to sum to 1.",
    )
    min_steps: int = Field(default=0, ge=0, description="Training steps in this stage before it may be left.")
    max_steps: int | None = Field(
        default=None, ge=1, description="Force an advance after this many training steps in the stage (None: never)."
    )
    exit_criteria: list[ExitCriterion] = Field(
        default_factory=list, description="All must hold on smoothed metrics to count towards patience."
    )
    rewards: dict[str, float] | None = Field(
        default=None, description="RFT with rft.curriculum: the reward-term weights in this stage (None: rft.rewards)."
    )

    @field_validator("mixture")
    @classmethod
    def _normalise_mixture(cls, mixture: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        where = f"curriculum stage {info.data.get('name', '?')!r}"
        unknown = sorted(set(mixture) - set(POOLS))
        if unknown:
            raise ValueError(f"{where}: unknown difficulty pool(s) {unknown}; allowed: {list(POOLS)}")
        negative = {k: v for k, v in mixture.items() if v < 0}  # non-finite ones never get here (allow_inf_nan)
        if negative:
            raise ValueError(f"{where}: mixture weights must be >= 0, got {negative}")
        total = sum(mixture.values())
        if total <= 0:
            raise ValueError(f"{where}: mixture weights are all zero (or empty): {mixture}")
        return {pool: mixture[pool] / total for pool in POOLS if pool in mixture}

    @model_validator(mode="after")
    def _check_steps(self) -> CurriculumStage:
        if self.max_steps is not None and self.max_steps < self.min_steps:
            raise ValueError(
                f"curriculum stage {self.name!r}: max_steps ({self.max_steps}) < min_steps ({self.min_steps})"
            )
        return self


def _default_stages() -> list[CurriculumStage]:
    return [
        CurriculumStage(
            name="simple",
            mixture={"simple": 1.0},
            exit_criteria=[
                ExitCriterion(metric="accuracy", threshold=0.6),
                ExitCriterion(metric="tool_call_validity", threshold=0.8),
            ],
        ),
        CurriculumStage(
            name="medium",
            mixture={"simple": 0.3, "medium": 0.7},
            exit_criteria=[
                ExitCriterion(metric="accuracy", threshold=0.6),
                ExitCriterion(metric="tool_call_validity", threshold=0.85),
            ],
        ),
        CurriculumStage(name="hard", mixture={"simple": 0.1, "medium": 0.3, "hard": 0.6}),
    ]


class CurriculumConfig(BaseModel):
    """Curriculum schedule: the `curriculum` section of a run config."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = Field(
        default=True, description="If false, train on the final stage's mixture throughout and never change."
    )
    strategy: Literal["staged", "learning_progress"] = Field(
        default="staged",
        description="staged: advance through `stages` on their exit criteria; learning_progress: weight each pool "
        "by the absolute slope of its smoothed `primary_metric` (Matiisen et al. 2017).",
    )
    stages: list[CurriculumStage] = Field(
        default_factory=_default_stages,
        min_length=1,
        description="Stages in order, easiest first (learning_progress: the first one's mixture is the start).",
    )
    evaluation_interval: int = Field(default=25, ge=1, description="Training steps between evaluations.")
    smoothing_window_size: int = Field(
        default=3, ge=1, description="Evaluations averaged (within the current stage) for smoothed metrics."
    )
    patience_cycles: int = Field(
        default=2,
        ge=1,
        description="Consecutive evaluations with all exit criteria met before advancing (learning_progress: "
        "slope measurements of a pool before its slope counts).",
    )
    cooldown_cycles: int = Field(
        default=3,
        ge=0,
        description="Evaluations after an advance, rollback or reweight during which nothing changes.",
    )
    primary_metric: str = Field(
        default="accuracy",
        min_length=1,
        description="Metric watched for rollbacks (learning_progress: read per pool as `<metric>/<pool>`).",
    )
    primary_mode: Literal["higher", "lower"] = Field(
        default="higher", description="Whether higher or lower values of the primary metric are better."
    )
    rollback_threshold: float = Field(
        default=0.1,
        ge=0,
        description="Roll back when the smoothed primary metric gets worse by more than this (absolute) "
        "than its smoothed value at the advance.",
    )
    max_rollbacks: int = Field(
        default=2, ge=0, description="Rollbacks allowed per stage transition; later drops are logged as holds."
    )
    exploration: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="learning_progress: share of the mixture spread uniformly over the pools, so none starves.",
    )
    reweight_tolerance: float = Field(
        default=0.05,
        ge=0,
        lt=1,
        description="learning_progress: the weights change (and cooldown starts) only when a pool's weight "
        "would move by more than this.",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> CurriculumConfig:
        names = [s.name for s in self.stages]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"curriculum stage names must be unique; duplicated: {duplicates}")
        return self


@dataclass
class CurriculumDecision:
    """Outcome of one evaluation: what the manager did and why."""

    action: Action
    reason: str
    step: int
    stage: str
    previous_stage: str
    stage_index: int
    patience: int
    cooldown_left: int
    smoothed: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    mixture: dict[str, float] = field(default_factory=dict)
    """Sampling weights in effect after the decision."""


@dataclass
class _ProgressState:
    """learning_progress state: the weights and, per pool, what its slope is measured from."""

    weights: dict[str, float]
    last_smoothed: dict[str, float] = field(default_factory=dict)
    """Smoothed metric at the pool's previous measurement."""
    measured: dict[str, int] = field(default_factory=dict)
    """Slope measurements so far, capped at patience_cycles."""
    progress: dict[str, float] = field(default_factory=dict)
    """Absolute value of the latest slope."""


def _as_config(config: CurriculumConfig | Mapping[str, Any]) -> CurriculumConfig:
    """A CurriculumConfig as is; else validate the section (bare, or under a whole config's ``curriculum`` key)."""
    # Imported here: pixelis.core.config imports this module for CurriculumConfig.
    from pixelis.core.config import ConfigError, _data_path, _describe, _dotted

    if isinstance(config, CurriculumConfig):
        return config
    section = config
    if isinstance(config, Mapping) and "curriculum" in config:
        section = {} if config["curriculum"] is None else config["curriculum"]  # `curriculum:` left empty in YAML
    try:
        return CurriculumConfig.model_validate(section)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = ("curriculum", *err["loc"])
        key = _dotted(_data_path({"curriculum": section}, loc))
        problem = _describe(err, loc)
        raise ConfigError(f"{key}: {problem}", key=key, problem=problem) from None


def _as_numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    """`metrics` as floats; a value that is not a number is a TypeError naming the metric."""
    raw: dict[str, float] = {}
    for name, value in metrics.items():
        try:
            raw[name] = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"curriculum metric {name!r} must be a number, got {value!r}") from None
    return raw


class CurriculumManager:
    """Decides, at each evaluation, how to sample the difficulty pools (see the module docstring).

    ``config`` is a :class:`CurriculumConfig` or a mapping: the ``curriculum`` section itself or a whole run
    config holding one. A bad mapping raises :class:`pixelis.core.config.ConfigError` naming the dotted key.
    """

    def __init__(
        self,
        config: CurriculumConfig | Mapping[str, Any],
        logger: logging.Logger | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.config = _as_config(config)
        self.logger = logger or logging.getLogger(__name__)
        self.log_path = Path(log_path) if log_path is not None else None
        self._stage_index = 0 if self.config.enabled else len(self.config.stages) - 1
        self._global_step = 0
        self._steps_in_stage = 0
        self._evals_in_stage = 0
        self._metric_history: dict[str, list[float]] = {}
        self._patience = 0
        self._cooldown = 0
        self._last_change: Literal["advance", "rollback"] | None = None
        self._advance_reference: float | None = None
        self._rollbacks: dict[str, int] = {}
        self._history: list[CurriculumDecision] = []
        self._progress = self._initial_progress()

    # -- read-only views -------------------------------------------------------------------------------------------
    @property
    def stage_index(self) -> int:
        return self._stage_index

    @property
    def current_stage(self) -> CurriculumStage:
        return self.config.stages[self._stage_index]

    @property
    def mixture(self) -> dict[str, float]:
        """Current sampling weights: the stage's mixture, or the learning_progress weights."""
        return dict(self.current_stage.mixture if self._progress is None else self._progress.weights)

    @property
    def steps_in_stage(self) -> int:
        return self._steps_in_stage

    @property
    def global_step(self) -> int:
        return self._global_step

    @property
    def history(self) -> list[CurriculumDecision]:
        return list(self._history)

    # -- training-loop hooks ---------------------------------------------------------------------------------------
    def on_train_step(self, n: int = 1) -> None:
        """Count `n` finished training steps."""
        if n < 0:
            raise ValueError(f"on_train_step: n must be >= 0, got {n}")
        self._global_step += n
        self._steps_in_stage += n

    def sample_difficulty(self, rng: random.Random) -> str:
        """Draw a difficulty pool according to the current mixture."""
        pools, weights = zip(*self.mixture.items())
        return rng.choices(pools, weights=weights)[0]

    def update(self, metrics: dict[str, float], step: int | None = None) -> CurriculumDecision:
        """Record one evaluation's metrics and decide (staged: hold/advance/rollback; else hold/reweight)."""
        step = self._global_step if step is None else int(step)
        raw = _as_numbers(metrics)
        present = self._record(raw)
        self._evals_in_stage += 1
        smoothed = self._smoothed()
        previous = self.current_stage.name
        if self._progress is None:
            action, reason = self._decide(smoothed, present)
        else:
            action, reason = self._decide_progress(self._progress, smoothed, present)
        decision = CurriculumDecision(
            action=action,
            reason=reason,
            step=step,
            stage=self.current_stage.name,
            previous_stage=previous,
            stage_index=self._stage_index,
            patience=self._patience,
            cooldown_left=self._cooldown,
            smoothed=smoothed,
            metrics=raw,
            mixture=self.mixture,
        )
        self._history.append(decision)
        self._emit(decision)
        return decision

    # -- smoothing (both strategies) -------------------------------------------------------------------------------
    def _record(self, raw: dict[str, float]) -> set[str]:
        """Append the finite values to their windows; the names recorded (NaN/inf counts as missing)."""
        window = self.config.smoothing_window_size
        present = {name for name, value in raw.items() if math.isfinite(value)}
        for name, value in raw.items():
            if name in present:
                kept = self._metric_history.setdefault(name, [])
                kept.append(value)
                del kept[:-window]
        return present

    def _smoothed(self) -> dict[str, float]:
        return {name: sum(vals) / len(vals) for name, vals in self._metric_history.items() if vals}

    def _cooling_down(self) -> str | None:
        """Use up one cooldown evaluation and return its hold reason; None when not cooling down."""
        if self._cooldown == 0:
            return None
        self._cooldown -= 1
        return f"cooldown ({self._cooldown} left)"

    # -- staged decision logic -------------------------------------------------------------------------------------
    def _decide(self, smoothed: dict[str, float], present: set[str]) -> tuple[Action, str]:
        cfg = self.config
        if not cfg.enabled:
            return "hold", "curriculum disabled"
        cooling = self._cooling_down()
        if cooling is not None:
            return "hold", cooling

        note = ""
        primary = smoothed.get(cfg.primary_metric)
        if self._last_change == "advance" and self._advance_reference is not None and primary is not None:
            ref = self._advance_reference
            worse = ref - primary if cfg.primary_mode == "higher" else primary - ref
            if worse > cfg.rollback_threshold:
                drop = (
                    f"smoothed {cfg.primary_metric} {primary:.4f} is {worse:.4f} worse than {ref:.4f} at the "
                    f"advance (rollback_threshold {cfg.rollback_threshold:g})"
                )
                key = self._transition_key()
                if self._rollbacks.get(key, 0) < cfg.max_rollbacks:
                    self._rollbacks[key] = self._rollbacks.get(key, 0) + 1
                    self._change(self._stage_index - 1, "rollback", smoothed)
                    return "rollback", f"{drop}; rollback {self._rollbacks[key]}/{cfg.max_rollbacks} for {key}"
                # Cap reached: record the drop, but let the stage still progress on its own criteria.
                note = f"{drop}, max_rollbacks ({cfg.max_rollbacks}) reached for {key}; "

        stage = self.current_stage
        is_last = self._stage_index == len(cfg.stages) - 1
        if stage.max_steps is not None and self._steps_in_stage >= stage.max_steps and not is_last:
            reason = f"max_steps ({self._steps_in_stage} >= {stage.max_steps})"
            self._change(self._stage_index + 1, "advance", smoothed)
            return "advance", reason

        met, why = self._exit_criteria(stage, smoothed, present)
        if not met:
            self._patience = 0
            return "hold", note + why
        self._patience = min(self._patience + 1, cfg.patience_cycles)
        if is_last:
            met_text = "all exit criteria met" if stage.exit_criteria else "it has no exit criteria"
            return "hold", note + f"final stage, nothing to advance to ({met_text})"
        if self._patience >= cfg.patience_cycles:
            self._change(self._stage_index + 1, "advance", smoothed)
            return "advance", f"exit criteria met for {cfg.patience_cycles} consecutive evaluations"
        return "hold", note + f"exit criteria met (patience {self._patience}/{cfg.patience_cycles})"

    def _exit_criteria(
        self, stage: CurriculumStage, smoothed: dict[str, float], present: set[str]
    ) -> tuple[bool, str]:
        if self._steps_in_stage < stage.min_steps:
            return False, f"min_steps not reached ({self._steps_in_stage}/{stage.min_steps})"
        missing = sorted({c.metric for c in stage.exit_criteria} - present)
        if missing:
            return False, f"missing metric(s): {', '.join(missing)}"
        window = self.config.smoothing_window_size
        filled = min(
            (len(self._metric_history[c.metric]) for c in stage.exit_criteria), default=self._evals_in_stage
        )
        if filled < window:
            return False, f"smoothing window not full ({filled}/{window})"
        unmet = [c for c in stage.exit_criteria if not c.met(smoothed[c.metric])]
        if unmet:
            return False, "unmet: " + ", ".join(
                f"{c.metric}={smoothed[c.metric]:.4f} (needs {c.describe()})" for c in unmet
            )
        return True, ""

    def _transition_key(self) -> str:
        stages = self.config.stages
        return f"{stages[self._stage_index - 1].name}->{stages[self._stage_index].name}"

    def _change(self, new_index: int, kind: Literal["advance", "rollback"], smoothed: dict[str, float]) -> None:
        self._advance_reference = smoothed.get(self.config.primary_metric) if kind == "advance" else None
        self._stage_index = new_index
        self._last_change = kind
        self._patience = 0
        self._metric_history = {}
        self._evals_in_stage = 0
        self._steps_in_stage = 0
        self._cooldown = self.config.cooldown_cycles

    # -- learning_progress decision logic --------------------------------------------------------------------------
    def _initial_progress(self) -> _ProgressState | None:
        """Start weights (floor-mixed first stage's mixture) for an enabled learning_progress curriculum."""
        if not self.config.enabled or self.config.strategy != "learning_progress":
            return None
        first = self.config.stages[0].mixture
        return _ProgressState(weights=self._with_floor({pool: first.get(pool, 0.0) for pool in POOLS}))

    def _with_floor(self, shares: dict[str, float]) -> dict[str, float]:
        """(1 - exploration) * shares + exploration / len(POOLS), per pool."""
        eps = self.config.exploration
        return {pool: (1 - eps) * shares[pool] + eps / len(POOLS) for pool in POOLS}

    def _decide_progress(
        self, state: _ProgressState, smoothed: dict[str, float], present: set[str]
    ) -> tuple[Action, str]:
        """The learning_progress rule, with m = `primary_metric`, W = window, P = patience, eps = exploration.

        1. Every evaluation, for each pool p whose `m/p` was fed and has a full window of W values: its slope is
           s_p = smoothed m/p now - smoothed m/p at p's previous such evaluation, LP_p = |s_p|. Missing
           evaluations are skipped (the slope then spans them). p's slope counts after P measurements.
        2. In cooldown nothing more happens. Else, if the counted LP_p sum to 0 (none counted yet, or all flat),
           hold; otherwise the target weight is w_p = (1 - eps) * LP_p / sum(LP) + eps / 3, with LP_p = 0 for
           pools not counted yet.
        3. If some |target w_p - current w_p| > `reweight_tolerance`: take the targets ("reweight") and cool down
           for `cooldown_cycles` evaluations; else hold and keep the current weights.

        Before any change the weights are the first stage's mixture mixed with the same floor. `patience` in the
        decision is the fewest slope measurements of any pool (capped at P).
        """
        cfg = self.config
        self._measure_slopes(state, smoothed, present)
        self._patience = min(state.measured.get(pool, 0) for pool in POOLS)
        cooling = self._cooling_down()
        if cooling is not None:
            return "hold", cooling
        summary = self._progress_summary(state)
        counted = {p: state.progress[p] for p in POOLS if state.measured.get(p, 0) >= cfg.patience_cycles}
        total = sum(counted.values())
        if total == 0:
            return "hold", f"no learning progress to weight by ({summary})"
        target = self._with_floor({pool: counted.get(pool, 0.0) / total for pool in POOLS})
        change = max(abs(target[pool] - state.weights[pool]) for pool in POOLS)
        if change <= cfg.reweight_tolerance:
            return "hold", f"change {change:.4f} within reweight_tolerance {cfg.reweight_tolerance:g} ({summary})"
        state.weights = target
        self._cooldown = cfg.cooldown_cycles
        return "reweight", f"weights moved by up to {change:.4f} on learning progress ({summary})"

    def _measure_slopes(self, state: _ProgressState, smoothed: dict[str, float], present: set[str]) -> None:
        """Step 1 of the rule: update each pool's slope from this evaluation's smoothed value."""
        cfg = self.config
        for pool in POOLS:
            key = f"{cfg.primary_metric}/{pool}"
            if key not in present or len(self._metric_history[key]) < cfg.smoothing_window_size:
                continue
            if pool in state.last_smoothed:
                state.progress[pool] = abs(smoothed[key] - state.last_smoothed[pool])
                state.measured[pool] = min(state.measured.get(pool, 0) + 1, cfg.patience_cycles)
            state.last_smoothed[pool] = smoothed[key]

    def _progress_summary(self, state: _ProgressState) -> str:
        """E.g. 'LP simple=0.0500 (2/2), medium=n/a (0/2), ...': latest |slope| and measurements per pool."""
        need = self.config.patience_cycles
        parts = [
            f"{pool}={state.progress[pool]:.4f} ({state.measured[pool]}/{need})" if pool in state.progress
            else f"{pool}=n/a (0/{need})"
            for pool in POOLS
        ]  # fmt: skip
        return "LP " + ", ".join(parts)

    # -- record ----------------------------------------------------------------------------------------------------
    def _emit(self, d: CurriculumDecision) -> None:
        self.logger.info(
            "curriculum step=%d action=%s stage=%s (was %s) patience=%d cooldown=%d: %s",
            d.step, d.action, d.stage, d.previous_stage, d.patience, d.cooldown_left, d.reason,
        )  # fmt: skip
        attributes: dict[str, Any] = {
            "curriculum.action": d.action,
            "curriculum.reason": d.reason,
            "curriculum.step": d.step,
            "curriculum.stage": d.stage,
            "curriculum.previous_stage": d.previous_stage,
            "curriculum.stage_index": d.stage_index,
            "curriculum.patience": d.patience,
            "curriculum.cooldown_left": d.cooldown_left,
        }
        attributes.update({f"curriculum.smoothed.{k}": v for k, v in d.smoothed.items()})
        attributes.update({f"curriculum.mixture.{k}": v for k, v in d.mixture.items()})
        trace.get_current_span().add_event("curriculum.decision", attributes)
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(asdict(d)) + "\n")

    # -- persistence -----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable snapshot of everything needed to continue exactly."""
        return {
            "strategy": self.config.strategy,
            "stage_names": [s.name for s in self.config.stages],
            "stage_index": self._stage_index,
            "global_step": self._global_step,
            "steps_in_stage": self._steps_in_stage,
            "evals_in_stage": self._evals_in_stage,
            "metric_history": {k: list(v) for k, v in self._metric_history.items()},
            "patience": self._patience,
            "cooldown": self._cooldown,
            "last_change": self._last_change,
            "advance_reference": self._advance_reference,
            "rollbacks": dict(self._rollbacks),
            "progress": None if self._progress is None else asdict(self._progress),
            "history": [asdict(d) for d in self._history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a snapshot from `state_dict()`; the strategy and stage names must match this manager's config."""
        strategy = state.get("strategy", "staged")  # snapshots from before strategies were staged
        if strategy != self.config.strategy:
            raise ValueError(
                f"curriculum state is for strategy {strategy!r} but the config has {self.config.strategy!r}; "
                "resume with the same curriculum.strategy"
            )
        names = [s.name for s in self.config.stages]
        if state.get("stage_names") != names:
            raise ValueError(
                f"curriculum state has stages {state.get('stage_names')} but the config has {names}; "
                "resume with the same curriculum.stages"
            )
        self._stage_index = int(state["stage_index"])
        self._global_step = int(state["global_step"])
        self._steps_in_stage = int(state["steps_in_stage"])
        self._evals_in_stage = int(state["evals_in_stage"])
        self._metric_history = {k: [float(x) for x in v] for k, v in state["metric_history"].items()}
        self._patience = int(state["patience"])
        self._cooldown = int(state["cooldown"])
        self._last_change = state["last_change"]
        ref = state["advance_reference"]
        self._advance_reference = None if ref is None else float(ref)
        self._rollbacks = {k: int(v) for k, v in state["rollbacks"].items()}
        progress = state.get("progress")
        self._progress = None if progress is None else _ProgressState(**copy.deepcopy(progress))
        self._history = [CurriculumDecision(**d) for d in state["history"]]

    # -- report ----------------------------------------------------------------------------------------------------
    def plot(self, path: Path) -> Path:
        """Write a PNG over steps: staged, the stage index and smoothed primary metric, marking changes;
        learning_progress, each pool's weight and smoothed primary metric, marking reweights."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(8, 4.5))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax2 = ax.twinx()
        ax.set_xlabel("step")
        if self.config.strategy == "learning_progress":
            self._plot_weights(ax, ax2)
        else:
            self._plot_stages(ax, ax2)
        handles = ax.get_legend_handles_labels()
        handles2 = ax2.get_legend_handles_labels()
        ax.legend(handles[0] + handles2[0], handles[1] + handles2[1], loc="upper left", fontsize="small")
        ax.set_title(f"curriculum ({self.config.strategy})")
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
        return path

    def _plot_stages(self, ax: Any, ax2: Any) -> None:
        primary = self.config.primary_metric
        ax.step([d.step for d in self._history], [d.stage_index for d in self._history], where="post",
                color="tab:blue", label="stage")  # fmt: skip
        ax.set_yticks(range(len(self.config.stages)), [s.name for s in self.config.stages])
        ax.set_ylabel("stage")
        points = [(d.step, d.smoothed[primary]) for d in self._history if primary in d.smoothed]
        ax2.plot([p[0] for p in points], [p[1] for p in points], color="tab:orange", marker=".", label=primary)
        ax2.set_ylabel(f"smoothed {primary}")
        for action, marker, color in (("advance", "^", "tab:green"), ("rollback", "v", "tab:red")):
            marks = [d for d in self._history if d.action == action]
            ax.scatter([d.step for d in marks], [d.stage_index for d in marks], marker=marker, s=80, color=color,
                       zorder=3, label=action)  # fmt: skip

    def _plot_weights(self, ax: Any, ax2: Any) -> None:
        primary = self.config.primary_metric
        steps = [d.step for d in self._history]
        for pool, color in zip(POOLS, ("tab:green", "tab:orange", "tab:red")):
            ax.step(steps, [d.mixture.get(pool, 0.0) for d in self._history], where="post", color=color,
                    label=f"weight {pool}")  # fmt: skip
            key = f"{primary}/{pool}"
            points = [(d.step, d.smoothed[key]) for d in self._history if key in d.smoothed]
            ax2.plot([p[0] for p in points], [p[1] for p in points], color=color, linestyle=":", marker=".",
                     label=key)  # fmt: skip
        marks = [d.step for d in self._history if d.action == "reweight"]
        ax.scatter(marks, [0.0] * len(marks), marker="|", s=120, color="black", zorder=3, label="reweight")
        ax.set_ylim(-0.05, 1.05)
        ax.set_ylabel("sampling weight")
        ax2.set_ylabel(f"smoothed {primary} per pool")
