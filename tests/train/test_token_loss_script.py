"""scripts/token_loss.py: held-out NLL per kind of assistant token, on the tiny model and a generated suite."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from token_loss import token_kinds  # noqa: E402


def test_digits_are_numbered_by_place_inside_calls_only():
    pieces = ["Ġ1", "2", "3", ",", "Ġ4", "5", "0", "0", "0", "Ġ7"]
    in_call = [True] * 9 + [False]
    assert token_kinds(pieces, in_call, coordinate_tokens=False) == [
        "digit 0", "digit 1", "digit 2", "call", "digit 0", "digit 1", "digit 2", "digit 3", "digit 3", "text"]


def test_coordinate_tokens_are_one_kind_inside_calls_only():
    pieces = ["Ġ", "123", ",", "Ġ", "450", "Ġ7"]
    in_call = [True] * 5 + [False]
    assert token_kinds(pieces, in_call, coordinate_tokens=True) == [
        "call", "coordinate", "call", "call", "coordinate", "text"]


def test_script_reports_every_kind_for_a_real_checkpoint(tiny_model_dir, train_suite_dir):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "token_loss.py"), "--model", str(tiny_model_dir),
                           "--data", str(train_suite_dir / "test.jsonl"), "--limit", "4"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {line.split()[0] + (" " + line.split()[1] if line.startswith("digit") else ""): line.split()
            for line in proc.stdout.splitlines()[1:]}
    assert {"call", "text", "digit 0"} <= set(rows)
    # an untrained model is far from certain anywhere
    assert all(float(r[-1]) > 0.5 and int(r[-2]) > 0 for r in rows.values())
