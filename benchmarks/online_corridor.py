"""How well the KL corridor separates benign online updates from confident garbage, on a real checkpoint.

For each of `--queries` queries of `--data` the policy's own sampled trajectory (what a confident vote would hand
the worker) and a garbage trajectory (random-letter reasoning and answer) each get `--updates` consecutive
updates at every `--lr`, from fresh copies of the model; the corridor's probe KL (policy vs EMA over the exemplar
and the other queries' rollouts) is printed per update, with the ratio min(garbage) / max(benign). A ratio above 1
means some `online.kl_max` between the two rejects all garbage and accepts all benign updates.

    .venv/bin/python benchmarks/online_corridor.py --model runs/demo/sft/final --data runs/demo/data/test.jsonl
"""

from __future__ import annotations

import argparse
import copy
import random
import string
from dataclasses import replace

import torch

from pixelis.agent import Agent, AgentLimits, ModelPolicy, SamplingParams
from pixelis.agent.prompt import ToolPrompt
from pixelis.core.config import OnlineConfig
from pixelis.core.repro import set_global_seed
from pixelis.core.trajectory import read_jsonl
from pixelis.model.load import load_policy
from pixelis.online.update import OnlineUpdater
from pixelis.tools.registry import ToolRegistry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="A trajectory JSONL (e.g. a suite's test.jsonl).")
    parser.add_argument("--queries", type=int, default=6)
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--lr", type=float, nargs="+", default=[1e-3, 1e-2])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    set_global_seed(0)
    model, processor = load_policy(args.model)
    samples = read_jsonl(args.data)[: args.queries]
    tools = ToolRegistry.default()
    prompt = ToolPrompt.build(tools.schemas(), "compact")
    agent = Agent(ModelPolicy(model, processor), tools, AgentLimits(max_turns=4, max_new_tokens=64),
                  SamplingParams(do_sample=True, temperature=1.0), seed=0, tool_prompt="compact",
                  batch_size=len(samples))
    own = agent.run_many(samples)
    rng = random.Random(0)
    word = lambda: "".join(rng.choices(string.ascii_letters, k=6))  # noqa: E731
    garbage = [replace(t, steps=[], final_thought=" ".join(word() for _ in range(30)), answer=word()) for t in own]
    print(f"{'lr':>8} {'stream':>8}  probe KL per update")
    for lr in args.lr:
        kls = {}
        for name, stream in (("benign", own), ("garbage", garbage)):
            updater = OnlineUpdater(copy.deepcopy(model), copy.deepcopy(model), processor, prompt,
                                    OnlineConfig(learning_rate=lr, kl_max=1e9))  # measure only: never reject
            probes = own[args.updates:]
            kls[name] = [updater.update(stream[i], 1.0, probes).kl for i in range(args.updates)]
            print(f"{lr:>8g} {name:>8}  " + "  ".join(f"{k:.4g}" for k in kls[name]))
        print(f"{lr:>8g}  ratio min(garbage)/max(benign) = {min(kls['garbage']) / max(kls['benign']):.1f}")


if __name__ == "__main__":
    main()
