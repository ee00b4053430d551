"""Training checkpoints are records: atomic saves, verified loads, config checks, history kept across resumes."""

import json
import re
import shutil

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pixelis.core.config import ConfigError, load_config
from pixelis.core.errors import CheckpointError, TrainingError
from pixelis.core.repro import enable_deterministic_mode, set_global_seed
from pixelis.train import checkpoint as checkpoint_module
from pixelis.train.checkpoint import latest_checkpoint
from pixelis.train.sft import SFTRecipe, lr_at, train_sft
from sft_args import sft_overrides


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, train_suite_dir, tiny_model_dir):
    """An 8-step run (checkpoints at 4 and 8, evaluations at 4 and 8, tensorboard on) and its config."""
    set_global_seed(0)
    enable_deterministic_mode(num_threads=2)
    cfg = load_config(None, sft_overrides(train_suite_dir, tiny_model_dir, steps=8,
                                       **{"sft.report_to": "[tensorboard]", "sft.aux_head": "true"}))
    out = tmp_path_factory.mktemp("finished") / "run"
    result = train_sft(cfg, out, show_progress=False)
    yield cfg, out, result
    torch.use_deterministic_algorithms(False)


def _copy(run, tmp_path):
    dest = tmp_path / "run"
    shutil.copytree(run, dest)
    return dest


def test_checkpoint_records_config_and_per_rank_state(finished_run):
    cfg, run, result = finished_run
    ckpt = run / "checkpoint-8"
    state = json.loads((ckpt / "state.json").read_text())
    from pixelis.core.config import config_hash
    assert state["config_hash"] == config_hash(cfg) and state["world_size"] == 1
    assert state["weights_sha256"] == result.weights_sha256
    assert {p.name for p in ckpt.iterdir()} == {"trainable.safetensors", "aux_head.safetensors", "optimizer.pt",
                                                 "rank-0.json", "rng-0.pt", "state.json"}
    assert not list(run.glob(".*partial")), "no staging directory is left after a save"


def test_a_save_killed_midway_leaves_the_previous_checkpoint(finished_run, tmp_path, monkeypatch):
    cfg, run, _ = finished_run
    run = _copy(run, tmp_path)
    shutil.rmtree(run / "checkpoint-8")
    recipe = SFTRecipe(cfg, run, resume=run / "checkpoint-4", show_progress=False)
    recipe.load(run / "checkpoint-4")
    steps = lambda name: [json.loads(r)["step"] for r in (run / name).read_text().splitlines()]  # noqa: E731
    assert steps("train_history.jsonl") == [1, 2, 3, 4] and steps("curriculum.jsonl") == [4], "cut back on load"
    recipe.step = 8

    def killed(obj, file, *args, **kwargs):  # the process dies while writing the optimizer state
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module.torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        recipe.save()
    assert not (run / "checkpoint-8").exists()
    assert latest_checkpoint(run) == run / "checkpoint-4"
    monkeypatch.undo()
    again = SFTRecipe(cfg, run, resume=run / "checkpoint-4", show_progress=False)
    again.load(run / "checkpoint-4")  # the previous checkpoint still loads
    assert again.step == 4


@pytest.mark.parametrize("name, damage, message", [
    ("trainable.safetensors", "flip", "do not match the sha256 recorded"),
    ("trainable.safetensors", "truncate", "cannot read the weights"),
    ("optimizer.pt", "garbage", "cannot read the optimizer state"),
    ("state.json", "truncate", "cannot read the checkpoint state"),
    ("rng-0.pt", "empty", "cannot read the RNG state (the file is empty)"),
    ("rank-0.json", "missing", "incomplete: missing rank-0.json"),
])
def test_a_damaged_checkpoint_is_one_error_naming_the_file(finished_run, tmp_path, name, damage, message):
    cfg, run, _ = finished_run
    run = _copy(run, tmp_path)
    file = run / "checkpoint-4" / name
    data = file.read_bytes()
    if damage == "flip":  # one bit of the last weight value
        file.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    elif damage == "truncate":
        file.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        file.write_bytes(b"not a torch file" * 10)
    elif damage == "empty":
        file.write_bytes(b"")
    else:
        file.unlink()
    with pytest.raises(CheckpointError, match=re.escape(message)) as info:
        train_sft(cfg, run, resume=run / "checkpoint-4", show_progress=False)
    assert name in str(info.value)


