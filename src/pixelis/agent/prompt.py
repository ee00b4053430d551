"""How the tools are presented to the policy: full JSON schemas (the chat template's `tools=`) or a compact list.

The full form is what released Qwen3-VL checkpoints were trained with, but it costs ~2,000 prompt tokens; the
compact form (one line per tool, ~100 tokens) keeps tiny CPU models fast. Training and rollouts must use the
same form, so both read `agent.tool_prompt`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

ToolPromptMode = Literal["full", "compact"]

_COMPACT_HEAD = ("You answer questions about images by calling tools. Image 0 is the input; every image a tool "
                 "returns gets the next index. Boxes [x1,y1,x2,y2] and points [x,y] use a 0-1000 grid. Tools "
                 "(? = optional):")
_COMPACT_TAIL = ('Make one call per turn as <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call> '
                 "and finish with <answer>...</answer>.")


def _signature(schema: dict[str, Any]) -> str:
    fn = schema["function"]
    params = fn.get("parameters", {})
    required = set(params.get("required", []))
    args = [name if name in required else f"{name}?" for name in params.get("properties", {})]
    return f"{fn['name']}({', '.join(args)})"


def compact_tool_text(schemas: list[dict[str, Any]]) -> str:
    """A short system prompt naming each tool and its arguments."""
    return "\n".join([_COMPACT_HEAD, *(_signature(s) for s in schemas), _COMPACT_TAIL])


@dataclass(frozen=True)
class ToolPrompt:
    """The system text and/or `tools=` schemas the chat template receives."""

    system: str | None
    tools: list[dict[str, Any]] | None

    @classmethod
    def build(cls, schemas: list[dict[str, Any]], mode: ToolPromptMode = "full") -> "ToolPrompt":
        if mode == "compact":
            return cls(system=compact_tool_text(schemas), tools=None)
        return cls(system=None, tools=schemas)
