"""`pixelis model pretrain`: real weight updates on generated images, same seed -> same weights, exact resume,
held-out metrics on images never trained on."""

import json
import subprocess

import pytest
import torch
from typer.testing import CliRunner

from pixelis.cli import app
from pixelis.model.load import load_policy
from sft_args import BIN

runner = CliRunner()
SMALL = {"pretrain.batch_size": 2, "pretrain.heldout_samples": 4, "pretrain.eval_interval": 2,
         "pretrain.save_interval": 2, "model.device": "cpu", "reproducibility.torch_threads": 2}


@pytest.fixture(autouse=True)
def _undo_deterministic_mode():
    yield
    torch.use_deterministic_algorithms(False)


def _pretrain(model, out, *extra, steps=4, seed=0):
    sets = [a for k, v in SMALL.items() for a in ("--set", f"{k}={v}")]
    return runner.invoke(app, ["model", "pretrain", "--model", str(model), "--out", str(out), "--steps", str(steps),
                               "--seed", str(seed), "--deterministic", "--no-progress", *sets, *extra])


def _final_hash(run):
    return json.loads((run / "run.json").read_text())["artifacts"]["final_weights"]


def test_same_seed_same_weights_and_the_weights_move(tmp_path, tiny_model_dir):
    sets = [a for k, v in SMALL.items() for a in ("--set", f"{k}={v}")]
    verify = subprocess.run(
        [str(BIN / "pixelis"), "repro", "verify", "--workdir", str(tmp_path / "verify"), "--",
         str(BIN / "pixelis"), "model", "pretrain", "--model", str(tiny_model_dir), "--steps", "4", "--seed", "0",
         "--deterministic", "--no-progress", *sets], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    a, c = tmp_path / "verify" / "run-0", tmp_path / "c"
    result = _pretrain(tiny_model_dir, c, seed=1)
    assert result.exit_code == 0, result.output
    assert _final_hash(a) != _final_hash(c), "another seed draws other images"
    before, _ = load_policy(tiny_model_dir, dtype="float32", device="cpu")
    after, _ = load_policy(a / "final", dtype="float32", device="cpu")
    moved = [n for (n, p), q in zip(before.named_parameters(), after.parameters()) if not torch.equal(p, q)]
    assert any("visual" in n for n in moved) and any("language_model" in n for n in moved)
    assert (a / "final" / "aux_head.safetensors").is_file() and (a / "grounding.png").is_file()


def test_heldout_metrics_come_from_unseen_images(tmp_path, tiny_model_dir):
    run = tmp_path / "run"
    result = _pretrain(tiny_model_dir, run)
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "grounding.json").read_text())
    assert metrics == json.loads((run / "final" / "grounding.json").read_text())
    assert metrics["n"] == 4 and set(metrics["by_size"]) <= {"small", "medium", "large"}
    assert "| box_iou50 |" in result.output, "the CLI prints the held-out table"
    records = [json.loads(line) for line in (run / "heldout" / "step-000004.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [f"grounding-heldout-{i:07d}" for i in range(4)]
    history = [json.loads(line) for line in (run / "pretrain_history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history] == [1, 2, 3, 4] and [r["step"] for r in history if "heldout" in r] == [2, 4]


def test_resume_is_exact_and_checks_the_config(tmp_path, tiny_model_dir):
    run = tmp_path / "run"
    assert _pretrain(tiny_model_dir, run).exit_code == 0
    first = _final_hash(run)
    # the resumed steps are rendered by worker processes: a resume may change that, and the weights do not move
    resumed = _pretrain(tiny_model_dir, run, "--resume", str(run / "checkpoint-2"),
                        "--set", "pretrain.render_workers=2")
    assert resumed.exit_code == 0, resumed.output
    assert _final_hash(run) == first
    changed = _pretrain(tiny_model_dir, run, "--resume", str(run), "--set", "pretrain.learning_rate=0.01")
    assert changed.exit_code == 2 and "pretrain.learning_rate" in changed.output and "Traceback" not in changed.output


def test_ordinary_mistakes_are_one_error_line(tmp_path, tiny_model_dir):
    missing = runner.invoke(app, ["model", "pretrain", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert missing.exit_code == 2 and "does not exist" in missing.output and "Traceback" not in missing.output
    bad = _pretrain(tiny_model_dir, tmp_path / "b", "--set", "pretrain.task_weights={boxes: 1.0}")
    assert bad.exit_code == 2 and "pretrain.task_weights" in bad.output
    not_ours = tmp_path / "sft"
    (not_ours / "checkpoint-2").mkdir(parents=True)
    (not_ours / "checkpoint-2" / "state.json").write_text(json.dumps(
        {"step": 2, "world_size": 1, "weights_sha256": "0", "config": {}, "history": [], "curriculum": {}}))
    refused = _pretrain(tiny_model_dir, not_ours, "--resume", str(not_ours / "checkpoint-2"))
    assert refused.exit_code == 2 and "not a grounding pre-training checkpoint" in refused.output


def test_sft_starts_from_the_pretrained_head_and_refuses_a_pretraining_checkpoint(tmp_path, tiny_model_dir,
                                                                                   train_suite_dir):
    from safetensors.torch import load_file

    from pixelis.core.config import load_config
    from pixelis.train.sft import SFTRecipe
    from sft_args import sft_overrides, train_cmd

    run = tmp_path / "run"
    assert _pretrain(tiny_model_dir, run, steps=2).exit_code == 0
    cfg = load_config(None, sft_overrides(train_suite_dir, run / "final", steps=2, **{"sft.aux_head": "true"}))
    head = SFTRecipe(cfg, tmp_path / "sft-run", show_progress=False).head.state_dict()
    saved = load_file(str(run / "final" / "aux_head.safetensors"))
    assert set(head) == set(saved) and all(torch.equal(head[k], saved[k]) for k in saved)
    refused = runner.invoke(app, train_cmd(train_suite_dir, tiny_model_dir, "--resume", str(run / "checkpoint-2"),
                                           "--out", str(tmp_path / "sft")))
    assert refused.exit_code == 2 and "not an SFT checkpoint" in refused.output and "Traceback" not in refused.output
