"""A command for `pixelis repro verify` that writes a run.json without artifacts (tests/cli/test_repro_cli.py).

Usage: python empty_manifest_job.py --out DIR
"""

import argparse
import json
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--out", type=Path, required=True)
out = parser.parse_args().out
out.mkdir(parents=True, exist_ok=True)
(out / "run.json").write_text(json.dumps({"seed": 0, "artifacts": {}}), encoding="utf-8")
