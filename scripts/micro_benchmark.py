"""Shim: `python scripts/micro_benchmark.py --seed 0 --deterministic [--only tool.zoom_in] [--compare OLD.json]` ==
`pixelis bench micro ...`: the hot pieces of Pixelis timed in one process."""

import sys

from pixelis.cli import app

if __name__ == "__main__":
    sys.exit(app(["bench", "micro", *sys.argv[1:]]))
