"""Phase 1 recipe: SFT with the masked imitation loss, driven by the curriculum manager.

setup (data, model, LoRA, optimizer, curriculum, sampler) -> train (accelerate handles devices, DDP and gradient
accumulation; the LR is a pure function of the step) -> evaluate every `curriculum.evaluation_interval` steps
(held-out loss on the current stage's difficulties + real agent rollouts) -> checkpoint every `sft.save_interval`
steps -> save the final model (and `time.md`, where the time went, when spans are exported to a traces.jsonl).

The loop is written out rather than built on `transformers.Trainer`: Trainer resumes by skipping batches of a
fixed sampler, which cannot restore a curriculum-driven sampler mid-stream bitwise (resume-exact is required).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, is_mlflow_available, is_tensorboard_available, is_wandb_available

from pixelis.agent import Agent, AgentLimits, SamplingParams
from pixelis.agent.policies import ModelPolicy
from pixelis.agent.prompt import ToolPrompt
from pixelis.core.config import ConfigError, PixelisConfig, config_hash
from pixelis.core.curriculum import CurriculumManager
from pixelis.core.errors import CheckpointError, DataError, TrainingError
from pixelis.core.repro import derive_seed, record_artifact
from pixelis.core.trace_analysis import time_section
from pixelis.core.tracing import TracedOperation
from pixelis.core.trajectory import Trajectory, read_jsonl, write_jsonl
from pixelis.eval.metrics import compute_metrics
from pixelis.eval.scoring import score_answer
from pixelis.model.load import load_policy, resolve_device
from pixelis.model.lora import lora_from_config
from pixelis.tools.base import ToolLimits
from pixelis.tools.registry import ToolRegistry
from pixelis.train.checkpoint import (config_changes, load_checkpoint, load_head, read_state, save_checkpoint,
                                      save_model_dir, weights_hash)
from pixelis.train.loss import ArgumentHead, batch_losses, call_targets
from pixelis.train.run_setup import ensure_manifest, resolve_on_every_rank, step_progress
from pixelis.train.sampler import CurriculumSampler
from pixelis.train.sft_batch import collate_sft, render_sft_sample

log = logging.getLogger("pixelis.sft")


@dataclass
class SFTResult:
    """What a finished SFT run produced."""

    out_dir: Path
    final_model_dir: Path
    steps: int
    last_loss: float
    weights_sha256: str
    stage: str


def load_training_split(suite: Path, split: str, max_pixels: int) -> list[Trajectory]:
    """`suite/<split>.jsonl`, which must exist and hold trajectories (else one `DataError` naming data.path)."""
    path = suite / f"{split}.jsonl"
    if not path.is_file():
        raise DataError(f"data.path={suite}: missing {split}.jsonl (generate a suite with `pixelis data synth`)")
    samples = read_jsonl(path, max_pixels)
    if not samples:
        raise DataError(f"{path} holds no trajectories")
    return samples


def _round_robin(indices: list[int], samples: list[Trajectory], key: str = "family") -> list[int]:
    """`indices` reordered round-robin over the values of metadata `key` (task family, or difficulty), so any
    prefix covers every value (the splits are sorted by family; a plain prefix would evaluate one family only)."""
    groups: dict[str, list[int]] = {}
    for i in indices:
        groups.setdefault(samples[i].metadata.get(key, ""), []).append(i)
    columns = list(groups.values())
    return [col[k] for k in range(max(map(len, columns), default=0)) for col in columns if k < len(col)]


def lr_at(step: int, cfg: Any) -> float:
    """The learning rate of optimizer step `step` (0-based): linear warmup, then cosine decay to 0.

    A pure function of the global step (as in nanoGPT), so it needs no saved state and is the same for any
    number of ranks: accelerate's prepared scheduler would step once per rank per step.
    """
    warmup = int(cfg.warmup_ratio * cfg.max_steps)
    # base_lr * factor, the order transformers' cosine schedule uses: the same bits as its LambdaLR.
    if step < warmup:
        return cfg.learning_rate * (step / max(1, warmup))
    progress = (step - warmup) / max(1, cfg.max_steps - warmup)
    return cfg.learning_rate * max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def _resume_config(cfg: PixelisConfig, resume: Path, allow_change: bool) -> PixelisConfig:
    """`cfg` checked against the checkpoint's config; unset data/model paths are the resumed run's."""
    state = read_state(resume)
    if "curriculum" not in state:
        raise CheckpointError(f"--resume {resume}: not an SFT checkpoint (it has no curriculum state)")
    saved = state["config"]
    resolved = cfg.model_copy(deep=True)
    if resolved.data.path is None:
        resolved.data.path = saved["data"]["path"]
    if resolved.model.path is None:
        resolved.model.path = saved["model"]["path"]
    changes = config_changes(saved, resolved.model_dump(mode="json"))
    if changes and not allow_change:
        raise ConfigError(f"--resume {resume}: the config differs from the checkpoint's in keys that break "
                          f"resume-exactness: {'; '.join(changes)}. Restore them, or pass --allow-config-change "
                          "to resume anyway", key=changes[0].split(":")[0])
    if changes:
        log.warning("resuming with config changes (--allow-config-change): %s", "; ".join(changes))
    return resolved


def truncate_records(path: Path, step: int) -> None:
    """Drop the records of `path` written after `step` (a resumed run writes them again)."""
    if path.is_file():
        lines = [line for line in path.read_text(encoding="utf-8").splitlines()
                 if line.strip() and json.loads(line).get("step", 0) <= step]
        path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


class SFTRecipe:
    """One SFT run: build with a config and an output directory, then call `run()`.

    Unset `data.path` / `model.path` build the default suite and tiny model inside the run directory (see
    `pixelis.run_inputs`); `resume` is a `checkpoint-K` directory whose config must match (`allow_config_change`).
    """

    def __init__(self, cfg: PixelisConfig, out_dir: Path, resume: Path | None = None, show_progress: bool = True,
                 allow_config_change: bool = False, traces: Path | None = None):
        self.out_dir, self.resume, self.show_progress = Path(out_dir), resume, show_progress
        self.traces = self.out_dir / "traces.jsonl" if traces is None else traces
        trackers = _check_trackers(cfg.sft.report_to)
        self.accelerator = Accelerator(gradient_accumulation_steps=cfg.sft.grad_accum,
                                       log_with=trackers or None, project_dir=str(self.out_dir),
                                       cpu=resolve_device(cfg.model.device).type == "cpu")
        if resume is not None:
            cfg = _resume_config(cfg, resume, allow_config_change)
        else:
            cfg = resolve_on_every_rank(self.accelerator, cfg, self.out_dir, show_progress)
        self.cfg = cfg
        ensure_manifest(self.accelerator, self.out_dir, cfg, "train-sft")
        suite = Path(cfg.data.path)
        self.train_set = load_training_split(suite, "train", cfg.data.max_image_pixels)
        self.val_set = load_training_split(suite, "val", cfg.data.max_image_pixels)
        self.model, self.processor = load_policy(cfg.model.path, dtype=cfg.model.dtype,
                                                 device=str(self.accelerator.device))
        if cfg.model.lora.enabled:
            self.model = lora_from_config(self.model, cfg.model.lora)
        self.tools = ToolRegistry.default(ToolLimits.from_config(cfg.tools))
        prompt = ToolPrompt.build(self.tools.schemas(), cfg.agent.tool_prompt)
        render = lambda t: render_sft_sample(self.processor, t, prompt.tools, cfg.sft.max_length, prompt.system)  # noqa: E731
        self.rendered = [render(t) for t in self.train_set]
        self.aux_targets = [call_targets(t) for t in self.train_set]
        self.val_rendered = [render(t) for t in self.val_set]
        hidden = self.model.config.get_text_config().hidden_size
        self.head = ArgumentHead(hidden) if cfg.sft.aux_head else None
        if self.head is not None:
            load_head(self.head, Path(cfg.model.path))  # continue the pre-trained head when the model has one
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.head is not None:
            params += list(self.head.parameters())
        # The fused kernel (CPU and CUDA) avoids the per-parameter Python loop that costs ~10% of a tiny-model step.
        self.optimizer = torch.optim.AdamW(params, lr=cfg.sft.learning_rate, weight_decay=cfg.sft.weight_decay,
                                           fused=self.accelerator.device.type in ("cpu", "cuda"))
        self.curriculum = CurriculumManager(cfg.curriculum, logger=log, log_path=self.out_dir / "curriculum.jsonl")
        rank = self.accelerator.process_index
        self.sampler = CurriculumSampler([t.metadata.get("difficulty", "simple") for t in self.train_set],
                                         self.curriculum.sample_difficulty,
                                         seed=derive_seed(cfg.reproducibility.seed, "sft-sampler", rank))
        prepared = self.accelerator.prepare(self.model, self.optimizer, *([self.head] if self.head is not None else []))
        self.model, self.optimizer = prepared[:2]
        if self.head is not None:
            self.head = prepared[2]
        self.pad_id = self.processor.tokenizer.pad_token_id
        self.step = 0
        self.history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------------------------------ steps

    def _forward_loss(self, indices: list[int], rendered: list[Any], targets: list[Any] | None) -> dict[str, Any]:
        batch = collate_sft([rendered[i] for i in indices], self.pad_id, self.cfg.sft.action_token_weight)
        return batch_losses(self.model, self.head, batch, None if targets is None else [targets[i] for i in indices],
                            self.cfg.sft.aux_weight, self.accelerator.device)

    def train_step(self) -> dict[str, float]:
        """One optimizer step over `grad_accum` micro-batches drawn from the current curriculum mixture."""
        self.model.train()
        lr = lr_at(self.step, self.cfg.sft)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        logged: dict[str, float] = {}
        for _ in range(self.cfg.sft.grad_accum):
            indices = self.sampler.next_batch(self.cfg.sft.batch_size)
            with self.accelerator.accumulate(self.model):
                losses = self._forward_loss(indices, self.rendered, self.aux_targets)
                self.accelerator.backward(losses["loss"])
                self.optimizer.step()
                self.optimizer.zero_grad()
            for k, v in losses.items():
                logged[k] = logged.get(k, 0.0) + v.item() / self.cfg.sft.grad_accum
        self._stop_on_non_finite(logged["loss"])
        self.step += 1
        self.curriculum.on_train_step()
        logged["lr"] = lr
        return logged

    def _stop_on_non_finite(self, loss: float) -> None:
        """Every rank stops, before anything is saved, when any rank's loss is NaN or infinite."""
        losses = self.accelerator.gather(torch.tensor([loss], dtype=torch.float64, device=self.accelerator.device))
        bad = [v for v in losses.tolist() if not math.isfinite(v)]
        if bad:
            done = sorted(p for p in self.out_dir.glob("checkpoint-*") if p.is_dir())
            last = max(done, key=lambda p: int(p.name.split("-")[1])) if done else None
            where = f"the last good checkpoint is {last} (--resume it with a lower sft.learning_rate)" if last \
                else "no checkpoint was saved before it"
            raise TrainingError(f"non-finite loss ({bad[0]}) at step {self.step + 1}: training stopped and no final "
                                f"model was saved; {where}")

    # ------------------------------------------------------------------------------------------ eval

    def _stage_pools(self) -> set[str]:
        return {pool for pool, weight in self.curriculum.mixture.items() if weight > 0}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Held-out loss on the current mixture's difficulties and agent metrics from real rollouts, overall and
        per difficulty pool as `<metric>/<pool>` (the rollouts are kept in `RUN/rollouts/step-K.jsonl`)."""
        self.model.eval()
        pools = self._stage_pools()
        val_idx = _round_robin(
            [i for i, t in enumerate(self.val_set) if t.metadata.get("difficulty") in pools]
            or list(range(len(self.val_set))), self.val_set)
        if self.cfg.curriculum.strategy == "learning_progress":  # its slopes are per pool: roll out every pool
            val_idx = _round_robin(val_idx, self.val_set, key="difficulty")
        loss_idx = val_idx[: self.cfg.sft.eval_loss_samples]
        losses = [self._forward_loss([i], self.val_rendered, None)["loss_lm"].item() for i in loss_idx]
        rollout_samples = [self.val_set[i] for i in val_idx[: self.cfg.sft.eval_rollouts]]
        agent = Agent(ModelPolicy(self.accelerator.unwrap_model(self.model), self.processor), self.tools,
                      AgentLimits.from_config(self.cfg.agent), SamplingParams(),
                      seed=self.cfg.reproducibility.seed, tool_prompt=self.cfg.agent.tool_prompt,
                      batch_size=self.cfg.agent.batch_size, tool_workers=self.cfg.agent.tool_workers)
        predictions = agent.run_many(rollout_samples)
        for pred in predictions:
            pred.metadata["correct"] = score_answer(pred.answer, pred.target, self.cfg.eval.iou_threshold,
                                                    self.cfg.eval.numeric_tolerance)
        if self.accelerator.is_main_process:  # what the policy actually wrote, to read alongside the metrics
            write_jsonl(self.out_dir / "rollouts" / f"step-{self.step:06d}.jsonl", predictions)
        agent_metrics = ("accuracy", "tool_call_validity", "rapr")
        metrics = compute_metrics(predictions)
        out = {"eval_loss": sum(losses) / len(losses), **{k: metrics[k] for k in agent_metrics}}
        for pool in sorted({p.metadata.get("difficulty", "unknown") for p in predictions}):  # e.g. accuracy/hard
            per_pool = compute_metrics([p for p in predictions if p.metadata.get("difficulty", "unknown") == pool])
            out.update({f"{k}/{pool}": per_pool[k] for k in agent_metrics})
        return out

    # ------------------------------------------------------------------------------------------ save

    def _trainer_state(self) -> dict[str, Any]:
        return {"step": self.step, "world_size": self.accelerator.num_processes,
                "curriculum": self.curriculum.state_dict(), "history": self.history,
                "config_hash": config_hash(self.cfg), "config": self.cfg.model_dump(mode="json")}

    def save(self) -> Path:
        """Write `RUN/checkpoint-K` atomically: every rank adds its sampler and RNG state, rank 0 the rest."""
        return save_checkpoint(self.accelerator, self.out_dir, self.step,
                               model=self.accelerator.unwrap_model(self.model),
                               head=None if self.head is None else self.accelerator.unwrap_model(self.head),
                               optimizer=self.optimizer, rank_state=self.sampler.state_dict(),
                               state=self._trainer_state())

    def load(self, path: Path) -> None:
        """Restore a checkpoint, each rank its own sampler and RNG; records after its step are dropped."""
        state = load_checkpoint(path, model=self.accelerator.unwrap_model(self.model),
                                head=None if self.head is None else self.accelerator.unwrap_model(self.head),
                                optimizer=self.optimizer, rank=self.accelerator.process_index,
                                world_size=self.accelerator.num_processes)
        self.step = state["step"]
        self.sampler.load_state_dict(state["sampler"])
        self.curriculum.load_state_dict(state["curriculum"])
        self.history = state["history"]
        if self.accelerator.is_main_process:
            for record in ("curriculum.jsonl", "train_history.jsonl"):
                truncate_records(self.out_dir / record, self.step)
        log.info("resumed from %s at step %d (stage %s)", path, self.step, self.curriculum.current_stage.name)

    def save_final(self) -> Path:
        """The trained policy as a loadable checkpoint (LoRA merged), plus the aux head when trained."""
        return save_model_dir(self.accelerator, self.out_dir / "final", model=self.accelerator.unwrap_model(self.model),
                              processor=self.processor,
                              head=None if self.head is None else self.accelerator.unwrap_model(self.head),
                              merge_lora=self.cfg.model.lora.enabled)

    # ------------------------------------------------------------------------------------------ run

    def run(self) -> SFTResult:
        """Train to `sft.max_steps` (resuming first when asked); returns where the final model is."""
        cfg = self.cfg.sft
        if self.resume is not None:
            self.load(self.resume)
        if self.accelerator.is_main_process:
            # A resumed run purges the tensorboard events it logged after the checkpoint's step.
            purge = {"tensorboard": {"purge_step": self.step + 1}} if self.resume is not None else {}
            self.accelerator.init_trackers("sft", config=_flat_hparams(self.cfg), init_kwargs=purge)
        last: dict[str, float] = {"loss": float("nan")}
        show = self.show_progress and self.accelerator.is_main_process
        with TracedOperation("sft.run", "train", {"max_steps": cfg.max_steps}) as run_span, \
                step_progress("sft", show) as progress:
            task = progress.add_task("sft", total=cfg.max_steps, completed=self.step, info="")
            while self.step < cfg.max_steps:
                last = self.train_step()
                record: dict[str, Any] = {"step": self.step, **last, "stage": self.curriculum.current_stage.name}
                if self.step % self.cfg.curriculum.evaluation_interval == 0 or self.step == cfg.max_steps:
                    with TracedOperation("sft.evaluate", "train", {"step": self.step}):
                        metrics = self.evaluate()
                        decision = self.curriculum.update(metrics, step=self.step)
                    record.update(metrics, decision=decision.action)
                    log.info("step %d eval %s -> %s (%s)", self.step, json.dumps(metrics), decision.action,
                             decision.reason)
                self.accelerator.log({k: v for k, v in record.items() if isinstance(v, float)}, step=self.step)
                self.history.append(record)
                if self.step % cfg.save_interval == 0 or self.step == cfg.max_steps:
                    self.save()
                info = f"loss {last['loss']:.3f} lr {last['lr']:.2e} stage {self.curriculum.current_stage.name}"
                progress.update(task, completed=self.step, info=info)
                if not show and self.step % 10 == 0:
                    log.info("step %d/%d %s", self.step, cfg.max_steps, info)
        final = self.save_final()
        digest = weights_hash(self.accelerator.unwrap_model(self.model))
        rank_digests = gather_object([digest])
        if len(set(rank_digests)) != 1:
            raise RuntimeError(f"ranks ended with different weights: {rank_digests}")
        if self.accelerator.is_main_process:
            record_artifact(self.out_dir, "final_weights", digest)
            (self.out_dir / "rank_weights.json").write_text(json.dumps(rank_digests) + "\n")
            (self.out_dir / "train_history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in self.history))
            self.curriculum.plot(self.out_dir / "curriculum.png")
            timing = time_section(self.traces, run_span.trace_id, title="# SFT: where the time went")
            if timing:
                (self.out_dir / "time.md").write_text("\n".join(timing), encoding="utf-8")
        # Release the DDP wrapper while its process group still exists: freed later (when the recipe is garbage
        # collected) it waits on peers that may have exited, which hung a rank at exit.
        self.accelerator.wait_for_everyone()
        self.model = self.accelerator.unwrap_model(self.model)
        if self.head is not None:
            self.head = self.accelerator.unwrap_model(self.head)
        self.accelerator.free_memory()
        self.accelerator.end_training()  # closes trackers and, under DDP, the process group: keep it last
        log.info("SFT done: %d steps, loss %.4f, weights sha256 %s, final model at %s", self.step, last["loss"],
                 digest[:16], final)
        return SFTResult(self.out_dir, final, self.step, last["loss"], digest, self.curriculum.current_stage.name)


TRACKER_PACKAGES = {"tensorboard": (is_tensorboard_available, "tensorboard"),
                    "wandb": (is_wandb_available, "wandb"), "mlflow": (is_mlflow_available, "mlflow")}


def _check_trackers(report_to: list[str]) -> list[str]:
    """The metric sinks to hand to accelerate; an unknown or uninstalled one is a clear error."""
    trackers = [t for t in report_to if t != "none"]
    for name in trackers:
        if name not in TRACKER_PACKAGES:
            raise ConfigError(f"sft.report_to: unknown tracker {name!r}; choose from {sorted(TRACKER_PACKAGES)}",
                              key="sft.report_to")
        available, package = TRACKER_PACKAGES[name]
        if not available():
            raise ConfigError(f"sft.report_to: {name!r} needs the {package} package (pip install {package})")
    return trackers


def _flat_hparams(cfg: PixelisConfig) -> dict[str, Any]:
    flat = {f"sft.{k}": v for k, v in cfg.sft.model_dump().items() if isinstance(v, (int, float, str, bool))}
    flat["seed"] = cfg.reproducibility.seed
    return flat


def train_sft(cfg: PixelisConfig, out_dir: Path, resume: Path | None = None, show_progress: bool = True,
              allow_config_change: bool = False, traces: Path | None = None) -> SFTResult:
    """Run SFT as configured; see `SFTRecipe` (`traces`: where spans are exported, default `out_dir/traces.jsonl`)."""
    return SFTRecipe(cfg, out_dir, resume, show_progress, allow_config_change, traces).run()


