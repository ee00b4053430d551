"""``pixelis model tiny`` and ``pixelis model info`` through the real Typer app."""

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


def test_errors_are_one_clear_line(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["info", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = runner.invoke(app, ["tiny", "--out", str(tmp_path / "t"), "--corpus", str(tmp_path / "none.txt")])
    assert result.exit_code == 2 and "corpus file" in result.output
