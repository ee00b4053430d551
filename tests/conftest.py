"""Session fixtures shared across test packages: generated suites and a tiny offline model."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # any accidental Hub access fails loudly

import pytest

from pixelis.core.trajectory import read_jsonl

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


@pytest.fixture(autouse=True)
def _fresh_logging():
    """In-process CLI runs install log handlers (on the root logger); never let them leak into the next test."""
    yield
    from pixelis.core.tracing import reset_logging

    reset_logging()
