"""Token-in / token-out: what RFT trains on is exactly what the policy sampled, turn by turn."""

import pytest
import torch

from pixelis.agent import Agent, AgentLimits, ModelPolicy, SamplingParams
from pixelis.agent.policies import RowSeededSampler, assistant_turns
from pixelis.core.trajectory import read_jsonl
from pixelis.model.load import load_policy
from pixelis.train.rollouts import TokenMismatchError, policy_pass, turn_batch

LIMITS = AgentLimits(max_turns=4, max_new_tokens=96)
SAMPLING = SamplingParams(do_sample=True, temperature=0.9, top_p=0.95)


def golden_sampler(golden, tokenizer):
    """A sampler that writes each sample's golden turn (the model still scores every token it is made to write):
    a random tiny model rarely closes a turn, so this is how multi-turn rollouts with real tool calls, tool
    images and observations go through the real generation path."""
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")

    class GoldenSampler(RowSeededSampler):
        @classmethod
        def for_requests(cls, requests, device, suppressed=()):
            sampler = super().for_requests(requests, device, suppressed)
            sampler.forced = [tokenizer.encode(golden[r.sample.id][r.turn], add_special_tokens=False) + [end]
                              for r in requests]
            return sampler

        def choose(self, input_ids, scaled):
            k = len(self.logprobs[0])
            return torch.tensor([ids[min(k, len(ids) - 1)] for ids in self.forced])

    return GoldenSampler


@pytest.fixture(scope="module")
def rollouts(tiny_model_dir, train_suite_dir):
    model, processor = load_policy(tiny_model_dir)
    model.eval()
    samples = read_jsonl(train_suite_dir / "val.jsonl")
    tool_samples = [next(t for t in samples if t.metadata["family"] == family and t.num_tool_calls >= calls)
                    for family, calls in (("attribute", 2), ("track", 2), ("temporal", 1))]
    golden = {t.id: assistant_turns(t) for t in tool_samples}
    forced = ModelPolicy(model, processor, sampler=golden_sampler(golden, processor.tokenizer))
    guided = Agent(forced, limits=LIMITS, sampling=SAMPLING, seed=11, tool_prompt="compact",
                   batch_size=2).run_many(tool_samples)
    sampled = Agent(ModelPolicy(model, processor), limits=AgentLimits(max_turns=2, max_new_tokens=8),
                    sampling=SAMPLING, seed=11, tool_prompt="compact", batch_size=4).run_many(samples[:2], n=2)
    return model, processor, guided + sampled


def test_every_generated_turn_is_recorded_with_its_ids_and_logprobs(rollouts):
    _, processor, trajs = rollouts
    multi = [t for t in trajs if len(t.turns) >= 2 and t.num_tool_calls >= 1]
    assert len(multi) == 3 and max(len(t.turns) for t in multi) == 3, "multi-turn rollouts with tool calls expected"
    assert any(img for t in multi for s in t.steps if s.observation for img in s.observation.images)
    assert any(t.answer is not None for t in multi)
    for traj in trajs:
        assert len(traj.turns) >= len(traj.steps)
        for turn in traj.turns:
            gen = turn.generation
            assert len(gen.token_ids) == len(gen.logprobs) == gen.num_tokens > 0
            assert all(lp <= 0.0 for lp in gen.logprobs)
            decoded = processor.tokenizer.decode(gen.token_ids, skip_special_tokens=False)
            assert gen.text in decoded  # the raw sampled tokens hold the (stripped) text the loop parsed


def test_the_ids_trained_on_are_the_ids_sampled(rollouts):
    _, processor, trajs = rollouts
    batch = turn_batch(processor, trajs)
    spans = iter(batch.spans)
    for b, traj in enumerate(trajs):
        flat = []
        for turn in traj.turns:
            span = next(spans)
            gen = turn.generation
            assert span.rollout == b and span.start == len(gen.prompt_ids) and span.ids == gen.token_ids
            length = span.start + len(gen.token_ids)
            assert batch.inputs["input_ids"][span.row, :length].tolist() == gen.prompt_ids + gen.token_ids
            flat += gen.token_ids
        assert int(batch.completion_mask[b].sum()) == len(flat)


def test_a_multi_turn_rollout_is_one_row(rollouts):
    _, processor, trajs = rollouts
    batch = turn_batch(processor, trajs)
    multi = [b for b, t in enumerate(trajs) if len(t.turns) >= 2]
    assert multi
    for b in multi:
        assert len({span.row for span in batch.spans if span.rollout == b}) == 1
    assert batch.inputs["input_ids"].shape[0] == len(trajs)


def test_a_turn_that_does_not_continue_its_row_gets_its_own(rollouts):
    model, processor, trajs = rollouts
    traj = next(t for t in trajs if len(t.turns) >= 2)
    gen = traj.turns[0].generation
    original = list(gen.token_ids)
    gen.token_ids = original[:-1] + [processor.tokenizer.pad_token_id]  # no longer what turn 1's prompt holds
    try:
        batch = turn_batch(processor, [traj])
        assert [span.row for span in batch.spans][:2] == [0, 1]
        for span, turn in zip(batch.spans, traj.turns):
            length = span.start + len(span.ids)
            ids = turn.generation.prompt_ids + turn.generation.token_ids
            assert batch.inputs["input_ids"][span.row, :length].tolist() == ids
        with torch.no_grad():
            out = policy_pass(model, batch, SAMPLING.temperature, torch.device("cpu"))
        later = slice(len(original), int(batch.completion_mask[0].sum()))  # the turns after the changed one
        assert torch.allclose(out.logprobs[0, later], batch.sampled_logprobs[0, later], atol=1e-4)
    finally:
        gen.token_ids = original


def test_recomputed_logprobs_match_the_sampling_logprobs(rollouts):
    model, processor, trajs = rollouts
    batch = turn_batch(processor, trajs)
    with torch.no_grad():
        out = policy_pass(model, batch, SAMPLING.temperature, torch.device("cpu"), embeddings=True)
    mask = batch.completion_mask.bool()
    assert torch.allclose(out.logprobs[mask], batch.sampled_logprobs[mask], atol=1e-4)
    for traj, states, actions in zip(trajs, out.states, out.actions):
        assert states.shape[0] == len(traj.turns) + 1 and actions.shape[0] == len(traj.turns)


def test_a_prompt_that_re_encodes_differently_is_refused(rollouts):
    _, processor, trajs = rollouts
    gen = trajs[0].turns[0].generation
    original = list(gen.prompt_ids)
    gen.prompt_ids = original[1:]
    try:
        with pytest.raises(TokenMismatchError, match="turn 0"):
            turn_batch(processor, [trajs[0]])
    finally:
        gen.prompt_ids = original
