"""The tool registry: schemas for the chat template, and `execute`, which turns any call into an Observation."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from PIL import Image
from pydantic import ValidationError

from pixelis.core.tracing import TracedOperation
from pixelis.core.trajectory import Observation, ToolCall, ToolErrorInfo
from pixelis.tools.base import Tool, ToolArgumentError, ToolContext, ToolLimits
from pixelis.tools.ocr import ReadText
from pixelis.tools.properties import GetProperties
from pixelis.tools.segment import SegmentObjectAt
from pixelis.tools.temporal import LocalizeEvent, SelectFrames
from pixelis.tools.track import TrackObject
from pixelis.tools.zoom import ZoomIn

logger = logging.getLogger("pixelis.tools")

MAX_TRACED_ARGUMENT_CHARS = 500
_PYDANTIC_KINDS = {"missing": "missing_argument", "extra_forbidden": "extra_argument"}
_KIND_PRIORITY = ("missing_argument", "extra_argument", "wrong_type")


class ToolRegistry:
    """Named tools with their schemas; `execute` never raises."""

    def __init__(self, tools: Iterable[Tool], limits: ToolLimits | None = None):
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            if tool.name in self._tools:
                raise ValueError(f"two tools are named {tool.name!r}")
            self._tools[tool.name] = tool
        self.limits = limits or ToolLimits()

    @classmethod
    def default(cls, limits: ToolLimits | None = None) -> ToolRegistry:
        """All Pixelis tools."""
        tools = [ZoomIn(), SegmentObjectAt(), ReadText(), GetProperties(), TrackObject(), SelectFrames(),
                 LocalizeEvent()]
        return cls(tools, limits)

    def names(self) -> list[str]:
        """Tool names in registration order."""
        return list(self._tools)

    def get(self, name: str) -> Tool:
        """The tool called `name`; KeyError naming the known tools otherwise."""
        if name not in self._tools:
            raise KeyError(f"unknown tool {name!r}; known tools: {', '.join(self._tools)}")
        return self._tools[name]

    def schemas(self) -> list[dict[str, Any]]:
        """Function-calling schemas of all tools (the `tools=` argument of `apply_chat_template`)."""
        return [tool.schema() for tool in self._tools.values()]

    def context(self, images: list[Image.Image], video: list[Image.Image] | None = None) -> ToolContext:
        """A context over these media with this registry's limits."""
        return ToolContext(images=list(images), video=video, limits=self.limits)

    def execute(self, call: ToolCall, ctx: ToolContext) -> Observation:
        """Run one call inside a `tool.<name>` span; every failure becomes an error observation."""
        known = call.name in self._tools if isinstance(call.name, str) else False
        span_name = f"tool.{call.name}" if known else "tool.unknown"
        with TracedOperation(span_name, "tools", metadata={"arguments": _traced_json(call.arguments)}) as op:
            if not known:
                op.set_attribute("tool.requested", str(call.name)[:100])
            observation = self._execute(call, ctx)
            op.set_attribute("outcome", observation.error.kind if observation.error else "ok")
            op.set_attribute("images_out", len(observation.images))
            if observation.error is not None:
                op.add_event("tool.error", {"kind": observation.error.kind, "message": observation.error.message})
        return observation

    def _execute(self, call: ToolCall, ctx: ToolContext) -> Observation:
        tool = self._tools.get(call.name) if isinstance(call.name, str) else None
        if tool is None:
            return _error("unknown_tool", f"unknown tool {call.name!r}; known tools: {', '.join(self._tools)}")
        try:
            # Through JSON, so a tool sees exactly what the wire format can carry.
            args = tool.Args.model_validate_json(json.dumps(call.arguments, allow_nan=False))
        except ValidationError as exc:
            return _error(*_describe_validation(tool, exc))
        except (TypeError, ValueError) as exc:
            return _error("wrong_type", f"arguments must be a JSON object of JSON values: {exc}")
        try:
            return tool.run(ctx, args)
        except ToolArgumentError as exc:
            return _error(exc.kind, exc.message)
        except Exception as exc:  # any failure inside a tool is an observation, never a crashed rollout
            logger.warning("tool %s failed on %s", tool.name, _traced_json(call.arguments), exc_info=True)
            return _error("execution_error", f"{tool.name} failed: {type(exc).__name__}: {exc}")


def _error(kind: str, message: str) -> Observation:
    return Observation(error=ToolErrorInfo(kind=kind, message=message))


def _describe_validation(tool: Tool, exc: ValidationError) -> tuple[str, str]:
    kinds, messages = [], []
    for err in exc.errors():
        kind = _PYDANTIC_KINDS.get(err["type"], "wrong_type")
        arg = ".".join(str(part) for part in err["loc"])
        kinds.append(kind)
        if kind == "missing_argument":
            messages.append(f"missing required argument '{arg}'")
        elif kind == "extra_argument":
            messages.append(f"unexpected argument '{arg}'")
        else:
            messages.append(f"argument '{arg}': {err['msg']}" if arg else f"arguments: {err['msg']}")
    kind = min(kinds, key=_KIND_PRIORITY.index)
    return kind, "; ".join(messages) + f"; usage: {_usage(tool)}"


def _usage(tool: Tool) -> str:
    fields = tool.Args.model_fields
    required = [name for name, field in fields.items() if field.is_required()]
    optional = [f"{name}={json.dumps(field.default)}" for name, field in fields.items() if not field.is_required()]
    return f"{tool.name}({', '.join(required + optional)})"


def _traced_json(arguments: Any) -> str:
    return json.dumps(arguments, default=repr)[:MAX_TRACED_ARGUMENT_CHARS]
