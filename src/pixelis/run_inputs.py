"""A run's inputs when the config leaves them unset: the synthetic suite and the tiny model, built in the run dir.

``data.path: null`` generates the suite (``data.*`` settings, seeded from ``reproducibility.seed``) into
``RUN/data``; ``model.path: null`` builds the tiny offline model (``model.size``, same seed, tokenizer trained on
the suite's texts) into ``RUN/model``. What was built already (a resumed run) is reused, not rebuilt.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pixelis.core.config import PixelisConfig

log = logging.getLogger("pixelis.inputs")

__all__ = ["default_model", "default_suite", "resolve_inputs"]


def default_suite(cfg: PixelisConfig, out: Path, show_progress: bool = True) -> Path:
    """``data.path``, or the synthetic suite generated into ``out/data`` when it is unset."""
    if cfg.data.path is not None:
        return Path(cfg.data.path)
    from pixelis.data.synth.suite import generate_suite  # loads the tools: only when a suite is generated

    d, seed, suite = cfg.data, cfg.reproducibility.seed, out / "data"
    if (suite / "manifest.json").is_file():
        log.info("data.path is not set: reusing the suite generated earlier in %s", suite)
        return suite
    log.info("data.path is not set: generating the synthetic suite (%d samples, seed %d) into %s", d.n, seed, suite)
    generate_suite(suite, d.n, seed, d.families, d.difficulties, d.trap_rate, d.val_fraction, d.test_fraction,
                   progress=show_progress, workers=d.workers)
    return suite


def default_model(cfg: PixelisConfig, out: Path, suite: Path) -> Path:
    """``model.path``, or the tiny model built into ``out/model`` (tokenizer from ``suite``'s texts) when unset."""
    if cfg.model.path is not None:
        return Path(cfg.model.path)
    from pixelis.data.io import corpus_texts, load_split
    from pixelis.model.tiny import build_tiny_model

    seed, model_dir = cfg.reproducibility.seed, out / "model"
    if (model_dir / "config.json").is_file():
        log.info("model.path is not set: reusing the tiny model built earlier in %s", model_dir)
        return model_dir
    log.info("model.path is not set: building the tiny %s model (seed %d) into %s", cfg.model.size, seed, model_dir)
    corpus = corpus_texts(load_split(suite, "train", cfg.data.max_image_pixels))
    return build_tiny_model(model_dir, seed=seed, size=cfg.model.size, corpus=corpus, max_pixels=cfg.model.max_pixels)


def resolve_inputs(cfg: PixelisConfig, out: Path, need_model: bool = True,
                   show_progress: bool = True) -> PixelisConfig:
    """A copy of ``cfg`` with ``data.path`` (and ``model.path`` when ``need_model``) set, building what is unset."""
    resolved = cfg.model_copy(deep=True)
    suite = default_suite(cfg, out, show_progress)
    resolved.data.path = str(suite)
    if need_model:
        resolved.model.path = str(default_model(cfg, out, suite))
    return resolved
