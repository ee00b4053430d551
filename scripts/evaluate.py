"""Shim: `python scripts/evaluate.py --model DIR --seed 42 --deterministic ...` == `pixelis eval ...`."""

import sys

from pixelis.cli import app

if __name__ == "__main__":
    sys.exit(app(["eval", *sys.argv[1:]]))
