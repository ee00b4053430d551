"""`pixelis analyze lora-ranks`: known-rank adapters, a real LoRA SFT run, full fine-tune deltas, bad inputs."""

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model
from typer.testing import CliRunner

from pixelis.cli import app
from pixelis.core.config import load_config
from pixelis.model.load import load_policy
from pixelis.model.lora import lora_from_config
from pixelis.train.lora_sources import analyse
from pixelis.train.sft import train_sft

Q0 = "model.language_model.layers.0.self_attn.q_proj"
V1 = "model.language_model.layers.1.self_attn.v_proj"


def _by_name(report):
    return {m.name: m for m in report.modules}


@pytest.fixture(scope="module")
def known_adapter(tmp_path_factory, tiny_dir):
    """A PEFT adapter (r=8, v_proj r=4 with alpha 32) whose layer-0 q_proj delta has rank 2, saved and merged."""
    root = tmp_path_factory.mktemp("known")
    model, processor = load_policy(tiny_dir)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], rank_pattern={"v_proj": 4},
                        alpha_pattern={"v_proj": 32}, exclude_modules=r".*\bvisual\b.*")
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(0)
    factors = {}
    with torch.no_grad():
        for name, module in peft_model.named_modules():
            if not hasattr(module, "lora_A"):
                continue
            a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
            a.copy_(torch.randn(a.shape, generator=generator))
            b.copy_(torch.randn(b.shape, generator=generator))
            if name.endswith(Q0):
                b[:, 2:] = 0  # only two of the eight directions are used
            factors[name.removeprefix("base_model.model.")] = (a.clone(), b.clone(), module.scaling["default"])
    peft_model.save_pretrained(root / "adapter")
    peft_model.merge_and_unload().save_pretrained(root / "merged")
    processor.save_pretrained(root / "merged")
    return root, factors


def test_rank_two_delta_in_a_rank_eight_adapter_reads_as_rank_two(known_adapter):
    root, factors = known_adapter
    report = analyse(root / "adapter")
    modules = _by_name(report)
    assert report.kind == "lora" and set(modules) == set(factors)
    q0 = modules[Q0]
    assert q0.configured_rank == 8 and q0.effective_rank(0.9) in (1, 2) and q0.effective_rank(0.95) in (1, 2)
    assert q0.effective_rank(0.99) == 2 and q0.stable_rank <= 2 and q0.rank_used(0.99) == 0.25
    assert float(q0.energy[1]) == pytest.approx(1.0) and float(q0.singular_values[2]) < 1e-9 * q0.sigma_max
    for name, (a, b, scale) in factors.items():  # matches the SVD of the dense delta, PEFT's scale included
        dense = torch.linalg.svdvals(scale * b.double() @ a.double())[: len(modules[name].singular_values)]
        torch.testing.assert_close(modules[name].singular_values, dense, rtol=1e-9, atol=1e-9)
    v1 = modules[V1]
    assert v1.configured_rank == 4 and v1.scale == 32 / 4 and v1.effective_rank(0.99) >= 3
    assert report.rank_pattern()[Q0] == 2 and report.to_dict()["lora"]["alpha_pattern"] == {"v_proj": 32}


def test_merged_adapter_against_its_base_gives_the_same_spectra(known_adapter, tiny_dir):
    root, _ = known_adapter
    lora, delta = analyse(root / "adapter"), analyse(root / "merged", base=tiny_dir)
    assert delta.kind == "delta" and set(_by_name(delta)) == set(_by_name(lora))
    assert delta.unchanged_modules > 0  # every other linear module: k/o/mlp, the vision tower, lm_head
    for name, module in _by_name(lora).items():
        other = _by_name(delta)[name]
        assert other.configured_rank is None and other.effective_rank(0.95) == module.effective_rank(0.95)
        top = len(module.singular_values)
        torch.testing.assert_close(other.singular_values[:top], module.singular_values, rtol=1e-3,
                                   atol=1e-4 * module.sigma_max)


def test_full_fine_tune_delta_of_perturbed_modules(tmp_path, tiny_dir):
    model, processor = load_policy(tiny_dir)
    generator = torch.Generator().manual_seed(1)
    perturbed = {"model.language_model.layers.1.mlp.down_proj": 3, "model.visual.blocks.0.attn.qkv": 1}
    with torch.no_grad():
        for name, rank in perturbed.items():
            weight = model.get_submodule(name).weight
            weight += torch.randn(weight.shape[0], rank, generator=generator) @ torch.randn(
                rank, weight.shape[1], generator=generator)
    model.save_pretrained(tmp_path / "tuned")
    processor.save_pretrained(tmp_path / "tuned")
    report = analyse(tmp_path / "tuned", base=tiny_dir)
    modules = _by_name(report)
    assert set(modules) == set(perturbed)
    assert {name: m.effective_rank(0.99) for name, m in modules.items()} == perturbed
    assert report.rank_pattern() == perturbed


