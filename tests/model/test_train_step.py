"""Collation, a real forward/backward on a collated batch, and generation from a built prompt."""

import torch

from pixelis.core.trajectory import to_messages
from pixelis.model.chat import MODEL_INPUT_KEYS, build_generation_prompt, collate, model_inputs, render_trajectory
from pixelis.train.sft_batch import collate_sft, render_sft_sample


def test_collate_pads_right_and_concatenates_images(policy, trajs, tools):
    processor = policy[1]
    pad_id = processor.tokenizer.pad_token_id
    sft_a = render_sft_sample(processor, trajs["multi"], tools)
    sft_b = render_sft_sample(processor, trajs["direct"], tools)
    a, b = sft_a.rendered, sft_b.rendered
    batch = collate_sft([sft_a, sft_b], pad_id, action_weight=3.0)
    n = max(len(a), len(b))
    assert batch["input_ids"].shape == (2, n)
    short = 0 if len(a) < len(b) else 1
    length = min(len(a), len(b))
    assert bool((batch["input_ids"][short, length:] == pad_id).all())
    assert int(batch["attention_mask"][short].sum()) == length
    for row, s in enumerate([a, b]):
        assert torch.equal(batch["input_ids"][row, : len(s)], s.input_ids)
        labels = batch["labels"][row]
        assert torch.equal(labels != -100, torch.nn.functional.pad(s.assistant_mask, (0, n - len(s))).bool())
        assert torch.equal(labels[labels != -100], s.input_ids[s.assistant_mask.bool()])
    assert torch.equal(batch["pixel_values"], torch.cat([a.pixel_values, b.pixel_values]))
    assert torch.equal(batch["image_grid_thw"], torch.cat([a.image_grid_thw, b.image_grid_thw]))
    weights = batch["weights"]
    assert set(weights[batch["action_mask"].bool()].tolist()) == {3.0}
    assert set(weights[(batch["assistant_mask"] - batch["action_mask"]).bool()].tolist()) == {1.0}
    assert float(weights[batch["labels"] == -100].abs().sum()) == 0.0
    assert batch["call_token_positions"].tolist() == [[0, p] for p in sft_a.call_token_positions]


def test_forward_backward_on_collated_batch(any_policy, trajs, tools):
    model, processor = any_policy
    samples = [render_trajectory(processor, trajs["multi"], tools),
               render_trajectory(processor, trajs["no_thought"], tools, max_length=100)]
    batch = collate(samples, processor.tokenizer.pad_token_id)
    model.zero_grad()
    out = model(**{k: batch[k] for k in MODEL_INPUT_KEYS if k in batch})
    assert torch.isfinite(out.loss) and out.loss.item() > 0
    out.loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert grads["lm_head.weight"].abs().sum() > 0
    vision = [g for name, g in grads.items() if ".visual." in name and g is not None]
    assert vision and sum(float(g.abs().sum()) for g in vision) > 0, "no gradient reached the vision tower"
    model.zero_grad()


def test_model_inputs_drop_a_right_padding_mask_without_changing_real_tokens(any_policy, trajs, tools):
    model, processor = any_policy
    samples = [render_trajectory(processor, trajs["multi"], tools),
               render_trajectory(processor, trajs["no_thought"], tools, max_length=100)]
    batch = collate(samples, processor.tokenizer.pad_token_id)
    assert int(batch["attention_mask"].sum()) < batch["attention_mask"].numel()  # one row is padded
    inputs = model_inputs(batch, "cpu")
    assert "attention_mask" not in inputs and "labels" not in inputs
    with torch.no_grad():
        fused = model(**inputs).logits
        masked = model(**inputs, attention_mask=batch["attention_mask"]).logits
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(fused[real], masked[real])
    left = {**batch, "attention_mask": batch["attention_mask"].flip(1)}  # padding first: the mask must stay
    assert torch.equal(model_inputs(left, "cpu")["attention_mask"], left["attention_mask"])


def test_generate_from_generation_prompt(any_policy, trajs, tools):
    model, processor = any_policy
    traj = trajs["multi"]
    messages, images = to_messages(traj, include_answer=False)
    prompt = build_generation_prompt(processor, messages, images, tools)
    assert processor.tokenizer.decode(prompt["input_ids"][0]).endswith("<|im_start|>assistant\n")
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    new = out[0, prompt["input_ids"].shape[1]:]
    assert 1 <= new.shape[0] <= 8
    assert torch.equal(out[0, : prompt["input_ids"].shape[1]], prompt["input_ids"][0])

