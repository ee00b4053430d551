"""`pixelis eval` end to end: the golden oracle scores 100%, the untrained tiny model runs and is reported."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _eval(*args):
    return subprocess.run([str(BIN / "pixelis"), "eval", "--no-progress", *args], capture_output=True, text=True,
                          timeout=600)


def _outputs_complete(out: Path):
    metrics = json.loads((out / "metrics.json").read_text())
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == metrics["n"] > 0
    report = (out / "report.md").read_text()
    assert "## Summary" in report and "accuracy_by_family_difficulty.png" in report
    assert (out / "accuracy_by_family_difficulty.png").stat().st_size > 1000
    assert (out / "tool_call_histogram.png").stat().st_size > 1000
    assert (out / "run.json").is_file() and (out / "pixelis.log").is_file()
    return metrics


def test_golden_policy_is_an_oracle(tmp_path, synth_suite_dir):
    proc = _eval("--policy", "golden", "--data", str(synth_suite_dir), "--split", "train", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = _outputs_complete(tmp_path)
    assert metrics["accuracy"] == 1.0 and metrics["n"] == 15
    assert set(metrics["accuracy_by_family"]) == {"small_text", "count", "attribute", "track", "temporal"}
    assert metrics["terminations"] == {"answer": 15} and metrics["rapr"] == 1.0
    assert "accuracy 100.0%" in proc.stdout


def test_untrained_model_runs_end_to_end(tmp_path, train_suite_dir, tiny_model_dir):
    proc = _eval("--model", str(tiny_model_dir), "--data", str(train_suite_dir), "--limit", "4", "--out",
                 str(tmp_path), "--set", "agent.max_new_tokens=12", "--set", "agent.tool_prompt=compact")
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = _outputs_complete(tmp_path)
    assert metrics["n"] == 4 and sum(metrics["terminations"].values()) == 4
    pred = json.loads((tmp_path / "predictions.jsonl").read_text().splitlines()[0])
    assert pred["metadata"]["policy"] == "ModelPolicy" and pred["images"][0].startswith("media/")


@pytest.mark.parametrize("args, message", [
    (["--data", "nowhere"], "evaluation data not found: nowhere"),
    (["--policy", "model"], "--policy model needs --model DIR"),
])
def test_bad_invocations_fail_with_one_clear_line(tmp_path, synth_suite_dir, args, message):
    if "--data" not in args:
        args = [*args, "--data", str(synth_suite_dir), "--split", "train"]
    proc = _eval(*args, "--out", str(tmp_path))
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_scripts_evaluate_shim_is_pixelis_eval(tmp_path, synth_suite_dir):
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, str(root / "scripts" / "evaluate.py"), "--policy", "golden", "--data",
                           str(synth_suite_dir), "--split", "train", "--limit", "3", "--seed", "42", "--deterministic",
                           "--no-progress", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "metrics.json").read_text())["n"] == 3
    manifest = json.loads((tmp_path / "run.json").read_text())
    assert manifest["seed"] == 42 and manifest["deterministic"] is True
