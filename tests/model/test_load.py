"""Checkpoint loading: clear errors for broken directories, sharded checkpoints, dtype selection."""

import shutil

import pytest
import torch

from pixelis.model.load import CheckpointError, checkpoint_info, load_policy, resolve_device, resolve_dtype


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match=f"checkpoint directory {tmp_path / 'nope'} does not exist"):
        load_policy(tmp_path / "nope")


def test_missing_config(tmp_path, tiny_dir):
    shutil.copy(tiny_dir / "model.safetensors", tmp_path)
    with pytest.raises(CheckpointError, match="has no config.json"):
        load_policy(tmp_path)


def test_pickled_weights_are_refused(tmp_path, tiny_dir):
    shutil.copy(tiny_dir / "config.json", tmp_path)
    torch.save({"lm_head.weight": torch.zeros(2, 2)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"only pickled weights \(pytorch_model.bin\); refusing"):
        load_policy(tmp_path)


def test_no_weights_at_all(tmp_path, tiny_dir):
    shutil.copy(tiny_dir / "config.json", tmp_path)
    with pytest.raises(CheckpointError, match=r"has no weights \(\*.safetensors\)"):
        load_policy(tmp_path)


def test_sharded_checkpoint_loads_and_missing_shard_is_named(tmp_path, tiny_dir, policy):
    model, processor = policy
    sharded = tmp_path / "sharded"
    model.save_pretrained(sharded, max_shard_size="400KB")
    processor.save_pretrained(sharded)
    shards = sorted(p.name for p in sharded.glob("model-*.safetensors"))
    assert len(shards) >= 2
    reloaded, _ = load_policy(sharded)
    assert all(torch.equal(v, reloaded.state_dict()[k]) for k, v in model.state_dict().items())
    assert checkpoint_info(sharded)["parameters"] == sum(p.numel() for p in model.parameters())

    (sharded / shards[-1]).unlink()
    with pytest.raises(CheckpointError, match=rf"1 of {len(shards)} weight shards .* missing: {shards[-1]}"):
        load_policy(sharded)


def test_dtype_and_device_selection(tiny_dir):
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bf16") == torch.bfloat16 and resolve_dtype(torch.float16) == torch.float16
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown dtype 'float8'"):
        resolve_dtype("float8")
    model, _ = load_policy(tiny_dir, dtype="bfloat16", device="cpu")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_checkpoint_info_reads_headers(tiny_dir, policy):
    info = checkpoint_info(tiny_dir)
    assert info["architectures"] == ["Qwen3VLForConditionalGeneration"]
    assert info["parameters"] == sum(p.numel() for p in policy[0].parameters())
    assert info["dtypes"] == {"F32": info["parameters"]}
    assert info["tokenizer_size"] == len(policy[1].tokenizer)
