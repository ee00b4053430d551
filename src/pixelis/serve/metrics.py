"""The server's Prometheus metrics (`GET /metrics`), in one registry per server."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from pixelis.core.trajectory import Trajectory

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class ServerMetrics:
    """Requests, latency, tool calls, generation batch sizes, online updates, buffer size and model version."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("pixelis_requests", "HTTP requests by endpoint and status code.",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("pixelis_request_latency_seconds", "Chat-completion latency, request to answer.",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.tool_calls = Counter("pixelis_tool_calls", "Tool calls of answered requests by tool and outcome "
                                  "(ok, or the error kind).", ["tool", "outcome"], registry=r)
        self.batch_size = Histogram("pixelis_batch_size", "Rollouts in flight per batched generation step.",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.queue = Gauge("pixelis_queue_requests", "Requests accepted and not yet answered.", registry=r)
        self.updates = Gauge("pixelis_online_updates", "Online update tasks by status (pending, accepted, "
                             "rejected, failed).", ["status"], registry=r)
        self.buffer = Gauge("pixelis_buffer_experiences", "Experiences in the online buffer.", registry=r)
        self.model_version = Gauge("pixelis_model_version", "Weight version serving (0: the loaded checkpoint).",
                                   registry=r)

    def count_tools(self, trajectories: list[Trajectory]) -> None:
        """Count the tool calls of finished trajectories."""
        for traj in trajectories:
            for step in traj.steps:
                if step.call is None:
                    continue
                error = step.observation.error if step.observation is not None else None
                self.tool_calls.labels(step.call.name, "ok" if error is None else error.kind).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
