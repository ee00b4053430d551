#!/usr/bin/env python
"""SFT training throughput: Pixelis `SFTRecipe.train_step()` versus a plain TRL `SFTTrainer`, same run.

Both sides train the same tiny checkpoint (each loads its own fresh copy from one directory), in float32 on the
CPU with the same torch thread count, on the same conversations (Pixelis' compact tool list as the system
message, the same images, tool turns included) and -- so that padding and sequence lengths match exactly -- on
the same batches in the same order: the batches the Pixelis curriculum sampler will draw are planned first and
TRL reads exactly those rows sequentially. Before timing, the first batch is collated by both pipelines and the
token ids, pixel values and number of trained tokens are compared.

Timing excludes set-up and the first `--warmup` optimizer steps of each side. By default the two loops are
interleaved step by step (a TRL `TrainerCallback` runs one Pixelis step after each TRL step), so a CPU shared
with other work slows both sides alike; `--mode sequential` runs Pixelis first, then TRL.

    python benchmarks/sft_throughput.py --size xs --steps 10     # quick
    python benchmarks/sft_throughput.py                          # size s, 20 timed steps, batch 4

Numbers are printed as a table and written to `<work>/sft_throughput.json`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

from cache import FAST_FAMILIES, ensure_model, ensure_suite

GOAL = 0.90


# ---------------------------------------------------------------------------------------------- inputs

# ---------------------------------------------------------------------------------------------- pixelis side

def build_recipe(args: argparse.Namespace, suite: Path, model_dir: Path, total_steps: int):
    from pixelis.core.config import load_config
    from pixelis.train.sft import SFTRecipe

    overrides = {
        "data.path": suite, "model.path": model_dir, "model.device": "cpu", "model.dtype": "float32",
        "sft.report_to": "[]", "sft.batch_size": args.batch_size, "sft.grad_accum": 1,
        "sft.max_steps": total_steps, "sft.learning_rate": args.lr, "agent.tool_prompt": "compact",
        "reproducibility.torch_threads": args.threads, "reproducibility.seed": args.seed,
        # Disabled curriculum = the final stage's mixture (all difficulties) for the whole run; with it enabled
        # only the short 'simple' items would be drawn. Either way TRL replays the same batches.
        "curriculum.enabled": "false" if not args.curriculum else "true",
    }
    cfg = load_config(None, [f"{k}={v}" for k, v in overrides.items()])
    return SFTRecipe(cfg, args.work / "pixelis_run", show_progress=False)


def plan_batches(recipe, n_batches: int) -> list[list[int]]:
    """The index batches the recipe's sampler will draw next (its state is restored afterwards)."""
    state = recipe.sampler.state_dict()
    planned = [recipe.sampler.next_batch(recipe.cfg.sft.batch_size) for _ in range(n_batches)]
    recipe.sampler.load_state_dict(state)
    return planned


def record_batches(recipe) -> list[list[int]]:
    """Wrap the sampler so every drawn batch is recorded (to check TRL really saw the same batches)."""
    drawn: list[list[int]] = []
    original = recipe.sampler.next_batch

    def next_batch(batch_size: int) -> list[int]:
        batch = original(batch_size)
        drawn.append(list(batch))
        return batch

    recipe.sampler.next_batch = next_batch
    return drawn


# ---------------------------------------------------------------------------------------------- TRL side

def trl_dataset(trajectories, order: list[int], system: str):
    """`to_hf_dataset` rows in `order`, with Pixelis' system message prepended and every image inlined.

    TRL's `prepare_multimodal_messages` fills `{"type": "image"}` placeholders from the `images` column only in
    non-tool messages (and counts only those), so a trajectory whose tool turns return images fails with
    "Number of images provided ... does not match". Inlining each image into its own content part (and leaving
    `images` empty) keeps the conversation identical; the processor collects images from every role's parts.
    """
    from pixelis.data.io import to_hf_dataset

    ds = to_hf_dataset(trajectories).select_columns(["images", "messages"]).select(order)

    def inline(batch: dict[str, list]) -> dict[str, list]:
        messages_out = []
        for images, messages in zip(batch["images"], batch["messages"]):
            pending = iter(images)
            conv = [{"role": "system", "content": [{"type": "text", "text": system}]}]
            for message in messages:
                parts = [{"type": "image", "image": next(pending)} if p["type"] == "image"
                         else {"type": "text", "text": p["text"]} for p in message["content"]]
                conv.append({"role": message["role"], "content": parts})
            if next(pending, None) is not None:
                raise ValueError("more images than image parts in a row")
            messages_out.append(conv)
        return {"messages": messages_out, "images": [[] for _ in messages_out]}

    return ds.with_transform(inline)


