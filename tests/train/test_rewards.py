"""The CC-RFT reward terms, on hand-built trajectories and small random embeddings."""

import math

import pytest
import torch

from pixelis.core.trajectory import Observation, Step, ToolCall, ToolErrorInfo, Trajectory
from pixelis.train.rewards import REWARD_NAMES, CoherenceReward, CuriosityReward, EfficiencyReward, FormatReward, \
    RaprBonusReward, RolloutRecord, TaskReward, build_rewards, combine, tool_steps

D = 8


def call(name="zoom_in", ok=True, **arguments):
    obs = Observation(text="done") if ok else Observation(error=ToolErrorInfo("out_of_bounds", "bbox outside"))
    return Step(thought="look", call=ToolCall(name, arguments or {"image": 0}), observation=obs)


def parse_error():
    return Step(raw_text="<tool_call>{oops", observation=Observation(error=ToolErrorInfo("malformed_call", "bad")))


def traj(*steps, answer="3", target=None, id="t"):
    return Trajectory(id=id, question="how many?", steps=list(steps), answer=answer,
                      target=target if target is not None else {"type": "number", "value": 3})


def rec(t, group=0, seed=0, states=None, actions=None):
    turns = len(t.steps) + (t.answer is not None)
    g = torch.Generator().manual_seed(seed)
    return RolloutRecord(t, group, torch.randn(turns + 1, D, generator=g) if states is None else states,
                         torch.randn(turns, D, generator=g) if actions is None else actions)


# ------------------------------------------------------------------------------------------------ task / format

def test_task_reward_scores_the_answer_and_names_a_trajectory_without_target():
    records = [rec(traj(answer="3")), rec(traj(answer="three")), rec(traj(answer="4")), rec(traj(answer=None))]
    assert TaskReward()(records) == [1.0, 1.0, 0.0, 0.0]
    assert TaskReward(numeric_tolerance=1.0)([rec(traj(answer="4"))]) == [1.0]
    no_target = traj(id="q17")
    no_target.target = None
    with pytest.raises(ValueError, match="q17"):
        TaskReward()([rec(no_target)])


def test_format_reward_needs_an_answer_and_only_valid_calls():
    records = [rec(traj()), rec(traj(call(), call("ocr"))), rec(traj(call(), answer=None)),
               rec(traj(call(), call(ok=False))), rec(traj(parse_error()))]
    assert FormatReward()(records) == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_tool_steps_are_parsed_calls_with_ok_observations():
    assert tool_steps(traj(call(), parse_error(), call(ok=False), call("ocr"))) == [0, 3]


# ---------------------------------------------------------------------------------------------------- curiosity

def test_repeated_transition_is_predicted_better_and_better_and_novel_beats_familiar():
    familiar = rec(traj(call()), seed=1)
    novel = rec(traj(call()), seed=2)
    reward = CuriosityReward(lr=3e-3, seed=3)
    errors = []
    for _ in range(40):
        errors.append(reward.errors([familiar])[0][0])
        assert 0.0 <= reward([familiar])[0] <= reward.clip
    assert all(b < a for a, b in zip(errors[:15], errors[1:15]))  # monotone while far from zero
    assert max(errors[15:]) < 0.1 * errors[0]
    raw_familiar, raw_novel = (e[0] for e in reward.errors([familiar, novel]))
    assert raw_novel > 5 * raw_familiar
    r_familiar, r_novel = reward([familiar, novel])
    assert r_novel > r_familiar and r_novel > 0.3
    assert r_novel <= reward.clip


def test_a_familiar_transition_among_fresh_ones_earns_less_and_less():
    familiar = rec(traj(call()), seed=1)
    reward = CuriosityReward(lr=3e-3, seed=3)
    mine, fresh = [], []
    for i in range(20):
        out = reward([familiar] + [rec(traj(call()), seed=100 + 3 * i + j) for j in range(3)])
        mine.append(out[0])
        fresh.append(sum(out[1:]) / 3)
    assert mine[0] > 0.5 and all(b <= a for a, b in zip(mine, mine[1:])) and mine[-1] == 0.0
    assert sum(fresh[10:]) > 1.0  # novelty keeps paying


