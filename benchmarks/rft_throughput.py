#!/usr/bin/env python
"""RFT throughput: `pixelis train --mode rft` steps versus TRL `GRPOTrainer` with `pixelis.integrations.trl`.

Both sides train the same tiny checkpoint (each loads its own copy from one directory) in float32 on the CPU
with the same thread count, on the same prompts of the same suite, with the same group size, temperature,
top-p, KL weight, loss type and token limits, and the same pixel tools: Pixelis rolls out through its batched
agent loop (`Agent.run_many`), TRL through its own generate-and-tool loop with `PixelisToolEnv`. Both show the
tools alike (`--tool-prompt`): `compact`, the default and what the demo's SFT model is trained with, puts the
one-line-per-tool list in the system message on both sides (TRL's template is made to skip its `tools=`, see
`pixelis.integrations.trl.compact_tool_prompt`; a test checks the two prompts are the same text); `full` shows the
JSON schemas through the chat template on both sides.
Token limits: Pixelis allows `--max-new-tokens` per turn and `--max-turns` turns; TRL gets
`max_completion_length = max_new_tokens * max_turns` and `max_tool_calling_iterations = max_turns - 1`.

The measure is rollouts per second (prompts x generations per optimizer step / step time), over the steps
after `--warmup`; the two sides run one after the other. Start from an SFT checkpoint (`--model`) so tool calls
happen; by default a random tiny model is built, which measures generation and update only.

    python benchmarks/rft_throughput.py --steps 3                         # quick, random xs model
    python benchmarks/rft_throughput.py --model runs/demo/sft/final --data runs/demo/data

Numbers are printed and written to `<work>/rft_throughput.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from cache import FAST_FAMILIES, ensure_model, ensure_suite

GOAL = 1.0


def pixelis_step_times(args: argparse.Namespace, suite: Path, model_dir: Path) -> tuple[list[float], list[int], dict]:
    """Seconds and generated tokens per optimizer step of the Pixelis recipe, and the last step's metrics."""
    from pixelis.core.config import load_config
    from pixelis.train.rft import RFTRecipe

    values = {
        "data.path": suite, "model.path": model_dir, "model.device": "cpu", "model.dtype": "float32",
        "rft.max_steps": args.warmup + args.steps, "rft.prompts_per_step": args.prompts,
        "rft.num_generations": args.generations, "rft.temperature": args.temperature, "rft.top_p": args.top_p,
        "rft.beta": args.beta, "rft.loss_type": "dapo", "rft.num_iterations": 1, "rft.rewards": "{task: 1.0, format: 0.2}",
        "agent.max_new_tokens": args.max_new_tokens, "agent.max_turns": args.max_turns,
        "agent.tool_prompt": args.tool_prompt, "agent.batch_size": args.prompts * args.generations,
        "agent.tool_workers": args.tool_workers,
        "reproducibility.torch_threads": args.threads,
        "reproducibility.seed": args.seed,
    }
    cfg = load_config(None, [f"{k}={v}" for k, v in values.items() if v is not None])
    recipe = RFTRecipe(cfg, args.work / f"pixelis-run-{time.time_ns()}", show_progress=False)
    times, tokens, metrics = [], [], {}
    for _ in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        metrics, rollouts = recipe.train_step()
        times.append(time.perf_counter() - t0)
        tokens.append(sum(turn.generation.num_tokens for traj in rollouts for turn in traj.turns))
    return times[args.warmup:], tokens[args.warmup:], metrics


