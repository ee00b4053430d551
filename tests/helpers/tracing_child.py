"""Subprocess side of the propagation test: continue the trace whose context is in the environment.

Prints one JSON line: the trace id current after extraction, and the trace id and parent span id of a span
opened here.
"""

import json
import os

from pixelis.core.tracing import TraceContext, TracedOperation, attach_context

with attach_context(os.environ):
    seen = TraceContext.current().trace_id
    with TracedOperation("child-process", "test") as op:
        parent = op.span.parent

print(
    json.dumps(
        {
            "seen_trace_id": seen,
            "trace_id": op.trace_id,
            "parent_span_id": f"{parent.span_id:016x}" if parent is not None else None,
        }
    )
)
