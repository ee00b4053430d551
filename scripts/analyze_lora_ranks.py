"""Shim: `python scripts/analyze_lora_ranks.py RUN/checkpoint-K --seed 0 --deterministic ...` ==
`pixelis analyze lora-ranks ...`: the rank each LoRA module (or a full fine-tune's delta, with --base) uses."""

import sys

from pixelis.cli import app

if __name__ == "__main__":
    sys.exit(app(["analyze", "lora-ranks", *sys.argv[1:]]))
