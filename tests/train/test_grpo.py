"""The GRPO loss and advantages against hand computations from the definitions, and against TRL 1.16 itself."""

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from pixelis.train.grpo import GrpoLossConfig, group_advantages, grpo_loss, k3_kl

# Hand-built batch: B=4 (2 groups of 2), T=5, ragged mask. RATIOS are the intended exp(logp - old_logp); with
# eps_low = eps_high = 0.2 some are clipped high (r > 1.2, A > 0), some low (r < 0.8, A < 0), and some lie outside
# [0.8, 1.2] on the side where the clip is not active (r > 1.2 with A < 0, r < 0.8 with A > 0): gradient flows.
RATIOS = [[1.5, 1.1, 0.5, 0.9, 1.3],
          [0.5, 1.5, 0.95, 0.1, 3.0],
          [1.25, 0.7, 2.0, 0.2, 1.0],
          [0.75, 1.0, 1.19, 0.6, 5.0]]
MASK = [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]]
ADV = [1.0, -1.0, 0.5, -0.5]
OLD = [[-1.0 - 0.1 * t - 0.05 * b for t in range(5)] for b in range(4)]
REF_SHIFT = [[0.3, -0.2, 0.1, 0.0, 0.4], [-0.5, 0.25, 0.05, 0.7, 0.0],
             [0.15, -0.1, 0.2, 0.3, 0.0], [0.0, -0.3, 0.45, 0.1, 0.2]]  # ref = logp + shift


def batch(requires_grad=False):
    old = torch.tensor(OLD, dtype=torch.float64)
    logps = (old + torch.tensor(RATIOS, dtype=torch.float64).log()).requires_grad_(requires_grad)
    ref = logps.detach() + torch.tensor(REF_SHIFT, dtype=torch.float64)
    return logps, old, torch.tensor(ADV, dtype=torch.float64), torch.tensor(MASK, dtype=torch.float64), ref


def hand_token_losses(beta, eps_low, eps_high, logps, old, ref):
    """Per-token loss from the definition, with plain floats; ref=None means no KL term."""
    out = []
    for b in range(4):
        row = []
        for t in range(5):
            r = math.exp(logps[b][t] - old[b][t])
            c = min(max(r, 1 - eps_low), 1 + eps_high)
            loss = -min(r * ADV[b], c * ADV[b])
            if beta:
                d = ref[b][t] - logps[b][t]
                loss += beta * (math.exp(d) - d - 1)
            row.append(loss)
        out.append(row)
    return out


def hand_loss(loss_type, per_token, max_len=128):
    if loss_type == "grpo":
        seq = [sum(per_token[b][t] * MASK[b][t] for t in range(5)) / max(sum(MASK[b]), 1) for b in range(4)]
        return sum(seq) / 4
    total = sum(per_token[b][t] * MASK[b][t] for b in range(4) for t in range(5))
    if loss_type == "dr_grpo":
        return total / (4 * max_len)
    return total / sum(map(sum, MASK))  # dapo: active tokens of the (single-process) batch


CONFIGS = [GrpoLossConfig(loss_type="dapo"), GrpoLossConfig(loss_type="grpo"),
           GrpoLossConfig(loss_type="dr_grpo", max_completion_length=7),
           GrpoLossConfig(loss_type="dapo", epsilon=0.3, epsilon_high=0.28)]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.loss_type}-{c.epsilon}-{c.epsilon_high}")
def test_loss_and_clip_stats_match_the_definition(config):
    logps, old, adv, mask, _ = batch()
    eps_high = config.epsilon if config.epsilon_high is None else config.epsilon_high
    per_token = hand_token_losses(0.0, config.epsilon, eps_high, logps.tolist(), old.tolist(), None)
    out = grpo_loss(logps, old, adv, mask, config)
    assert out.loss.item() == pytest.approx(hand_loss(config.loss_type, per_token, config.max_completion_length),
                                            rel=1e-12)
    active = [(b, t) for b in range(4) for t in range(5) if MASK[b][t]]
    low = sum(RATIOS[b][t] < 1 - config.epsilon and ADV[b] < 0 for b, t in active)
    high = sum(RATIOS[b][t] > 1 + eps_high and ADV[b] > 0 for b, t in active)
    assert low > 0 and high > 0
    assert out.clip_ratio_low.item() == pytest.approx(low / len(active))
    assert out.clip_ratio_high.item() == pytest.approx(high / len(active))
    assert out.clip_ratio.item() == pytest.approx((low + high) / len(active))
    assert out.kl.item() == 0.0


