"""The agent loop driven by real tiny models: seeded sampling is reproducible; Qwen2.5-VL runs too."""

from pixelis.agent import Agent, AgentLimits, ModelPolicy, SamplingParams
from pixelis.core.trajectory import read_jsonl
from pixelis.data.io import corpus_texts
from pixelis.model.load import load_policy
from pixelis.model.tiny import build_tiny_model

LIMITS = AgentLimits(max_turns=3, max_new_tokens=12)
SAMPLING = SamplingParams(do_sample=True, temperature=1.0, top_p=0.95)


def _texts(traj):
    return [s.raw_text or s.thought for s in traj.steps] + [traj.answer]


def test_seeded_sampling_gives_identical_trajectories(tiny_model_dir, train_suite_dir):
    model, processor = load_policy(tiny_model_dir)
    samples = read_jsonl(train_suite_dir / "val.jsonl")[:2]
    runs = [Agent(ModelPolicy(model, processor), limits=LIMITS, sampling=SAMPLING, seed=7,
                  tool_prompt="compact").run_many(samples) for _ in range(2)]
    assert [_texts(t) for t in runs[0]] == [_texts(t) for t in runs[1]]
    other = Agent(ModelPolicy(model, processor), limits=LIMITS, sampling=SAMPLING, seed=8,
                  tool_prompt="compact").run_many(samples)
    assert [_texts(t) for t in other] != [_texts(t) for t in runs[0]]
    for traj in runs[0]:
        assert traj.metadata["termination"] in {"answer", "max_turns", "max_new_tokens"}


def test_qwen2_5_vl_family_runs_through_the_loop(tmp_path, train_suite_dir):
    """Qwen2.5-VL's template has no tool support; pixelis.model.chat inlines the tool schemas as a system text."""
    samples = read_jsonl(train_suite_dir / "val.jsonl")[:1]
    path = build_tiny_model(tmp_path / "q25", seed=0, size="xs", family="qwen2_5_vl", corpus=corpus_texts(samples))
    model, processor = load_policy(path)
    assert type(model).__name__.startswith("Qwen2_5_VL")
    traj = Agent(ModelPolicy(model, processor), limits=LIMITS).run(samples[0])
    assert traj.metadata["termination"] in {"answer", "max_turns", "max_new_tokens"}
    assert traj.steps or traj.answer is not None


def test_vision_tokens_are_never_sampled(tiny_model_dir):
    """A sampled <|image_pad|> would shift the image placement when the turn is fed back (seen in RFT)."""
    import torch

    from pixelis.agent.policies import RowSeededSampler, vision_token_ids

    _, processor = load_policy(tiny_model_dir)
    banned = vision_token_ids(processor.tokenizer)
    assert len(banned) == 4
    vocab = len(processor.tokenizer)
    for sampling in (SamplingParams(), SAMPLING):
        sampler = RowSeededSampler([1, 2], [sampling] * 2, torch.device("cpu"), suppressed=banned)
        scores = torch.zeros(2, vocab)
        scores[:, banned] = 50.0  # by far the likeliest tokens
        forced = sampler(torch.zeros(2, 1, dtype=torch.long), scores)
        chosen = forced.argmax(dim=-1).tolist()
        assert not set(chosen) & set(banned)
        # the recorded log-prob is under the distribution without them: uniform over the rest
        expected = -torch.log(torch.tensor(float(vocab - len(banned)))).item()
        assert all(abs(lp[0] - expected) < 1e-4 for lp in sampler.logprobs)
