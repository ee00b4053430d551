"""SFT end to end on the tiny model: learning, outputs, determinism, resume-exact, 2-process accelerate."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pixelis.core.config import ConfigError, load_config
from pixelis.core.repro import set_global_seed
from pixelis.core.trajectory import Trajectory, read_jsonl
from pixelis.core.errors import DataError
from pixelis.train.sft import _round_robin, train_sft
from sft_args import BIN, sft_overrides, train_cmd

ROOT = Path(__file__).resolve().parents[2]


def test_short_run_lowers_loss_and_writes_everything(tmp_path, train_suite_dir, tiny_model_dir, deterministic):
    cfg = load_config(None, sft_overrides(train_suite_dir, tiny_model_dir, steps=12,
                                       **{"sft.aux_head": "true", "sft.report_to": "[tensorboard]"}))
    result = train_sft(cfg, tmp_path / "run", show_progress=False)
    history = [json.loads(line) for line in (tmp_path / "run" / "train_history.jsonl").read_text().splitlines()]
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    assert len(evals) == 3 and evals[-1] < evals[0]
    assert history[-1]["loss_aux"] > 0 and history[0]["loss"] > history[-1]["loss"]
    run = tmp_path / "run"
    assert {p.name for p in run.glob("checkpoint-*")} == {"checkpoint-4", "checkpoint-8", "checkpoint-12"}
    assert (run / "final" / "model.safetensors").is_file() and (run / "final" / "aux_head.safetensors").is_file()
    assert len((run / "curriculum.jsonl").read_text().splitlines()) == 3 and (run / "curriculum.png").is_file()
    rollouts = read_jsonl(run / "rollouts" / "step-000012.jsonl")
    assert len(rollouts) == cfg.sft.eval_rollouts and all("termination" in t.metadata for t in rollouts)
    assert list((run / "sft").rglob("events.out.tfevents.*")), "tensorboard events expected"
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["artifacts"]["final_weights"] == result.weights_sha256
    state = json.loads((run / "checkpoint-12" / "state.json").read_text())
    assert state["weights_sha256"] == result.weights_sha256 and state["step"] == 12


def test_resume_is_bitwise_exact(tmp_path, train_suite_dir, tiny_model_dir, deterministic):
    cfg = load_config(None, sft_overrides(train_suite_dir, tiny_model_dir, steps=8))
    full = train_sft(cfg, tmp_path / "full", show_progress=False)
    set_global_seed(123)  # the resumed run must get everything from the checkpoint, not from this process
    resumed = train_sft(cfg, tmp_path / "resumed", resume=tmp_path / "full" / "checkpoint-4", show_progress=False)
    assert resumed.weights_sha256 == full.weights_sha256
    a = load_file(str(tmp_path / "full" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    curriculum_full = (tmp_path / "full" / "curriculum.jsonl").read_text().splitlines()[-1]
    curriculum_resumed = (tmp_path / "resumed" / "curriculum.jsonl").read_text().splitlines()[-1]
    assert json.loads(curriculum_full)["stage"] == json.loads(curriculum_resumed)["stage"]


def test_bad_setup_fails_clearly(tmp_path, train_suite_dir, tiny_model_dir):
    with pytest.raises(DataError, match="missing train.jsonl"):
        train_sft(load_config(None, sft_overrides(tmp_path, tiny_model_dir)), tmp_path / "b")
    with pytest.raises(ConfigError, match="sft.report_to: unknown tracker 'neptune'"):
        train_sft(load_config(None, sft_overrides(train_suite_dir, tiny_model_dir, **{"sft.report_to": "[neptune]"})),
                  tmp_path / "c")


def test_determinism_gate_passes_on_sft(tmp_path, train_suite_dir, tiny_model_dir):
    cmd = [str(BIN / "pixelis"), "repro", "verify", "--workdir", str(tmp_path), "--",
           str(BIN / "pixelis"), *train_cmd(train_suite_dir, tiny_model_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    hashes = [json.loads((tmp_path / f"run-{i}" / "run.json").read_text())["artifacts"]["final_weights"]
              for i in (0, 1)]
    assert hashes[0] == hashes[1]


def _launch_two_ranks(*args):
    cmd = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "pixelis.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _history(run):
    return [json.loads(line) for line in (run / "train_history.jsonl").read_text().splitlines()]


def test_two_ranks_follow_the_one_rank_schedule_and_resume_exactly(tmp_path, train_suite_dir, tiny_model_dir,
                                                                   deterministic):
    _launch_two_ranks(*train_cmd(train_suite_dir, tiny_model_dir, "--out", str(tmp_path / "ddp"), steps=8))
    ranks = json.loads((tmp_path / "ddp" / "rank_weights.json").read_text())
    assert len(ranks) == 2 and ranks[0] == ranks[1]  # DDP guarantees this; the checks below are the real ones
    cfg = load_config(None, [*sft_overrides(train_suite_dir, tiny_model_dir, steps=8), "reproducibility.seed=3"])
    train_sft(cfg, tmp_path / "one", show_progress=False)
    assert [h["lr"] for h in _history(tmp_path / "ddp")] == [h["lr"] for h in _history(tmp_path / "one")]
    ckpt = tmp_path / "ddp" / "checkpoint-4"
    assert (ckpt / "rank-0.json").read_text() != (ckpt / "rank-1.json").read_text(), "ranks draw different batches"
    _launch_two_ranks(*train_cmd(train_suite_dir, tiny_model_dir, "--out", str(tmp_path / "resumed"), "--resume",
                                 str(ckpt), steps=8))
    full = json.loads((tmp_path / "ddp" / "run.json").read_text())["artifacts"]["final_weights"]
    resumed = json.loads((tmp_path / "resumed" / "run.json").read_text())["artifacts"]["final_weights"]
    assert resumed == full


def test_validation_subsets_cover_every_family():
    families = ["count", "count", "count", "track", "track", "temporal"]
    samples = [Trajectory(id=str(i), question="q", metadata={"family": f}) for i, f in enumerate(families)]
    order = _round_robin(list(range(6)), samples)
    assert order == [0, 3, 5, 1, 4, 2]
    assert {families[i] for i in order[:3]} == {"count", "track", "temporal"}


def test_learning_progress_gets_per_pool_metrics_from_every_pool(tmp_path, train_suite_dir, tiny_model_dir,
                                                                  deterministic):
    cfg = load_config(None, sft_overrides(train_suite_dir, tiny_model_dir, steps=4, **{
        "curriculum.strategy": "learning_progress", "sft.eval_rollouts": 3}))
    train_sft(cfg, tmp_path / "run", show_progress=False)
    rollouts = read_jsonl(tmp_path / "run" / "rollouts" / "step-000004.jsonl")
    assert sorted(t.metadata["difficulty"] for t in rollouts) == ["hard", "medium", "simple"]
    decision = json.loads((tmp_path / "run" / "curriculum.jsonl").read_text().splitlines()[-1])
    assert {f"accuracy/{pool}" for pool in ("simple", "medium", "hard")} <= set(decision["metrics"])
    assert set(decision["mixture"]) == {"simple", "medium", "hard"} and min(decision["mixture"].values()) > 0
