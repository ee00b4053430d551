"""Procedurally generated tasks with golden Chain-of-Thought-Action trajectories, one module per family.

`generate_suite` writes a whole split suite; `generate_sample` draws one task; `FAMILIES` maps names to
families (small_text, count, attribute, track, temporal).
"""

from pixelis.data.synth.base import DIFFICULTIES, GENERATOR_VERSION, Rejected, Scene, TaskFamily
from pixelis.data.synth.suite import FAMILIES, SampleKey, SuiteResult, generate_sample, generate_suite

__all__ = [
    "DIFFICULTIES",
    "FAMILIES",
    "GENERATOR_VERSION",
    "Rejected",
    "SampleKey",
    "Scene",
    "SuiteResult",
    "TaskFamily",
    "generate_sample",
    "generate_suite",
]
