"""Every class of ordinary mistake, through the CLI: exit code 2, one `error:` line naming what, no traceback."""

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pixelis.cli import app
from pixelis.core.trajectory import read_jsonl

BIN = Path(sys.executable).parent
FAST = ["--no-progress", "--set", "sft.max_steps=2", "--set", "sft.save_interval=2", "--set", "sft.report_to=[]",
        "--set", "sft.eval_rollouts=1", "--set", "sft.eval_loss_samples=1", "--set", "agent.max_new_tokens=8",
        "--set", "curriculum.evaluation_interval=2", "--set", "model.device=cpu"]


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


IMAGES = {"empty image": (b"", "cannot read image (the file is empty)"),
          "undecodable image": (b"\x89PNG not really" * 20, "cannot read image"),
          "truncated image": (_png()[:2000], "image file is truncated")}
WEIGHTS = {"empty safetensors": (lambda data: b"", "(the file is empty)"),
           "truncated safetensors": (lambda data: data[: len(data) // 2], "cannot read safetensors weights"),
           "random safetensors": (lambda data: np.random.default_rng(2).bytes(4096), "cannot read safetensors weights")}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, train_suite_dir, tiny_model_dir):
    """A finished 2-step run (with checkpoint-2) of the tiny model on the training suite."""
    out = tmp_path_factory.mktemp("trained") / "run"
    result = CliRunner().invoke(app, ["train", "--out", str(out), "--set", f"data.path={train_suite_dir}",
                                      "--set", f"model.path={tiny_model_dir}", *FAST])
    assert result.exit_code == 0, result.output
    return out


def _suite_copy(suite: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "suite"
    shutil.copytree(suite, dest)
    return dest


def _first_image(suite: Path, split: str) -> Path:
    record = json.loads((suite / f"{split}.jsonl").read_text().splitlines()[0])
    return suite / record["images"][0]


def _checkpoint_copy(model: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "model"
    shutil.copytree(model, dest)
    return dest


def _error_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.mark.parametrize("kind", IMAGES)
@pytest.mark.parametrize("command", ["train", "eval"])
def test_a_broken_image_in_the_data(kind, command, tmp_path, train_suite_dir, tiny_model_dir):
    content, message = IMAGES[kind]
    suite = _suite_copy(train_suite_dir, tmp_path)
    image = _first_image(suite, "train" if command == "train" else "test")
    image.write_bytes(content)
    args = (["train", "--set", f"data.path={suite}", "--set", f"model.path={tiny_model_dir}", *FAST]
            if command == "train" else ["eval", "--data", str(suite), "--policy", "golden", "--no-progress"])
    line = _error_line(CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out")]))
    assert message in line and str(image) in line


@pytest.mark.parametrize("command", ["train", "eval"])
def test_an_image_over_the_pixel_bound(command, tmp_path, train_suite_dir, tiny_model_dir):
    args = (["train", "--set", f"model.path={tiny_model_dir}", *FAST] if command == "train"
            else ["eval", "--policy", "golden", "--no-progress"])
    data = ["--set", f"data.path={train_suite_dir}"] if command == "train" else ["--data", str(train_suite_dir)]
    result = CliRunner().invoke(app, [*args, *data, "--set", "data.max_image_pixels=1000",
                                      "--out", str(tmp_path / "out")])
    line = _error_line(result)
    assert "is larger than data.max_image_pixels = 1,000" in line and str(train_suite_dir) in line


@pytest.mark.parametrize("kind", WEIGHTS)
@pytest.mark.parametrize("command", ["train", "eval"])
def test_broken_safetensors_weights(kind, command, tmp_path, train_suite_dir, tiny_model_dir):
    damage, message = WEIGHTS[kind]
    model = _checkpoint_copy(tiny_model_dir, tmp_path)
    weights = model / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    args = (["train", "--set", f"data.path={train_suite_dir}", "--set", f"model.path={model}", *FAST]
            if command == "train" else ["eval", "--data", str(train_suite_dir), "--model", str(model), "--no-progress"])
    line = _error_line(CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out")]))
    assert message in line and str(weights) in line


def test_a_dataset_error_under_train(tmp_path, train_suite_dir, tiny_model_dir):
    suite = _suite_copy(train_suite_dir, tmp_path)
    lines = (suite / "train.jsonl").read_text().splitlines()
    record = json.loads(lines[1])
    record["steps"] = "abc"
    (suite / "train.jsonl").write_text("\n".join([lines[0], json.dumps(record), *lines[2:]]) + "\n")
    result = CliRunner().invoke(app, ["train", "--set", f"data.path={suite}", "--set", f"model.path={tiny_model_dir}",
                                      *FAST, "--out", str(tmp_path / "out")])
    line = _error_line(result)
    assert f"{suite / 'train.jsonl'}:2" in line and "steps must be a list" in line


@pytest.mark.parametrize("command", [["train"], ["eval", "--policy", "golden"], ["demo"], ["model", "tiny"],
                                     ["model", "pretrain", "--model", "TINY"], ["data", "synth"]])
@pytest.mark.parametrize("where, message", [("a file", "is a file, not a directory"),
                                            ("under a file", "cannot create the directory"),
                                            ("a run", "is not empty (run.json); pass --overwrite")])
def test_an_unusable_out(command, where, message, tmp_path, train_suite_dir, tiny_model_dir):
    command = [str(tiny_model_dir) if arg == "TINY" else arg for arg in command]
    (tmp_path / "taken").write_text("x")
    out = {"a file": tmp_path / "taken", "under a file": tmp_path / "taken" / "run", "a run": tmp_path / "run"}[where]
    if where == "a run":
        out.mkdir()
        (out / "run.json").write_text("{}")
    data = ["--data", str(train_suite_dir)] if command[0] == "eval" else []
    line = _error_line(CliRunner().invoke(app, [*command, *data, "--out", str(out)]))
    assert str(out) in line and message in line
    if where == "a run":
        assert (out / "run.json").read_text() == "{}" and len(list(out.iterdir())) == 1, "nothing was touched"


@pytest.mark.parametrize("name, damage, message", [
    ("rng-0.pt", b"", "cannot read the RNG state (the file is empty)"),
    ("optimizer.pt", b"garbage" * 10, "cannot read the optimizer state"),
    ("state.json", b"{", "cannot read the checkpoint state"),
])
def test_a_corrupt_training_checkpoint(name, damage, message, tmp_path, trained, train_suite_dir, tiny_model_dir):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "checkpoint-2" / name).write_bytes(damage)
    try:
        result = CliRunner().invoke(app, ["train", "--resume", str(run / "checkpoint-2"), "--set",
                                          f"data.path={train_suite_dir}", "--set", f"model.path={tiny_model_dir}",
                                          *FAST])
    finally:
        torch.use_deterministic_algorithms(False)
    line = _error_line(result)
    assert message in line and str(run / "checkpoint-2" / name) in line


def test_the_installed_command_prints_no_traceback(tmp_path, tiny_model_dir, train_suite_dir):
    model = _checkpoint_copy(tiny_model_dir, tmp_path)
    (model / "model.safetensors").write_bytes(b"")
    proc = subprocess.run([str(BIN / "pixelis"), "eval", "--data", str(train_suite_dir), "--model", str(model),
                           "--out", str(tmp_path / "out"), "--no-progress"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout
    assert f"error: {model / 'model.safetensors'}: cannot read safetensors weights (the file is empty)" in proc.stderr
    assert read_jsonl(train_suite_dir / "test.jsonl"), "the data set itself was fine"


@pytest.mark.parametrize("sets, message", [
    (["rft.num_generations=1"], "rft.num_generations"),
    (["rft.rewards={task: 1.0, novelty: 1.0}"], "rft.rewards"),
    (["rft.rewards={task: 0.0}"], "every weight is 0"),
    (["model.path={missing}"], "missing-model"),
    (["data.path={empty}"], "holds no trajectories"),
], ids=["group of one", "unknown reward", "no reward", "unloadable reference", "empty split"])
def test_rft_setup_mistakes(sets, message, tmp_path, train_suite_dir, tiny_model_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "train.jsonl").write_text("")
    base = {"data.path": str(train_suite_dir), "model.path": str(tiny_model_dir), "rft.max_steps": "1"}
    for item in sets:
        key, value = item.split("=", 1)
        base[key] = value.replace("{missing}", str(tmp_path / "missing-model")).replace("{empty}", str(empty))
    args = [a for k, v in base.items() for a in ("--set", f"{k}={v}")]
    result = CliRunner().invoke(app, ["train", "--mode", "rft", "--no-progress", *args, "--out", str(tmp_path / "o")])
    assert message in _error_line(result)