def test_gradient_flows_only_through_unclipped_active_tokens():
    logps, old, adv, mask, _ = batch(requires_grad=True)
    grpo_loss(logps, old, adv, mask, GrpoLossConfig(loss_type="dapo")).loss.backward()
    n = sum(map(sum, MASK))
    stopped = unclipped_outside = 0
    for b in range(4):
        for t in range(5):
            r, a, g = RATIOS[b][t], ADV[b], logps.grad[b, t].item()
            if not MASK[b][t] or (r > 1.2 and a > 0) or (r < 0.8 and a < 0):
                stopped += MASK[b][t]
                assert g == 0.0, (b, t)
            else:  # d/dlogp of -r*A/n is -r*A/n
                unclipped_outside += (r > 1.2 or r < 0.8)
                assert g == pytest.approx(-r * a / n, rel=1e-9) and g != 0.0, (b, t)
    assert stopped == 6 and unclipped_outside == 3  # both kinds actually occur in the batch


def test_first_iteration_dapo_is_minus_token_weighted_advantage():
    logps, _, adv, mask, _ = batch(requires_grad=True)
    out = grpo_loss(logps, logps.detach(), adv, mask, GrpoLossConfig())
    expected = -sum(ADV[b] * sum(MASK[b]) for b in range(4)) / sum(map(sum, MASK))
    assert out.loss.item() == pytest.approx(expected, rel=1e-12)
    assert out.clip_ratio.item() == 0.0


def test_dapo_divides_by_num_items_in_batch_when_given():
    logps, old, adv, mask, _ = batch()
    base = grpo_loss(logps, old, adv, mask, GrpoLossConfig()).loss
    doubled = grpo_loss(logps, old, adv, mask, GrpoLossConfig(), num_items_in_batch=2 * mask.sum().item()).loss
    assert doubled.item() == pytest.approx(base.item() / 2, rel=1e-12)


def test_grpo_counts_an_empty_sequence_in_the_mean_over_sequences():
    logps, old, adv, mask, _ = batch()
    mask[1] = 0
    per_token = hand_token_losses(0.0, 0.2, 0.2, logps.tolist(), old.tolist(), None)
    rows = [sum(per_token[b][t] * mask[b, t].item() for t in range(5)) / sum(MASK[b]) for b in (0, 2, 3)]
    out = grpo_loss(logps, old, adv, mask, GrpoLossConfig(loss_type="grpo"))
    assert out.loss.item() == pytest.approx(sum(rows) / 4, rel=1e-12)


def test_k3_matches_hand_values_and_is_zero_at_the_reference():
    logps = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]], dtype=torch.float64)
    ref = torch.tensor([[-1.5, -1.0], [-0.5, -2.0]], dtype=torch.float64)
    kl = k3_kl(logps, ref)
    for b in range(2):
        for t in range(2):
            d = ref[b, t].item() - logps[b, t].item()
            assert kl[b, t].item() == pytest.approx(math.exp(d) - d - 1, rel=1e-12)
    assert kl[1, 0].item() == 0.0 and (kl >= 0).all()
    assert (k3_kl(logps, logps) == 0).all()


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "dr_grpo"])
def test_kl_term_against_hand_computation(loss_type):
    logps, old, adv, mask, ref = batch()
    config = GrpoLossConfig(loss_type=loss_type, beta=0.04)
    out = grpo_loss(logps, old, adv, mask, config, ref_logps=ref)
    per_token = hand_token_losses(0.04, 0.2, 0.2, logps.tolist(), old.tolist(), ref.tolist())
    assert out.loss.item() == pytest.approx(hand_loss(loss_type, per_token), rel=1e-12)
    kls = [math.exp(REF_SHIFT[b][t]) - REF_SHIFT[b][t] - 1 for b in range(4) for t in range(5) if MASK[b][t]]
    assert out.kl.item() == pytest.approx(sum(kls) / len(kls), rel=1e-9) and out.kl.item() > 0
    no_kl = grpo_loss(logps, old, adv, mask, GrpoLossConfig(loss_type=loss_type)).loss
    assert out.loss.item() > no_kl.item()
    # step 0: the reference is the policy, so the KL vanishes and the loss is exactly the beta=0 loss
    at_ref = grpo_loss(logps, old, adv, mask, config, ref_logps=logps.detach().clone())
    assert at_ref.kl.item() == 0.0 and at_ref.loss.item() == no_kl.item()


