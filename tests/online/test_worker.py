"""The update worker as a real subprocess: benign updates publish rising versions, confident garbage is rejected by
the KL corridor, and SIGKILL mid-update loses no task and never serves a partial version."""

import hashlib
import json
import random
import shutil
import signal
import string
import subprocess
import time
from dataclasses import replace

import numpy as np

from pixelis.core.config import dump_config
from pixelis.core.trajectory import read_jsonl
from pixelis.model.load import load_policy
from pixelis.online.buffer import Experience, ExperienceBuffer
from pixelis.online.engine import InferenceEngine, Query
from pixelis.online.tasks import TaskQueue
from pixelis.online.weights import WeightStore
from pixelis.online.worker import UPDATES_FILE, worker_command, write_spec

from online_settings import online_config

EMBEDDER = {"online.embedder": "pixels"}


def _start(online_dir, model_dir, cfg, dim):
    dump_config(cfg, online_dir / "config.yaml")
    write_spec(online_dir, model_dir, online_dir / "config.yaml", dim)
    return subprocess.Popen(worker_command(online_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_all_finished(online_dir, proc, timeout=300):
    queue = TaskQueue(online_dir / "tasks.db")
    deadline = time.monotonic() + timeout
    while queue.counts()["pending"]:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return queue


def _stop(proc):
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0  # SIGTERM: finish the task in hand, exit 0


def _benign_tasks(online_dir, model_dir, suite_dir, cfg):
    """Run the learning engine on the attribute queries: its confident winners become update tasks."""
    model, processor = load_policy(model_dir)
    engine = InferenceEngine(cfg, model, processor, online_dir)
    results = [engine.infer(Query.of(s)) for s in read_jsonl(suite_dir / "train.jsonl")]
    engine.close()
    return [r for r in results if r.task_id is not None]


def _garbage(sample, rng):
    word = lambda: "".join(rng.choices(string.ascii_letters, k=7))  # noqa: E731
    return replace(sample, steps=[], target=None, final_thought=" ".join(word() for _ in range(40)),
                   answer=word())


def _params_hash(store):
    version = store.current()
    return version, hashlib.sha256((store.path(version) / "params.safetensors").read_bytes()).hexdigest()


def test_benign_stream_is_accepted_with_rising_versions_that_the_engine_serves(
        online_model_dir, attribute_suite_dir, tmp_path):
    cfg = online_config(**EMBEDDER)
    learned = _benign_tasks(tmp_path, online_model_dir, attribute_suite_dir, cfg)
    assert len(learned) >= 2
    cfg.tracing.exporter = "jsonl"  # the worker exports its spans to worker/traces.jsonl
    proc = _start(tmp_path, online_model_dir, cfg, 256)
    queue = _wait_all_finished(tmp_path, proc)
    _stop(proc)
    spans = [json.loads(line) for line in (tmp_path / "worker" / "traces.jsonl").read_text().splitlines()]
    updates = [s for s in spans if s["name"] == "online.update"]
    # One trace from query to weight version: each update span continues its request's trace.
    assert sorted(s["trace_id"] for s in updates) == sorted(r.trace_id for r in learned)
    assert [s["attributes"]["version"] for s in updates] == list(range(1, len(learned) + 1))
    finished = queue.finished()
    assert [t.status for t in finished] == ["accepted"] * len(learned)
    assert [t.version for t in finished] == list(range(1, len(learned) + 1))
    assert all(t.result["kl"] <= cfg.online.kl_max for t in finished)
    assert WeightStore(tmp_path / "weights").current() == len(learned)
    model, processor = load_policy(online_model_dir)
    before = {n: p.clone() for n, p in model.named_parameters()}
    engine = InferenceEngine(cfg, model, processor, tmp_path)
    assert engine.version == len(learned)
    assert any(not (p == before[n]).all() for n, p in model.named_parameters())
    assert engine.infer(Query.of(read_jsonl(attribute_suite_dir / "test.jsonl")[0])).model_version == len(learned)


def test_confident_garbage_is_rejected_by_the_corridor_and_the_weights_stay(
        online_model_dir, attribute_suite_dir, tmp_path):
    cfg = online_config(**EMBEDDER)
    rng = random.Random(0)
    buffer = ExperienceBuffer.from_config(tmp_path / "buffer.db", 256, cfg.online)
    queue = TaskQueue(tmp_path / "tasks.db")
    for sample in read_jsonl(attribute_suite_dir / "train.jsonl")[:3]:
        garbage = _garbage(sample, rng)
        exp_id = buffer.add(Experience(query_id=sample.id, trajectory=garbage, answer=garbage.answer, confidence=1.0,
                                       votes={}, embedding=np.ones(256, np.float32), model_version=0))
        queue.enqueue(exp_id, sample.id, 1.0, {})
        if exp_id == 1:
            queue.enqueue(999, "gone", 1.0, {})  # an experience retention removed: the task fails, the worker goes on
    buffer.close()
    proc = _start(tmp_path, online_model_dir, cfg, 256)
    _wait_all_finished(tmp_path, proc)
    _stop(proc)
    finished = queue.finished()
    assert [t.status for t in finished] == ["rejected", "failed", "rejected", "rejected"]
    assert "no longer in the buffer" in finished[1].result["reason"]
    finished = [t for t in finished if t.status == "rejected"]
    assert all(t.result["kl"] > cfg.online.kl_max for t in finished)
    assert WeightStore(tmp_path / "weights").current() == 0
    assert not list((tmp_path / "weights").glob("v*"))
    rows = [json.loads(line) for line in (tmp_path / UPDATES_FILE).read_text().splitlines()]
    assert [r["status"] for r in rows] == ["rejected", "failed", "rejected", "rejected"]
    assert "rejected by the corridor" in (tmp_path / "worker.log").read_text()


def test_sigkill_mid_update_loses_no_task_and_serves_no_partial_version(
        online_model_dir, attribute_suite_dir, tmp_path):
    cfg = online_config(**EMBEDDER, **{"online.update_steps": 3})
    source = tmp_path / "source"
    learned = _benign_tasks(source, online_model_dir, attribute_suite_dir, cfg)
    queue = TaskQueue(source / "tasks.db")
    for result in learned:  # every task twice: more updates for the kills to land in
        queue.enqueue(result.experience_id, result.query_id, result.confidence, {})
    queue.close()
    tasks = 2 * len(learned)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    for copy in (reference, killed):
        shutil.copytree(source, copy)

    proc = _start(reference, online_model_dir, cfg, 256)
    _wait_all_finished(reference, proc)
    _stop(proc)
    expected = _params_hash(WeightStore(reference / "weights"))

    rng = random.Random(1)
    log = killed / "worker.log"
    starts = lambda: log.read_text().count("update worker ready") if log.exists() else 0  # noqa: E731
    for round_ in range(4):
        proc = _start(killed, online_model_dir, cfg, 256)
        while proc.poll() is None and starts() == round_:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        proc.kill()
        proc.wait()
        store = WeightStore(killed / "weights")
        if store.current():  # whatever is published is complete and loadable
            params, ema, meta = store.load(store.current())
            assert params and ema and meta["version"] == store.current()
    proc = _start(killed, online_model_dir, cfg, 256)
    while proc.poll() is None and starts() == 4:  # the kills may have left nothing to do: let it start first,
        time.sleep(0.05)  # so the SIGTERM below meets the worker's handler and not interpreter start-up
    queue = _wait_all_finished(killed, proc)
    _stop(proc)
    finished = queue.finished()
    assert [t.id for t in finished] == list(range(1, tasks + 1))
    assert [t.status for t in finished] == ["accepted"] * tasks
    assert [t.version for t in finished] == list(range(1, tasks + 1))
    rows = [json.loads(line) for line in (killed / UPDATES_FILE).read_text().splitlines() if line]
    assert sorted(row["task"] for row in rows) == list(range(1, tasks + 1))  # one log row per task
    assert not list((killed / "weights").glob(".*.partial"))
    assert _params_hash(WeightStore(killed / "weights")) == expected  # the same weights as never interrupted


def test_sigterm_during_start_up_ends_the_worker_cleanly(online_model_dir, tmp_path):
    proc = _start(tmp_path, online_model_dir, online_config(**EMBEDDER), 256)
    time.sleep(0.3)  # still importing torch and loading the model
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()[-2000:]
