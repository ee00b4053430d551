"""`pixelis repro`: system info and the determinism gate, run on real subprocess jobs."""

import json
import sys
from pathlib import Path

from typer.testing import CliRunner

from pixelis.cli import app
from pixelis.core.config import config_hash, load_config

HELPERS = Path(__file__).resolve().parents[1] / "helpers"
runner = CliRunner()


def test_info_json_parses():
    result = runner.invoke(app, ["repro", "info", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["python"] == sys.version.split()[0]
    assert info["packages"]["torch"] and "torch_threads" in info and "git" in info


def test_info_table_lists_packages():
    result = runner.invoke(app, ["repro", "info"])
    assert result.exit_code == 0, result.output
    assert "packages.transformers" in result.stdout and "determinism.deterministic_algorithms" in result.stdout


def test_verify_passes_on_deterministic_job_and_run_dirs_are_complete(tmp_path):
    command = ["pixelis", "repro", "selftest-job", "--seed", "3", "--deterministic", "--log-format", "json"]
    result = runner.invoke(app, ["repro", "verify", "--workdir", str(tmp_path), "--", *command])
    assert result.exit_code == 0, result.output
    assert "2 artifact(s) identical across 2 runs" in result.stdout

    manifests = [json.loads((tmp_path / f"run-{i}" / "run.json").read_text()) for i in range(2)]
    assert manifests[0]["artifacts"] == manifests[1]["artifacts"]
    assert set(manifests[0]["artifacts"]) == {"weights", "losses"}
    run0 = tmp_path / "run-0"
    manifest = manifests[0]
    assert manifest["seed"] == 3 and manifest["deterministic"] is True
    assert manifest["system_info"]["determinism"]["threads_pinned"] is True
    assert manifest["command"][-2:] == ["--out", str(run0)]
    assert config_hash(load_config(run0 / "config.yaml")) == manifest["config_hash"]

    records = [json.loads(line) for line in (run0 / "pixelis.log").read_text().splitlines()]
    messages = [r["message"] for r in records]
    assert messages[0].startswith("run repro.selftest-job: ") and messages[1].startswith("system info: ")
    assert any("weights sha256 " + manifest["artifacts"]["weights"] in m for m in messages)


def test_verify_fails_on_nondeterministic_job_naming_the_artifact(tmp_path):
    command = ["pixelis", "repro", "selftest-job", "--seed", "3", "--nondeterministic", "--steps", "5"]
    result = runner.invoke(app, ["repro", "verify", "--workdir", str(tmp_path), "--", *command])
    assert result.exit_code == 1, result.output
    assert "error: artifact 'losses' differs: run-0 " in result.stderr
    assert "Traceback" not in result.output
    weights = [json.loads((tmp_path / f"run-{i}" / "run.json").read_text())["artifacts"]["weights"] for i in range(2)]
    assert weights[0] != weights[1]


def test_verify_fails_when_no_artifacts_recorded(tmp_path):
    command = [sys.executable, str(HELPERS / "empty_manifest_job.py")]
    result = runner.invoke(app, ["repro", "verify", "--workdir", str(tmp_path), "--", *command])
    assert result.exit_code == 1
    assert "no artifacts were recorded" in result.stderr


def test_verify_reports_failing_command(tmp_path):
    command = [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"]
    result = runner.invoke(app, ["repro", "verify", "--workdir", str(tmp_path), "--", *command])
    assert result.exit_code == 1
    assert "run 0 exited with code 3" in result.stderr and "boom" in result.stderr


def test_verify_needs_a_command():
    result = runner.invoke(app, ["repro", "verify"])
    assert result.exit_code == 2
    assert "give the command to check after --" in result.stderr


def test_bad_config_is_one_red_line_exit_2(tmp_path):
    result = runner.invoke(
        app, ["repro", "selftest-job", "--out", str(tmp_path / "run"), "--set", "sft.lerning_rate=1e-5"]
    )
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: override 'sft.lerning_rate=1e-5': sft.lerning_rate: unknown key 'lerning_rate' "
        "(did you mean 'learning_rate'?)"
    ]
    assert not (tmp_path / "run").exists()


def test_bad_config_file_names_file_and_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("sft:\n  max_steps: ten\n")
    result = runner.invoke(app, ["repro", "selftest-job", "--out", str(tmp_path / "run"), "--config", str(config)])
    assert result.exit_code == 2
    assert f"{config}:2: sft.max_steps: expected an integer, got 'ten'" in result.stderr


def test_bad_flag_value_names_the_flag(tmp_path):
    result = runner.invoke(app, ["repro", "selftest-job", "--out", str(tmp_path / "run"), "--seed", "-3"])
    assert result.exit_code == 2
    assert "error: --seed -3: input should be greater than or equal to 0, got -3" in result.stderr
    result = runner.invoke(app, ["repro", "selftest-job", "--out", str(tmp_path / "run"), "--log-level", "LOUD"])
    assert result.exit_code == 2
    assert "error: --log-level 'LOUD': expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL" in result.stderr
