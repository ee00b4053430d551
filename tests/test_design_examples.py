"""The original design's four usage examples, run as written.

Examples 1 and 2 (the scripts) get `--set` overrides that shrink the default run (suite, model, steps) so the
suite stays fast on 2 cores; the command lines are otherwise the design's.
"""

import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pixelis.core.curriculum import CurriculumManager

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["data.n=18", "data.families=[attribute,track,temporal]", "data.val_fraction=0.25", "data.test_fraction=0.25",
         "data.workers=1", "model.size=xs", "sft.max_steps=2", "sft.save_interval=2", "sft.eval_rollouts=1",
         "sft.eval_loss_samples=2", "sft.report_to=[]", "curriculum.evaluation_interval=2", "agent.max_new_tokens=8",
         "agent.max_turns=2", "eval.limit=2"]
SETS = [a for s in SMALL for a in ("--set", s)]


def _script(name, *args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args, "--no-progress", *SETS], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def example_1_runs(tmp_path_factory):
    """Example 1 run twice in one directory; no --out: each run gets a fresh `runs/...` directory."""
    cwd = tmp_path_factory.mktemp("example1")
    for _ in range(2):
        proc = _script("train.py", "--mode", "sft", "--seed", "42", "--deterministic", cwd=cwd)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return sorted((cwd / "runs").iterdir())


def test_example_1_train_builds_its_inputs_and_repeats_bitwise(example_1_runs):
    assert len(example_1_runs) == 2, "the second run was not refused: it got its own directory"
    for run in example_1_runs:
        assert (run / "final" / "model.safetensors").is_file() and (run / "data" / "train.jsonl").is_file()
        assert (run / "model" / "config.json").is_file()
    log = (example_1_runs[0] / "pixelis.log").read_text()
    assert "data.path is not set: generating the synthetic suite" in log and "model.path is not set" in log
    weights = [json.loads((run / "run.json").read_text())["artifacts"]["final_weights"] for run in example_1_runs]
    assert weights[0] == weights[1]


class _Unpickled:
    """Unpickling this touches a marker file: proof that a pickle was (not) loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_example_2_evaluate_refuses_pickles_and_runs_a_safetensors_model(tmp_path, example_1_runs):
    marker = tmp_path / "unpickled"
    (tmp_path / "model.pt").write_bytes(pickle.dumps(_Unpickled(marker)))
    proc = _script("evaluate.py", "--model", "model.pt", "--seed", "42", "--deterministic", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "pickle" in proc.stderr and "safetensors" in proc.stderr and not marker.exists()
    missing = _script("evaluate.py", "--model", "absent.safetensors", "--seed", "42", cwd=tmp_path)
    errors = [line for line in missing.stderr.splitlines() if line.startswith("error:")]
    assert missing.returncode == 2 and len(errors) == 1 and "absent.safetensors" in errors[0]
    assert "Traceback" not in missing.stderr

    trained = example_1_runs[0] / "final" / "model.safetensors"
    proc = _script("evaluate.py", "--model", str(trained), "--seed", "42", "--deterministic", "--out", "eval",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n"] == 2 and (tmp_path / "eval" / "data" / "test.jsonl").is_file()

EXAMPLE_3 = '''
import logging
from pixelis.core.tracing import setup_logging, TracedOperation
setup_logging(use_tracing=True, use_colors=True)
logger = logging.getLogger(__name__)
with TracedOperation("my_operation", "MyComponent") as op:
    logger.info(f"Processing with trace {op.trace_id}")
'''

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_example_3_application_logger_prints_trace_id_and_component(tmp_path):
    script = tmp_path / "example3.py"
    script.write_text(EXAMPLE_3 + "print(op.trace_id)\n")
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True
    )
    trace_id = result.stdout.strip()
    (line,) = result.stderr.splitlines()
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id)
    assert "\x1b[32mINFO\x1b[0m" in line  # use_colors: the level name is coloured, the other fields are not
    fields = rf"\d{{4}}-\d\d-\d\d [\d:,]+ - __main__ - INFO - \[{trace_id}\|MyComponent\] - (.*)"
    match = re.fullmatch(fields, ANSI.sub("", line))
    assert match, line
    assert match.group(1) == f"Processing with trace {trace_id}"


def test_example_4_curriculum_manager_from_a_config_dict():
    manager = CurriculumManager(
        {"curriculum": {"smoothing_window_size": 3, "patience_cycles": 2, "cooldown_cycles": 3}}
    )
    config = manager.config
    assert (config.smoothing_window_size, config.patience_cycles, config.cooldown_cycles) == (3, 2, 3)
