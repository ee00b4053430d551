"""Online-learning fixtures: a tiny model SFT-trained until it calls tools and answers, and its settings."""

import sys
from pathlib import Path

import pytest

from pixelis.core.config import load_config

sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
from sft_args import sft_overrides  # noqa: E402  (the training tests' short-SFT settings)

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


@pytest.fixture(scope="session")
def attribute_suite_dir(tmp_path_factory, train_suite_dir):
    """The attribute-family part of the shared OCR-free suite (6 train, 3 val, 3 test queries)."""
    out = tmp_path_factory.mktemp("attribute_suite")
    (out / "media").symlink_to(train_suite_dir / "media")
    for split in ("train", "val", "test"):
        lines = (train_suite_dir / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        (out / f"{split}.jsonl").write_text("".join(f"{line}\n" for line in lines if '"family": "attribute"' in line),
                                            encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def online_model_dir(tmp_path_factory, attribute_suite_dir, tiny_model_dir):
    """The xs tiny model after 150 SFT steps on the attribute queries: it calls get_properties and answers,
    mostly in agreement across samples, so votes are confident and updates happen."""
    from pixelis.train.sft import train_sft

    cfg = load_config(None, sft_overrides(attribute_suite_dir, tiny_model_dir, steps=150, **{
        "curriculum.evaluation_interval": 1000, "sft.save_interval": 1000, "sft.learning_rate": 5e-3,
        "sft.batch_size": 4}))
    out = tmp_path_factory.mktemp("online_sft")
    train_sft(cfg, out / "run", show_progress=False)
    return out / "run" / "final"