def test_resume_refuses_a_config_change_unless_allowed(finished_run, tmp_path):
    cfg, run, _ = finished_run
    run = _copy(run, tmp_path)
    changed = cfg.model_copy(deep=True)
    changed.sft.learning_rate, changed.sft.save_interval = 1e-2, 2  # save_interval is safe to change
    with pytest.raises(ConfigError, match=r"sft\.learning_rate: 0\.003 -> 0\.01") as info:
        train_sft(changed, run, resume=run / "checkpoint-4", show_progress=False)
    assert "save_interval" not in str(info.value) and "--allow-config-change" in str(info.value)
    result = train_sft(changed, run, resume=run / "checkpoint-4", show_progress=False, allow_config_change=True)
    assert result.steps == 8


def test_resume_in_place_leaves_no_duplicated_records(finished_run, tmp_path):
    cfg, run, result = finished_run
    run = _copy(run, tmp_path)
    before = (run / "curriculum.jsonl").read_text().splitlines()
    resumed = train_sft(cfg, run, resume=run / "checkpoint-4", show_progress=False)
    assert resumed.weights_sha256 == result.weights_sha256
    after = (run / "curriculum.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in after] == [4, 8] and after == before
    history = [json.loads(r)["step"] for r in (run / "train_history.jsonl").read_text().splitlines()]
    assert history == list(range(1, 9))
    events = EventAccumulator(str(run / "sft"))
    events.Reload()
    steps = [e.step for e in events.Scalars("loss")]
    assert steps == list(range(1, 9)), "tensorboard keeps one value per step after the resume"


def test_lr_is_a_pure_function_of_the_step(finished_run):
    cfg, run, _ = finished_run
    history = [json.loads(r) for r in (run / "train_history.jsonl").read_text().splitlines()]
    assert [h["lr"] for h in history] == [lr_at(step, cfg.sft) for step in range(8)]
    sft = cfg.sft.model_copy(update={"warmup_ratio": 0.25, "max_steps": 8})
    assert [lr_at(s, sft) for s in (0, 1, 2)] == [0.0, sft.learning_rate / 2, sft.learning_rate]
    assert lr_at(8, sft) == 0.0


def test_lr_matches_transformers_cosine_schedule_bitwise():
    """The 1-rank schedule is the one runs had before (transformers' warmup + cosine), to the last bit."""
    from transformers import get_cosine_schedule_with_warmup

    sft = load_config(None, ["sft.max_steps=97", "sft.warmup_ratio=0.3", "sft.learning_rate=1e-3"]).sft
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=sft.learning_rate)
    schedule = get_cosine_schedule_with_warmup(optimizer, int(sft.warmup_ratio * sft.max_steps), sft.max_steps)
    reference = []
    for _ in range(sft.max_steps):
        reference.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert [lr_at(step, sft) for step in range(sft.max_steps)] == reference


def test_a_non_finite_loss_stops_training_without_a_final_model(tmp_path, train_suite_dir, tiny_model_dir):
    cfg = load_config(None, sft_overrides(train_suite_dir, tiny_model_dir, steps=8,
                                       **{"sft.learning_rate": 1e30, "sft.save_interval": 1}))
    with pytest.raises(TrainingError, match=r"non-finite loss \((nan|inf)\) at step \d+") as info:
        train_sft(cfg, tmp_path / "run", show_progress=False)
    step = int(re.search(r"at step (\d+)", str(info.value)).group(1))
    assert not (tmp_path / "run" / "final").exists()
    if step > 1:
        assert f"checkpoint-{step - 1}" in str(info.value)
    else:
        assert "no checkpoint was saved" in str(info.value)
