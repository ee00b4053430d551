"""The online inference engine on the tiny model with real tools, SQLite and faiss: label-free, seeded, traced."""

import dataclasses

from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from PIL import Image

from pixelis.agent import ModelPolicy
from pixelis.core.trajectory import read_jsonl
from pixelis.core.tracing import TracedOperation, configure_tracing, inject
from pixelis.model.load import load_policy
from pixelis.online.engine import InferenceEngine, Query
from pixelis.online.tasks import TaskQueue

from online_settings import online_config


class SpyPolicy(ModelPolicy):
    """The real model policy, remembering what every request showed it (when it was asked)."""

    def __init__(self, model, processor):
        super().__init__(model, processor)
        self.requests = []

    def generate(self, requests):
        self.requests.extend((r.sample.target, r.sample.answer, str(r.messages)) for r in requests)
        return super().generate(requests)


def _queries(suite_dir, n=3):
    return [Query.of(s) for s in read_jsonl(suite_dir / "train.jsonl")][:n]


def _texts(result):
    return [[s.raw_text or s.thought for s in t.steps] + [t.answer] for t in result.samples]


def test_the_engine_never_sees_labels(online_model_dir, attribute_suite_dir, tmp_path):
    samples = read_jsonl(attribute_suite_dir / "train.jsonl")[:2]
    assert "target" not in {f.name for f in dataclasses.fields(Query)}
    model, processor = load_policy(online_model_dir)
    spy = SpyPolicy(model, processor)
    engine = InferenceEngine(online_config(), model, processor, tmp_path, policy=spy)
    for sample in samples:
        query = Query.of(sample)
        assert (query.question, query.images) == (sample.question, sample.images)
        engine.infer(query)
    assert spy.requests
    for target, answer, prompt in spy.requests:
        assert target is None and answer is None
        assert not any(s.final_thought in prompt for s in samples)  # the golden reasoning never leaks either


def test_a_fixed_stream_replays_bitwise_and_learns_only_when_confident(online_model_dir, attribute_suite_dir, tmp_path):
    model, processor = load_policy(online_model_dir)
    cfg = online_config()
    runs = []
    for name in ("a", "b"):
        engine = InferenceEngine(cfg, model, processor, tmp_path / name)
        runs.append([engine.infer(q) for q in _queries(attribute_suite_dir)])
        engine.close()
    a, b = runs
    assert [_texts(r) for r in a] == [_texts(r) for r in b]
    assert [(r.answer, r.confidence, r.experience_id, r.task_id) for r in a] == \
           [(r.answer, r.confidence, r.experience_id, r.task_id) for r in b]
    assert any(r.answer is not None for r in a)
    for result in a:
        assert len(result.samples) == cfg.online.n_samples
        learned = result.task_id is not None
        assert learned == (result.experience_id is not None)  # learn=True: every stored winner is enqueued
        if learned:
            assert result.vote.learn_confidence >= cfg.online.confidence_gate and not result.vote.tie
            assert result.trajectory.num_tool_calls <= cfg.online.max_winner_calls
    # Retrieval starts once min_buffer experiences are stored (cold start before).
    stored = 0
    for result in a:
        assert result.neighbours == 0 or stored >= cfg.online.min_buffer
        stored += result.experience_id is not None
    queue = TaskQueue(tmp_path / "a" / "tasks.db")
    assert queue.counts()["pending"] == sum(r.task_id is not None for r in a)


def test_bad_queries_get_an_error_result_and_the_engine_goes_on(online_model_dir, attribute_suite_dir, tmp_path):
    model, processor = load_policy(online_model_dir)
    engine = InferenceEngine(online_config(**{"data.max_image_pixels": 400 * 400}), model, processor, tmp_path)
    good = _queries(attribute_suite_dir, 1)[0]
    bad = [Query("empty", "  ", good.images), Query("no-image", "What colour is it?", []),
           Query("huge", "What colour is it?", [Image.new("RGB", (500, 400))])]
    results = [engine.infer(q) for q in bad]
    assert [r.error for r in results] == [
        "the question is empty", "the query has no image",
        "image 0 is 500x400 = 200,000 pixels, over data.max_image_pixels = 160,000"]
    assert all(r.answer is None and r.experience_id is None for r in results)
    assert engine.infer(good).error is None


def test_one_root_span_per_query_under_the_incoming_traceparent(online_model_dir, attribute_suite_dir, tmp_path):
    exporter = InMemorySpanExporter()
    configure_tracing(extra_processors=[SimpleSpanProcessor(exporter)])
    try:
        model, processor = load_policy(online_model_dir)
        engine = InferenceEngine(online_config(), model, processor, tmp_path)
        with TracedOperation("client.request", "test") as client:
            carrier = inject()
        result = engine.infer(_queries(attribute_suite_dir, 1)[0], carrier)
        spans = exporter.get_finished_spans()
        root = next(s for s in spans if s.name == "online.infer")
        assert trace.format_trace_id(root.context.trace_id) == client.trace_id == result.trace_id
        assert trace.format_span_id(root.parent.span_id) == client.span_id
        children = {s.name for s in spans if s.parent is not None and s.parent.span_id == root.context.span_id}
        assert {"online.embed", "online.vote", "agent.run"} <= children
        if result.task_id is not None:  # the task carries the request's trace to the worker
            task = TaskQueue(tmp_path / "tasks.db").get(result.task_id)
            assert result.trace_id in task.carrier["traceparent"]
    finally:
        configure_tracing()
