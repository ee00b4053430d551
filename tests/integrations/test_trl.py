"""`pixelis.integrations.trl`: the registry's tools as a TRL environment, the rewards as TRL reward functions,
and a real 2-step `GRPOTrainer` run with both on the tiny model."""

import dataclasses
import json
import os

import pytest
import torch
from transformers.utils import get_json_schema

from pixelis.agent.prompt import ToolPrompt
from pixelis.core.trajectory import read_jsonl, render_final_text, to_messages
from pixelis.integrations.trl import (PixelisToolEnv, compact_tool_prompt, rollout_records, trl_dataset,
                                     trl_rewards)
from pixelis.model.load import load_policy
from pixelis.tools.registry import ToolRegistry


@pytest.fixture(scope="module")
def samples(train_suite_dir):
    return [t for t in read_jsonl(train_suite_dir / "train.jsonl") if not t.video][:4]


def test_every_tool_is_a_typed_documented_method(samples):
    env = PixelisToolEnv()
    for schema in ToolRegistry.default().schemas():
        fn = schema["function"]
        derived = get_json_schema(getattr(env, fn["name"]))["function"]  # what TRL renders into the prompt
        assert derived["description"] == fn["description"]
        assert set(derived["parameters"]["properties"]) == set(fn["parameters"]["properties"])
        assert set(derived["parameters"].get("required", [])) == set(fn["parameters"].get("required", []))
    assert not hasattr(env, "call"), "a public helper would be offered to the model as a tool"


def test_compact_tool_prompt_shows_trl_s_policy_the_agent_s_prompt(tiny_model_dir, samples):
    from trl.data_utils import prepare_multimodal_messages

    _, processor = load_policy(tiny_model_dir, dtype="float32", device="cpu")
    env = PixelisToolEnv()
    tools = [getattr(env, s["function"]["name"]) for s in env.registry.schemas()]
    system = compact_tool_prompt(processor)
    row = trl_dataset(samples[:1], system=system)[0]
    # what GRPOTrainer renders for the row: its messages with the row's images, the environment's tools
    theirs = processor.apply_chat_template([prepare_multimodal_messages(row["prompt"], row["images"])], tools=tools,
                                           add_generation_prompt=True, tokenize=False)[0]
    prompt = ToolPrompt.build(env.registry.schemas(), "compact")
    question = dataclasses.replace(samples[0], steps=[], answer=None)  # the agent's first turn
    messages, _ = to_messages(question, include_answer=False, system=prompt.system)
    ours = processor.apply_chat_template(messages, tools=prompt.tools, add_generation_prompt=True, tokenize=False)
    assert theirs == ours and "zoom_in(image?, bbox)" in ours and '"parameters"' not in ours
    assert processor.tokenizer.response_template is not None, "TRL still parses the calls"


def test_tools_run_on_the_rows_images_and_return_image_blocks(samples):
    env = PixelisToolEnv()
    env.reset(**trl_dataset(samples)[0])  # the row as TRL passes it: images decoded by `datasets`
    assert env.images and env.images[0].size == samples[0].images[0].size
    out = env.zoom_in(bbox=[0, 0, 500, 500])
    assert [part["type"] for part in out] == ["image", "text"] and "image 1" in out[1]["text"]
    again = env.zoom_in(image=1, bbox=[0, 0, 500, 500])  # the crop got index 1, as in the agent loop
    assert again[0]["image"].size == out[0]["image"].size
    error = env.zoom_in(bbox=[0, 0, 5000])
    assert isinstance(error, str) and error.startswith("Error (")
    assert [s.observation.ok for s in env.steps] == [True, True, False]
    env.reset(images=samples[1].images)
    assert env.steps == []


def test_rewards_score_trl_completions_with_the_pixelis_terms(samples):
    sample = samples[0]
    right = [{"role": "assistant", "content": render_final_text("", str(sample.target["value"]))}]
    wrong = [{"role": "assistant", "content": "<answer>certainly not this</answer>"}]
    garbled = [{"role": "assistant", "content": "no answer tags"}]
    envs = [PixelisToolEnv() for _ in range(3)]
    for env in envs:
        env.reset(images=sample.images)
    envs[0].zoom_in(bbox=[0, 0, 500, 500])
    columns = {"sample_id": [sample.id] * 3, "question": [sample.question] * 3,
               "target": [json.dumps(sample.target)] * 3}
    task, fmt, bonus = trl_rewards({"task": 2.0, "format": 1.0, "rapr_bonus": 1.0},
                                   {"rapr_bonus": {"H": 1.0}})
    completions = [right, wrong, garbled]
    assert task(None, completions, environments=envs, **columns) == [2.0, 0.0, 0.0]
    assert fmt(None, completions, environments=envs, **columns) == [1.0, 1.0, 0.0]
    # one of three rollouts of the group used a tool: it earns H - RaPR = 1 - 1/3
    assert bonus(None, completions, environments=envs, **columns) == pytest.approx([2 / 3, 0.0, 0.0])
    records = rollout_records(completions, envs, **columns)
    assert {r.group for r in records} == {0} and records[0].trajectory.steps[0].call.name == "zoom_in"
    with pytest.raises(ValueError, match="curiosity"):
        trl_rewards({"curiosity": 1.0})


def test_grpo_trainer_trains_two_steps_with_the_environment_and_rewards(tmp_path, tiny_model_dir, samples,
                                                                         monkeypatch):
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl import GRPOConfig, GRPOTrainer

    from pixelis.model.load import load_policy

    torch.manual_seed(0)
    model, processor = load_policy(tiny_model_dir)
    start = {k: v.clone() for k, v in model.named_parameters()}

    def length(completions, **_):  # a term a random policy earns by degrees, so advantages are non-zero
        return [float(len(json.dumps(c))) / 100 for c in completions]

    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=16, max_steps=2, use_cpu=True, report_to=[], logging_steps=1,
                      save_strategy="no", learning_rate=1e-3, beta=0.0, seed=0, max_tool_calling_iterations=2,
                      # GRPOConfig defaults to bf16, which accelerate keeps in its process-wide state: every later
                      # Accelerator in this process would autocast too (it broke the RFT tests that run after).
                      bf16=False, gradient_checkpointing=False)
    trainer = GRPOTrainer(model=model, args=args, train_dataset=trl_dataset(samples), processing_class=processor,
                          environment_factory=PixelisToolEnv,
                          reward_funcs=[*trl_rewards({"task": 1.0, "format": 0.2}), length])
    trainer.train()
    logged = [row for row in trainer.state.log_history if "reward" in row]
    assert len(logged) == 2
    assert all("rewards/pixelis_task/mean" in row and "rewards/pixelis_format/mean" in row for row in logged)
    assert any(not torch.equal(start[k], v) for k, v in trainer.model.named_parameters())
