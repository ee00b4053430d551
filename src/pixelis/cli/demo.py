"""`pixelis demo`: the main job end to end on the embedded defaults (what `make demo` runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pixelis.cli.common import (ConfigOpt, DeterministicOpt, LogFormatOpt, LogLevelOpt, OutOpt, OverwriteOpt, SeedOpt,
                                SetOpt, start_run)

DEMO_CONFIG = Path(__file__).resolve().parents[3] / "configs" / "demo.yaml"


def demo(
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
    pretrain: Annotated[bool, typer.Option("--pretrain/--no-pretrain", help="Grounding pre-training before SFT "
                                           "(pretrain.* settings).")] = True,
    rft: Annotated[bool, typer.Option("--rft/--no-rft", help="RFT after SFT (rft.* settings), then evaluate "
                                      "the RFT model.")] = True,
    online: Annotated[bool, typer.Option("--online/--no-online", help="Finish with an online replay of the test "
                                         "split (online.* settings) from the final policy.")] = True,
    out: OutOpt = None,
    overwrite: OverwriteOpt = False,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    seed: SeedOpt = None,
    deterministic: DeterministicOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Generate a suite, build the tiny model, evaluate it, pre-train it on grounding, train it with SFT,
    evaluate, train it with RFT, evaluate again, replay the test split online, write a report.

    Uses configs/demo.yaml unless --config is given. With it the main job takes about 43 minutes on 2 CPU cores
    (suite ~5, pre-training ~7, SFT ~17, RFT ~3, evaluations ~6, online replay ~6 minutes); `--no-pretrain`
    skips pre-training, `--no-rft` RFT and `--no-online` the replay.
    """
    if config is None and DEMO_CONFIG.is_file():
        config = DEMO_CONFIG
    run = start_run("demo", out, config, overrides or [], seed, deterministic, log_level, log_format,
                    overwrite=overwrite)
    from pixelis.demo import run_demo  # heavy imports only when running

    result = run_demo(run.cfg, run.out_dir, show_progress=progress, pretrain=pretrain, rft=rft, online=online)
    for name, m in result["runs"].items():
        typer.echo(f"{name:>10}: accuracy {m['accuracy']:.1%}, tool-call validity {m['tool_call_validity']:.1%}, "
                   f"RaPR {m['rapr']:.1%}")
    typer.echo(f"report: {result['report']}")
