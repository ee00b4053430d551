"""Grounding pre-training: teach a (tiny) model to locate, point at and name objects before SFT.

A real Qwen3-VL arrives pre-trained on grounding; the tiny model arrives blind. This stage trains all weights
on generated grounding tasks (`pixelis.data.grounding`: boxes, points, colours, shapes, large labels), in the
agent's own text forms, so SFT starts from a policy that can see. Every step draws fresh samples from the
seeded `train` stream (sample index = step x batch), so a run sees `max_steps x batch_size` distinct images
and resumes exactly without any sampler state; `pretrain.render_workers` DataLoader processes draw and render
the next steps while one trains. Besides the answer text (and the aux box head on the calls), two dense losses
on the visual tokens' hidden states teach where things are (`pixelis.train.region`): each token's covered share
(`pretrain.region_weight`) and a pointer from the question to the asked-about object's tokens
(`pretrain.pointer_weight`); the first `pretrain.single_object_steps` steps show one object per scene, so the
model learns to localise before it must also search. Every `pretrain.eval_interval` steps the policy answers the
fixed held-out stream (images never seen in training) by greedy generation, scored per task and object size.
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
from torch.utils.data import DataLoader, Dataset

from pixelis.core.config import ConfigError, PixelisConfig, config_hash
from pixelis.core.errors import CheckpointError, TrainingError
from pixelis.core.repro import get_reproducible_dataloader_kwargs, record_artifact
from pixelis.core.tracing import TracedOperation
from pixelis.eval.grounding import evaluate_grounding
from pixelis.train.sft_batch import collate_sft, render_sft_sample
from pixelis.model.load import load_policy, resolve_device
from pixelis.data.grounding import OBJECTS, grounding_sample
from pixelis.train.checkpoint import (config_changes, load_checkpoint, read_state, save_checkpoint, save_model_dir,
                                      weights_hash)
from pixelis.train.loss import ArgumentHead, batch_losses, call_targets
from pixelis.train.region import RegionHead, RegionTerm
from pixelis.train.run_setup import ensure_manifest, step_progress
from pixelis.train.sft import lr_at

log = logging.getLogger("pixelis.pretrain")
RECIPE = "pretrain"
# Config sections a resumed pre-training run must share with its checkpoint (the others do not affect it).
RESUME_CHECKED = ("pretrain.", "reproducibility.", "model.")


@dataclass
class PretrainResult:
    """What a finished pre-training run produced."""

    out_dir: Path
    final_model_dir: Path
    steps: int
    last_loss: float
    weights_sha256: str
    heldout: dict[str, Any]


def step_indices(step: int, batch_size: int, world_size: int, rank: int) -> range:
    """The `train` stream indices rank `rank` trains on at `step` (disjoint across ranks and steps)."""
    start = (step * world_size + rank) * batch_size
    return range(start, start + batch_size)


@dataclass
class StepBatch:
    """One step's generated samples, rendered and collated: what `PretrainRecipe.train_step` trains on."""

    batch: dict[str, Any]
    call_targets: list[list[list[float] | None]]
    regions: list[list[list[int]]]
    targets: list[list[int]]


class StepBatches(Dataset):
    """Item k is the `StepBatch` of step `first_step + k`, up to `pretrain.max_steps` (a map-style data set, so a
    DataLoader's workers can render steps ahead in order)."""

    def __init__(self, cfg: PixelisConfig, processor: Any, pad_id: int, world_size: int, rank: int,
                 first_step: int):
        self.cfg, self.processor, self.pad_id = cfg, processor, pad_id
        self.world_size, self.rank, self.first_step = world_size, rank, first_step

    def __len__(self) -> int:
        return max(0, self.cfg.pretrain.max_steps - self.first_step)

    def __getitem__(self, k: int) -> StepBatch:
        cfg, step = self.cfg.pretrain, self.first_step + k
        objects = (1, 1) if step < cfg.single_object_steps else OBJECTS
        samples = [grounding_sample(self.cfg.reproducibility.seed, "train", i, cfg.task_weights, objects)
                   for i in step_indices(step, cfg.batch_size, self.world_size, self.rank)]
        trajectories = [s.trajectory() for s in samples]
        batch = collate_sft([render_sft_sample(self.processor, t) for t in trajectories], self.pad_id)
        return StepBatch(batch, [call_targets(t) for t in trajectories], [s.regions for s in samples],
                         [s.box for s in samples])


def _as_built(item: StepBatch) -> StepBatch:
    """The DataLoader's collate step: items are whole batches already (the default would convert them)."""
    return item


