"""Shim: `python scripts/evaluate.py --model DIR --seed 42 --deterministic ...` == `pixelis eval ...`.

`--model` takes a checkpoint directory or its model.safetensors; pickled weights (`model.pt`, ...) are refused.
"""

import sys

from pixelis.cli import app

if __name__ == "__main__":
    sys.exit(app(["eval", *sys.argv[1:]]))
