"""Fixtures of the training tests."""

import pytest
import torch

from pixelis.core.repro import enable_deterministic_mode, set_global_seed


@pytest.fixture
def deterministic():
    """Seed 0 and deterministic torch with 2 threads for one test, then back to the default algorithms."""
    set_global_seed(0)
    settings = enable_deterministic_mode(num_threads=2)
    yield settings
    torch.use_deterministic_algorithms(False)
