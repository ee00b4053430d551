"""A training sampler that follows the curriculum's current mixture over difficulty pools, and resumes exactly."""

from __future__ import annotations

import random
from typing import Any, Callable, Sequence


class CurriculumSampler:
    """Draws batches of sample indices: a pool per item from the current mixture, then an item of that pool.

    The mixture is read at every draw, so a curriculum change takes effect at the next batch. The generator
    state and the number of batches drawn are saved in checkpoints (`state_dict`) for resume-exact training.
    """

    def __init__(self, difficulties: Sequence[str], choose_pool: Callable[[random.Random], str], seed: int):
        self.pools: dict[str, list[int]] = {}
        for index, difficulty in enumerate(difficulties):
            self.pools.setdefault(difficulty, []).append(index)
        if not self.pools:
            raise ValueError("the training set is empty")
        self.choose_pool = choose_pool
        self.rng = random.Random(seed)
        self.batches_drawn = 0

    def next_batch(self, batch_size: int) -> list[int]:
        """Indices of the next batch; a pool the data lacks falls back to the nearest pool that exists."""
        out = []
        for _ in range(batch_size):
            pool = self._existing_pool(self.choose_pool(self.rng))
            out.append(self.rng.choice(self.pools[pool]))
        self.batches_drawn += 1
        return out

    def _existing_pool(self, wanted: str) -> str:
        if wanted in self.pools:
            return wanted
        order = ["simple", "medium", "hard"]
        rank = order.index(wanted) if wanted in order else 0
        return min(self.pools, key=lambda p: abs((order.index(p) if p in order else 0) - rank))

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.getstate(), "batches_drawn": self.batches_drawn}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.batches_drawn = state["batches_drawn"]
