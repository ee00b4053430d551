"""The main job (`make demo`): data -> tiny model -> evaluate -> grounding pre-training -> SFT with the
curriculum -> evaluate -> report.

Every stage is the same code path as its own command (`pixelis data synth`, `pixelis model tiny`,
`pixelis eval`, `pixelis model pretrain`, `pixelis train --mode sft`); outputs land in sub-directories of the
run directory and one `report.md` compares the policy before and after SFT, with the held-out grounding
metrics of the pre-trained model (and, when tracing exports to `RUN/traces.jsonl`, where the time went). Unset
`data.path` / `model.path` (the demo config's choice) generate the suite into `RUN/data` and build the tiny model
into `RUN/model`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pixelis.core.config import PixelisConfig
from pixelis.core.repro import record_artifact
from pixelis.core.trace_analysis import time_section
from pixelis.eval.grounding import grounding_table
from pixelis.eval.report import render_report
from pixelis.eval.runner import run_evaluation
from pixelis.run_inputs import resolve_inputs
from pixelis.train.pretrain import PretrainResult, pretrain as run_pretrain
from pixelis.train.sft import train_sft

log = logging.getLogger("pixelis.demo")


def _curriculum_section(sft_dir: Path) -> list[str]:
    rows = [json.loads(line) for line in (sft_dir / "curriculum.jsonl").read_text().splitlines() if line.strip()]
    lines = ["## Curriculum timeline", "", "![curriculum](sft/curriculum.png)", "",
             "| step | decision | stage | reason |", "|---|---|---|---|"]
    lines += [f"| {r['step']} | {r['action']} | {r['stage']} | {r['reason']} |" for r in rows]
    return lines + [""]


def _pretrain_section(result: PretrainResult) -> list[str]:
    return ["## Grounding pre-training", "",
            f"{result.steps} steps on generated images, weights sha256 `{result.weights_sha256[:16]}`. "
            "Held-out images (never trained on), by the object's longer side on the 0-1000 grid "
            "(small < 60, medium < 110, large >= 110: the simple tier's objects):", "",
            *grounding_table(result.heldout), "", "![grounding](pretrain/grounding.png)", ""]


def run_demo(cfg: PixelisConfig, out: Path, show_progress: bool = True, pretrain: bool = True) -> dict[str, Any]:
    """Run the whole main job into `out` (with grounding pre-training before SFT unless `pretrain` is False);
    returns the before/after metrics and the report path."""
    d, m = cfg.data, cfg.model
    log.info("1-2/7 the synthetic suite (%s) and the tiny %s model (%s) in %s",
             d.path or f"{d.n} samples generated", m.size, m.path or "built from the suite's texts", out)
    sft_cfg = resolve_inputs(cfg, out, show_progress=show_progress)
    data_dir, model_dir, sft_dir = Path(sft_cfg.data.path), Path(sft_cfg.model.path), out / "sft"
    traces = out / "traces.jsonl"  # where `--set tracing.exporter=jsonl` puts every stage's spans
    log.info("3/7 oracle check: replaying the golden trajectories")
    golden = run_evaluation(cfg, data_dir, out / "eval-golden", policy="golden", show_progress=show_progress,
                            traces=traces)
    log.info("4/7 evaluating the untrained model")
    before = run_evaluation(cfg, data_dir, out / "eval-before", policy="model", model_dir=model_dir,
                            show_progress=show_progress, traces=traces)
    sections: list[str] = []
    if pretrain:
        log.info("5/7 grounding pre-training (%d steps)", cfg.pretrain.max_steps)
        grounded = run_pretrain(sft_cfg, out / "pretrain", model_dir, show_progress=show_progress)
        record_artifact(out, "pretrain_final_weights", grounded.weights_sha256)
        sft_cfg.model.path = str(grounded.final_model_dir)
        sections = _pretrain_section(grounded)
    else:
        log.info("5/7 grounding pre-training skipped (--no-pretrain)")
    log.info("6/7 SFT with the curriculum")
    result = train_sft(sft_cfg, sft_dir, show_progress=show_progress, traces=traces)
    record_artifact(out, "sft_final_weights", result.weights_sha256)
    log.info("7/7 evaluating the SFT model")
    after = run_evaluation(cfg, data_dir, out / "eval-after", policy="model", model_dir=result.final_model_dir,
                           show_progress=show_progress, traces=traces)
    intro = [f"Oracle check (golden trajectories replayed through the real tools): "
             f"**{golden['accuracy']:.0%}** on {golden['n']} test samples.", "",
             f"SFT: {result.steps} steps, final loss {result.last_loss:.3f}, final stage `{result.stage}`, "
             f"weights sha256 `{result.weights_sha256[:16]}`.", ""]
    report = render_report({"untrained": before, "after SFT": after}, out,
                           title="Pixelis demo: tiny Qwen3-VL before and after SFT",
                           extra_sections=intro + sections + _curriculum_section(sft_dir) + time_section(traces))
    return {"golden": golden, "before": before, "after": after, "report": report}
