"""`Agent.run_many` batches generation across trajectories: same trajectories as one at a time, in input order."""

import threading
from dataclasses import replace

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pixelis.agent import Agent, AgentLimits, ModelPolicy, ReplayPolicy, SamplingParams
from pixelis.core.tracing import TracedOperation, configure_tracing
from pixelis.core.trajectory import Observation, Step, ToolCall, Trajectory, read_jsonl, to_messages
from pixelis.model.chat import build_generation_batch
from pixelis.model.load import load_policy
from pixelis.tools.base import Tool, ToolArgs
from pixelis.tools.registry import ToolRegistry


class RecordingReplay(ReplayPolicy):
    """The replay oracle, remembering how many requests each batched call carried."""

    def __init__(self, trajectories):
        super().__init__(trajectories)
        self.batch_sizes = []

    def generate(self, requests):
        self.batch_sizes.append(len(requests))
        return super().generate(requests)


def _texts(traj):
    return [s.raw_text or s.thought for s in traj.steps] + [traj.answer, traj.metadata["termination"]]


def test_run_many_batches_turns_and_refills_finished_slots(synth_suite):
    golden = synth_suite["train"][:7]
    policy = RecordingReplay(golden)
    finished = []
    out = Agent(policy, batch_size=3).run_many(golden, on_done=lambda t: finished.append(t.id))
    assert [t.id for t in out] == [s.id for s in golden]
    assert [t.answer for t in out] == [s.answer for s in golden]
    assert sorted(finished) == sorted(s.id for s in golden)
    assert max(policy.batch_sizes) == 3
    # Golden trajectories have 2..6 turns; refilling finished slots keeps rounds full, so the rounds needed are
    # far fewer than the 7 trajectories' turns one at a time.
    assert len(policy.batch_sizes) < sum(len(s.steps) + 1 for s in golden)
    assert sum(policy.batch_sizes) == sum(len(s.steps) + 1 for s in golden)


def test_batched_model_rollouts_match_one_at_a_time(tiny_model_dir, train_suite_dir):
    """Greedy and seeded-sampled rollouts of the tiny model do not depend on what they are batched with."""
    model, processor = load_policy(tiny_model_dir)
    samples = read_jsonl(train_suite_dir / "val.jsonl")[:4]
    limits = AgentLimits(max_turns=2, max_new_tokens=10)
    for sampling in (SamplingParams(), SamplingParams(do_sample=True, temperature=1.0, top_p=0.9)):
        runs = {b: Agent(ModelPolicy(model, processor), limits=limits, sampling=sampling, seed=3,
                         tool_prompt="compact", batch_size=b).run_many(samples) for b in (1, 4)}
        assert [_texts(t) for t in runs[1]] == [_texts(t) for t in runs[4]], sampling


def test_left_padded_batch_matches_single_prompts(tiny_model_dir, synth_suite):
    """Prompts of different lengths (one with tool observation images) pad on the left to the same tokens."""
    _, processor = load_policy(tiny_model_dir)
    long_one, short_one = [t for t in synth_suite["train"] if t.metadata["family"] == "small_text"][:2]
    long_messages, long_images = to_messages(long_one, include_answer=False)
    short_messages, short_images = to_messages(replace(short_one, steps=[]), include_answer=False)
    prompts = [(long_messages, long_images, None), (short_messages, short_images, None)]
    batch = build_generation_batch(processor, prompts)
    singles = [build_generation_batch(processor, [p]) for p in prompts]
    width = batch["input_ids"].shape[1]
    assert len(singles[1]["input_ids"][0]) < width
    for row, single in enumerate(singles):
        ids = single["input_ids"][0]
        assert batch["input_ids"][row, width - len(ids):].tolist() == ids.tolist()
        assert batch["attention_mask"][row, : width - len(ids)].sum() == 0
    assert batch["pixel_values"].shape[0] == sum(s["pixel_values"].shape[0] for s in singles)


def test_n_draws_per_sample_are_seeded_apart(tiny_model_dir, train_suite_dir):
    model, processor = load_policy(tiny_model_dir)
    sample = read_jsonl(train_suite_dir / "val.jsonl")[0]
    agent = Agent(ModelPolicy(model, processor), limits=AgentLimits(max_turns=1, max_new_tokens=12),
                  sampling=SamplingParams(do_sample=True), seed=1, tool_prompt="compact", batch_size=4)
    draws = agent.run_many([sample], n=3)
    assert [t.metadata.get("draw", 0) for t in draws] == [0, 1, 2]
    assert len({_texts(t)[0] for t in draws}) > 1