def test_beta_zero_ignores_the_reference_and_beta_nonzero_needs_one():
    logps, old, adv, mask, ref = batch()
    with_ref = grpo_loss(logps, old, adv, mask, GrpoLossConfig(), ref_logps=ref)
    assert with_ref.kl.item() == 0.0
    assert with_ref.loss.item() == grpo_loss(logps, old, adv, mask, GrpoLossConfig()).loss.item()
    with pytest.raises(ValueError, match="ref_logps"):
        grpo_loss(logps, old, adv, mask, GrpoLossConfig(beta=0.1))


def test_bad_inputs_raise():
    logps, old, adv, mask, ref = batch()
    cases = [dict(old_logps=old[:, :4]), dict(completion_mask=mask[:3]), dict(advantages=adv[:, None]),
             dict(advantages=adv[:3]), dict(ref_logps=ref.T), dict(logps=logps[0], old_logps=old[0],
                                                                  completion_mask=mask[0], ref_logps=None)]
    for case in cases:
        kwargs = dict(logps=logps, old_logps=old, advantages=adv, completion_mask=mask, ref_logps=ref) | case
        with pytest.raises(ValueError, match="shape"):
            grpo_loss(config=GrpoLossConfig(beta=0.1), **kwargs)
    with pytest.raises(ValueError, match="loss_type"):
        grpo_loss(logps, old, adv, mask, GrpoLossConfig(loss_type="bnpo"))


def hand_std(xs):
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))  # Bessel-corrected, as TRL's nanstd


