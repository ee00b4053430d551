"""SFT's rendering rules (`pixelis.train.sft_batch`): the action mask and the aux call positions (weighted collation:
tests/model/test_train_step.py)."""

import re

import pytest

from pixelis.train.sft_batch import render_sft_sample
from test_chat import NAMES, assistant_texts, runs


@pytest.mark.parametrize("name", NAMES)
def test_action_mask_covers_exactly_the_tool_calls(any_policy, trajs, tools, name):
    processor = any_policy[1]
    tok = processor.tokenizer
    sft = render_sft_sample(processor, trajs[name], tools=tools)
    sample = sft.rendered
    # every call, and an unclosed one up to the end of its turn
    calls = [c for t in assistant_texts(trajs[name]) for c in re.findall(r"<tool_call>.*?(?:</tool_call>|$)", t, re.S)]
    assert sum(t.count("<tool_call>") for t in assistant_texts(trajs[name])) == len(calls)

    action_runs = runs(sft.action_mask)
    assert [tok.decode(sample.input_ids[a:b]) for a, b in action_runs] == calls
    assert bool((sft.action_mask <= sample.assistant_mask).all())
    assert sft.call_token_positions == [a for a, _ in action_runs]
    assert all(tok.convert_ids_to_tokens(int(sample.input_ids[p])) == "<tool_call>"
               for p in sft.call_token_positions)
    # the system prompt's format example <tool_call>...</tool_call> is not an action
    assert "<tool_call>" in tok.decode(sample.input_ids[: sample.assistant_turns[0][0]])