def trl_step_times(args: argparse.Namespace, suite: Path, model_dir: Path) -> tuple[list[float], list[int], dict]:
    """Seconds and completion tokens (generated, plus tool results when calls happen) per optimizer step of TRL's
    GRPOTrainer with the Pixelis environment and rewards, and the last step's logged metrics."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import torch
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from pixelis.data.io import load_split
    from pixelis.integrations.trl import PixelisToolEnv, compact_tool_prompt, trl_dataset, trl_rewards
    from pixelis.model.load import load_policy

    torch.set_num_threads(args.threads)
    samples = [t for t in load_split(suite, "train") if t.target is not None and not t.video]
    model, processor = load_policy(model_dir, dtype="float32", device="cpu")
    system = None
    if args.tool_prompt == "compact":
        system = compact_tool_prompt(processor)
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            self.t0 = time.perf_counter()

        def on_step_end(self, *_, **__):
            times.append(time.perf_counter() - self.t0)

    config = GRPOConfig(
        output_dir=str(args.work / "trl-run"), per_device_train_batch_size=args.prompts * args.generations,
        num_generations=args.generations, max_completion_length=args.max_new_tokens * args.max_turns,
        max_tool_calling_iterations=args.max_turns - 1, temperature=args.temperature, top_p=args.top_p,
        beta=args.beta, loss_type="dapo", num_iterations=1, max_steps=args.warmup + args.steps, use_cpu=True,
        bf16=False, gradient_checkpointing=False, report_to=[], logging_steps=1, save_strategy="no",
        seed=args.seed, learning_rate=1e-5)
    trainer = GRPOTrainer(model=model, args=config, train_dataset=trl_dataset(samples, system=system),
                          processing_class=processor,
                          environment_factory=PixelisToolEnv, reward_funcs=trl_rewards({"task": 1.0, "format": 0.2}),
                          callbacks=[Timer()])
    trainer.train()
    logged = [row for row in trainer.state.log_history if "reward" in row]
    rollouts = args.prompts * args.generations
    tokens = [round(row["completions/mean_length"] * rollouts) for row in logged]
    return times[args.warmup:], tokens[args.warmup:], logged[-1] if logged else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("runs/bench"))
    parser.add_argument("--model", type=Path, help="checkpoint to start from (default: a cached random tiny model)")
    parser.add_argument("--data", type=Path, help="suite directory (default: a cached suite of the fast families)")
    parser.add_argument("--size", default="xs", choices=["xs", "s"])
    parser.add_argument("--n", type=int, default=36)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=2, help="prompts per optimizer step")
    parser.add_argument("--generations", type=int, default=4, help="rollouts per prompt (the GRPO group)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--max-turns", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--beta", type=float, default=0.04)
    parser.add_argument("--tool-prompt", default="compact", choices=["compact", "full"],
                        help="how both sides show the tools (compact: the demo's SFT form)")
    parser.add_argument("--tool-workers", type=int, help="Pixelis: threads per turn's tool calls (default: one per core)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    suite = args.data or ensure_suite(args.work, args.n, args.seed, list(FAST_FAMILIES))
    model_dir = args.model or ensure_model(args.work, suite, args.size, args.seed)
    rollouts = args.prompts * args.generations

    ours, our_tokens, our_metrics = pixelis_step_times(args, suite, model_dir)
    theirs, their_tokens, their_metrics = trl_step_times(args, suite, model_dir)
    rate = {name: rollouts / statistics.median(t) for name, t in (("pixelis", ours), ("trl", theirs))}
    token_rate = {name: sum(n) / sum(t) for name, t, n in (("pixelis", ours, our_tokens), ("trl", theirs, their_tokens))}
    ratio = rate["pixelis"] / rate["trl"]
    result = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "model": str(model_dir), "data": str(suite), "rollouts_per_step": rollouts,
        "pixelis_step_s": ours, "trl_step_s": theirs, "rollouts_per_s": rate, "ratio": ratio, "goal": GOAL,
        "pixelis_tokens": our_tokens, "trl_tokens": their_tokens, "tokens_per_s": token_rate,
        "pixelis_last_step": {k: our_metrics[k] for k in ("tool_calls", "rapr", "reward") if k in our_metrics},
        "trl_last_step": {k: their_metrics[k] for k in ("tools/call_frequency", "reward") if k in their_metrics},
    }
    (args.work / "rft_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'pipeline':<10}{'median step s':>15}{'rollouts/s':>12}{'tokens/s':>10}")
    for name, t in (("pixelis", ours), ("trl", theirs)):
        print(f"{name:<10}{statistics.median(t):>15.2f}{rate[name]:>12.3f}{token_rate[name]:>10.1f}")
    print(f"ratio pixelis/trl = {ratio:.2f} (goal >= {GOAL:.1f}); tool calls per rollout: pixelis "
          f"{our_metrics.get('tool_calls', float('nan')):.2f}, trl {their_metrics.get('tools/call_frequency', 0):.2f}")


if __name__ == "__main__":
    main()