def test_real_lora_sft_run(tmp_path, train_suite_dir, tiny_model_dir):
    values = {"data.path": train_suite_dir, "model.path": tiny_model_dir, "model.device": "cpu",
              "model.lora.enabled": "true", "model.lora.rank_pattern": "{v_proj: 4}", "sft.max_steps": 3,
              "sft.batch_size": 2, "sft.learning_rate": 1e-2, "sft.save_interval": 3, "sft.eval_rollouts": 1,
              "sft.eval_loss_samples": 1, "sft.report_to": "[]", "agent.max_new_tokens": 8, "agent.max_turns": 1,
              "agent.tool_prompt": "compact", "curriculum.evaluation_interval": 3, "reproducibility.torch_threads": 2}
    cfg = load_config(None, [f"{k}={v}" for k, v in values.items()])
    run = tmp_path / "run"
    train_sft(cfg, run, show_progress=False)

    result = CliRunner().invoke(app, ["analyze", "lora-ranks", str(run), "--json", "--energy", "0.9",
                                      "--out", str(tmp_path / "ranks"), "--seed", "0", "--deterministic"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["kind"] == "lora" and doc["source"] == str(run / "checkpoint-3") and doc["lora"]["r"] == 8
    modules = {m["name"]: m for m in doc["modules"]}
    assert len(modules) == 8 and {m["layer_type"] for m in modules.values()} == {"q_proj", "k_proj", "v_proj",
                                                                                 "o_proj"}
    for m in modules.values():
        r = 4 if m["layer_type"] == "v_proj" else 8
        assert m["configured_rank"] == r and m["sigma_max"] > 0, m  # three steps moved every adapter
        assert 1 <= m["effective_rank"]["0.9"] <= m["effective_rank"]["0.99"] <= r
        assert m["suggested_rank"] == m["effective_rank"]["0.9"] and len(m["energy"]) == r
    out = tmp_path / "ranks"
    assert (out / "lora_ranks.png").stat().st_size > 0 and "lora_ranks.json" in json.loads(
        (out / "run.json").read_text())["artifacts"]

    # The snippet is valid config, and PEFT builds exactly the suggested ranks from it.
    suggested = load_config(out / "rank_pattern.yaml").model.lora
    assert suggested.rank_pattern == {name: m["suggested_rank"] for name, m in modules.items()}
    peft_model = lora_from_config(load_policy(tiny_model_dir)[0], suggested.model_copy(update={"enabled": True}))
    ranks = {name.removeprefix("base_model.model."): m.r["default"] for name, m in peft_model.named_modules()
             if hasattr(m, "lora_A")}
    assert ranks == suggested.rank_pattern

    # The merged final model against the model the run started from: the same spectra, from the weights.
    delta = analyse(run / "final", base=tiny_model_dir)
    lora = {m.name: m for m in analyse(run).modules}
    assert set(_by_name(delta)) == set(lora)
    for name, module in _by_name(delta).items():
        assert module.effective_rank(0.9) == lora[name].effective_rank(0.9)


def _fails_with(args, message):
    result = CliRunner().invoke(app, ["analyze", "lora-ranks", *map(str, args)])
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert f"error: {message}" in result.output and "Traceback" not in result.output, result.output
    assert result.output.count("error:") == 1


def test_bad_inputs_fail_with_one_clear_line(tmp_path, tiny_dir, tiny25_dir, known_adapter):
    root, _ = known_adapter
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("not weights")
    out = ["--out", tmp_path / "o"]
    _fails_with([junk, *out, "--overwrite"], f"{junk} is not a LoRA adapter (adapter_config.json)")
    _fails_with([tmp_path / "missing", *out, "--overwrite"], f"{tmp_path / 'missing'} is not a directory")
    _fails_with([root / "merged", *out, "--overwrite"], f"{root / 'merged'} holds full weights, not a LoRA adapter: "
                                                         "pass --base DIR")
    _fails_with([root / "merged", "--base", tiny25_dir, *out, "--overwrite"],
                f"{root / 'merged'} does not fit the base {tiny25_dir}")
    _fails_with([root / "adapter", "--base", tiny_dir, *out, "--overwrite"],
                f"{root / 'adapter'} is a LoRA adapter: its delta is B·A alone, so --base is not needed")
    _fails_with([root / "adapter", "--energy", "1.5"], "--energy 1.5: must be in (0, 1]")