class PretrainRecipe:
    """One grounding pre-training run of the checkpoint at `model_dir` into `out_dir`; call `run()`."""

    def __init__(self, cfg: PixelisConfig, out_dir: Path, model_dir: Path, resume: Path | None = None,
                 show_progress: bool = True):
        self.cfg, self.out_dir, self.resume, self.show_progress = cfg, Path(out_dir), resume, show_progress
        self.accelerator = Accelerator(cpu=resolve_device(cfg.model.device).type == "cpu")
        ensure_manifest(self.accelerator, self.out_dir, cfg, "model-pretrain")
        self.model, self.processor = load_policy(model_dir, dtype=cfg.model.dtype, device=str(self.accelerator.device))
        hidden = self.model.config.get_text_config().hidden_size
        self.head = ArgumentHead(hidden) if cfg.pretrain.aux_weight > 0 else None
        uses_region = cfg.pretrain.region_weight > 0 or cfg.pretrain.pointer_weight > 0
        self.region_head = RegionHead(hidden) if uses_region else None
        heads = [h for h in (self.head, self.region_head) if h is not None]
        params = list(self.model.parameters()) + [p for h in heads for p in h.parameters()]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.pretrain.learning_rate,
                                           weight_decay=cfg.pretrain.weight_decay,
                                           fused=self.accelerator.device.type in ("cpu", "cuda"))
        self.model, self.optimizer, *heads = self.accelerator.prepare(self.model, self.optimizer, *heads)
        if self.head is not None:
            self.head = heads.pop(0)
        if self.region_head is not None:
            self.region_head = heads.pop(0)
        self.image_token_id = self.accelerator.unwrap_model(self.model).config.image_token_id
        self.pad_id = self.processor.tokenizer.pad_token_id
        self.step = 0
        self.history: list[dict[str, Any]] = []

    def _unwrapped_head(self) -> ArgumentHead | None:
        return None if self.head is None else self.accelerator.unwrap_model(self.head)

    def _region_extras(self) -> dict[str, Any] | None:
        """The region head's weights, for checkpoints (the final model does not keep the head)."""
        if self.region_head is None:
            return None
        return {"region_head": self.accelerator.unwrap_model(self.region_head).state_dict()}

    # ------------------------------------------------------------------------------------------ steps

    def batches(self) -> DataLoader:
        """The rendered batches of steps `self.step` .. `max_steps - 1`, in order; `pretrain.render_workers` processes
        build them ahead of the optimizer (each is a pure function of the seed and step, so weights do not change)."""
        steps = StepBatches(self.cfg, self.processor, self.pad_id, self.accelerator.num_processes,
                            self.accelerator.process_index, self.step)
        workers = self.cfg.pretrain.render_workers
        return DataLoader(steps, batch_size=None, collate_fn=_as_built, prefetch_factor=2 if workers else None,
                          **get_reproducible_dataloader_kwargs(self.cfg.reproducibility.seed, workers))

    def train_step(self, built: StepBatch) -> dict[str, float]:
        """One optimizer step on the freshly generated samples of `built` (the batch of step `self.step`)."""
        cfg = self.cfg.pretrain
        self.model.train()
        lr = lr_at(self.step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        region = None if self.region_head is None else RegionTerm(
            self.region_head, cfg.region_weight, cfg.pointer_weight, built.regions, built.targets,
            self.image_token_id, self.processor.image_processor.merge_size)
        losses = batch_losses(self.model, self.head, built.batch, built.call_targets, cfg.aux_weight,
                              self.accelerator.device, region)
        self.accelerator.backward(losses["loss"])
        self.optimizer.step()
        self.optimizer.zero_grad()
        logged = {k: v.item() for k, v in losses.items()}
        if not math.isfinite(logged["loss"]):
            raise TrainingError(f"non-finite pre-training loss ({logged['loss']}) at step {self.step + 1}; lower "
                                "pretrain.learning_rate (nothing was saved for this step)")
        self.step += 1
        return {**logged, "lr": lr}

    def evaluate(self) -> dict[str, Any]:
        """Held-out grounding metrics of the current weights (rank 0's numbers; every rank computes them)."""
        result = evaluate_grounding(self.accelerator.unwrap_model(self.model), self.processor,
                                    self.cfg.pretrain.heldout_samples, self.cfg.pretrain.task_weights)
        if self.accelerator.is_main_process:
            path = self.out_dir / "heldout" / f"step-{self.step:06d}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r) + "\n" for r in result["samples"]), encoding="utf-8")
        return result["metrics"]

    # ------------------------------------------------------------------------------------------ save

    def save(self) -> Path:
        """Write `RUN/checkpoint-K` atomically (weights, head, optimizer, RNG, history)."""
        state = {"recipe": RECIPE, "step": self.step, "world_size": self.accelerator.num_processes,
                 "history": self.history, "config_hash": config_hash(self.cfg),
                 "config": self.cfg.model_dump(mode="json")}
        return save_checkpoint(self.accelerator, self.out_dir, self.step,
                               model=self.accelerator.unwrap_model(self.model), head=self._unwrapped_head(),
                               optimizer=self.optimizer, rank_state={}, state=state, extras=self._region_extras())

    def load(self, path: Path) -> None:
        """Continue from a pre-training checkpoint (an SFT checkpoint is refused)."""
        saved = read_state(path)
        if saved.get("recipe") != RECIPE:
            raise CheckpointError(f"--resume {path}: not a grounding pre-training checkpoint")
        changes = config_changes(saved["config"], self.cfg.model_dump(mode="json"), within=RESUME_CHECKED)
        if changes:
            raise ConfigError(f"--resume {path}: the config differs from the checkpoint's: {'; '.join(changes)}; "
                              "restore it to resume exactly", key=changes[0].split(":")[0])
        state = load_checkpoint(path, model=self.accelerator.unwrap_model(self.model), head=self._unwrapped_head(),
                                optimizer=self.optimizer, rank=self.accelerator.process_index,
                                world_size=self.accelerator.num_processes)
        if self.region_head is not None:
            if not (state["extras"] or {}).get("region_head"):
                raise CheckpointError(f"--resume {path}: the checkpoint has no region head state")
            self.accelerator.unwrap_model(self.region_head).load_state_dict(state["extras"]["region_head"])
        self.step, self.history = state["step"], state["history"]
        log.info("resumed from %s at step %d", path, self.step)

    def save_final(self, heldout: dict[str, Any]) -> Path:
        """The pre-trained model as a loadable checkpoint, with its aux head and held-out metrics."""
        return save_model_dir(self.accelerator, self.out_dir / "final", model=self.accelerator.unwrap_model(self.model),
                              processor=self.processor, head=self._unwrapped_head(),
                              files={"grounding.json": json.dumps(heldout, indent=2) + "\n"})

    # ------------------------------------------------------------------------------------------ run

    def run(self) -> PretrainResult:
        """Train to `pretrain.max_steps` (resuming first when asked), evaluating and saving on the way."""
        cfg = self.cfg.pretrain
        if self.resume is not None:
            self.load(self.resume)
        last: dict[str, float] = {"loss": float("nan")}
        heldout: dict[str, Any] = next((r["heldout"] for r in reversed(self.history) if "heldout" in r), {})
        show = self.show_progress and self.accelerator.is_main_process
        with TracedOperation("pretrain.run", "train", {"max_steps": cfg.max_steps}), \
                step_progress("pretrain", show) as progress:
            task = progress.add_task("pretrain", total=cfg.max_steps, completed=self.step, info="")
            for built in self.batches():
                last = self.train_step(built)
                record: dict[str, Any] = {"step": self.step, **last}
                if self.step % cfg.eval_interval == 0 or self.step == cfg.max_steps:
                    with TracedOperation("pretrain.evaluate", "train", {"step": self.step}):
                        heldout = self.evaluate()
                    record["heldout"] = heldout
                    log.info("step %d held-out %s", self.step, json.dumps(headline(heldout)))
                self.history.append(record)
                if self.step % cfg.save_interval == 0 or self.step == cfg.max_steps:
                    self.save()
                info = f"loss {last['loss']:.3f} lr {last['lr']:.2e}"
                progress.update(task, completed=self.step, info=info)
                if not show and self.step % 50 == 0:
                    log.info("step %d/%d %s", self.step, cfg.max_steps, info)
        final = self.save_final(heldout)
        digest = weights_hash(self.accelerator.unwrap_model(self.model))
        if self.accelerator.is_main_process:
            record_artifact(self.out_dir, "final_weights", digest)
            (self.out_dir / "pretrain_history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in self.history))
            (self.out_dir / "grounding.json").write_text(json.dumps(heldout, indent=2) + "\n", encoding="utf-8")
            from pixelis.eval.grounding import plot_history

            plot_history(self.history, self.out_dir / "grounding.png")
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()
        log.info("pre-training done: %d steps, loss %.4f, weights sha256 %s, model at %s", self.step, last["loss"],
                 digest[:16], final)
        return PretrainResult(self.out_dir, final, self.step, last["loss"], digest, heldout)


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    """The held-out numbers worth a log line: box IoU>=0.5, point-in-box, attribute and label accuracy."""
    keys = ("box_iou50", "point_in_box", "attribute_accuracy", "label_accuracy", "valid")
    return {k: round(metrics[k], 3) for k in keys if metrics.get(k) is not None}


def pretrain(cfg: PixelisConfig, out_dir: Path, model_dir: Path, resume: Path | None = None,
             show_progress: bool = True) -> PretrainResult:
    """Run grounding pre-training as configured; see `PretrainRecipe`."""
    return PretrainRecipe(cfg, out_dir, model_dir, resume, show_progress).run()
