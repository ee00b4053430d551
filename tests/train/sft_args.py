"""Small SFT settings shared by the training tests: a few steps of the xs model on the OCR-free suite."""

from pathlib import Path
import sys

BIN = Path(sys.executable).parent


def sft_overrides(suite, model, steps=8, **extra):
    """`--set` values for a short, deterministic SFT run on `suite` from `model`."""
    values = {
        "data.path": str(suite), "model.path": str(model), "model.device": "cpu", "sft.max_steps": steps,
        "sft.batch_size": 2, "sft.learning_rate": 3e-3, "sft.save_interval": 4, "sft.eval_rollouts": 2,
        "sft.eval_loss_samples": 3, "sft.report_to": "[]", "agent.max_new_tokens": 16, "agent.max_turns": 2,
        "agent.tool_prompt": "compact", "curriculum.evaluation_interval": 4, "reproducibility.torch_threads": 2,
        **extra,
    }
    return [f"{k}={v}" for k, v in values.items()]


def train_cmd(suite, model, *extra, steps=4):
    """`pixelis train` arguments (after the executable) for a short run with seed 3, deterministic."""
    sets = [a for o in sft_overrides(suite, model, steps=steps) for a in ("--set", o)]
    return ["train", "--mode", "sft", "--no-progress", "--seed", "3", "--deterministic", *sets, *extra]
