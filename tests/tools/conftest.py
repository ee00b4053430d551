"""Shared fixtures for the tool tests: one registry and a `run` helper that goes through it."""

from __future__ import annotations

import pytest

from pixelis.core.trajectory import Observation, ToolCall
from pixelis.tools.base import ToolContext, ToolLimits
from pixelis.tools.registry import ToolRegistry


@pytest.fixture(scope="session")
def registry() -> ToolRegistry:
    return ToolRegistry.default()


@pytest.fixture(scope="session")
def run(registry):
    """run(name, args, images=[...], video=[...], limits=...) -> the Observation the registry returns."""

    def _run(name: str, args: dict, images=(), video=None, limits: ToolLimits | None = None) -> Observation:
        ctx = ToolContext(images=list(images), video=video, limits=limits or ToolLimits())
        return registry.execute(ToolCall(name, args), ctx)

    return _run
