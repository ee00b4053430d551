"""RFT run whose rollouts make real tool calls, for the determinism gate (tests/train/test_rft.py).

A random tiny model never writes a well-formed call, so this run's token sampler writes the sample's golden
first turn (a real tool call) in every rollout whose seed is even; the other rollouts, and every later turn,
are sampled from the model. The tools run, their images enter the context, and the loss trains on the
tokens as written with the log-probs the model gave them.

Usage: python tool_calling_rft.py --seed S [--deterministic] [--set key=value ...] --out DIR
"""

import argparse


from pixelis.agent.policies import RowSeededSampler
from pixelis.cli.common import start_run
from pixelis.core.trajectory import read_jsonl, render_step_text
from pixelis.train.rft import train_rft


def first_call_sampler(golden: dict[str, str], tokenizer) -> type[RowSeededSampler]:
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")

    class FirstCallSampler(RowSeededSampler):
        @classmethod
        def for_requests(cls, requests, device, suppressed=()):
            sampler = super().for_requests(requests, device, suppressed)
            sampler.forced = [tokenizer.encode(golden[r.sample.id], add_special_tokens=False) + [end]
                              if r.turn == 0 and r.seed % 2 == 0 and r.sample.id in golden else None
                              for r in requests]
            return sampler

        def choose(self, input_ids, scaled):
            chosen = super().choose(input_ids, scaled)
            k = len(self.logprobs[0])
            for row, ids in enumerate(self.forced):
                if ids is not None:
                    chosen[row] = ids[min(k, len(ids) - 1)]
            return chosen

    return FirstCallSampler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--deterministic", action="store_true")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    run = start_run("train-rft", args.out, None, args.overrides, args.seed, args.deterministic or None, None, None)
    golden = {t.id: render_step_text(t.steps[0]) for t in read_jsonl(f"{run.cfg.data.path}/train.jsonl") if t.steps}
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run.cfg.model.path)
    train_rft(run.cfg, run.out_dir, show_progress=False, token_sampler=first_call_sampler(golden, tokenizer))


if __name__ == "__main__":
    main()
