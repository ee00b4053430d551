"""The multi-turn agent: a policy generates, tools act on pixels, observations come back."""

from pixelis.agent.loop import (
    TERMINATIONS,
    Agent,
    AgentLimits,
    Generation,
    GenerationRequest,
    Policy,
    RolloutBatch,
    SampledTurn,
    SamplingParams,
)
from pixelis.agent.policies import ModelPolicy, ReplayPolicy

__all__ = ["Agent", "AgentLimits", "Generation", "GenerationRequest", "ModelPolicy", "Policy", "ReplayPolicy", "RolloutBatch",
           "SampledTurn", "SamplingParams", "TERMINATIONS"]
