"""Online-learning settings (the SFT-trained model they run, `online_model_dir`, is in tests/conftest.py)."""

from pixelis.core.config import load_config

# Rollouts short enough for 2 cores; sampling cool enough that the N samples of a query often agree.
ONLINE_SETTINGS = {
    "model.device": "cpu", "agent.max_turns": 3, "agent.max_new_tokens": 96, "agent.tool_prompt": "compact",
    "agent.batch_size": 4, "online.n_samples": 3, "online.temperature": 0.5, "online.min_buffer": 2,
    "online.confidence_gate": 0.4, "reproducibility.torch_threads": 2,
}


def online_overrides(**extra):
    """`--set` values of the online tests (extra keys win)."""
    return [f"{k}={v}" for k, v in {**ONLINE_SETTINGS, **extra}.items()]


def online_config(**extra):
    return load_config(None, online_overrides(**extra))
