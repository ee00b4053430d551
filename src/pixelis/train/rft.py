"""Phase 2 recipe: CC-RFT, GRPO over real multi-turn pixel-tool rollouts.

Each step: draw `rft.prompts_per_step` training prompts -> roll each out `rft.num_generations` times with the
project's own agent loop (`Agent.run_many`: the same tools, parser, limits and per-row seeded sampling as
`pixelis eval`) -> score the rewards (`pixelis.train.rewards`) -> group-normalised advantages -> the clipped GRPO
loss (`pixelis.train.grpo`) with a k3 KL to the frozen start policy, on exactly the token ids the policy sampled
and the log-probs recorded when it sampled them (`pixelis.train.rollouts`) -> `rft.num_iterations` updates.
Every step logs each reward term, RaPR, tool calls, parse errors, per-tool shares, KL, clip ratio and entropy,
and the tool-use collapse monitor watches smoothed RaPR.

TRL's GRPOTrainer is not used for the loop: it runs its own tool loop and parser and re-tokenises the completions,
where Pixelis must train on the agent's own rollouts token for token.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from pixelis.agent import Agent, AgentLimits, ModelPolicy, SamplingParams
from pixelis.agent.policies import RowSeededSampler
from pixelis.core.config import ConfigError, PixelisConfig, config_hash
from pixelis.core.curriculum import CurriculumManager
from pixelis.core.errors import CheckpointError, DataError, TrainingError
from pixelis.core.repro import derive_seed, record_artifact
from pixelis.core.trace_analysis import time_section
from pixelis.core.tracing import TracedOperation
from pixelis.core.trajectory import Trajectory, write_jsonl
from pixelis.eval.metrics import compute_metrics
from pixelis.eval.scoring import score_answer
from pixelis.model.load import load_policy, resolve_device
from pixelis.model.lora import lora_from_config
from pixelis.tools.base import ToolLimits
from pixelis.tools.registry import ToolRegistry
from pixelis.train.checkpoint import (config_changes, load_checkpoint, read_state, save_checkpoint, save_model_dir,
                                      weights_hash)
from pixelis.train.monitor import CollapseMonitor, plot_rft_history
from pixelis.train.grpo import GrpoLossConfig, group_advantages, grpo_loss
from pixelis.train.rewards import REWARD_NAMES, RolloutRecord, build_rewards, combine
from pixelis.train.rollouts import policy_pass, turn_batch
from pixelis.train.run_setup import ensure_manifest, resolve_on_every_rank, step_progress
from pixelis.train.sampler import CurriculumSampler
from pixelis.train.sft import load_training_split, lr_at, truncate_records

log = logging.getLogger("pixelis.rft")
RECIPE = "rft"
# Config sections a resumed RFT run must share with its checkpoint (the others do not affect it).
RESUME_CHECKED = ("rft.", "reproducibility.", "model.", "data.path", "agent.", "tools.", "curriculum.")


@dataclass
class RFTResult:
    """What a finished RFT run produced."""

    out_dir: Path
    final_model_dir: Path
    steps: int
    last_loss: float
    weights_sha256: str


RewardFn = Callable[[Sequence[RolloutRecord]], list[float]]


class RFTRecipe:
    """One RFT run from the policy at `model.path` (an SFT checkpoint) on the suite at `data.path`; call `run()`.

    `custom_rewards` adds reward terms from Python, `{name: (weight, fn)}` with `fn(records) -> one float per
    rollout`, logged and summed like the configured ones (as TRL's `reward_funcs`). `token_sampler` picks the
    rollouts' tokens (a `RowSeededSampler` subclass can constrain them, e.g. grammar-constrained calls); the
    loss still trains on exactly the tokens it picked, with the log-probs it recorded.
    """

    def __init__(self, cfg: PixelisConfig, out_dir: Path, resume: Path | None = None, show_progress: bool = True,
                 custom_rewards: Mapping[str, tuple[float, RewardFn]] | None = None,
                 token_sampler: type[RowSeededSampler] = RowSeededSampler):
        self.out_dir, self.resume, self.show_progress = Path(out_dir), resume, show_progress
        self.token_sampler = token_sampler
        self.accelerator = Accelerator(cpu=resolve_device(cfg.model.device).type == "cpu")
        if resume is not None:
            cfg = self._resume_config(cfg, resume)
        else:
            cfg = resolve_on_every_rank(self.accelerator, cfg, self.out_dir, show_progress)
        self.cfg = cfg
        ensure_manifest(self.accelerator, self.out_dir, cfg, "train-rft")
        rft = cfg.rft
        self.train_set = load_training_split(Path(cfg.data.path), "train", cfg.data.max_image_pixels)
        self.prompts = [t for t in self.train_set if t.target is not None]
        if not self.prompts:
            raise DataError(f"data.path={cfg.data.path}: train.jsonl has no sample with a target to reward")
        self.curriculum = None
        if rft.curriculum:
            self.curriculum = CurriculumManager(cfg.curriculum, logger=log, log_path=self.out_dir / "curriculum.jsonl")
        stage_weights = [s.rewards for s in cfg.curriculum.stages if s.rewards] if rft.curriculum else []
        used = {name: 1.0 for weights in [rft.rewards, *stage_weights] for name, w in weights.items() if w}
        try:
            self.rewards = build_rewards(used, rft.reward_params,
                                         seed=derive_seed(cfg.reproducibility.seed, "rft-curiosity"))
        except ValueError as err:
            key = "curriculum.stages" if stage_weights else "rft.rewards"
            raise ConfigError(f"{key} / rft.reward_params: {err}", key=key) from None
        self.custom_weights: dict[str, float] = {}
        for name, (weight, fn) in (custom_rewards or {}).items():
            if name in REWARD_NAMES:
                raise ValueError(f"custom reward {name!r} clashes with the built-in reward term of that name")
            self.rewards[name], self.custom_weights[name] = fn, weight
        self.curiosity_boost = 1.0  # raised by the collapse monitor's boost_curiosity response
        if not any(self.reward_weights.values()):
            raise ConfigError("rft.rewards: every weight is 0; give at least one reward term a weight",
                              key="rft.rewards")
        device = str(self.accelerator.device)
        self.model, self.processor = load_policy(cfg.model.path, dtype=cfg.model.dtype, device=device)
        self.reference = None
        if rft.beta > 0:  # the frozen anchor: the start policy
            self.reference = copy.deepcopy(self.model).eval().requires_grad_(False)
        if cfg.model.lora.enabled:
            self.model = lora_from_config(self.model, cfg.model.lora)
        self.tools = ToolRegistry.default(ToolLimits.from_config(cfg.tools))
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad],
                                           lr=rft.learning_rate, weight_decay=rft.weight_decay,
                                           fused=self.accelerator.device.type in ("cpu", "cuda"))
        self.model, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
        rank = self.accelerator.process_index
        pools = sorted({t.metadata.get("difficulty", "simple") for t in self.prompts})
        choose = self.curriculum.sample_difficulty if self.curriculum is not None else lambda rng: rng.choice(pools)
        self.sampler = CurriculumSampler([t.metadata.get("difficulty", "simple") for t in self.prompts], choose,
                                         seed=derive_seed(cfg.reproducibility.seed, "rft-prompts", rank))
        self.loss_config = GrpoLossConfig(rft.loss_type, rft.epsilon, rft.epsilon_high, rft.beta,
                                          cfg.agent.max_new_tokens * cfg.agent.max_turns)
        self.monitor = CollapseMonitor(rft.collapse)
        self.step = 0
        self.rollouts_without_tools = 0  # before the first tool call
        self.tool_use_seen = self.warned_no_tools = False
        self.history: list[dict[str, Any]] = []

    @property
    def reward_weights(self) -> dict[str, float]:
        """The weights of this step: the curriculum stage's (or rft.rewards), custom terms, the curiosity boost."""
        stage = self.curriculum.current_stage.rewards if self.curriculum is not None else None
        weights = {**dict(stage or self.cfg.rft.rewards), **self.custom_weights}
        if "curiosity" in weights:
            weights["curiosity"] *= self.curiosity_boost
        return weights

    def _resume_config(self, cfg: PixelisConfig, resume: Path) -> PixelisConfig:
        saved = read_state(resume)
        if saved.get("recipe") != RECIPE:
            raise CheckpointError(f"--resume {resume}: not an RFT checkpoint")
        resolved = cfg.model_copy(deep=True)
        if resolved.data.path is None:
            resolved.data.path = saved["config"]["data"]["path"]
        if resolved.model.path is None:
            resolved.model.path = saved["config"]["model"]["path"]
        changes = config_changes(saved["config"], resolved.model_dump(mode="json"), within=RESUME_CHECKED)
        if changes:
            raise ConfigError(f"--resume {resume}: the config differs from the checkpoint's: {'; '.join(changes)}; "
                              "restore it to resume exactly", key=changes[0].split(":")[0])
        return resolved

    # ------------------------------------------------------------------------------------------ steps

    def rollout(self) -> list[Trajectory]:
        """This step's groups: `num_generations` rollouts of each drawn prompt, consecutive, scored."""
        rft = self.cfg.rft
        prompts = [self.prompts[i] for i in self.sampler.next_batch(rft.prompts_per_step)]
        model = self.accelerator.unwrap_model(self.model)
        model.eval()
        policy = ModelPolicy(model, self.processor, self.token_sampler)
        agent = Agent(policy, self.tools, AgentLimits.from_config(self.cfg.agent),
                      SamplingParams(do_sample=True, temperature=rft.temperature, top_p=rft.top_p),
                      seed=derive_seed(self.cfg.reproducibility.seed, "rft-rollouts", self.step,
                                       self.accelerator.process_index),
                      tool_prompt=self.cfg.agent.tool_prompt, batch_size=self.cfg.agent.batch_size,
                      tool_workers=self.cfg.agent.tool_workers)
        with torch.no_grad():
            rollouts = agent.run_many(prompts, n=rft.num_generations)
        for traj in rollouts:
            traj.metadata["correct"] = score_answer(traj.answer, traj.target, self.cfg.eval.iou_threshold,
                                                    self.cfg.eval.numeric_tolerance)
        return rollouts

    def train_step(self) -> tuple[dict[str, Any], list[Trajectory]]:
        """Roll out, reward, and update; returns the step's metrics and its rollouts."""
        rft = self.cfg.rft
        rollouts = self.rollout()
        batch = turn_batch(self.processor, rollouts)
        device = self.accelerator.device
        ref_logps = None
        if self.reference is not None:
            with torch.no_grad():
                ref_logps = policy_pass(self.reference, batch, rft.temperature, device).logprobs
        lr = lr_at(self.step, rft)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        old_logps = batch.sampled_logprobs.to(device)
        mask = batch.completion_mask.to(device)
        terms: dict[str, list[float]] = {}
        logged: dict[str, float] = {}
        for iteration in range(rft.num_iterations):
            out = policy_pass(self.model, batch, rft.temperature, device, embeddings=iteration == 0)
            if iteration == 0:
                records = [RolloutRecord(t, i // rft.num_generations, s, a)
                           for i, (t, s, a) in enumerate(zip(rollouts, out.states, out.actions))]
                terms = {name: reward(records) for name, reward in self.rewards.items()}
                total = torch.tensor(combine(terms, self.reward_weights), dtype=torch.float32)
                advantages = group_advantages(total, rft.num_generations, rft.scale_rewards).to(device)
            result = grpo_loss(out.logprobs, old_logps, advantages, mask, self.loss_config, ref_logps)
            self.accelerator.backward(result.loss)
            self.accelerator.clip_grad_norm_(self.model.parameters(), rft.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad()
            if iteration == 0:
                logged = {"loss": result.loss.item(), "kl": result.kl.item(), "clip_ratio": result.clip_ratio.item(),
                          "entropy": out.entropy}
        if not math.isfinite(logged["loss"]):
            raise TrainingError(f"non-finite RFT loss ({logged['loss']}) at step {self.step + 1}; lower "
                                "rft.learning_rate (nothing was saved for this step)")
        self.step += 1
        metrics = self._rollout_metrics(rollouts)
        if self.curriculum is not None:
            self.curriculum.on_train_step()
        rewards = {f"reward/{name}": sum(v) / len(v) for name, v in terms.items()}
        rewards["reward"] = float(total.mean())
        self._watch_tool_use(rollouts)
        drawn = gather_object([[t.id for t in rollouts[::rft.num_generations]]])  # every rank's prompts, in rank order
        return {**logged, **rewards, **metrics, "lr": lr, "prompts": drawn}, rollouts

    def _rollout_metrics(self, rollouts: list[Trajectory]) -> dict[str, float]:
        m = compute_metrics(rollouts)
        attempts = [s for t in rollouts for s in t.steps if s.call is not None or s.raw_text is not None]
        tools = Counter(s.call.name for s in attempts if s.call is not None)
        out = {"accuracy": m["accuracy"], "rapr": m["rapr"], "tool_calls": m["mean_tool_calls"],
               "tool_call_validity": m["tool_call_validity"], "answered": m["answered_rate"],
               "parse_error_rate": sum(s.raw_text is not None for s in attempts) / len(attempts) if attempts else 0.0}
        out.update({f"tool_share/{name}": n / len(attempts) for name, n in sorted(tools.items())})
        return out

    def _curriculum_update(self) -> str:
        """Feed the curriculum the rollouts' accuracy, RaPR and validity since its last evaluation."""
        recent = self.history[-self.cfg.curriculum.evaluation_interval:]
        keys = ("accuracy", "rapr", "tool_call_validity")
        decision = self.curriculum.update({k: sum(r[k] for r in recent) / len(recent) for k in keys}, step=self.step)
        return decision.action

    def _watch_tool_use(self, rollouts: list[Trajectory]) -> None:
        """Warn once when the first `rft.no_tool_warning_after` rollouts made no tool call at all."""
        self.tool_use_seen = self.tool_use_seen or any(s.call is not None for t in rollouts for s in t.steps)
        if self.tool_use_seen or self.warned_no_tools:
            return
        self.rollouts_without_tools += len(rollouts)
        if self.rollouts_without_tools >= self.cfg.rft.no_tool_warning_after:
            log.warning("the policy made no tool call in its first %d rollouts: is model.path (%s) an SFT "
                        "checkpoint? RFT can only reinforce tool use the policy already shows",
                        self.rollouts_without_tools, self.cfg.model.path)
            self.warned_no_tools = True

    # ------------------------------------------------------------------------------------------ save

    def save(self) -> Path:
        """Write `RUN/checkpoint-K` atomically: policy, optimizer, RNG, prompt sampler, reward and monitor state."""
        state = {"recipe": RECIPE, "step": self.step, "world_size": self.accelerator.num_processes,
                 "history": self.history, "curiosity_boost": self.curiosity_boost,
                 "curriculum": None if self.curriculum is None else self.curriculum.state_dict(),
                 "monitor": self.monitor.state_dict(),
                 "tool_use": [self.rollouts_without_tools, self.tool_use_seen, self.warned_no_tools],
                 "config_hash": config_hash(self.cfg), "config": self.cfg.model_dump(mode="json")}
        extras = {name: r.state_dict() for name, r in self.rewards.items() if hasattr(r, "state_dict")}
        return save_checkpoint(self.accelerator, self.out_dir, self.step,
                               model=self.accelerator.unwrap_model(self.model), head=None, optimizer=self.optimizer,
                               rank_state=self.sampler.state_dict(), state=state, extras=extras)

    def load(self, path: Path) -> None:
        """Continue from an RFT checkpoint exactly (an SFT or pre-training checkpoint is refused)."""
        state = load_checkpoint(path, model=self.accelerator.unwrap_model(self.model), head=None,
                                optimizer=self.optimizer, rank=self.accelerator.process_index,
                                world_size=self.accelerator.num_processes)
        self.step, self.history = state["step"], state["history"]
        self.sampler.load_state_dict(state["sampler"])
        self.curiosity_boost = state["curiosity_boost"]
        if self.curriculum is not None:
            self.curriculum.load_state_dict(state["curriculum"])
        self.monitor.load_state_dict(state["monitor"])
        self.rollouts_without_tools, self.tool_use_seen, self.warned_no_tools = state["tool_use"]
        for name, reward_state in (state["extras"] or {}).items():
            self.rewards[name].load_state_dict(reward_state)
        if self.accelerator.is_main_process:
            for record in ("rft_history.jsonl", "alerts.jsonl", "curriculum.jsonl"):
                truncate_records(self.out_dir / record, self.step)
        log.info("resumed from %s at step %d", path, self.step)

    def save_final(self) -> Path:
        """The RL-trained policy as a loadable checkpoint (LoRA merged)."""
        return save_model_dir(self.accelerator, self.out_dir / "final", model=self.accelerator.unwrap_model(self.model),
                              processor=self.processor, merge_lora=self.cfg.model.lora.enabled)

    # ------------------------------------------------------------------------------------------ run

    def _on_alert(self, alert: dict[str, Any]) -> None:
        """Record a collapse alert and apply the configured response."""
        response = self.cfg.rft.collapse.response
        log.warning("tool-use collapse at step %d: %s (response: %s)", self.step, alert["reason"], response)
        self.span.add_event("rft.collapse_alert", {"step": self.step, "reason": alert["reason"]})
        if self.accelerator.is_main_process:
            with (self.out_dir / "alerts.jsonl").open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({**alert, "response": response}) + "\n")
        if response == "boost_curiosity":
            if "curiosity" not in self.rewards:
                raise ConfigError("rft.collapse.response=boost_curiosity needs a curiosity reward "
                                  "(rft.rewards.curiosity > 0)", key="rft.collapse.response")
            self.curiosity_boost *= self.cfg.rft.collapse.boost_factor
        elif response == "stop":
            saved = self.save()
            raise TrainingError(f"tool-use collapse at step {self.step}: {alert['reason']}; stopped as "
                                f"rft.collapse.response=stop asks (checkpoint {saved}, no final model saved)")

    def run(self) -> RFTResult:
        """Train to `rft.max_steps` (resuming first when asked); returns where the final model is."""
        cfg = self.cfg.rft
        if self.resume is not None:
            self.load(self.resume)
        last: dict[str, Any] = {"loss": float("nan")}
        show = self.show_progress and self.accelerator.is_main_process
        with TracedOperation("rft.run", "train", {"max_steps": cfg.max_steps}) as self.span, \
                step_progress("rft", show) as progress:
            task = progress.add_task("rft", total=cfg.max_steps, completed=self.step, info="")
            while self.step < cfg.max_steps:
                with TracedOperation("rft.step", "train", {"step": self.step + 1}):
                    last, rollouts = self.train_step()
                record = {"step": self.step, **last, "reward_weights": dict(self.reward_weights)}
                self.history.append(record)
                if self.curriculum is not None and self.step % self.cfg.curriculum.evaluation_interval == 0:
                    record["decision"] = self._curriculum_update()
                if self.accelerator.is_main_process:
                    write_jsonl(self.out_dir / "rollouts" / f"step-{self.step:06d}.jsonl", rollouts)
                    with (self.out_dir / "rft_history.jsonl").open("a", encoding="utf-8") as fh:
                        fh.write(json.dumps(record) + "\n")
                alert = self.monitor.update(self.step, last["rapr"])
                if alert is not None:
                    self._on_alert(alert)
                if self.step % cfg.save_interval == 0 or self.step == cfg.max_steps:
                    self.save()
                info = (f"reward {last['reward']:.3f} rapr {last['rapr']:.2f} kl {last['kl']:.4f} "
                        f"loss {last['loss']:.4f}")
                progress.update(task, completed=self.step, info=info)
                if not show:
                    log.info("step %d/%d %s", self.step, cfg.max_steps, info)
        final = self.save_final()
        digest = weights_hash(self.accelerator.unwrap_model(self.model))
        if self.accelerator.is_main_process:
            record_artifact(self.out_dir, "final_weights", digest)
            plot_rft_history(self.history, self.out_dir / "rft.png")
            if self.curriculum is not None:
                self.curriculum.plot(self.out_dir / "curriculum.png")
            timing = time_section(self.out_dir / "traces.jsonl", self.span.trace_id,
                                  title="# RFT: where the time went")
            if timing:
                (self.out_dir / "time.md").write_text("\n".join(timing) + "\n", encoding="utf-8")
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()
        log.info("RFT done: %d steps, weights sha256 %s, final model at %s", self.step, digest[:16], final)
        return RFTResult(self.out_dir, final, self.step, last["loss"], digest)


def train_rft(cfg: PixelisConfig, out_dir: Path, resume: Path | None = None, show_progress: bool = True,
              custom_rewards: Mapping[str, tuple[float, RewardFn]] | None = None,
              token_sampler: type[RowSeededSampler] = RowSeededSampler) -> RFTResult:
    """Run RFT as configured; see `RFTRecipe`."""
    return RFTRecipe(cfg, out_dir, resume, show_progress, custom_rewards, token_sampler).run()
