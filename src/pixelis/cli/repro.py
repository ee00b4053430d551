"""``pixelis repro``: system info, and the determinism gate that reruns a command and compares artifacts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, TensorDataset

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
from pixelis.core.repro import (
    MANIFEST_NAME,
    derive_seed,
    get_reproducible_dataloader_kwargs,
    get_system_info,
    hash_tensors,
    record_artifact,
)

app = command_group("Reproducibility: system info and the determinism gate.")


@app.command()
def info(as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False) -> None:
    """Show Python, OS, CPU, torch/CUDA, GPUs, package versions, git state and determinism settings."""
    data = get_system_info()
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    table = Table(title="pixelis system info")
    table.add_column("key", style="cyan")
    table.add_column("value")
    for key, value in _flatten(data):
        table.add_row(key, value)
    Console().print(table)


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(_flatten(value, f"{name}."))
        elif isinstance(value, list):
            rows.append((name, ", ".join(map(str, value)) or "-"))
        else:
            rows.append((name, "-" if value is None else str(value)))
    return rows


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def verify(
    ctx: typer.Context,
    runs: Annotated[int, typer.Option("--runs", min=2, help="How many times to run the command.")] = 2,
    workdir: Annotated[
        Path | None, typer.Option("--workdir", help="Where run-<i>/ directories go (default: a new temp dir).")
    ] = None,
) -> None:
    """Run COMMAND (given after --) several times and check the artifact hashes in each run.json are equal.

    Each run gets --out WORKDIR/run-I appended; keep --seed in COMMAND. Exits 0 when every run recorded the
    same non-empty set of artifacts with equal hashes, 1 otherwise, naming the first differing artifact.
    Try the built-in self-test job: pixelis repro verify -- pixelis repro selftest-job --seed 3 (passes),
    and the same with --nondeterministic added (fails).
    """
    command = list(ctx.args)
    if not command:
        raise fail("give the command to check after --, e.g. pixelis repro verify -- pixelis repro selftest-job")
    if "--out" in command or any(arg.startswith("--out=") for arg in command):
        raise fail("do not pass --out in the command; verify adds --out <workdir>/run-<i> itself")
    executable = _resolve(command[0])
    if executable is None:
        raise fail(f"command not found: {command[0]}")
    workdir = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="pixelis-verify-"))
    workdir.mkdir(parents=True, exist_ok=True)
    console = Console()
    console.print(f"verify: {runs} runs of {' '.join(command)} in {workdir}", markup=False, highlight=False)

    artifacts: list[dict[str, str]] = []
    for i in range(runs):
        run_dir = workdir / f"run-{i}"
        shutil.rmtree(run_dir, ignore_errors=True)  # verify's own scratch run: never compare a stale one
        log_path = workdir / f"run-{i}.log"
        with log_path.open("w", encoding="utf-8") as log:
            argv = [executable, *command[1:], "--out", str(run_dir)]
            proc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
            Console(stderr=True).print("\n".join(tail), markup=False, highlight=False)
            raise fail(f"run {i} exited with code {proc.returncode}; full output in {log_path}", code=1)
        manifest_path = run_dir / MANIFEST_NAME
        if not manifest_path.is_file():
            raise fail(f"run {i} wrote no {manifest_path}; the command must take --out and call start_run", code=1)
        artifacts.append(json.loads(manifest_path.read_text(encoding="utf-8")).get("artifacts") or {})

    names = sorted(set().union(*artifacts))
    table = Table(title="artifact hashes")
    table.add_column("artifact", style="cyan")
    for i in range(runs):
        table.add_column(f"run-{i}")
    table.add_column("same")
    first_diff: str | None = None
    for name in names:
        hashes = [a.get(name) for a in artifacts]
        same = None not in hashes and len(set(hashes)) == 1
        if not same and first_diff is None:
            j = next(j for j, h in enumerate(hashes) if h != hashes[0] or h is None)
            first_diff = (
                f"artifact {name!r} differs: run-0 {hashes[0] or 'missing'} vs run-{j} {hashes[j] or 'missing'}"
            )
        table.add_row(name, *[h[:12] if h else "missing" for h in hashes], "yes" if same else "NO")
    console.print(table)

    if not names:
        raise fail(f"no artifacts were recorded in any run's {MANIFEST_NAME}; the command must call record_artifact", 1)
    if first_diff is not None:
        raise fail(first_diff, code=1)
    console.print(f"ok: {len(names)} artifact(s) identical across {runs} runs", style="green", highlight=False)


def _resolve(program: str) -> str | None:
    # `pixelis` means this environment's entry point (beside the running interpreter) before any on PATH.
    if program == "pixelis":
        sibling = Path(sys.executable).parent / "pixelis"
        if sibling.is_file():
            return str(sibling)
    return shutil.which(program)


@app.command("selftest-job")
def selftest_job(
    out: OutOpt = None,
    seed: SeedOpt = None,
    deterministic: DeterministicOpt = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Optimizer steps.")] = 20,
    nondeterministic: Annotated[
        bool, typer.Option("--nondeterministic", help="Mix os.urandom into the data so runs differ.")
    ] = False,
) -> None:
    """Self-test of the 'repro verify' gate: train a tiny MLP on seeded data and record its weights hash.

    Records the artifacts 'weights' and 'losses' in run.json. With --nondeterministic the data seed is mixed
    with os.urandom, so repeated runs differ and 'pixelis repro verify' must fail.
    """
    run = start_run("repro.selftest-job", out, config, overrides or [], seed, deterministic, log_level, log_format)
    data_seed = derive_seed(run.seed, "selftest", "data")
    if nondeterministic:
        data_seed ^= int.from_bytes(os.urandom(4), "big") & 0x7FFFFFFF
    gen = torch.Generator().manual_seed(data_seed)
    x = torch.randn(256, 8, generator=gen)
    y = torch.sin(x[:, :2].sum(dim=1, keepdim=True)) + 0.1 * torch.randn(256, 1, generator=gen)

    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    loader = DataLoader(
        TensorDataset(x, y),
        batch_size=32,
        shuffle=True,
        **get_reproducible_dataloader_kwargs(derive_seed(run.seed, "selftest", "loader")),
    )
    losses: list[float] = []
    while len(losses) < steps:
        for xb, yb in loader:
            model.zero_grad()
            loss = torch.nn.functional.mse_loss(model(xb), yb)
            loss.backward()
            # Plain SGD by hand: building any torch.optim optimizer imports torch._dynamo (~2 s on 2 cores),
            # which would dominate this self-test that runs once per verify run.
            with torch.no_grad():
                for param in model.parameters():
                    param -= 0.05 * param.grad
            losses.append(loss.item())
            if len(losses) == steps:
                break
    weights = hash_tensors(model.state_dict())
    record_artifact(run.out_dir, "weights", weights)
    record_artifact(run.out_dir, "losses", hash_tensors({"losses": torch.tensor(losses, dtype=torch.float64)}))
    run.logger.info("selftest-job: %d steps, final loss %.6f, weights sha256 %s", steps, losses[-1], weights)
