"""The masked imitation loss and the auxiliary argument head, on a real rendered conversation."""

import json

import torch

from pixelis.agent.prompt import ToolPrompt
from pixelis.core.trajectory import read_jsonl
from pixelis.train.sft_batch import collate_sft, render_sft_sample
from pixelis.model.load import load_policy
from pixelis.tools.registry import ToolRegistry
from pixelis.train.loss import ArgumentHead, AuxBatch, aux_argument_loss, call_argument_target, call_targets, \
    masked_imitation_loss
from pixelis.core.trajectory import Step, ToolCall, Trajectory


def test_loss_is_the_weighted_mean_of_next_token_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    ids = torch.randint(0, 11, (2, 5))
    weights = torch.tensor([[0, 1, 2, 0, 1], [0, 0, 1, 1, 0]], dtype=torch.float32)
    expected_num, expected_den = 0.0, 0.0
    for b in range(2):
        for t in range(4):
            w = weights[b, t + 1].item()
            ce = -torch.log_softmax(logits[b, t], -1)[ids[b, t + 1]].item()
            expected_num += w * ce
            expected_den += w
    assert torch.isclose(masked_imitation_loss(logits, ids, weights), torch.tensor(expected_num / expected_den))


def test_rendered_weights_cover_exactly_assistant_tokens_with_calls_upweighted(tiny_model_dir, train_suite_dir):
    model, processor = load_policy(tiny_model_dir)
    traj = next(t for t in read_jsonl(train_suite_dir / "train.jsonl") if t.steps and not t.metadata["trap"])
    prompt = ToolPrompt.build(ToolRegistry.default().schemas(), "compact")
    sample = render_sft_sample(processor, traj, prompt.tools, system=prompt.system)
    batch = collate_sft([sample], processor.tokenizer.pad_token_id, action_weight=2.0)
    w, ids = batch["weights"][0], batch["input_ids"][0]
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert (w[ids == image_pad] == 0).all()
    assert set(w.unique().tolist()) == {0.0, 1.0, 2.0}
    assert ((w == 2.0) == batch["action_mask"][0].bool()).all()
    decoded_calls = processor.tokenizer.decode(ids[w == 2.0])
    assert decoded_calls.count("<tool_call>") == len(traj.steps) and traj.steps[0].call.name in decoded_calls
    # Changing the action weight changes the loss exactly as the weighted mean says.
    out = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values",
                                         "image_grid_thw")})
    plain = masked_imitation_loss(out.logits, batch["input_ids"], batch["assistant_mask"].float())
    weighted = masked_imitation_loss(out.logits, batch["input_ids"], batch["weights"])
    assert not torch.isclose(plain, weighted)


def test_trap_turns_are_context_but_never_imitated(tiny_model_dir, synth_suite):
    """The deliberate mistake of a trap trajectory is read by the model but carries no loss; its correction does."""
    _, processor = load_policy(tiny_model_dir)
    tok = processor.tokenizer
    traj = next(t for t in synth_suite["train"] if any(s.kind == "trap" for s in t.steps))
    at = [s.kind for s in traj.steps].index("trap")
    prompt = ToolPrompt.build(ToolRegistry.default().schemas(), "compact")
    sample = render_sft_sample(processor, traj, prompt.tools, system=prompt.system)
    batch = collate_sft([sample], tok.pad_token_id, action_weight=2.0)
    weights = batch["weights"][0]
    turns = sample.rendered.assistant_turns
    (trap_start, trap_end), (fix_start, fix_end) = turns[at], turns[at + 1]
    trap_call = json.dumps({"name": traj.steps[at].call.name, "arguments": traj.steps[at].call.arguments})
    assert trap_call in tok.decode(sample.rendered.input_ids[trap_start:trap_end])  # in the context...
    assert (weights[trap_start:trap_end] == 0).all()  # ...but not learned
    assert (weights[fix_start:fix_end] > 0).all() and (weights[fix_start:fix_end] == 2.0).any()
    trained_turns = [i for i, (a, b) in enumerate(turns) if (weights[a:b] > 0).all()]
    assert trained_turns == [i for i in range(len(turns)) if i != at]
    # the aux head skips the trap's wrong box but still lines up with every later call
    targets = call_targets(traj)
    assert len(targets) == len(sample.call_token_positions) and targets[at] is None
    assert targets[at + 1] == call_argument_target(traj.steps[at + 1].call.arguments)


def test_aux_head_regresses_boxes_at_call_tokens():
    traj = Trajectory(id="x", question="q", steps=[
        Step(call=ToolCall("zoom_in", {"bbox": [100, 200, 300, 400]})),
        Step(call=ToolCall("read_text", {"image": 1})),
        Step(call=ToolCall("segment_object_at", {"point": [500, 250]})),
        Step(raw_text='<tool_call>{"name": broken</tool_call>'),
    ])
    targets = call_targets(traj)
    assert targets == [[0.1, 0.2, 0.3, 0.4], None, [0.5, 0.25, 0.5, 0.25], None]
    positions = torch.tensor([[0, 3], [0, 7], [0, 9], [0, 12]])
    aux = AuxBatch.build(positions, [targets])
    assert aux.position.tolist() == [3, 9] and aux.target.shape == (2, 4)
    torch.manual_seed(0)
    head = ArgumentHead(8)
    hidden = torch.randn(1, 14, 8, requires_grad=True)
    loss = aux_argument_loss(head, hidden, aux)
    loss.backward()
    assert loss.item() > 0
    touched = hidden.grad.abs().sum(-1)[0]
    assert touched[3] > 0 and touched[9] > 0 and touched[7] == 0 and touched[12] == 0
    empty = AuxBatch.build(torch.zeros(0, 2, dtype=torch.long), [[]])
    assert aux_argument_loss(head, hidden, empty).item() == 0.0
