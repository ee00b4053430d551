"""`pixelis serve --online`: traffic is learned from while serving; versions rise; SIGTERM drains the updates."""

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pixelis.core.trajectory import read_jsonl
from pixelis.online.tasks import TaskQueue

from serve_helpers import SERVE_SETTINGS, start_server, user_message

ONLINE = {**SERVE_SETTINGS, "online.n_samples": 3, "online.temperature": 0.5, "online.min_buffer": 2,
          "online.confidence_gate": 0.4, "online.embedder": "pixels", "tracing.exporter": "jsonl"}


def _spans(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def metric(server, name):
    _, text = server.get("/metrics")
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_online_server_learns_from_traffic_and_serves_rising_versions(tmp_path, online_model_dir,
                                                                      attribute_suite_dir):
    server = start_server(tmp_path, online_model_dir, ONLINE, "--online")
    samples = read_jsonl(attribute_suite_dir / "train.jsonl")
    client = server.client()

    def ask(sample):
        return client.chat.completions.create(model=server.model, messages=user_message(
            sample.question, *sample.images), seed=1).model_extra["pixelis"]

    with ThreadPoolExecutor(3) as pool:
        first = list(pool.map(ask, samples))
    assert all(ext["online"] is not None and ext["rollouts"] == 3 for ext in first)
    assert any(ext["online"]["learned"] for ext in first), [ext["confidence"] for ext in first]
    deadline = time.monotonic() + 240
    while metric(server, 'pixelis_online_updates{status="accepted"}') < 1:
        assert time.monotonic() < deadline and server.get("/health")[0] == 200, server.log()[-3000:]
        time.sleep(0.5)
    later = [ask(s) for s in samples[:2]]
    assert max(ext["model_version"] for ext in later) >= 1 > min(ext["model_version"] for ext in first)
    assert metric(server, "pixelis_model_version") >= 1 and metric(server, "pixelis_buffer_experiences") >= 1
    assert server.stop() == 0, server.log()[-3000:]
    counts = TaskQueue(server.run_dir / "online" / "tasks.db").counts()
    assert counts["pending"] == 0 and counts["accepted"] >= 1  # SIGTERM drained the update queue
    assert "update worker stopped (exit 0)" in server.log()
    # one trace per request, from the HTTP request through the rollouts and tools to the worker's update
    spans = _spans(server.run_dir / "traces.jsonl")
    learned = next(ext for ext in first if ext["online"]["learned"])
    by_id = {s["span_id"]: s for s in spans}
    trace = {i: s for i, s in by_id.items() if s["trace_id"] == learned["trace_id"]}
    root = next(s for s in trace.values() if s["name"] == "serve.request")

    def ancestors(span):
        while span["parent_span_id"] in by_id:
            span = by_id[span["parent_span_id"]]
            yield span["name"]
    infer = next(s for s in trace.values() if s["name"] == "online.infer")
    assert list(ancestors(infer)) == ["serve.request"] and root["parent_span_id"] is None
    runs = [s for s in trace.values() if s["name"] == "agent.run"]
    assert len(runs) == 3 and all(list(ancestors(r)) == ["online.infer", "serve.request"] for r in runs)
    assert any(s["name"].startswith("tool.") and {"agent.run", "serve.request"} <= set(ancestors(s)) for s in spans)
    updates = [s for s in _spans(server.run_dir / "online" / "worker" / "traces.jsonl") if s["name"] == "online.update"]
    assert learned["trace_id"] in {s["trace_id"] for s in updates}


def test_health_is_503_when_the_update_worker_dies(tmp_path, online_model_dir):
    server = start_server(tmp_path, online_model_dir, ONLINE, "--online")
    children = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(p) == server.proc.pid]
    assert len(children) == 1  # the update worker
    os.kill(children[0], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while server.get("/health")[0] != 503:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert json.loads(server.get("/health")[1])["status"] == "worker_dead"
    assert server.stop() == 0


def _parent(proc_dir):
    try:
        return int((proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None
