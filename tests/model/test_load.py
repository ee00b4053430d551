"""Checkpoint loading: clear errors for broken directories and weights, sharded checkpoints, dtype selection."""

import json
import pickle
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from pixelis.core.errors import CheckpointError
from pixelis.model.load import checkpoint_dir, checkpoint_info, load_policy, resolve_device, resolve_dtype


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match=f"checkpoint {tmp_path / 'nope'} does not exist"):
        load_policy(tmp_path / "nope")


def test_missing_config(tmp_path, tiny_dir):
    shutil.copy(tiny_dir / "model.safetensors", tmp_path)
    with pytest.raises(CheckpointError, match="has no config.json"):
        load_policy(tmp_path)


def test_pickled_weights_are_refused(tmp_path, tiny_dir):
    _copy_without_weights(tiny_dir, tmp_path)
    torch.save({"lm_head.weight": torch.zeros(2, 2)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"only pickled weights \(pytorch_model.bin\); refusing .* "
                                              r"unpickling can run arbitrary code"):
        load_policy(tmp_path)


def test_no_weights_at_all(tmp_path, tiny_dir):
    _copy_without_weights(tiny_dir, tmp_path)
    with pytest.raises(CheckpointError, match=r"has no weights \(model.safetensors or model.safetensors.index.json\)"):
        load_policy(tmp_path)
    shutil.copy(tiny_dir / "model.safetensors", tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match=r"\(it holds other.safetensors, which are not the model's weights\)"):
        load_policy(tmp_path)


def _copy_without_weights(src, dst):
    """Everything of checkpoint `src` but its weights, into `dst`."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors"), dirs_exist_ok=True)


def _with_weights(tmp_path, tiny_dir, tensors):
    """A copy of the tiny checkpoint whose model.safetensors holds `tensors` (a dict, or raw bytes)."""
    ckpt = tmp_path / "ckpt"
    _copy_without_weights(tiny_dir, ckpt)
    if isinstance(tensors, bytes):
        (ckpt / "model.safetensors").write_bytes(tensors)
    else:
        save_file(tensors, ckpt / "model.safetensors")
    return ckpt


@pytest.mark.parametrize("damage, note", [
    (lambda data: b"", r"cannot read safetensors weights \(the file is empty\)"),
    (lambda data: data[: len(data) // 2], "cannot read safetensors weights: SafetensorError"),
    (lambda data: bytes(range(256)) * 40, "cannot read safetensors weights: SafetensorError"),
], ids=["empty", "truncated", "random-bytes"])
def test_unreadable_weights_name_the_file(tmp_path, tiny_dir, damage, note):
    ckpt = _with_weights(tmp_path, tiny_dir, damage((tiny_dir / "model.safetensors").read_bytes()))
    for read in (load_policy, checkpoint_info):
        with pytest.raises(CheckpointError, match=f"^{re.escape(str(ckpt / 'model.safetensors'))}: {note}"):
            read(ckpt)


def _missing_three(sd):
    names = sorted(k for k in sd if ".mlp." in k)[:3]
    return {k: v for k, v in sd.items() if k not in names}, ["missing tensors: " + ", ".join(names)]


def _one_extra(sd):
    return {**sd, "model.bogus.weight": torch.zeros(2)}, ["unexpected tensors: model.bogus.weight"]


def _wrong_shape(sd):
    name = sorted(k for k in sd if k.endswith("down_proj.weight"))[0]
    wanted = list(sd[name].shape)
    return {**sd, name: torch.zeros(3, 3)}, [f"tensors with the wrong shape: {name} ([3, 3] in the file, "
                                              f"{wanted} in the model)"]


@pytest.mark.parametrize("tamper", [_missing_three, _one_extra, _wrong_shape])
def test_weights_that_do_not_fit_the_model_are_refused(tmp_path, tiny_dir, tamper):
    tensors, expected = tamper(load_file(tiny_dir / "model.safetensors"))
    ckpt = _with_weights(tmp_path, tiny_dir, tensors)
    with pytest.raises(CheckpointError) as err:
        load_policy(ckpt)
    message = str(err.value)
    assert message.startswith(f"checkpoint {ckpt} does not fit the Qwen3VLForConditionalGeneration")
    assert all(part in message for part in expected), message


def test_tied_lm_head_need_not_be_stored(tmp_path, tiny_dir):
    """A model with tie_word_embeddings shares lm_head with the embeddings: a file without it is complete."""
    tensors = load_file(tiny_dir / "model.safetensors")
    del tensors["lm_head.weight"]
    ckpt = _with_weights(tmp_path, tiny_dir, tensors)
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": True}))
    model, _ = load_policy(ckpt)
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def test_a_weights_file_names_its_checkpoint(tmp_path, tiny_dir):
    assert checkpoint_dir(tiny_dir / "model.safetensors") == tiny_dir
    assert checkpoint_info(tiny_dir / "model.safetensors")["parameters"] == checkpoint_info(tiny_dir)["parameters"]
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(tiny_dir / "model.safetensors", alone)
    with pytest.raises(CheckpointError, match=rf"{alone / 'model.safetensors'}: a weights file loads with the config "
                                              rf"and tokenizer beside it, but {alone} has no config.json, tokenizer "
                                              r"files \(tokenizer.json or tokenizer_config.json\), processor config"):
        checkpoint_dir(alone / "model.safetensors")
    _copy_without_weights(tiny_dir, alone)
    shutil.copy(tiny_dir / "model.safetensors", alone / "older.safetensors")
    with pytest.raises(CheckpointError, match="loads its weights from model.safetensors, not from older.safetensors"):
        checkpoint_dir(alone / "older.safetensors")
    with pytest.raises(CheckpointError, match="is neither a directory nor a .safetensors weights file"):
        checkpoint_dir(alone / "config.json")


class _Trap:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this would create the marker file
        return (self.marker.__class__.touch, (self.marker,))


@pytest.mark.parametrize("suffix", [".pt", ".bin", ".pth", ".ckpt", ".pkl"])
def test_pickle_paths_are_refused_unopened(tmp_path, suffix):
    marker = tmp_path / "unpickled"
    weights = tmp_path / f"model{suffix}"
    weights.write_bytes(pickle.dumps(_Trap(marker)))
    for path in (weights, tmp_path / f"absent{suffix}"):
        with pytest.raises(CheckpointError, match=rf"refusing pickled weights \({re.escape(suffix)}\): unpickling "
                                                  r"can run arbitrary code.*model.save_pretrained\(DIR, "
                                                  r"safe_serialization=True\)"):
            load_policy(path)
    assert not marker.exists()


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