def test_batched_runs_keep_their_own_span_trees(synth_suite):
    exporter = InMemorySpanExporter()
    configure_tracing(extra_processors=[SimpleSpanProcessor(exporter)])
    golden = synth_suite["train"][:4]
    with TracedOperation("eval.run", "eval"):
        Agent(ReplayPolicy(golden), batch_size=4).run_many(golden)
    spans = exporter.get_finished_spans()
    configure_tracing()
    by_id = {s.context.span_id: s for s in spans}
    runs = {s.attributes["sample_id"]: s for s in spans if s.name == "agent.run"}
    assert sorted(runs) == sorted(s.id for s in golden)
    for sample in golden:
        run = runs[sample.id]
        turns = [s for s in spans if s.name == "agent.turn" and s.parent.span_id == run.context.span_id]
        assert len(turns) == len(sample.steps) + 1  # one per call, then the answer
        tools = [s for s in spans if s.name.startswith("tool.") and by_id[s.parent.span_id] in turns]
        assert [s.name for s in tools] == [f"tool.{step.call.name}" for step in sample.steps if step.call is not None]
    assert len({s.context.trace_id for s in spans}) == 1


class TargetSpy(ReplayPolicy):
    """The replay oracle, recording whether any request showed the policy a target or a stored answer."""

    def __init__(self, trajectories):
        super().__init__(trajectories)
        self.seen = []

    def generate(self, requests):
        self.seen.extend((r.sample.target, r.sample.answer) for r in requests)
        return super().generate(requests)


def test_requests_never_carry_the_target_and_results_get_it_back(synth_suite):
    golden = synth_suite["train"][:4]
    policy = TargetSpy(golden)
    out = Agent(policy, batch_size=2).run_many(golden)
    assert policy.seen and all(seen == (None, None) for seen in policy.seen)
    assert [t.target for t in out] == [s.target for s in golden]
    assert all(s.target is not None for s in golden)


def test_continuous_batch_takes_work_while_others_run_and_matches_run_many(tiny_model_dir, train_suite_dir):
    """Rollouts submitted into a running batch finish with the trajectories `run_many` gives for them."""
    model, processor = load_policy(tiny_model_dir)
    samples = read_jsonl(train_suite_dir / "val.jsonl")[:3]
    agent = Agent(ModelPolicy(model, processor), limits=AgentLimits(max_turns=2, max_new_tokens=10),
                  sampling=SamplingParams(do_sample=True), seed=5, tool_prompt="compact", batch_size=2)
    expected = agent.run_many(samples)
    batch = agent.batch()
    tickets = {batch.submit(samples[0], 0): 0}
    finished = dict(batch.step())  # the first sample is one turn in when the others arrive
    assert batch.in_flight == 1 or finished
    tickets.update({batch.submit(samples[i], i): i for i in (1, 2)})
    while batch.pending:
        finished.update(batch.step())
        assert batch.in_flight <= 2
    assert sorted(finished) == sorted(tickets)
    for ticket, traj in finished.items():
        assert _texts(traj) == _texts(expected[tickets[ticket]])


class MeetArgs(ToolArgs):
    who: str


class Meet(Tool):
    """Returns only once two calls are inside it at the same time (fails after a few seconds alone)."""

    name = "meet"
    description = "Wait for the other caller."
    Args = MeetArgs

    def __init__(self):
        self.barrier = threading.Barrier(2, timeout=5)

    def run(self, ctx, args):
        self.barrier.wait()
        return Observation(text=f"met {args.who}")


def test_tool_calls_of_one_turn_run_side_by_side():
    scripts = [Trajectory(id=f"s{i}", question="Meet.", steps=[
        Step(call=ToolCall("meet", {"who": f"s{i}"}), observation=Observation())], answer="done") for i in range(2)]

    def observations(tool_workers):
        agent = Agent(ReplayPolicy(scripts), tools=ToolRegistry([Meet()]), batch_size=2, tool_workers=tool_workers)
        return [t.steps[0].observation.render_text() for t in agent.run_many(scripts)]

    assert observations(2) == ["met s0", "met s1"]
    assert all("BrokenBarrierError" in text for text in observations(1))  # one at a time: nobody to meet


def test_parallel_tool_calls_give_the_same_observations(synth_suite):
    """Segmentation (GrabCut draws from OpenCV's RNG, which is per thread) is the same in parallel calls."""
    golden = [t for t in synth_suite["train"] if any(s.call is not None for s in t.steps)]
    out = Agent(ReplayPolicy(golden), batch_size=len(golden), tool_workers=4).run_many(golden)
    assert any(s.call.name == "get_properties" and "point" in s.call.arguments for t in golden for s in t.steps
               if s.call is not None)
    for got, want in zip(out, golden):
        assert [s.observation.data for s in got.steps] == [s.observation.data for s in want.steps], want.id
        assert [[im.tobytes() for im in s.observation.images] for s in got.steps] == \
            [[im.tobytes() for im in s.observation.images] for s in want.steps], want.id
