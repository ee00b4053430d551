"""Chat rendering: exact assistant masks, train-vs-inference token identity, tools, truncation, the token locator."""

import copy
import random
import re

import pytest
import torch

from pixelis.core.trajectory import (
    Observation,
    Step,
    ToolCall,
    Trajectory,
    render_final_text,
    render_step_text,
    to_messages,
)
from pixelis.model.chat import (
    ChatTemplateError,
    build_generation_prompt,
    render_conversation,
    render_trajectory,
    template_supports_tools,
)

NAMES = ["direct", "multi", "no_thought"]


def assistant_texts(traj) -> list[str]:
    texts = [render_step_text(s) for s in traj.steps]
    return texts + [render_final_text(traj.final_thought, traj.answer)]


def runs(mask: torch.Tensor) -> list[tuple[int, int]]:
    """Contiguous [start, end) runs of ones."""
    padded = torch.cat([torch.zeros(1, dtype=mask.dtype), mask, torch.zeros(1, dtype=mask.dtype)])
    diff = padded[1:] - padded[:-1]
    return list(zip((diff == 1).nonzero().flatten().tolist(), (diff == -1).nonzero().flatten().tolist()))


@pytest.mark.parametrize("name", NAMES)
def test_assistant_mask_is_exactly_what_the_model_generates(any_policy, trajs, tools, name):
    processor = any_policy[1]
    tok = processor.tokenizer
    traj = trajs[name]
    sample = render_trajectory(processor, traj, tools=tools)
    turns = assistant_texts(traj)

    # Token-exact: each turn's masked tokens are the standalone tokenization of its text + <|im_end|>,
    # i.e. what generate() emits after the generation prompt.
    turn_runs = runs(sample.assistant_mask)
    assert len(turn_runs) == len(turns) == len(sample.assistant_turns)
    assert turn_runs == sample.assistant_turns
    for (start, end), text in zip(turn_runs, turns):
        assert sample.input_ids[start:end].tolist() == tok(text + "<|im_end|>").input_ids
        assert tok.decode(sample.input_ids[:start]).endswith("<|im_start|>assistant\n")
    masked = sample.input_ids[sample.assistant_mask.bool()]
    assert tok.decode(masked) == "".join(t + "<|im_end|>" for t in turns)

    visual = {tok.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|vision_start|>", "<|vision_end|>")}
    assert not any(int(i) in visual for i in masked)
    assert not (sample.assistant_mask.bool() & (sample.mm_token_type_ids != 0)).any()


def test_training_prefix_equals_generation_prompt(any_policy, trajs, tools):
    processor = any_policy[1]
    traj = trajs["multi"]
    messages, images = to_messages(traj)
    sample = render_trajectory(processor, traj, tools=tools)
    merge = processor.image_processor.merge_size ** 2
    assistant_at = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    for (start, _), i in zip(sample.assistant_turns, assistant_at):
        k = sum(1 for m in messages[:i] for part in m["content"] if part.get("type") == "image")
        prompt = build_generation_prompt(processor, messages[:i], images[:k], tools)
        assert prompt["input_ids"][0].tolist() == sample.input_ids[:start].tolist()
        assert torch.equal(prompt["mm_token_type_ids"][0], sample.mm_token_type_ids[:start])
        rows = int(sample.image_grid_thw[:k].prod(dim=1).sum())
        assert torch.equal(prompt["pixel_values"], sample.pixel_values[:rows])
        assert int((prompt["mm_token_type_ids"] != 0).sum()) == rows // merge


def test_history_keeps_reasoning_verbatim(policy, trajs):
    """Qwen3-VL's template renders earlier assistant turns unchanged (no <think> stripping)."""
    processor = policy[1]
    traj = trajs["multi"]
    sample = render_trajectory(processor, traj)
    messages, images = to_messages(traj, include_answer=False)
    prompt = processor.tokenizer.decode(build_generation_prompt(processor, messages, images)["input_ids"][0])
    for text in assistant_texts(traj)[:-1]:
        assert text + "<|im_end|>" in sample.text and text + "<|im_end|>" in prompt


def test_template_that_rewrites_history_is_rejected(policy, trajs):
    processor = copy.deepcopy(policy[1])
    template = processor.chat_template
    template = template.replace('{%- elif message.role == "assistant" %}',
                                '{%- elif message.role == "assistant" %}{%- set is_last = loop.last %}')
    template = template.replace("{{- content_item.text }}",
                                "{{- content_item.text if is_last else content_item.text.split('</think>')[-1] }}")
    assert template != processor.chat_template
    processor.chat_template = template
    with pytest.raises(ChatTemplateError, match="not prefix-preserving at assistant message 1"):
        render_trajectory(processor, trajs["multi"])


def test_qwen2_5_template_gets_the_same_tool_text_as_qwen3(policy, policy25, trajs, tools):
    assert template_supports_tools(policy[1]) and not template_supports_tools(policy25[1])
    for traj in trajs.values():
        assert render_trajectory(policy25[1], traj, tools).text == render_trajectory(policy[1], traj, tools).text
    messages, images = to_messages(trajs["multi"])
    messages = [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]}, *messages]
    a = render_conversation(policy[1], messages, images, tools)
    b = render_conversation(policy25[1], messages, images, tools)
    assert a.text == b.text
    assert a.text.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n")
    assert '"name": "read_text"' in a.text.split("<|im_end|>")[0]
    assert "<|im_start|>tool" not in b.text


