"""RFT end to end on the xs tiny model: rollouts, rewards, the GRPO update, checkpoints, resume, collapse alerts."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pixelis.core.config import ConfigError, load_config
from pixelis.core.errors import DataError, TrainingError
from pixelis.core.repro import set_global_seed
from pixelis.core.trajectory import read_jsonl
from pixelis.train.rft import RFTRecipe, train_rft
from sft_args import BIN


def rft_overrides(suite, model, steps=2, **extra):
    """`--set` values for a short, deterministic RFT run of the xs model: 2 prompts x 2 rollouts per step."""
    values = {
        "data.path": str(suite), "model.path": str(model), "model.device": "cpu", "rft.max_steps": steps,
        "rft.prompts_per_step": 2, "rft.num_generations": 2, "rft.learning_rate": 1e-3, "rft.save_interval": 1,
        "rft.beta": 0.04, "rft.no_tool_warning_after": 4, "agent.max_new_tokens": 12, "agent.max_turns": 2,
        "agent.tool_prompt": "compact", "reproducibility.torch_threads": 2,
        "rft.rewards": "{task: 1.0, format: 0.2, efficiency: 1.0}", **extra,
    }
    return [f"{k}={v}" for k, v in values.items()]


def upper_half_share(model_dir):
    """A reward any policy can earn by degrees: the share of its sampled tokens in the upper half of the vocabulary.
    It varies from rollout to rollout even for a random model, so advantages are non-zero and GRPO must raise it."""
    vocab_size = json.loads((model_dir / "config.json").read_text())["text_config"]["vocab_size"]

    def reward(records):
        out = []
        for r in records:
            ids = [i for turn in r.trajectory.turns for i in turn.generation.token_ids]
            out.append(sum(i >= vocab_size // 2 for i in ids) / max(1, len(ids)))
        return out
    return reward


def _history(run):
    return [json.loads(line) for line in (run / "rft_history.jsonl").read_text().splitlines()]


def test_short_run_updates_the_policy_and_records_every_step(tmp_path, train_suite_dir, tiny_model_dir,
                                                            deterministic, caplog):
    cfg = load_config(None, rft_overrides(train_suite_dir, tiny_model_dir, steps=2))
    with caplog.at_level(logging.WARNING, logger="pixelis.rft"):
        result = train_rft(cfg, tmp_path / "run", show_progress=False,
                           custom_rewards={"upper": (1.0, upper_half_share(tiny_model_dir))})
    run = tmp_path / "run"
    history = _history(run)
    assert [h["step"] for h in history] == [1, 2]
    first = history[0]
    assert first["kl"] == 0.0  # the reference is the start policy
    assert history[1]["kl"] > 0.0  # the update moved the policy away from it
    for key in ("reward", "reward/upper", "reward/task", "reward/format", "reward/efficiency", "rapr", "tool_calls",
                "parse_error_rate", "entropy", "clip_ratio", "accuracy"):
        assert key in first, key
    rollouts = read_jsonl(run / "rollouts" / "step-000001.jsonl")
    assert len(rollouts) == 4 and rollouts[0].question == rollouts[1].question  # a group: 2 draws of one prompt
    assert {p.name for p in run.glob("checkpoint-*")} == {"checkpoint-1", "checkpoint-2"}
    assert (run / "final" / "model.safetensors").is_file() and (run / "rft.png").is_file()
    state = json.loads((run / "checkpoint-2" / "state.json").read_text())
    assert state["recipe"] == "rft" and state["weights_sha256"] == result.weights_sha256
    assert "no tool call in its first 4 rollouts" in caplog.text  # a random model is not an SFT checkpoint


def test_grpo_raises_the_reward_it_is_given(tmp_path, train_suite_dir, tiny_model_dir, deterministic):
    sets = rft_overrides(train_suite_dir, tiny_model_dir, steps=8, **{
        "rft.rewards": "{task: 1.0}", "rft.learning_rate": 1e-2, "rft.beta": 0.0, "rft.save_interval": 8,
        "rft.prompts_per_step": 2, "rft.num_generations": 4, "rft.num_iterations": 2})
    train_rft(load_config(None, sets), tmp_path / "run", show_progress=False,
              custom_rewards={"upper": (1.0, upper_half_share(tiny_model_dir))})
    rewards = [h["reward/upper"] for h in _history(tmp_path / "run")]
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.1, rewards


def test_resume_is_bitwise_exact_with_curiosity_state(tmp_path, train_suite_dir, tiny_model_dir, deterministic):
    sets = rft_overrides(train_suite_dir, tiny_model_dir, steps=2,
                         **{"rft.rewards": "{task: 1.0, format: 0.2, curiosity: 0.1, coherence: 0.1}"})
    upper = {"upper": (1.0, upper_half_share(tiny_model_dir))}
    full = train_rft(load_config(None, sets), tmp_path / "full", show_progress=False, custom_rewards=upper)
    assert (tmp_path / "full" / "checkpoint-1" / "extras.pt").is_file()  # the curiosity model and its optimizer
    set_global_seed(123)  # resume must not depend on the state the process happens to be in
    resumed = train_rft(load_config(None, sets), tmp_path / "full", resume=tmp_path / "full" / "checkpoint-1",
                        show_progress=False, custom_rewards=upper)
    assert resumed.weights_sha256 == full.weights_sha256
    history = _history(tmp_path / "full")
    assert [h["step"] for h in history] == [1, 2]  # the resumed step replaced its first record


def test_resume_refuses_a_changed_recipe_and_other_checkpoints(tmp_path, train_suite_dir, tiny_model_dir,
                                                               deterministic):
    train_rft(load_config(None, rft_overrides(train_suite_dir, tiny_model_dir, steps=1)), tmp_path / "run",
              show_progress=False)
    changed = load_config(None, rft_overrides(train_suite_dir, tiny_model_dir, steps=1, **{"rft.beta": 0.1}))
    with pytest.raises(ConfigError, match="rft.beta"):
        RFTRecipe(changed, tmp_path / "run", resume=tmp_path / "run" / "checkpoint-1")


@pytest.mark.parametrize("response", ["warn", "boost_curiosity", "stop"])
def test_tool_use_collapse_raises_the_configured_response(response, tmp_path, train_suite_dir, tiny_model_dir,
                                                          deterministic):
    """The random model never calls a tool: its RaPR is 0 from the first step, which the monitor must flag."""
    sets = rft_overrides(train_suite_dir, tiny_model_dir, steps=3, **{
        "rft.rewards": "{task: 1.0, curiosity: 0.1}", "rft.collapse.window": 1, "rft.collapse.patience": 2,
        "rft.collapse.response": response})
    run = tmp_path / "run"
    if response == "stop":
        with pytest.raises(TrainingError, match="tool-use collapse at step 2"):
            train_rft(load_config(None, sets), run, show_progress=False)
        assert (run / "checkpoint-2").is_dir() and not (run / "final").exists()
    else:
        train_rft(load_config(None, sets), run, show_progress=False)
    alerts = [json.loads(line) for line in (run / "alerts.jsonl").read_text().splitlines()]
    assert alerts[0]["step"] == 2 and alerts[0]["response"] == response
    assert "rapr_floor" in alerts[0]["reason"]
    if response == "boost_curiosity":
        weights = [h["reward_weights"]["curiosity"] for h in _history(run)]
        assert weights == [0.1, 0.1, 0.2]  # the step after the alert uses the boosted weight


def test_the_reward_curriculum_switches_reward_terms_by_stage(tmp_path, train_suite_dir, tiny_model_dir,
                                                             deterministic):
    stages = ("[{name: plain, mixture: {simple: 1.0}, min_steps: 1, exit_criteria: [{metric: rapr, threshold: 0.0}], "
              "rewards: {task: 1.0}}, {name: curious, mixture: {simple: 0.5, medium: 0.5}, "
              "rewards: {task: 1.0, curiosity: 0.5}}]")
    sets = rft_overrides(train_suite_dir, tiny_model_dir, steps=3, **{
        "rft.curriculum": "true", "curriculum.stages": stages, "curriculum.evaluation_interval": 1,
        "curriculum.smoothing_window_size": 1, "curriculum.patience_cycles": 1, "curriculum.cooldown_cycles": 0})
    train_rft(load_config(None, sets), tmp_path / "run", show_progress=False)
    history = _history(tmp_path / "run")
    assert [h["reward_weights"] for h in history] == [{"task": 1.0}, {"task": 1.0, "curiosity": 0.5},
                                                       {"task": 1.0, "curiosity": 0.5}]
    assert history[0]["decision"] == "advance" and "reward/curiosity" in history[1]
    decisions = [json.loads(line) for line in (tmp_path / "run" / "curriculum.jsonl").read_text().splitlines()]
    assert decisions[0]["action"] == "advance" and (tmp_path / "run" / "curriculum.png").is_file()


def test_bad_setups_fail_clearly(tmp_path, train_suite_dir, tiny_model_dir):
    with pytest.raises(ConfigError, match="rft.num_generations"):
        load_config(None, ["rft.num_generations=1"])
    with pytest.raises(ConfigError, match="rft.rewards"):
        load_config(None, ["rft.rewards={task: 1.0, novelty: 1.0}"])
    with pytest.raises(ConfigError, match="rft.rewards"):
        RFTRecipe(load_config(None, rft_overrides(train_suite_dir, tiny_model_dir,
                                                  **{"rft.reward_params": "{task: {bogus: 1}}"})), tmp_path / "a")
    stages = "[{name: only, mixture: {simple: 1.0}, rewards: {novelty: 1.0}}]"
    with pytest.raises(ConfigError, match="curriculum.stages.*novelty"):
        RFTRecipe(load_config(None, rft_overrides(train_suite_dir, tiny_model_dir, **{
            "rft.curriculum": "true", "curriculum.stages": stages})), tmp_path / "c")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "train.jsonl").write_text("")
    with pytest.raises(DataError, match="no trajectories"):
        RFTRecipe(load_config(None, rft_overrides(empty, tiny_model_dir)), tmp_path / "b")


def test_determinism_gate_passes_with_tool_calls_and_tool_images(tmp_path, train_suite_dir, tiny_model_dir):
    """Rollouts that call real tools (the helper's sampler writes the golden first call in half of them) are
    bitwise reproducible across processes, and the update trains on them."""
    sets = rft_overrides(train_suite_dir, tiny_model_dir, steps=2, **{
        "agent.max_new_tokens": 80, "rft.rewards": "{task: 1.0, format: 0.2, rapr_bonus: 1.0}",
        "rft.reward_params": "{rapr_bonus: {H: 1.0}}", "rft.prompts_per_step": 1, "rft.num_generations": 4,
        "rft.save_interval": 2, "tracing.exporter": "jsonl"})
    helper = str(Path(__file__).parents[1] / "helpers" / "tool_calling_rft.py")
    cmd = [str(BIN / "pixelis"), "repro", "verify", "--workdir", str(tmp_path), "--", sys.executable, helper,
           "--seed", "3", "--deterministic", *[a for o in sets for a in ("--set", o)]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = tmp_path / "run-0"
    rollouts = [json.loads(line) for f in sorted((run / "rollouts").glob("step-*.jsonl"))
                for line in f.read_text().splitlines()]
    tool_steps = [s for r in rollouts for s in r["steps"] if s["call"] is not None and s["observation"]["error"] is None]
    assert tool_steps, "no rollout made a valid tool call"
    assert any(s["observation"]["images"] for s in tool_steps), "no tool returned an image into the context"
    history = _history(run)
    assert all(row["tool_calls"] > 0 for row in history)
    assert history[-1]["kl"] > 0  # the first update moved the policy away from its start
    timing = (run / "time.md").read_text()  # where the time went, from the run's own spans
    assert "rft.step" in timing and "agent.turn" in timing


def _launch_two_ranks(*args):
    cmd = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "pixelis.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_two_ranks_shard_prompts_follow_the_one_rank_schedule_and_resume_exactly(tmp_path, train_suite_dir,
                                                                                 tiny_model_dir, deterministic):
    sets = rft_overrides(train_suite_dir, tiny_model_dir, steps=4, **{"rft.save_interval": 2,
                                                                       "rft.warmup_ratio": 0.25})
    cmd = ["train", "--mode", "rft", "--no-progress", "--seed", "3", "--deterministic",
           *[a for o in sets for a in ("--set", o)]]
    _launch_two_ranks(*cmd, "--out", str(tmp_path / "ddp"))
    history = _history(tmp_path / "ddp")
    for row in history:
        assert len(row["prompts"]) == 2 and all(len(p) == 2 for p in row["prompts"])  # whole groups per rank
    assert any(row["prompts"][0] != row["prompts"][1] for row in history), "both ranks drew the same prompts"
    train_rft(load_config(None, [*sets, "reproducibility.seed=3"]), tmp_path / "one", show_progress=False)
    assert [h["lr"] for h in history] == [h["lr"] for h in _history(tmp_path / "one")]
    _launch_two_ranks(*cmd, "--out", str(tmp_path / "resumed"), "--resume", str(tmp_path / "ddp" / "checkpoint-2"))
    final = [json.loads((tmp_path / run / "run.json").read_text())["artifacts"]["final_weights"]
             for run in ("ddp", "resumed")]
    assert final[0] == final[1]