def test_group_advantages_match_hand_computation_in_every_mode():
    rewards = [1.0, 0.0, 0.5, 2.0, 3.0, 3.0]  # groups of 2: mixed, mixed, all-equal
    r = torch.tensor(rewards, dtype=torch.float64)
    groups = [rewards[i:i + 2] for i in range(0, 6, 2)]
    batch_std = hand_std(rewards)
    for mode in ("group", "batch", "none"):
        adv = group_advantages(r, 2, mode).tolist()
        for i, x in enumerate(rewards):
            g = groups[i // 2]
            centred = x - sum(g) / 2
            scale = {"group": hand_std(g) + 1e-4, "batch": batch_std + 1e-4, "none": 1.0}[mode]
            assert adv[i] == pytest.approx(centred / scale, rel=1e-12, abs=1e-15), (mode, i)
        assert adv[4] == 0.0 and adv[5] == 0.0
    assert group_advantages(r, 2, "group")[0].item() == pytest.approx(0.5 / (math.sqrt(0.5) + 1e-4))


def test_all_equal_groups_give_exactly_zero_even_where_float_mean_is_inexact():
    r = torch.tensor([0.7] * 8 + [0.0] * 7 + [1.0])  # float32 mean of eight 0.7s is not exactly 0.7
    assert (r[:8] - r[:8].mean()).abs().max() > 0
    for mode in ("group", "batch", "none"):
        adv = group_advantages(r, 8, mode)
        assert (adv[:8] == 0).all(), mode
        assert adv[15] > 0 and (adv[8:15] < 0).all()


def test_nan_rewards_are_left_out_of_the_statistics_and_get_zero_advantage():
    r = torch.tensor([1.0, float("nan"), 0.0, 2.0])
    adv = group_advantages(r, 2, "group")
    assert adv[0].item() == 0.0 and adv[1].item() == 0.0  # one scorable reward in the group: no signal
    assert adv[2].item() == pytest.approx(-1.0 / (math.sqrt(2.0) + 1e-4))


def test_group_advantages_reject_bad_shapes_and_modes():
    with pytest.raises(ValueError, match="multiple"):
        group_advantages(torch.zeros(5), 2)
    with pytest.raises(ValueError, match="num_generations"):
        group_advantages(torch.zeros(4), 1)
    with pytest.raises(ValueError, match="1-D"):
        group_advantages(torch.zeros(2, 2), 2)
    with pytest.raises(ValueError, match="scale_rewards"):
        group_advantages(torch.zeros(4), 2, "global")


def trl_compute_loss(config, logps, old, adv, mask, ref):
    """TRL 1.16's own GRPOTrainer._compute_loss on a stand-in trainer whose model returns `logps`."""
    grpo_trainer = pytest.importorskip("trl.trainer.grpo_trainer")
    eps_high = config.epsilon if config.epsilon_high is None else config.epsilon_high
    fake = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logps, torch.zeros_like(logps), None),
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level="token",
        beta=config.beta, loss_type=config.loss_type, epsilon_low=config.epsilon, epsilon_high=eps_high,
        max_completion_length=config.max_completion_length, use_vllm=False, model=SimpleNamespace(training=True),
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        current_gradient_accumulation_steps=1, _entropy_bonus_enabled=False, aux_loss_enabled=False,
        accelerator=SimpleNamespace(num_processes=1, reduce=lambda x, reduction: x, gather=lambda x: x),
        _metrics=defaultdict(lambda: defaultdict(list)))
    inputs = dict(prompt_ids=torch.zeros(4, 0, dtype=torch.long), prompt_mask=torch.zeros(4, 0, dtype=torch.long),
                  completion_ids=torch.zeros(4, 5, dtype=torch.long), completion_mask=mask.long(), advantages=adv,
                  old_per_token_logps=old, ref_per_token_logps=ref, num_items_in_batch=mask.sum())
    loss = grpo_trainer.GRPOTrainer._compute_loss(fake, None, inputs)
    return loss, fake._metrics["train"]


@pytest.mark.parametrize("config", CONFIGS + [GrpoLossConfig(loss_type="grpo", beta=0.04),
                                              GrpoLossConfig(loss_type="dapo", beta=0.04)],
                         ids=lambda c: f"{c.loss_type}-{c.epsilon_high}-{c.beta}")
def test_matches_trl_compute_loss(config):
    logps, old, adv, mask, ref = batch()
    trl_loss, metrics = trl_compute_loss(config, logps, old, adv, mask, ref)
    out = grpo_loss(logps, old, adv, mask, config, ref_logps=ref)
    assert out.loss.item() == pytest.approx(trl_loss.item(), rel=1e-12)
    assert out.clip_ratio.item() == pytest.approx(metrics["clip_ratio/region_mean"][0])
    assert out.clip_ratio_low.item() == pytest.approx(metrics["clip_ratio/low_mean"][0])
    assert out.clip_ratio_high.item() == pytest.approx(metrics["clip_ratio/high_mean"][0])
    assert out.kl.item() == pytest.approx(metrics["kl"][0] if config.beta else 0.0)


def test_advantages_match_trl_nanstd_rule():
    utils = pytest.importorskip("trl.trainer.utils")
    r = torch.tensor([1.0, 0.0, 0.5, 2.0, 0.25, 3.0, 1.5, -1.0])
    mean = r.view(-1, 4).mean(1).repeat_interleave(4)
    group_std = utils.nanstd(r.view(-1, 4), dim=1).repeat_interleave(4)
    assert torch.allclose(group_advantages(r, 4, "group"), (r - mean) / (group_std + 1e-4))
    assert torch.allclose(group_advantages(r, 4, "batch"), (r - mean) / (utils.nanstd(r) + 1e-4))
    assert torch.allclose(group_advantages(r, 4, "none"), r - mean)
