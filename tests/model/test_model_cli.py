"""``pixelis model tiny`` and ``pixelis model info`` through the real Typer app."""

import shutil

from typer.testing import CliRunner

from pixelis.cli.model import app
from pixelis.model.load import checkpoint_info


def test_tiny_then_info(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the zorblax tool\n" * 30, encoding="utf-8")
    out = tmp_path / "tiny"
    runner = CliRunner()
    result = runner.invoke(app, ["tiny", "--out", str(out), "--size", "xs", "--seed", "3", "--corpus", str(corpus)])
    assert result.exit_code == 0, result.output
    params = checkpoint_info(out)["parameters"]
    assert f"parameters: {params:,}" in result.output and f"path: {out}" in result.output

    result = runner.invoke(app, ["info", str(out)])
    assert result.exit_code == 0, result.output
    assert "architecture: Qwen3VLForConditionalGeneration" in result.output
    assert f"parameters: {params:,}" in result.output and "F32" in result.output


def _fails_with(args, message):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and f"error: {message}" in result.output, result.output
    assert "Traceback" not in result.output


def test_errors_are_one_clear_line(tmp_path):
    _fails_with(["info", str(tmp_path / "missing")], f"checkpoint {tmp_path / 'missing'} does not exist")
    _fails_with(["tiny", "--out", str(tmp_path / "t"), "--corpus", str(tmp_path / "none.txt")],
                f"corpus file {tmp_path / 'none.txt'} does not exist")


def test_info_names_an_unreadable_weights_file(tmp_path, tiny_dir):
    shutil.copytree(tiny_dir, tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model.safetensors").write_bytes(b"")
    _fails_with(["info", str(tmp_path / "ckpt")],
                f"{tmp_path / 'ckpt' / 'model.safetensors'}: cannot read safetensors weights (the file is empty)")


def test_tiny_refuses_a_non_empty_out_unless_overwrite(tmp_path):
    out = tmp_path / "trained"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"trained weights")
    args = ["tiny", "--out", str(out), "--size", "xs"]
    _fails_with(args, f"--out {out} is not empty (model.safetensors); pass --overwrite")
    assert (out / "model.safetensors").read_bytes() == b"trained weights"
    result = CliRunner().invoke(app, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert checkpoint_info(out)["parameters"] > 0