def build_trainer(args: argparse.Namespace, model_dir: Path, dataset, total_steps: int, warmup_steps: int,
                  callback) -> Any:
    import trl
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from pixelis.model.load import load_policy

    model, processor = load_policy(model_dir, dtype="float32", device="cpu")
    config = trl.SFTConfig(
        output_dir=str(args.work / "trl_run"), max_steps=total_steps,
        per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1,
        learning_rate=args.lr, lr_scheduler_type="cosine", warmup_steps=warmup_steps, weight_decay=0.0,
        logging_steps=1, save_strategy="no", report_to=[], dataloader_num_workers=0, use_cpu=True,
        seed=args.seed, disable_tqdm=True,
        bf16=False,  # SFTConfig defaults to bf16=True; both sides run float32
        gradient_checkpointing=False,  # SFTConfig defaults to True (recomputes activations); Pixelis does not
        assistant_only_loss=True,  # loss on assistant tokens only, as Pixelis (else image/tool tokens are trained)
        max_length=None,  # Pixelis trains untruncated samples (sft.max_length=None)
        train_sampling_strategy="sequential",  # the dataset is already in Pixelis' batch order
    )
    trainer = trl.SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=processor,
                             callbacks=[callback])
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def make_timer(warmup: int, between_steps: Callable[[], None] | None):
    """A TrainerCallback timing each TRL optimizer step after `warmup` (set-up and warm-up excluded).

    A step's time runs from the end of the previous callback to this step's `on_step_end`, so it covers all
    the trainer does per step (fetch + collate the batch, forward, loss, backward, optimizer, logging).
    `between_steps` (the Pixelis step, when interleaving) runs inside the callback, outside TRL's timing.
    """
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []
            self.mark: float | None = None

        def on_step_begin(self, args, state, control, **kwargs):
            if self.mark is None:
                self.mark = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            if state.global_step > warmup:
                self.times.append(now - self.mark)
            if between_steps is not None:
                between_steps()
            self.mark = time.perf_counter()

    return StepTimer()


# ---------------------------------------------------------------------------------------------- checks

def compare_first_batch(recipe, trainer, batch: list[int]) -> dict[str, Any]:
    """Collate the first batch with both pipelines and compare what the model would see."""
    import torch

    from pixelis.train.sft_batch import collate_sft

    ours = collate_sft([recipe.rendered[i] for i in batch], recipe.pad_id, recipe.cfg.sft.action_token_weight)
    theirs = trainer.data_collator([trainer.train_dataset[k] for k in range(len(batch))])
    mask = theirs["attention_mask"].bool()
    same_shape = ours["input_ids"].shape == theirs["input_ids"].shape
    same_ids = bool(same_shape and torch.equal(ours["input_ids"][mask], theirs["input_ids"][mask])
                    and torch.equal(ours["attention_mask"], theirs["attention_mask"]))
    pixels = ours.get("pixel_values") is not None and theirs.get("pixel_values") is not None and \
        ours["pixel_values"].shape == theirs["pixel_values"].shape and \
        bool(torch.allclose(ours["pixel_values"], theirs["pixel_values"].float(), atol=1e-5))
    return {
        "same_input_ids": same_ids, "same_pixel_values": pixels,
        "pixelis_shape": list(ours["input_ids"].shape), "trl_shape": list(theirs["input_ids"].shape),
        "pixelis_trained_tokens": int((ours["labels"] != -100).sum()),
        "trl_trained_tokens": int((theirs["labels"] != -100).sum()),
    }


