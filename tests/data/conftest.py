"""A small generated suite shared by the data tests (one sample per family x difficulty, some with traps)."""

from dataclasses import dataclass
from pathlib import Path

import pytest

from pixelis.core.trajectory import Trajectory
from pixelis.data.synth.suite import SuiteResult, generate_suite
from pixelis.tools.registry import ToolRegistry


@dataclass
class Suite:
    dir: Path
    result: SuiteResult
    generated: list[Trajectory]  # in memory, as generated (before any file round trip)


@pytest.fixture(scope="session")
def registry() -> ToolRegistry:
    return ToolRegistry.default()


@pytest.fixture(scope="session")
def suite(tmp_path_factory, registry) -> Suite:
    out = tmp_path_factory.mktemp("suite")
    generated: list[Trajectory] = []
    result = generate_suite(out, n=15, seed=11, trap_rate=0.4, val_fraction=0.0, test_fraction=0.0,
                            registry=registry, progress=False, on_sample=generated.append)
    return Suite(out, result, generated)
