"""`pixelis online`: online test-time learning (Pixel TTRL) over a stream of unlabelled queries."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pixelis.cli.common import (ConfigOpt, DeterministicOpt, LogFormatOpt, LogLevelOpt, OutOpt, OverwriteOpt, SeedOpt,
                                SetOpt, command_group, fail, start_run)

app = command_group("Online test-time learning: the inference engine, experience buffer and update worker.")


@app.command("replay")
def replay(
    model: Annotated[Path | None, typer.Option(
        "--model", help="Checkpoint dir the engine starts from, e.g. RUN_SFT/final (default: model.path, else the "
                        "tiny model built into --out/model).")] = None,
    stream: Annotated[Path | None, typer.Option(
        "--stream", help="JSONL of queries in the trajectory format, e.g. a suite's test.jsonl; labels are hidden "
                         "from the engine and only score the answers (default: the test split of data.path, else "
                         "of the suite generated into --out/data).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Replay only the first N queries "
                                                              "(online.replay_limit).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
    out: OutOpt = None,
    overwrite: OverwriteOpt = False,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    seed: SeedOpt = None,
    deterministic: DeterministicOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Replay a stream through a frozen engine, a learning one and a TTRL one (answer-majority pseudo-labels),
    each learning engine with its own update worker process.

    Writes RUN/online/report.md (accuracy over time per arm, the KL corridor, updates accepted/rejected, buffer
    size, latency) and queries.jsonl, and each arm's buffer, tasks, weights and updates.jsonl under RUN/<arm>/;
    the hashes of the answers, the updates and the final weights go into run.json for `pixelis repro verify`.
    """
    from pixelis.core.repro import record_artifact
    from pixelis.model.load import checkpoint_dir
    from pixelis.online.replay import run_replay
    from pixelis.run_inputs import resolve_inputs

    checkpoint = None if model is None else checkpoint_dir(model)  # a wrong --model or --stream fails early
    if stream is not None and not stream.is_file():
        raise fail(f"--stream: file not found: {stream}")
    limit_override = [] if limit is None else [f"online.replay_limit={limit}"]  # checked like any --set
    run = start_run("online", out, config, [*(overrides or []), *limit_override], seed, deterministic, log_level,
                    log_format, overwrite=overwrite)
    if checkpoint is None or stream is None:
        inputs = resolve_inputs(run.cfg, run.out_dir, need_model=checkpoint is None, show_progress=progress)
        checkpoint = checkpoint or Path(inputs.model.path)
        stream = stream or Path(inputs.data.path) / "test.jsonl"
    summary = run_replay(run.cfg, checkpoint, stream, run.out_dir, show_progress=progress)
    for name, sha256 in summary["artifacts"].items():
        record_artifact(run.out_dir, name, sha256)
    fmt = lambda v: "-" if v is None else f"{v:.1%}"  # noqa: E731
    for arm in summary["arms"]:
        s = summary[arm]
        learned = "" if arm == "frozen" else (f"; updates {s['accepted']} accepted, {s['rejected']} rejected, "
                                              f"weights v{s['final_version']}")
        typer.echo(f"{arm:>6}: accuracy {fmt(s['accuracy'])} on {summary['queries']} queries{learned}")
    typer.echo(f"report: {run.out_dir / 'online' / 'report.md'}")
