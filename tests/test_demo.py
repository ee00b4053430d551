"""The main job end to end at toy size: every stage runs and the comparison report is written."""

from pathlib import Path

from pixelis.core.config import load_config
from pixelis.core.repro import write_run_manifest
from pixelis.demo import run_demo


def test_demo_pipeline_writes_the_before_after_report(tmp_path):
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml", [
        "data.n=18", "data.families=[attribute,track,temporal]", "data.val_fraction=0.25", "data.test_fraction=0.25",
        "model.size=xs", "sft.max_steps=4", "sft.batch_size=2", "sft.eval_rollouts=2", "sft.report_to=[]",
        "curriculum.evaluation_interval=2", "agent.max_new_tokens=12",
    ])
    write_run_manifest(tmp_path, 0, False, cfg, ["test"])
    result = run_demo(cfg, tmp_path, show_progress=False)
    assert result["golden"]["accuracy"] == 1.0
    assert result["before"]["n"] == result["after"]["n"] > 0
    report = (tmp_path / "report.md").read_text()
    assert "| metric | untrained | after SFT |" in report and "## Curriculum timeline" in report
    assert "![curriculum](sft/curriculum.png)" in report and (tmp_path / "sft" / "curriculum.png").is_file()
    for sub in ("data/train.jsonl", "model/model.safetensors", "eval-before/metrics.json", "eval-after/metrics.json",
                "sft/final/model.safetensors"):
        assert (tmp_path / sub).is_file(), sub
