"""Session fixtures shared across test packages: generated suites and a tiny offline model."""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # any accidental Hub access fails loudly

import pytest

from pixelis.core.config import load_config
from pixelis.core.trajectory import read_jsonl

sys.path.insert(0, str(Path(__file__).parent / "train"))
from sft_args import sft_overrides  # noqa: E402  (the training tests' short-SFT settings)

# Families whose generation needs no OCR: cheap enough for the training tests' suite.
FAST_FAMILIES = ["attribute", "track", "temporal"]


@pytest.fixture(scope="session")
def synth_suite_dir(tmp_path_factory):
    """One sample of every family x difficulty (traps included), all in train.jsonl, by the real generator."""
    from pixelis.data.synth.suite import generate_suite

    out = tmp_path_factory.mktemp("shared_suite")
    generate_suite(out, n=15, seed=5, trap_rate=0.3, val_fraction=0.0, test_fraction=0.0, progress=False)
    return out


@pytest.fixture(scope="session")
def synth_suite(synth_suite_dir):
    return {split: read_jsonl(synth_suite_dir / f"{split}.jsonl") for split in ("train", "val", "test")}


@pytest.fixture(scope="session")
def train_suite_dir(tmp_path_factory):
    """A train/val/test suite of the OCR-free families: 4 per family x difficulty, split 2/1/1."""
    from pixelis.data.synth.suite import generate_suite

    out = tmp_path_factory.mktemp("train_suite")
    generate_suite(out, n=36, seed=7, families=FAST_FAMILIES, trap_rate=0.1, val_fraction=0.25,
                   test_fraction=0.25, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, train_suite_dir):
    """The xs tiny Qwen3-VL checkpoint with a tokenizer trained on the training suite's texts."""
    from pixelis.data.io import corpus_texts
    from pixelis.model.tiny import build_tiny_model

    corpus = corpus_texts(read_jsonl(train_suite_dir / "train.jsonl"))
    return build_tiny_model(tmp_path_factory.mktemp("shared_tiny"), seed=0, size="xs", corpus=corpus)


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


@pytest.fixture(autouse=True)
def _fresh_logging():
    """In-process CLI runs install log handlers (on the root logger); never let them leak into the next test."""
    yield
    from pixelis.core.tracing import reset_logging

    reset_logging()