def test_only_tool_steps_earn_curiosity_and_a_rollout_earns_their_mean():
    reward = CuriosityReward(seed=0)
    no_tools = [rec(traj(), seed=1), rec(traj(parse_error(), call(ok=False)), seed=2),
                RolloutRecord(traj(), 0)]  # no embeddings at all is fine without tool steps
    assert reward(no_tools) == [0.0, 0.0, 0.0]
    assert reward.count == 0 and reward.model is None  # nothing seen, nothing built
    mixed = [rec(traj(call(), call("ocr")), seed=s) for s in range(4)] + [rec(traj(parse_error()), seed=9)]
    out = reward(mixed)
    assert out[-1] == 0.0 and any(v > 0 for v in out[:-1])
    assert reward.count == 8  # two tool steps per tool-using rollout fed the normaliser
    with pytest.raises(ValueError, match="no states"):
        reward([RolloutRecord(traj(call(), id="bare"), 0)])
    with pytest.raises(ValueError, match="short"):
        reward([rec(traj(call(), id="short"), states=torch.zeros(1, D), actions=torch.zeros(0, D))])


def test_curiosity_model_is_seeded_without_touching_the_global_rng():
    before = torch.get_rng_state()
    a, b, c = CuriosityReward(dim=D, seed=5), CuriosityReward(dim=D, seed=5), CuriosityReward(dim=D, seed=6)
    batch = [rec(traj(call()), seed=s) for s in range(3)]
    a(batch)
    assert torch.equal(torch.get_rng_state(), before)
    assert b.errors(batch) != c.errors(batch)
    lazy = CuriosityReward(seed=5)
    assert lazy.errors(batch) == b.errors(batch)


def test_curiosity_resumes_bitwise_from_its_state_dict():
    batches = [[rec(traj(call(), call("ocr"), id=f"{i}-{j}"), group=j, seed=10 * i + j) for j in range(4)]
               for i in range(3)]
    run = CuriosityReward(lr=1e-2, updates_per_batch=2, seed=1)
    run(batches[0])
    saved = run.state_dict()
    expected = [run(batches[1]), run(batches[2])]
    resumed = CuriosityReward(lr=1e-2, updates_per_batch=2, seed=99)  # its own init is overwritten
    resumed.load_state_dict(saved)
    assert [resumed(batches[1]), resumed(batches[2])] == expected
    assert all(torch.equal(x, y) for x, y in zip(run.model.state_dict().values(),
                                                   resumed.model.state_dict().values()))
    fresh = CuriosityReward(lr=1e-2, updates_per_batch=2, seed=1)
    assert fresh(batches[1]) != expected[0]  # without the state the rewards differ: the test can fail


# ---------------------------------------------------------------------------------------------------- coherence

def _actions_with_cosines(cosines):
    """Unit vectors whose consecutive cosine similarities are `cosines` (rotations in one plane)."""
    angle, rows = 0.0, []
    for c in [None, *cosines]:
        if c is not None:
            angle += math.acos(c)
        rows.append([math.cos(angle), math.sin(angle)] + [0.0] * (D - 2))
    return torch.tensor(rows)


def test_coherence_rewards_adjacent_turns_inside_the_band():
    t = traj(call(bbox=[0, 0, 10, 10]), call("ocr"))  # three turns: two calls and the answer
    reward = CoherenceReward(low=0.3, high=0.95)
    in_band = rec(t, actions=_actions_with_cosines([0.6, 0.8]))
    copies = rec(t, actions=_actions_with_cosines([0.99, 1.0]))
    unrelated = rec(t, actions=_actions_with_cosines([0.0, -0.5]))
    mixed = rec(t, actions=_actions_with_cosines([0.6, 0.1]))
    assert reward([in_band, copies, unrelated, mixed]) == pytest.approx([1.0, -1.0, -1.0, 0.0])
    assert reward([RolloutRecord(t, 0), rec(traj(), actions=torch.ones(1, D))]) == [0.0, 0.0]


def test_coherence_penalises_repeated_calls_and_abab_loops():
    reward = CoherenceReward(repeat_penalty=0.2, loop_penalty=0.5)
    a, b = dict(bbox=[0, 0, 5, 5]), dict(bbox=[5, 5, 9, 9])
    cases = {
        "distinct": (traj(call(**a), call(**b), call("ocr")), 0.0),
        "same name other args": (traj(call(**a), call(**b)), 0.0),
        "repeat": (traj(call(**a), call(**b), call(**a)), -0.2),
        "repeat past a parse error": (traj(call(**a), parse_error(), call(**a)), -0.2),
        "invalid repeat counts": (traj(call(ok=False, **a), call(ok=False, **a)), -0.2),
        "ABAB": (traj(call(**a), call(**b), call(**a), call(**b)), -0.4 - 0.5),
        "ABABA": (traj(call(**a), call(**b), call(**a), call(**b), call(**a)), -0.6 - 1.0),
        "AABB": (traj(call(**a), call(**a), call(**b), call(**b)), -0.4),
        "AAAA": (traj(*[call(**a) for _ in range(4)]), -0.6),
    }
    records = [RolloutRecord(t, 0) for t, _ in cases.values()]
    assert reward(records) == pytest.approx([v for _, v in cases.values()])


