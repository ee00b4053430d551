"""`pixelis data synth` and `pixelis data examples` through the real CLI."""

import hashlib
import json

from typer.testing import CliRunner

from pixelis.cli.data import app

runner = CliRunner()


def test_synth_writes_suite_and_hashes_it_in_run_json(tmp_path):
    out = tmp_path / "suite"
    result = runner.invoke(app, ["synth", "--out", str(out), "--n", "2", "--families", "count,attribute",
                                 "--difficulty", "simple", "--trap-rate", "0", "--seed", "4"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["families"] == ["count", "attribute"] and manifest["seed"] == 4
    assert sum(manifest["totals"].values()) == 2
    run = json.loads((out / "run.json").read_text())
    digest = hashlib.sha256((out / "train.jsonl").read_bytes()).hexdigest()
    assert run["artifacts"]["train.jsonl"] == digest
    again = runner.invoke(app, ["synth", "--out", str(out), "--n", "2", "--seed", "4"])
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_synth_overwrite_replaces_the_suite(tmp_path):
    out = tmp_path / "suite"
    args = ["synth", "--out", str(out), "--n", "1", "--families", "track", "--difficulty", "simple", "--workers", "1"]
    assert runner.invoke(app, [*args, "--seed", "1"]).exit_code == 0
    result = runner.invoke(app, [*args, "--seed", "2", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "manifest.json").read_text())["seed"] == 2


def test_synth_warns_about_cells_without_samples(tmp_path):
    out = tmp_path / "suite"
    result = runner.invoke(app, ["synth", "--out", str(out), "--n", "4", "--families", "track,temporal",
                                 "--trap-rate", "0", "--val-fraction", "0", "--test-fraction", "0", "--workers", "1"])
    assert result.exit_code == 0, result.output
    warning = "no samples for 2 of 6 family x difficulty cells (temporal/medium, temporal/hard)"
    assert f"warning: {warning}" in result.output and "use n >= 6" in result.output
    log = (out / "pixelis.log").read_text().splitlines()
    assert any("WARNING" in line and warning in line for line in log)


def test_synth_rejects_unknown_family(tmp_path):
    result = runner.invoke(app, ["synth", "--out", str(tmp_path), "--n", "2", "--families", "count,bogus"])
    assert result.exit_code == 2 and "bogus" in result.output


def test_examples_renders_small_pngs(tmp_path):
    result = runner.invoke(app, ["examples", "--out", str(tmp_path), "--families", "count"])
    assert result.exit_code == 0, result.output
    png = tmp_path / "count.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 200_000