def profile_pixelis(recipe, batches: list[list[int]]) -> dict[str, float]:
    """Mean seconds per step of each part of a Pixelis step (collate, forward, loss, backward, optimizer)."""
    from pixelis.model.chat import MODEL_INPUT_KEYS
    from pixelis.train.loss import masked_imitation_loss
    from pixelis.train.sft_batch import collate_sft

    parts = {"collate": 0.0, "forward": 0.0, "loss": 0.0, "backward": 0.0, "optimizer": 0.0}
    recipe.model.train()
    for indices in batches:
        t0 = time.perf_counter()
        batch = collate_sft([recipe.rendered[i] for i in indices], recipe.pad_id, recipe.cfg.sft.action_token_weight)
        inputs = {k: batch[k] for k in MODEL_INPUT_KEYS if k != "labels" and batch.get(k) is not None}
        t1 = time.perf_counter()
        out = recipe.model(**inputs)
        t2 = time.perf_counter()
        loss = masked_imitation_loss(out.logits, inputs["input_ids"], batch["weights"])
        t3 = time.perf_counter()
        loss.backward()
        t4 = time.perf_counter()
        recipe.optimizer.step()
        recipe.optimizer.zero_grad()
        t5 = time.perf_counter()
        for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            parts[key] += dt / len(batches)
    return parts


def profile_trl_collate(trainer, n_batches: int, batch_size: int) -> float:
    """Mean seconds TRL spends per batch reading rows (image decode) and collating them (template + processor)."""
    t0 = time.perf_counter()
    for b in range(n_batches):
        trainer.data_collator([trainer.train_dataset[b * batch_size + k] for k in range(batch_size)])
    return (time.perf_counter() - t0) / n_batches


# ---------------------------------------------------------------------------------------------- report

