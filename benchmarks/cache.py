"""Inputs shared by the benchmarks: a synthetic suite and a tiny model, cached under a work directory."""

from __future__ import annotations

from pathlib import Path

FAST_FAMILIES = ("attribute", "track", "temporal")  # no OCR: quick to generate


def ensure_suite(work: Path, n: int, seed: int, families: list[str]) -> Path:
    """A cached synthetic suite under `work`; generated only when missing."""
    from pixelis.data.synth.suite import generate_suite

    suite = work / f"suite-n{n}-seed{seed}-{'-'.join(families)}"
    if not all((suite / f"{s}.jsonl").is_file() for s in ("train", "val", "test")):
        print(f"generating suite ({n} tasks: {', '.join(families)}) -> {suite}", flush=True)
        generate_suite(suite, n, seed, families=families, progress=False, overwrite=True)
    return suite


def ensure_model(work: Path, suite: Path, size: str, seed: int) -> Path:
    """A cached tiny checkpoint (tokenizer trained on the suite's train split); built only when missing."""
    from pixelis.data.io import corpus_texts, load_split
    from pixelis.model.tiny import build_tiny_model

    model_dir = work / f"model-{size}-seed{seed}-{suite.name}"
    if not ((model_dir / "config.json").is_file() and list(model_dir.glob("*.safetensors"))):
        print(f"building tiny model (size {size}) -> {model_dir}", flush=True)
        build_tiny_model(model_dir, seed=seed, size=size, corpus=corpus_texts(load_split(suite, "train")))
    return model_dir