def test_truncation_never_splits_an_image(any_policy, trajs):
    processor = any_policy[1]
    tok = processor.tokenizer
    pad, start_id, end_id = tok.convert_tokens_to_ids(["<|image_pad|>", "<|vision_start|>", "<|vision_end|>"])
    merge = processor.image_processor.merge_size ** 2
    full = render_trajectory(processor, trajs["multi"])
    image_runs = runs((full.input_ids == pad).long())
    assert len(image_runs) == 3
    limits = [image_runs[0][0] + 3, image_runs[1][0], image_runs[1][1], image_runs[2][0] + 1, len(full) - 1]
    for limit in limits:
        cut = render_trajectory(processor, trajs["multi"], max_length=limit)
        assert cut.truncated and len(cut) <= limit
        assert cut.input_ids.tolist() == full.input_ids[: len(cut)].tolist()
        ids = cut.input_ids.tolist()
        assert ids.count(start_id) == ids.count(end_id), f"dangling <|vision_start|> at limit {limit}"
        n_images = 0 if cut.image_grid_thw is None else cut.image_grid_thw.shape[0]
        assert n_images == sum(1 for a, b in image_runs if b <= len(cut))
        if n_images:
            assert ids.count(pad) == int(cut.image_grid_thw.prod(dim=1).sum()) // merge
            assert cut.pixel_values.shape[0] == int(cut.image_grid_thw.prod(dim=1).sum())
            assert torch.equal(cut.pixel_values, full.pixel_values[: cut.pixel_values.shape[0]])
        assert cut.locator.offsets.shape[0] == len(cut)
    same = render_trajectory(processor, trajs["multi"], max_length=len(full))
    assert not same.truncated and torch.equal(same.input_ids, full.input_ids)


def test_masks_on_random_trajectories(any_policy, make_scene):
    """Property check over seeded random content: unicode, digits, punctuation, inner newlines, empty thoughts."""
    processor = any_policy[1]
    tok = processor.tokenizer
    rng = random.Random(0)
    pieces = ["zoom", "红色", "naïve", "42", "3.5", "  spaced", "\nnew line", "{json}", "<b>", "émoji🙂", ",", "!?"]

    def phrase() -> str:
        return "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 6))).lstrip()

    small = make_scene((64, 64), "green")
    for n in range(12):
        steps = []
        for _ in range(rng.randrange(0, 4)):
            call = ToolCall(rng.choice(["zoom_in", "read_text"]), {"image": rng.randrange(3), "note": phrase()})
            images = [small] * rng.randrange(0, 3)
            observation = Observation(phrase(), images)
            steps.append(Step(thought=rng.choice(["", phrase()]), call=call, observation=observation))
        traj = Trajectory(id=str(n), question=phrase(), images=[small] * rng.randrange(0, 3), steps=steps,
                          final_thought=rng.choice(["", phrase()]), answer=phrase())
        sample = render_trajectory(processor, traj)
        turns = assistant_texts(traj)
        assert len(sample.assistant_turns) == len(turns)
        for (start, end), text in zip(sample.assistant_turns, turns):
            assert sample.input_ids[start:end].tolist() == tok(text + "<|im_end|>").input_ids
        assert int(sample.assistant_mask.sum()) == sum(b - a for a, b in sample.assistant_turns)
        opens = [m.start() for a, b in sample.turn_char_spans for m in re.finditer("<tool_call>", sample.text[:b])
                 if m.start() >= a]
        assert len(opens) == sum(1 for s in steps if s.call is not None)
        assert all(tok.convert_ids_to_tokens(int(sample.input_ids[sample.locator.position(c)])) == "<tool_call>"
                   for c in opens)
        assert int((sample.mm_token_type_ids != 0).sum()) == (
            0 if sample.image_grid_thw is None else int(sample.image_grid_thw.prod(dim=1).sum()) // 4)