def summarise(name: str, times: list[float], batches: list[list[int]], lengths: list[int]) -> dict[str, Any]:
    elapsed = sum(times)
    samples = sum(len(b) for b in batches)
    tokens = sum(lengths[i] for b in batches for i in b)
    return {
        "pipeline": name, "steps_timed": len(times), "batch": len(batches[0]) if batches else 0,
        "seconds": elapsed, "samples_per_s": samples / elapsed, "tokens_per_s": tokens / elapsed,
        "median_step_s": statistics.median(times), "tokens_timed": tokens,
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'pipeline':<10} {'steps timed':>11} {'batch':>5} {'seconds':>8} {'samples/s':>10} {'tokens/s':>9} "
          f"{'median step s':>13}")
    for r in rows:
        print(f"{r['pipeline']:<10} {r['steps_timed']:>11} {r['batch']:>5} {r['seconds']:>8.2f} "
              f"{r['samples_per_s']:>10.3f} {r['tokens_per_s']:>9.0f} {r['median_step_s']:>13.3f}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("runs/bench"), help="cache + output directory")
    p.add_argument("--steps", type=int, default=20, help="timed optimizer steps per pipeline")
    p.add_argument("--warmup", type=int, default=3, help="untimed optimizer steps before timing")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--size", choices=["xs", "s"], default="s", help="tiny model size")
    p.add_argument("--n", type=int, default=36, help="synthetic suite size")
    p.add_argument("--families", nargs="+", default=list(FAST_FAMILIES), help="suite families (OCR ones are slow)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (both sides)")
    p.add_argument("--mode", choices=["interleaved", "sequential"], default="interleaved",
                   help="interleave the two loops step by step, or run Pixelis then TRL")
    p.add_argument("--curriculum", action="store_true",
                   help="keep Pixelis' curriculum on (first stage draws only 'simple' items)")
    p.add_argument("--profile", action="store_true",
                   help="also break a Pixelis step into parts, and time TRL's collate")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        p.error("--steps >= 1, --warmup >= 0, --batch-size >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    import datasets
    import torch
    import transformers
    import trl

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    logging.getLogger("pixelis").setLevel(logging.WARNING)

    from pixelis.agent.prompt import ToolPrompt
    from pixelis.data.io import load_split
    from pixelis.tools.registry import ToolRegistry

    args.work.mkdir(parents=True, exist_ok=True)
    total = args.warmup + args.steps
    t_setup = time.perf_counter()
    suite = ensure_suite(args.work, args.n, args.seed, args.families)
    model_dir = ensure_model(args.work, suite, args.size, args.seed)

    recipe = build_recipe(args, suite, model_dir, total)
    planned = plan_batches(recipe, total)
    drawn = record_batches(recipe)
    lengths = [len(r) for r in recipe.rendered]
    system = ToolPrompt.build(ToolRegistry.default().schemas(), "compact").system
    order = [i for batch in planned for i in batch]
    dataset = trl_dataset(load_split(suite, "train"), order, system)

    pixelis_times: list[float] = []
    pixelis_losses: list[float] = []

    def pixelis_step() -> None:
        t0 = time.perf_counter()
        logged = recipe.train_step()
        dt = time.perf_counter() - t0
        if recipe.step > args.warmup:
            pixelis_times.append(dt)
        pixelis_losses.append(logged["loss"])

    timer = make_timer(args.warmup, pixelis_step if args.mode == "interleaved" else None)
    trainer = build_trainer(args, model_dir, dataset, total, int(recipe.cfg.sft.warmup_ratio * total), timer)
    check = compare_first_batch(recipe, trainer, planned[0])
    print(f"set-up {time.perf_counter() - t_setup:.1f} s; first batch, both collators: "
          f"same input_ids {check['same_input_ids']}, same pixel_values {check['same_pixel_values']}, "
          f"trained tokens pixelis {check['pixelis_trained_tokens']} / trl {check['trl_trained_tokens']}", flush=True)

    profile: dict[str, Any] = {}
    if args.profile:  # before training; its Pixelis optimizer steps act as extra (untimed) warm-up
        profile["pixelis_step_parts_s"] = profile_pixelis(recipe, planned[: min(3, total)])
        profile["trl_read_and_collate_s"] = profile_trl_collate(trainer, min(3, total), args.batch_size)
        print("profile (mean s/step): pixelis " + ", ".join(f"{k} {v:.3f}" for k, v in
                                                          profile["pixelis_step_parts_s"].items())
              + f"; trl read+collate {profile['trl_read_and_collate_s']:.3f}", flush=True)

    print(f"training: {total} steps per pipeline ({args.warmup} warm-up), mode {args.mode}", flush=True)
    if args.mode == "sequential":
        for _ in range(total):
            pixelis_step()
    trainer.train()

    if drawn != planned:
        raise RuntimeError("Pixelis drew different batches than planned; the comparison would be unfair")
    trl_losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    timed_batches = planned[args.warmup:]
    rows = [summarise("pixelis", pixelis_times, timed_batches, lengths),
            summarise("trl", timer.times, timed_batches, lengths)]
    ratio = rows[0]["samples_per_s"] / rows[1]["samples_per_s"]
    median_ratio = rows[1]["median_step_s"] / rows[0]["median_step_s"]
    print_table(rows)
    print("tokens/s counts every non-pad token, image placeholders included (identical batches on both sides)")
    print(f"loss first->last: pixelis {pixelis_losses[0]:.3f} -> {pixelis_losses[-1]:.3f} "
          f"(weighted: tool-call tokens x{recipe.cfg.sft.action_token_weight:g}), "
          f"trl {trl_losses[0]:.3f} -> {trl_losses[-1]:.3f}")
    optim = getattr(trainer.args.optim, "value", trainer.args.optim)
    trl_notes = ["assistant_only_loss=True", "gradient_checkpointing=False (SFTConfig default True)",
                 "bf16=False (SFTConfig default True)", f"optim={optim}",
                 "train_sampling_strategy=sequential over Pixelis' planned batches",
                 "images inlined into message parts (TRL does not fill image placeholders of tool messages)"]
    print("TRL settings: " + "; ".join(trl_notes))
    print(f"Pixelis settings: curriculum {'on' if args.curriculum else 'off (all difficulties)'}, "
          f"action_token_weight {recipe.cfg.sft.action_token_weight:g}, torch.optim.AdamW defaults; "
          f"TRL's assistant mask also trains the newline after each <|im_end|> (hence more trained tokens)")
    print(f"\nratio pixelis/trl = {ratio:.2f} (goal >= {GOAL:.2f})   [median-step ratio {median_ratio:.2f}]")

    result = {
        "ratio_pixelis_over_trl": ratio, "median_step_ratio": median_ratio, "goal": GOAL,
        "meets_goal": ratio >= GOAL, "pixelis": rows[0], "trl": rows[1], "first_batch_check": check,
        "losses": {"pixelis": pixelis_losses, "trl": trl_losses}, "profile": profile,
        "config": {"size": args.size, "n": args.n, "families": args.families, "seed": args.seed,
                   "batch_size": args.batch_size, "warmup": args.warmup, "steps": args.steps, "lr": args.lr,
                   "threads": torch.get_num_threads(), "dtype": "float32", "device": "cpu", "mode": args.mode,
                   "curriculum": args.curriculum, "train_samples": len(recipe.train_set),
                   "suite": str(suite), "model": str(model_dir), "trl_settings": trl_notes},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "trl": trl.__version__,
                     "datasets": datasets.__version__},
    }
    out = args.work / "sft_throughput.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
