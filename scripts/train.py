"""Shim: `python scripts/train.py --mode sft --seed 42 --deterministic ...` == `pixelis train ...`."""

import sys

from pixelis.cli import app

if __name__ == "__main__":
    sys.exit(app(["train", *sys.argv[1:]]))
