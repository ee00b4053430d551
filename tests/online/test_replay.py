"""`pixelis online replay` end to end: engine + worker subprocess over a stream, report, bitwise reruns."""

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from pixelis.cli import app

from online_settings import online_overrides

BIN = Path(sys.executable).parent


def _stream(tmp_path, suite_dir):
    """The suite's attribute queries, then one line whose image is missing."""
    (tmp_path / "media").symlink_to(suite_dir / "media")
    lines = [*(suite_dir / "train.jsonl").read_text().splitlines()[:5]]
    broken = json.loads(lines[0])
    broken["id"], broken["images"] = "broken", ["media/missing.png"]
    path = tmp_path / "stream.jsonl"
    path.write_text("\n".join([*lines, json.dumps(broken)]) + "\n")
    return path


def test_replay_learns_reports_and_reruns_bitwise(online_model_dir, attribute_suite_dir, tmp_path):
    stream = _stream(tmp_path, attribute_suite_dir)
    sets = [a for o in online_overrides() for a in ("--set", o)]
    replay = [str(BIN / "pixelis"), "online", "replay", "--model", str(online_model_dir), "--stream", str(stream),
              "--seed", "3", "--deterministic", "--no-progress", *sets]
    verify = subprocess.run([str(BIN / "pixelis"), "repro", "verify", "--workdir", str(tmp_path / "verify"), "--",
                             *replay], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "identical across 2 runs" in verify.stdout
    run = tmp_path / "verify" / "run-0"
    artifacts = json.loads((run / "run.json").read_text())["artifacts"]
    assert {"queries.jsonl", "online_updates", "online_weights", "ttrl_updates"} <= set(artifacts)

    rows = [json.loads(line) for line in (run / "online" / "queries.jsonl").read_text().splitlines()]
    for arm in ("frozen", "online", "ttrl"):
        arm_rows = [r for r in rows if r["arm"] == arm]
        assert len(arm_rows) == 6
        assert "missing.png" in arm_rows[-1]["error"] and arm_rows[-1]["line"] == 6
        assert all(r["error"] is None for r in arm_rows[:-1])
    assert all(r["model_version"] == 0 for r in rows if r["arm"] == "frozen" and r["error"] is None)
    online = [r for r in rows if r["arm"] == "online"]
    assert [r["model_version"] for r in online[:-1]] == sorted(r["model_version"] for r in online[:-1])
    assert online[-2]["model_version"] > 0  # later queries were served by updated weights
    for arm in ("online", "ttrl"):  # each learning arm has its own worker, queue and log
        updates = [json.loads(line) for line in (run / arm / "updates.jsonl").read_text().splitlines()]
        assert [u["task"] for u in updates] == [r["task_id"] for r in rows if r["arm"] == arm and r["task_id"]]
    report = (run / "online" / "report.md").read_text()
    for part in ("| frozen (no updates) |", "| online (trajectory vote) |", "| TTRL (answer-majority vote) |",
                 "## Updates of the online arm", "report.png"):
        assert part in report
    assert (run / "online" / "report.png").stat().st_size > 10_000
    assert (run / "online" / "worker.log").exists()


def test_replay_mistakes_are_one_line_errors(tmp_path, online_model_dir):
    runner = CliRunner()
    missing = runner.invoke(app, ["online", "replay", "--model", str(online_model_dir), "--stream",
                                  str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "a")])
    assert missing.exit_code == 2 and "--stream: file not found" in missing.output
    (tmp_path / "s.jsonl").write_text("\n")
    bad_value = runner.invoke(app, ["online", "replay", "--model", str(online_model_dir), "--stream",
                                    str(tmp_path / "s.jsonl"), "--set", "online.kl_max=-1", "--out", str(tmp_path / "b")])
    assert bad_value.exit_code == 2 and "online.kl_max" in bad_value.output
    empty = runner.invoke(app, ["online", "replay", "--model", str(online_model_dir), "--stream",
                                str(tmp_path / "s.jsonl"), "--out", str(tmp_path / "c"), "--no-progress"])
    assert empty.exit_code == 2 and "holds no queries" in empty.output
