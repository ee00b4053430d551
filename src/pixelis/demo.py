"""The main job (`make demo`): data -> tiny model -> evaluate -> grounding pre-training -> SFT with the
curriculum -> evaluate -> RFT -> evaluate -> online replay on the test split -> report.

Every stage is the same code path as its own command (`pixelis data synth`, `pixelis model tiny`,
`pixelis eval`, `pixelis model pretrain`, `pixelis train --mode sft`, `pixelis train --mode rft`,
`pixelis online replay`); outputs land in sub-directories of the run directory and one `report.md` compares the
policy untrained, after SFT and after RFT, with the held-out grounding metrics of the pre-trained model, the RFT
steps and alerts, the online replay's accuracy (frozen, online, TTRL) (and, when tracing exports to
`RUN/traces.jsonl`, where the time went). Unset
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
from pixelis.online.replay import run_replay
from pixelis.run_inputs import resolve_inputs
from pixelis.train.pretrain import PretrainResult, pretrain as run_pretrain
from pixelis.train.rft import train_rft
from pixelis.train.sft import train_sft

log = logging.getLogger("pixelis.demo")


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _curriculum_section(sft_dir: Path) -> list[str]:
    rows = _jsonl(sft_dir / "curriculum.jsonl")
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


def _rft_section(rft_dir: Path) -> list[str]:
    history, alerts = _jsonl(rft_dir / "rft_history.jsonl"), _jsonl(rft_dir / "alerts.jsonl")
    lines = ["## RFT", "", f"{len(history)} GRPO steps from the SFT model, "
             f"{len(history[0]['prompts'][0]) if history else 0} prompts x their rollout groups per step; "
             "per step (training prompts, the policy's own rollouts):", "",
             "| step | reward | task | RaPR | tool calls | validity | KL |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {h['step']} | {h['reward']:.3f} | {h.get('reward/task', float('nan')):.3f} | {h['rapr']:.2f} | "
              f"{h['tool_calls']:.2f} | {h['tool_call_validity']:.2f} | {h['kl']:.4f} |" for h in history]
    lines += ["", "![rft](rft/rft.png)", ""]
    lines += [f"Tool-use collapse alert at step {a['step']}: {a['reason']}" for a in alerts] or \
        ["No tool-use collapse alert."]
    return lines + [""]


def _online_section(summary: dict[str, Any]) -> list[str]:
    pct = lambda v: "-" if v is None else f"{v:.1%}"  # noqa: E731
    arms = "; ".join(f"{arm} **{pct(summary[arm]['accuracy'])}**"
                     + ("" if arm == "frozen" else f" ({summary[arm]['accepted']} updates accepted, "
                                                   f"{summary[arm]['rejected']} rejected)")
                     for arm in summary["arms"])
    return ["## Online replay (test split, labels hidden)", "",
            f"{summary['queries']} test queries streamed through each engine with the same seeds: {arms}. "
            "Details: [online-replay/online/report.md](online-replay/online/report.md).", ""]


def run_demo(cfg: PixelisConfig, out: Path, show_progress: bool = True, pretrain: bool = True,
             rft: bool = True, online: bool = True) -> dict[str, Any]:
    """Run the whole main job into `out` (with grounding pre-training before SFT unless `pretrain` is False, RFT
    after it unless `rft` is False, and an online replay of the test split from the final policy unless `online`
    is False); returns the metrics of each evaluation and the report path."""
    d, m = cfg.data, cfg.model
    log.info("1-2/10 the synthetic suite (%s) and the tiny %s model (%s) in %s",
             d.path or f"{d.n} samples generated", m.size, m.path or "built from the suite's texts", out)
    sft_cfg = resolve_inputs(cfg, out, show_progress=show_progress)
    data_dir, model_dir, sft_dir = Path(sft_cfg.data.path), Path(sft_cfg.model.path), out / "sft"
    traces = out / "traces.jsonl"  # where `--set tracing.exporter=jsonl` puts every stage's spans
    log.info("3/10 oracle check: replaying the golden trajectories")
    golden = run_evaluation(cfg, data_dir, out / "eval-golden", policy="golden", show_progress=show_progress,
                            traces=traces)
    log.info("4/10 evaluating the untrained model")
    before = run_evaluation(cfg, data_dir, out / "eval-before", policy="model", model_dir=model_dir,
                            show_progress=show_progress, traces=traces)
    sections: list[str] = []
    if pretrain:
        log.info("5/10 grounding pre-training (%d steps)", cfg.pretrain.max_steps)
        grounded = run_pretrain(sft_cfg, out / "pretrain", model_dir, show_progress=show_progress)
        record_artifact(out, "pretrain_final_weights", grounded.weights_sha256)
        sft_cfg.model.path = str(grounded.final_model_dir)
        sections = _pretrain_section(grounded)
    else:
        log.info("5/10 grounding pre-training skipped (--no-pretrain)")
    log.info("6/10 SFT with the curriculum")
    result = train_sft(sft_cfg, sft_dir, show_progress=show_progress, traces=traces)
    record_artifact(out, "sft_final_weights", result.weights_sha256)
    log.info("7/10 evaluating the SFT model")
    after = run_evaluation(cfg, data_dir, out / "eval-after", policy="model", model_dir=result.final_model_dir,
                           show_progress=show_progress, traces=traces)
    runs = {"untrained": before, "after SFT": after}
    rft_sections: list[str] = []
    if rft:
        log.info("8/10 RFT from the SFT model (%d steps)", cfg.rft.max_steps)
        rft_cfg = sft_cfg.model_copy(deep=True)
        rft_cfg.model.path = str(result.final_model_dir)
        tuned = train_rft(rft_cfg, out / "rft", show_progress=show_progress)
        record_artifact(out, "rft_final_weights", tuned.weights_sha256)
        log.info("9/10 evaluating the RFT model")
        runs["after RFT"] = run_evaluation(cfg, data_dir, out / "eval-after-rft", policy="model",
                                           model_dir=tuned.final_model_dir, show_progress=show_progress,
                                           traces=traces)
        rft_sections = _rft_section(out / "rft")
        final_model = tuned.final_model_dir
    else:
        log.info("8-9/10 RFT skipped (--no-rft)")
        final_model = result.final_model_dir
    online_sections: list[str] = []
    if online:
        log.info("10/10 online replay of the test split from %s", final_model)
        replayed = run_replay(cfg, final_model, data_dir / "test.jsonl", out / "online-replay",
                              show_progress=show_progress)
        for name, sha256 in replayed["artifacts"].items():
            record_artifact(out, f"online_{name}", sha256)
        online_sections = _online_section(replayed)
    else:
        log.info("10/10 online replay skipped (--no-online)")
    intro = [f"Oracle check (golden trajectories replayed through the real tools): "
             f"**{golden['accuracy']:.0%}** on {golden['n']} test samples.", "",
             f"SFT: {result.steps} steps, final loss {result.last_loss:.3f}, final stage `{result.stage}`, "
             f"weights sha256 `{result.weights_sha256[:16]}`.", ""]
    report = render_report(runs, out, title="Pixelis demo: tiny Qwen3-VL untrained, after SFT and after RFT",
                           extra_sections=intro + sections + _curriculum_section(sft_dir) + rft_sections + online_sections
                           + time_section(traces))
    return {"golden": golden, "runs": runs, "report": report}
