"""Where a checkpoint's imitation loss sits: mean NLL per kind of assistant token on a trajectory split.

    python scripts/token_loss.py --model runs/demo/sft/final --data runs/demo/data/test.jsonl

Kinds: `text` (thoughts, answers), `call` (tool-call JSON structure and names), and for the numbers inside a call
either `digit k` (the k-th digit of a number, 0 = leading; uniform guessing costs ln 10 = 2.30 nats) or, for a
tokenizer with one token per grid value (`pixelis model tiny --coordinate-tokens`), `coordinate` (uniform guessing
costs ln 1001 = 6.91 nats). A number NLL near uniform means the model is not reading the position from the pixels.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import torch

from pixelis.agent.prompt import ToolPrompt
from pixelis.core.trajectory import read_jsonl
from pixelis.model.chat import MODEL_INPUT_KEYS
from pixelis.model.load import load_policy
from pixelis.tools.registry import ToolRegistry
from pixelis.train.sft_batch import collate_sft, render_sft_sample


def token_kinds(pieces: list[str], action: list[bool], coordinate_tokens: bool) -> list[str]:
    """The kind of each token: numbers inside calls are `coordinate`, or digits numbered by their place."""
    kinds, place = [], 0
    for piece, in_call in zip(pieces, action):
        is_digit = in_call and piece.lstrip("Ġ").isdigit()
        number_kind = "coordinate" if coordinate_tokens else f"digit {min(place, 3)}"
        kinds.append(number_kind if is_digit else "call" if in_call else "text")
        place = place + 1 if is_digit else 0
    return kinds


@torch.no_grad()
def token_loss(model_dir: Path, data: Path, limit: int, tool_prompt: str) -> dict[str, tuple[float, int]]:
    """Mean NLL and token count per kind over the trained assistant tokens of the first `limit` trajectories."""
    model, processor = load_policy(model_dir)
    model.eval()
    tokenizer = processor.tokenizer
    coordinate_tokens = len(tokenizer("523", add_special_tokens=False).input_ids) == 1
    prompt = ToolPrompt.build(ToolRegistry.default().schemas(), tool_prompt)
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for traj in read_jsonl(data)[:limit]:
        batch = collate_sft([render_sft_sample(processor, traj, prompt.tools, system=prompt.system)],
                            tokenizer.pad_token_id)
        logits = model(**{k: batch[k] for k in MODEL_INPUT_KEYS if k in batch}).logits[0, :-1].float()
        targets = batch["input_ids"][0, 1:]
        nll = -torch.log_softmax(logits, -1).gather(1, targets[:, None])[:, 0]
        trained = batch["assistant_mask"][0, 1:].bool()
        kinds = token_kinds(tokenizer.convert_ids_to_tokens(targets.tolist()),
                            batch["action_mask"][0, 1:].bool().tolist(), coordinate_tokens)
        for i in trained.nonzero().flatten().tolist():
            sums[kinds[i]][0] += float(nll[i])
            sums[kinds[i]][1] += 1
    return {kind: (total / n, n) for kind, (total, n) in sorted(sums.items())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="checkpoint directory")
    p.add_argument("--data", type=Path, required=True, help="trajectory JSONL (e.g. a suite's test.jsonl)")
    p.add_argument("--limit", type=int, default=60, help="trajectories to score")
    p.add_argument("--tool-prompt", choices=["compact", "full"], default="compact",
                   help="how the tools were shown in training (agent.tool_prompt)")
    args = p.parse_args()
    print(f"{'kind':<10} {'tokens':>7} {'mean NLL':>9}")
    for kind, (mean, n) in token_loss(args.model, args.data, args.limit, args.tool_prompt).items():
        print(f"{kind:<10} {n:>7} {mean:>9.3f}")


if __name__ == "__main__":
    main()
