#!/usr/bin/env python
"""Agent rollout throughput: `Agent.run_many` at several batch sizes on the same samples, same run.

Every batch size rolls out the same samples greedily with the real tools; the trajectories of each batch size
are compared with batch size 1 (they should match: rows are left-padded and masked). Use a trained checkpoint
(e.g. `runs/demo/sft/final` after `make demo`) for realistic turn counts; without `--model` an untrained tiny
model is built, which mostly writes until `--max-new-tokens`.

    python benchmarks/rollout_throughput.py --model runs/demo/sft/final --data runs/demo/data/test.jsonl
    python benchmarks/rollout_throughput.py --n 8 --batch-sizes 1 8      # quick, untrained tiny model

Numbers are printed as a table and written to `<work>/rollout_throughput.json`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from cache import FAST_FAMILIES, ensure_model, ensure_suite


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("runs/bench"), help="cache + output directory")
    p.add_argument("--model", type=Path, help="checkpoint dir (default: a cached untrained tiny model)")
    p.add_argument("--data", type=Path, help="trajectory JSONL or suite dir (default: a cached synthetic suite)")
    p.add_argument("--n", type=int, default=16, help="samples rolled out per batch size")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--max-turns", type=int, default=6)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from pixelis.agent import Agent, AgentLimits, ModelPolicy
    from pixelis.data.benchmarks import load_eval_data
    from pixelis.model.load import load_policy

    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    data, model_dir = args.data, args.model
    if data is None:
        data = ensure_suite(args.work, 36, args.seed, list(FAST_FAMILIES))
    if model_dir is None:
        model_dir = ensure_model(args.work, data, "s", args.seed)
    samples = load_eval_data(data, split="test", limit=args.n)
    model, processor = load_policy(model_dir, dtype="float32", device="cpu")
    limits = AgentLimits(max_new_tokens=args.max_new_tokens, max_turns=args.max_turns, wall_time_s=3600.0)

    def rollout(batch_size: int):
        agent = Agent(ModelPolicy(model, processor), limits=limits, seed=args.seed, tool_prompt="compact",
                      batch_size=batch_size)
        start = time.perf_counter()
        trajectories = agent.run_many(samples)
        return time.perf_counter() - start, trajectories

    rollout(min(args.batch_sizes))  # warm-up: first calls pay one-off allocation costs
    rows, reference = [], None
    for batch_size in args.batch_sizes:
        seconds, trajectories = rollout(batch_size)
        texts = [[s.raw_text or s.thought for s in t.steps] + [t.answer] for t in trajectories]
        reference = reference or texts
        rows.append({"batch_size": batch_size, "seconds": seconds, "samples_per_s": len(samples) / seconds,
                     "turns": sum(len(t.steps) + (t.answer is not None) for t in trajectories),
                     "same_as_first": sum(a == b for a, b in zip(texts, reference))})
    base = rows[0]["samples_per_s"]
    print(f"\n{len(samples)} samples from {data}, model {model_dir}, {args.threads} threads")
    print(f"{'batch':>5} {'seconds':>8} {'samples/s':>10} {'speed-up':>8} {'turns':>6} {'same':>6}")
    for row in rows:
        print(f"{row['batch_size']:>5} {row['seconds']:>8.1f} {row['samples_per_s']:>10.3f} "
              f"{row['samples_per_s'] / base:>8.2f} {row['turns']:>6} {row['same_as_first']:>3}/{len(samples)}")
    out = args.work / "rollout_throughput.json"
    out.write_text(json.dumps({"model": str(model_dir), "data": str(data), "n": len(samples),
                               "threads": args.threads, "rows": rows}, indent=2) + "\n")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