# ----------------------------------------------------------------------------------------- efficiency / RaPR

def test_efficiency_charges_attempted_calls_beyond_the_free_ones():
    reward = EfficiencyReward(lam=0.1, max_free_calls=2)
    records = [rec(traj()), rec(traj(call(), call())), rec(traj(call(), call(), call(ok=False))),
               rec(traj(call(), parse_error(), call(), call(), call()))]
    assert reward(records) == pytest.approx([0.0, 0.0, -0.1, -0.3])


def test_rapr_bonus_pays_tool_use_in_groups_that_rarely_use_tools():
    reward = RaprBonusReward()  # H = 0.3, scale = 1, extra_call_penalty = 0.05
    rare = [rec(traj(call()), group=0)] + [rec(traj(), group=0) for _ in range(9)]  # RaPR 0.1
    common = [rec(traj(call()), group=1) for _ in range(4)]  # RaPR 1.0
    mixed = [rec(traj(call(), call("ocr"), call(ok=False)), group=2), rec(traj(parse_error()), group=2)] + \
        [rec(traj(), group=2) for _ in range(8)]  # RaPR 0.1, two valid calls
    out = reward(rare + common + mixed)
    assert out[0] == pytest.approx(0.2)
    assert out[1:10] == [0.0] * 9
    assert out[10:14] == [0.0] * 4 and out[0] > out[10]
    assert out[14] == pytest.approx(0.2 - 0.05)
    assert out[15:] == [0.0] * 9  # a parse error alone is not tool use
    assert RaprBonusReward(H=1.0, scale=2.0)(common) == [0.0] * 4
    assert RaprBonusReward(H=0.5, scale=2.0)(rare[:2]) == [0.0, 0.0]  # RaPR 0.5: nothing left to pay


# -------------------------------------------------------------------------------------------- build / combine

def test_build_rewards_builds_the_weighted_terms_with_their_params():
    rewards = build_rewards({"task": 1.0, "format": 0.5, "curiosity": 0.1, "efficiency": 0.0},
                            {"efficiency": {"lam": 0.3}, "curiosity": {"hidden": 16}}, seed=7)
    assert list(rewards) == ["task", "format", "curiosity"]
    assert all(rewards[n].name == n for n in rewards)
    assert rewards["curiosity"].seed == 7 and rewards["curiosity"].hidden == 16
    assert build_rewards({"curiosity": 1.0}, {"curiosity": {"seed": 3}}, seed=7)["curiosity"].seed == 3
    assert set(build_rewards(dict.fromkeys(REWARD_NAMES, 1.0))) == set(REWARD_NAMES)


def test_build_rewards_rejects_unknown_names_and_kwargs():
    with pytest.raises(ValueError, match="curiosty.*known: task, format, curiosity"):
        build_rewards({"curiosty": 1.0})
    with pytest.raises(ValueError, match="speed"):
        build_rewards({"task": 1.0}, {"speed": {}})
    with pytest.raises(ValueError, match="'efficiency'.*'lambda'"):
        build_rewards({"efficiency": 1.0}, {"efficiency": {"lambda": 0.1}})
    with pytest.raises(ValueError, match="'format'.*'strict'"):
        build_rewards({"format": 0.0}, {"format": {"strict": True}})


def test_combine_sums_weighted_terms_per_rollout():
    terms = {"task": [1.0, 0.0], "efficiency": [-0.2, 0.0], "curiosity": [0.5, 2.0]}
    assert combine(terms, {"task": 1.0, "efficiency": 0.5, "curiosity": 0.1}) == pytest.approx([0.95, 0.2])
    assert combine(terms, {"task": 2.0}) == pytest.approx([2.0, 0.0])
    with pytest.raises(ValueError, match="format"):
        combine(terms, {"format": 1.0})
    with pytest.raises(ValueError, match="length"):
        combine({"task": [1.0], "format": [1.0, 0.0]}, {"task": 1.0, "format": 1.0})
