"""`pixelis eval` end to end: the golden oracle scores 100%, the untrained tiny model runs and is reported,
runs repeat bit for bit, and bad invocations fail with one line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pixelis.cli import app

BIN = Path(sys.executable).parent


def _eval(*args):
    """`pixelis eval` in process (the installed command is run by the repro-verify and shim tests)."""
    return CliRunner().invoke(app, ["eval", "--no-progress", *args])


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
    assert proc.exit_code == 0, proc.output[-2000:]
    metrics = _outputs_complete(tmp_path)
    assert metrics["accuracy"] == 1.0 and metrics["n"] == 15
    assert set(metrics["accuracy_by_family"]) == {"small_text", "count", "attribute", "track", "temporal"}
    assert metrics["terminations"] == {"answer": 15} and metrics["rapr"] == 1.0
    assert "accuracy 100.0%" in proc.output


def test_untrained_model_runs_end_to_end(tmp_path, train_suite_dir, tiny_model_dir):
    proc = _eval("--model", str(tiny_model_dir / "model.safetensors"), "--data", str(train_suite_dir), "--limit", "4",
                 "--out", str(tmp_path), "--set", "agent.max_new_tokens=12", "--set", "agent.tool_prompt=compact")
    assert proc.exit_code == 0, proc.output[-2000:]
    metrics = _outputs_complete(tmp_path)
    assert metrics["n"] == 4 and sum(metrics["terminations"].values()) == 4
    pred = json.loads((tmp_path / "predictions.jsonl").read_text().splitlines()[0])
    assert pred["metadata"]["policy"] == "ModelPolicy" and pred["images"][0].startswith("media/")


def _fails_with(result, message):
    """Exit code 2 and, last (after the run's log lines, if any), one `error: ...` line with `message`."""
    last = result.output.splitlines()[-1] if result.output.strip() else ""
    assert result.exit_code == 2 and last.startswith("error: ") and message in last, result.output[-2000:]
    assert isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("args, message", [
    (["--policy", "golden", "--data", "nowhere"], "evaluation data not found: nowhere"),
    (["--policy", "model"], "--policy model needs --model DIR"),
    (["--model", "nowhere/model.safetensors"], "checkpoint nowhere/model.safetensors does not exist"),
    (["--policy", "golden", "--limit", "-1"], "eval.limit: input should be greater than or equal to 1, got -1"),
    (["--policy", "golden", "--limit", "0"], "eval.limit: input should be greater than or equal to 1, got 0"),
])
def test_bad_invocations_fail_with_one_clear_line(tmp_path, synth_suite_dir, args, message):
    if "--data" not in args:
        args = [*args, "--data", str(synth_suite_dir), "--split", "train"]
    _fails_with(_eval(*args, "--out", str(tmp_path)), message)


def test_default_suite_is_the_training_suite_and_out_is_protected(tmp_path, synth_suite_dir):
    from pixelis.core.config import load_config
    from pixelis.run_inputs import resolve_inputs

    suite = ["--set", "data.n=6", "--set", "data.families=[attribute,track]", "--set", "data.test_fraction=0.5",
             "--set", "data.workers=1"]
    out = tmp_path / "eval"
    proc = _eval("--policy", "golden", "--seed", "3", *suite, "--out", str(out))
    assert proc.exit_code == 0, proc.output[-2000:]
    training = Path(resolve_inputs(load_config(None, [*suite[1::2], "reproducibility.seed=3"]), tmp_path / "train",
                                   need_model=False, show_progress=False).data.path)
    assert (out / "data" / "test.jsonl").read_bytes() == (training / "test.jsonl").read_bytes()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 3 and metrics["accuracy"] == 1.0

    again = ["--policy", "golden", "--data", str(synth_suite_dir), "--split", "train", "--limit", "2",
             "--out", str(out)]
    _fails_with(_eval(*again), f"--out {out} is not empty")
    proc = _eval(*again, "--overwrite")
    assert proc.exit_code == 0, proc.output[-2000:]
    assert json.loads((out / "metrics.json").read_text())["n"] == 2 and not (out / "data").exists()


@pytest.mark.parametrize("policy", ["golden", "model"])
def test_repro_verify_passes_on_eval(tmp_path, synth_suite_dir, tiny_model_dir, policy):
    args = (["--policy", "golden"] if policy == "golden" else
            ["--model", str(tiny_model_dir), "--deterministic", "--set", "agent.max_new_tokens=12",
             "--set", "agent.tool_prompt=compact"])
    cmd = [str(BIN / "pixelis"), "repro", "verify", "--workdir", str(tmp_path), "--", str(BIN / "pixelis"), "eval",
           "--no-progress", "--data", str(synth_suite_dir), "--split", "train", "--limit", "3", "--seed", "1", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    hashes = [json.loads((tmp_path / f"run-{i}" / "run.json").read_text())["artifacts"] for i in (0, 1)]
    assert set(hashes[0]) == {"predictions.jsonl", "metrics.json"} and hashes[0] == hashes[1]


def test_scripts_evaluate_shim_is_pixelis_eval(tmp_path, synth_suite_dir):
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, str(root / "scripts" / "evaluate.py"), "--policy", "golden", "--data",
                           str(synth_suite_dir), "--split", "train", "--limit", "3", "--seed", "42", "--deterministic",
                           "--no-progress", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "metrics.json").read_text())["n"] == 3
    manifest = json.loads((tmp_path / "run.json").read_text())
    assert manifest["seed"] == 42 and manifest["deterministic"] is True
