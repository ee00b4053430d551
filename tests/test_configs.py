"""Every config's `Run:` lines work as written (shrunk with `--set` overrides so each finishes in seconds)."""

import json
import shlex
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pixelis.cli import app

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ROOT = CONFIGS.parent

# Small enough for 2 CPU cores; appended after the line's own options, so these win.
SMALL = ["data.n=18", "data.families=[attribute,track,temporal]", "data.val_fraction=0.25", "data.test_fraction=0.25",
         "data.workers=1", "model.size=xs", "sft.max_steps=2", "sft.save_interval=2", "sft.batch_size=2",
         "sft.eval_rollouts=1", "sft.eval_loss_samples=2", "sft.report_to=[]", "curriculum.evaluation_interval=2",
         "agent.max_new_tokens=8", "agent.max_turns=2", "agent.tool_prompt=compact", "eval.limit=3",
         "pretrain.max_steps=2", "pretrain.batch_size=2", "pretrain.heldout_samples=2", "rft.max_steps=1",
         "rft.prompts_per_step=1", "rft.num_generations=2", "online.n_samples=2", "online.replay_limit=2"]


def run_lines(config: Path) -> list[list[str]]:
    """The commands listed under `# Run:` in a config's header, as argument lists without `pixelis`."""
    lines, in_run = [], False
    for line in config.read_text().splitlines():
        if not line.startswith("#"):
            break
        if line.strip() == "# Run:":
            in_run = True
        elif in_run and line.startswith("#   pixelis "):
            lines.append(shlex.split(line[1:], comments=True)[1:])
        else:
            in_run = False
    return lines


CASES = [(config.name, i, args) for config in sorted(CONFIGS.glob("*.yaml")) for i, args in
         enumerate(run_lines(config))]


def test_every_config_has_a_run_line():
    assert {name for name, _, _ in CASES} == {p.name for p in CONFIGS.glob("*.yaml")}


@pytest.mark.parametrize("name, index, args", CASES, ids=[f"{n}:{i}" for n, i, _ in CASES])
def test_run_line_works(name, index, args, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the lines name configs/... relative to the repository
    out = tmp_path / "out"
    args = [str(out) if i and args[i - 1] == "--out" else a for i, a in enumerate(args)]
    sets = [] if args[:2] == ["repro", "selftest-job"] else [a for s in SMALL for a in ("--set", s)]
    extra = ["--no-progress"] if args[0] in ("train", "demo", "online") else []
    try:
        result = CliRunner().invoke(app, [*args, *sets, *extra])
    finally:
        torch.use_deterministic_algorithms(False)
    assert result.exit_code == 0, result.output + repr(result.exception)
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["artifacts"], "the run recorded its artifacts"
    if args[0] == "demo":
        report = (out / "report.md").read_text()
        assert "## Curriculum timeline" in report
        if "--no-rft" in args:
            assert "| metric | untrained | after SFT |" in report and not (out / "rft").exists()
        else:
            assert "| metric | untrained | after SFT | after RFT |" in report and "## RFT" in report
            assert (out / "eval-after-rft" / "metrics.json").is_file() and (out / "rft" / "rft.png").is_file()
        if "--no-pretrain" in args:
            assert "## Grounding pre-training" not in report and not (out / "pretrain").exists()
        else:
            assert "## Grounding pre-training" in report and "| box_iou50 |" in report
            assert json.loads((out / "pretrain" / "run.json").read_text())["artifacts"]["final_weights"]
        assert (out / "sft" / "curriculum.png").is_file() and (out / "eval-after" / "metrics.json").is_file()
        assert "## Online replay" in report and (out / "online-replay" / "online" / "report.md").is_file()
    if args[0] == "online":
        assert (out / "online" / "report.md").is_file() and (out / "data" / "test.jsonl").is_file()
    if args[0] == "train":
        assert (out / "final" / "model.safetensors").is_file() and (out / "data" / "train.jsonl").is_file()
