"""`pixelis train` keeps run directories as records: no silent overwrite, history kept across resumes."""

import json

import pytest
import torch
from typer.testing import CliRunner

from pixelis.cli import app
from sft_args import train_cmd

runner = CliRunner()


@pytest.fixture(autouse=True)
def _undo_deterministic_mode():
    yield
    torch.use_deterministic_algorithms(False)


def _train(suite, model, *extra, steps=4):
    return runner.invoke(app, train_cmd(suite, model, *extra, steps=steps))


def test_a_second_run_into_a_finished_run_is_refused_unless_overwrite(tmp_path, train_suite_dir, tiny_model_dir):
    run = tmp_path / "run"
    assert _train(train_suite_dir, tiny_model_dir, "--out", str(run)).exit_code == 0
    manifest = (run / "run.json").read_text()
    again = _train(train_suite_dir, tiny_model_dir, "--out", str(run))
    assert again.exit_code == 2 and "is not empty" in again.output and "--overwrite" in again.output
    assert "Traceback" not in again.output and (run / "run.json").read_text() == manifest
    replaced = _train(train_suite_dir, tiny_model_dir, "--out", str(run), "--overwrite", "--set",
                      "sft.save_interval=2", steps=2)
    assert replaced.exit_code == 0, replaced.output
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2"], "the old run's checkpoints are gone"
    assert [json.loads(r)["step"] for r in (run / "curriculum.jsonl").read_text().splitlines()] == [2]


def test_resume_keeps_the_run_history_also_when_it_fails(tmp_path, train_suite_dir, tiny_model_dir):
    run = tmp_path / "run"
    assert _train(train_suite_dir, tiny_model_dir, "--out", str(run), steps=8).exit_code == 0
    first = json.loads((run / "run.json").read_text())
    resumed = _train(train_suite_dir, tiny_model_dir, "--resume", str(run / "checkpoint-4"), steps=8)
    assert resumed.exit_code == 0, resumed.output
    after = json.loads((run / "run.json").read_text())
    assert after["started_at"] == first["started_at"] and after["command"] == first["command"]
    assert [r["checkpoint"] for r in after["resumes"]] == [str(run / "checkpoint-4")]
    assert after["resumes"][0]["artifacts_before"] == first["artifacts"]
    assert after["artifacts"]["final_weights"] == first["artifacts"]["final_weights"]

    weights = run / "checkpoint-8" / "trainable.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    failed = _train(train_suite_dir, tiny_model_dir, "--resume", str(run), steps=8)  # RUN: its latest checkpoint
    assert failed.exit_code == 2 and "do not match the sha256" in failed.output and "Traceback" not in failed.output
    kept = json.loads((run / "run.json").read_text())
    assert kept["started_at"] == first["started_at"] and len(kept["resumes"]) == 2
    assert kept["resumes"][1]["checkpoint"] == str(run / "checkpoint-8")
