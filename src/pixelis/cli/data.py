"""``pixelis data``: generate the synthetic task suite and render one example card per family."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from pixelis.cli.common import (
    ConfigOpt,
    DeterministicOpt,
    LogFormatOpt,
    LogLevelOpt,
    OutOpt,
    SeedOpt,
    SetOpt,
    fail,
    start_run,
    command_group,
)
from pixelis.core.repro import file_sha256, record_artifact
from pixelis.core.trajectory import Trajectory

app = command_group("Synthetic task suite with golden tool-use trajectories.")


def _csv(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


@app.command()
def synth(
    out: OutOpt = Path("data/synth"),
    n: Annotated[int | None, typer.Option("--n", help="Total samples over all families x difficulties.")] = None,
    families: Annotated[str | None, typer.Option("--families", help="Comma list, e.g. small_text,count.")] = None,
    difficulty: Annotated[str | None, typer.Option("--difficulty", help="Comma list of simple,medium,hard.")] = None,
    trap_rate: Annotated[float | None, typer.Option("--trap-rate", help="Share of trap+correction samples.")] = None,
    val_fraction: Annotated[float | None, typer.Option("--val-fraction", help="Share held out for val.")] = None,
    test_fraction: Annotated[float | None, typer.Option("--test-fraction", help="Share held out for test.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a suite already in --out.")] = False,
    workers: Annotated[int | None, typer.Option("--workers", help="Generating processes (0: one per CPU core).")] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    seed: SeedOpt = None,
    deterministic: DeterministicOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Write train/val/test.jsonl (+ media/) and manifest.json into --out; same seed, same bytes."""
    flags = {"data.n": n, "data.families": _csv(families), "data.difficulties": _csv(difficulty),
             "data.trap_rate": trap_rate, "data.val_fraction": val_fraction, "data.test_fraction": test_fraction,
             "data.workers": workers}
    extra = [f"{key}={json.dumps(value)}" for key, value in flags.items() if value is not None]
    run = start_run("data.synth", out, config, [*(overrides or []), *extra], seed, deterministic, log_level,
                    log_format, overwrite=overwrite)
    from pixelis.data.synth.suite import GenerationError, generate_suite  # imports the tools only when needed

    d = run.cfg.data
    try:
        result = generate_suite(out, d.n, run.seed, d.families, d.difficulties, d.trap_rate, d.val_fraction,
                                d.test_fraction, overwrite=overwrite, workers=d.workers)
    except (ValueError, GenerationError) as exc:
        raise fail(str(exc)) from None
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "manifest.json"):
        record_artifact(out, name, file_sha256(out / name))
    manifest = result.manifest
    table = Table(title=f"synthetic suite in {out} (seed {run.seed})")
    for column in ("family", "difficulty", "train", "val", "test", "traps"):
        table.add_column(column, justify="right" if column not in ("family", "difficulty") else "left")
    for fam in manifest["families"]:
        for diff in manifest["difficulties"]:
            table.add_row(fam, diff, *(str(manifest["counts"][s][fam][diff]) for s in ("train", "val", "test")),
                          str(manifest["traps"][fam][diff]))
    Console().print(table)
    for warning in result.warnings:
        Console().print(f"warning: {warning}", style="yellow", markup=False, highlight=False, soft_wrap=True)
    for fam in manifest["families"]:
        k = result.samples.get(fam, 0)
        rejected = {d: r for d, r in manifest["rejections"][fam].items() if r}
        run.logger.info("%s: %d samples in %.1f s (%.2f s/sample), rejected draws: %s", fam, k,
                        result.seconds.get(fam, 0.0), result.seconds.get(fam, 0.0) / max(1, k), rejected or "none")


@app.command()
def examples(
    out: Annotated[Path, typer.Option("--out", help="Directory for <family>.png.")] = Path("docs/families"),
    seed: Annotated[int, typer.Option("--seed", help="Seed of the drawn examples.")] = 0,
    difficulty: Annotated[str, typer.Option("--difficulty", help="Tier of the examples.")] = "medium",
    families: Annotated[str | None, typer.Option("--families", help="Comma list (default: all).")] = None,
) -> None:
    """Render one example per family: its image with the golden steps marked, the question and the steps."""
    from pixelis.data.synth.suite import FAMILIES, SampleKey, generate_sample, resolve
    from pixelis.tools.registry import ToolRegistry

    try:
        names = resolve(_csv(families), list(FAMILIES), "families")
    except ValueError as exc:
        raise fail(str(exc)) from None
    if difficulty not in ("simple", "medium", "hard"):
        raise fail(f"--difficulty {difficulty!r}: choose simple, medium or hard")
    out.mkdir(parents=True, exist_ok=True)
    registry = ToolRegistry.default()
    for name in names:
        traj = generate_sample(SampleKey(name, difficulty, 0), seed, 0.0, registry)
        path = out / f"{name}.png"
        example_card(traj).quantize(colors=96, method=2, dither=0).save(path, optimize=True)
        Console().print(f"{path}  {path.stat().st_size // 1024} KB  {traj.question}")


def example_card(traj: Trajectory) -> Any:
    """The documentation card of one trajectory (see `render.trajectory_card`)."""
    from pixelis.data import render
    from pixelis.data.synth.track import STORYBOARD_THUMB

    image = traj.images[0]
    frame0 = None
    if traj.video:
        frame0 = render.storyboard_tile(0, len(traj.video), traj.video[0].size, thumb=STORYBOARD_THUMB)
    marks = []
    for number, step in enumerate(traj.steps, 1):
        if step.call is None:
            continue
        args = step.call.arguments
        on_video = step.call.name in ("track_object", "localize_event")
        if not on_video and args.get("image", 0) != 0:
            continue
        for kind in ("bbox", "point"):
            if isinstance(args.get(kind), list) and len(args[kind]) == (4 if kind == "bbox" else 2):
                marks.append((number, kind, args[kind], frame0 if on_video else None))
    blocks: list[tuple[str, tuple[int, int, int]]] = [
        (f"[{traj.metadata['family']} / {traj.metadata['difficulty']}]  Q: {traj.question}", (0, 0, 0))]
    for number, step in enumerate(traj.steps, 1):
        call = step.call.to_json() if step.call else step.raw_text or ""
        obs = step.observation.render_text() if step.observation else ""
        obs = obs if len(obs) <= 160 else obs[:157] + "..."
        blocks.append((f"{number}. {step.thought}\n    call: {call}\n    tool: {obs}",
                       render.STEP_COLORS[(number - 1) % len(render.STEP_COLORS)]))
    blocks.append((f"Answer: {traj.answer}   ({traj.final_thought})", (0, 0, 0)))
    tool_images = [im for step in traj.steps if step.observation for im in step.observation.images]
    return render.trajectory_card(image, marks, blocks, tool_images)
