"""LoRA through PEFT: rank patterns, trainable set, unchanged initial outputs, config object."""

import torch
from peft import PeftModel

from pixelis.core.config import LoraConfig as LoraSettings
from pixelis.model.chat import MODEL_INPUT_KEYS, collate, render_trajectory
from pixelis.model.load import load_policy
from pixelis.model.lora import apply_lora, lora_from_config, trainable_parameter_summary


def _batch(processor, trajs):
    return collate([render_trajectory(processor, trajs["direct"])], processor.tokenizer.pad_token_id)


def test_apply_lora_with_rank_pattern(tiny_dir, trajs):
    model, processor = load_policy(tiny_dir)
    batch = _batch(processor, trajs)
    inputs = {k: batch[k] for k in MODEL_INPUT_KEYS if k in batch}
    with torch.no_grad():
        base_logits = model(**inputs).logits
    before = trainable_parameter_summary(model)
    assert before.trainable == before.total

    peft_model = apply_lora(model, r=8, alpha=16, dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"],
                            rank_pattern={"v_proj": 2})
    assert isinstance(peft_model, PeftModel)
    ranks = {name: m.r["default"] for name, m in peft_model.named_modules() if hasattr(m, "lora_A")}
    assert ranks and all(".visual." not in name for name in ranks)
    assert {r for n, r in ranks.items() if n.endswith("v_proj")} == {2}
    assert {r for n, r in ranks.items() if n.endswith(("q_proj", "down_proj"))} == {8}
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    summary = trainable_parameter_summary(peft_model)
    assert summary.trainable == sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    assert summary.total == before.total + summary.trainable and 0 < summary.fraction < 0.2

    # lora_B starts at zero: the adapted model computes exactly the base function
    with torch.no_grad():
        assert torch.equal(peft_model(**inputs).logits, base_logits)
    peft_model.train()
    out = peft_model(**inputs)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is None for n, p in peft_model.named_parameters() if not p.requires_grad)
    assert any(float(p.grad.abs().sum()) > 0 for n, p in peft_model.named_parameters() if "lora_B" in n)


def test_lora_from_config(tiny_dir):
    model, _ = load_policy(tiny_dir)
    assert lora_from_config(model, LoraSettings(enabled=False)) is model
    peft_model = lora_from_config(model, LoraSettings(enabled=True, r=4, alpha=8, target_modules=["o_proj"]))
    ranks = {name: m.r["default"] for name, m in peft_model.named_modules() if hasattr(m, "lora_A")}
    assert ranks and set(ranks.values()) == {4} and all(n.endswith("o_proj") for n in ranks)
