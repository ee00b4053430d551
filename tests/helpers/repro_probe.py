"""Subprocess side of the cross-process reproducibility tests (tests/core/test_repro.py).

Usage: python repro_probe.py SEED. Prints one JSON object: seeded python/numpy/torch draws, the order and
worker-side random draws of a 2-worker DataLoader, and derived seeds. (Deterministic training across
processes is checked through `pixelis repro verify` in tests/cli/test_repro_cli.py.)
"""

import json
import os
import random
import sys

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from pixelis.core.repro import (
    derive_seed,
    get_reproducible_dataloader_kwargs,
    set_global_seed,
)


class WorkerDraws(Dataset):
    """Each item: its index, the worker that loaded it, and random draws made inside that worker."""

    def __len__(self) -> int:
        return 16

    def __getitem__(self, index: int) -> dict:
        return {
            "index": index,
            "worker": get_worker_info().id,
            "python": random.random(),
            "numpy": float(np.random.rand()),
            "torch": torch.rand(()).item(),
        }


def main(seed: int) -> None:
    set_global_seed(seed)
    draws = {
        "python": [random.random() for _ in range(5)],
        "numpy": np.random.rand(5).tolist(),
        "torch": torch.rand(5).tolist(),
        "pythonhashseed": os.environ.get("PYTHONHASHSEED"),
    }
    loader = DataLoader(WorkerDraws(), batch_size=4, shuffle=True, **get_reproducible_dataloader_kwargs(seed, 2))
    batches = [{key: value.tolist() for key, value in batch.items()} for batch in loader]
    derived = [derive_seed(seed, "rank", rank) for rank in range(4)]
    print(json.dumps({"draws": draws, "batches": batches, "derived": derived}))


if __name__ == "__main__":
    main(int(sys.argv[1]))
