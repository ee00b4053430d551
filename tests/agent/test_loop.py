"""The agent loop with real tools: limits, error observations, spans; scripted policies stand in for a model."""

import time

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from PIL import Image, ImageDraw

from pixelis.agent import Agent, AgentLimits, Generation, ReplayPolicy
from pixelis.core.tracing import configure_tracing
from pixelis.core.trajectory import Trajectory

ZOOM = '<think>look closer</think>\n<tool_call>{"name": "zoom_in", "arguments": {"image": 0, "bbox": [0, 0, 500, 500]}}</tool_call>'
ANSWER = "<think>done</think>\n<answer>red</answer>"


class Scripted:
    """Plays a fixed list of generations, then repeats the last one."""

    def __init__(self, *texts, truncated=False, delay=0.0):
        self.texts, self.truncated, self.delay = texts, truncated, delay

    def generate(self, requests):
        time.sleep(self.delay)
        return [Generation(self.texts[min(r.turn, len(self.texts) - 1)], truncated=self.truncated) for r in requests]


def _sample():
    img = Image.new("RGB", (200, 160), "white")
    ImageDraw.Draw(img).rectangle((20, 20, 80, 70), fill="red")
    return Trajectory(id="s1", question="What colour is the box?", images=[img], target={"type": "text", "value": "red"})


def test_answer_after_tool_call_records_real_observation():
    traj = Agent(Scripted(ZOOM, ANSWER)).run(_sample())
    assert traj.metadata["termination"] == "answer" and traj.answer == "red"
    (step,) = traj.steps
    assert step.call.name == "zoom_in" and step.observation.ok
    crop = step.observation.images[0]
    # The crop is the top-left quarter: the red box sits at its centre, white fills its far corner.
    w, h = crop.size
    assert crop.convert("RGB").getpixel((w // 2, int(h * 0.56))) == (255, 0, 0)
    assert crop.convert("RGB").getpixel((int(w * 0.95), int(h * 0.95))) == (255, 255, 255)


@pytest.mark.parametrize("policy, limits, reason, n_steps", [
    (Scripted(ZOOM), AgentLimits(max_turns=3, max_tool_calls=10, max_images=10), "max_turns", 3),
    (Scripted(ZOOM), AgentLimits(max_turns=10, max_tool_calls=2, max_images=10), "max_tool_calls", 2),
    (Scripted("<think>hmm, the box is"), AgentLimits(), "max_new_tokens", 1),
    (Scripted(ZOOM), AgentLimits(max_turns=10, max_tool_calls=10, max_images=2), "max_images", 2),
    (Scripted(ZOOM), AgentLimits(max_turns=10, max_tool_calls=10, max_context_pixels=200 * 160 + 10), "max_context_pixels", 1),
    (Scripted(ZOOM, delay=0.05), AgentLimits(max_turns=10, max_tool_calls=10, wall_time_s=0.01), "wall_time", 1),
])
def test_each_limit_ends_with_its_reason(policy, limits, reason, n_steps):
    if reason == "max_new_tokens":
        policy.truncated = True
    traj = Agent(policy, limits=limits).run(_sample())
    assert traj.metadata["termination"] == reason
    assert len(traj.steps) == n_steps and traj.answer is None


@pytest.mark.parametrize("bad, kind", [
    ('<tool_call>{"name": "zoom_in", "arguments": {"bbox": [0, 0, 5</tool_call>', "malformed_call"),
    ('<tool_call>{"name": "teleport", "arguments": {}}</tool_call>', "unknown_tool"),
    ('<tool_call>{"name": "zoom_in", "arguments": {"bbox": [600, 0, 100, 100]}}</tool_call>', "invalid_box"),
    ("the answer is red", "no_action"),
])
def test_bad_calls_become_error_observations_and_the_loop_continues(bad, kind):
    traj = Agent(Scripted(bad, ANSWER)).run(_sample())
    assert traj.metadata["termination"] == "answer" and traj.answer == "red"
    assert traj.steps[0].observation.error.kind == kind
    assert "Error" in traj.steps[0].observation.render_text()


def test_replaying_golden_trajectories_reproduces_their_observations(synth_suite):
    golden = synth_suite["train"]
    agent = Agent(ReplayPolicy(golden))
    for sample in golden:
        traj = agent.run(sample)
        assert traj.answer == sample.answer and traj.metadata["termination"] == "answer", sample.id
        assert len(traj.steps) == len(sample.steps)
        for got, want in zip(traj.steps, sample.steps):
            assert got.call == want.call
            assert got.observation.render_text() == want.observation.render_text()
            assert got.observation.data == want.observation.data
            assert [im.tobytes() for im in got.observation.images] == [im.tobytes() for im in want.observation.images]


def test_spans_nest_run_turns_and_tool_calls():
    exporter = InMemorySpanExporter()
    configure_tracing(extra_processors=[SimpleSpanProcessor(exporter)])
    Agent(Scripted(ZOOM, ANSWER)).run(_sample())
    spans = {s.name: s for s in exporter.get_finished_spans()}
    run, tool = spans["agent.run"], spans["tool.zoom_in"]
    turns = [s for s in exporter.get_finished_spans() if s.name == "agent.turn"]
    assert len(turns) == 2 and all(t.parent.span_id == run.context.span_id for t in turns)
    assert tool.parent.span_id == turns[0].context.span_id
    assert {s.context.trace_id for s in exporter.get_finished_spans()} == {run.context.trace_id}
    assert run.attributes["termination"] == "answer"
    configure_tracing()
