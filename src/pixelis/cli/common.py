"""Options every ``pixelis`` command shares, and ``start_run``: config, seeds, logging, tracing, manifest.

A command declares the shared options with the ``Annotated`` aliases below and calls :func:`start_run`
first::

    @app.command()
    def train(out: OutOpt = Path("runs/sft"), config: ConfigOpt = None, overrides: SetOpt = None,
              seed: SeedOpt = None, deterministic: DeterministicOpt = None,
              log_level: LogLevelOpt = None, log_format: LogFormatOpt = None) -> None:
        run = start_run("sft", out, config, overrides or [], seed, deterministic, log_level, log_format)
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich.console import Console
from typer.core import TyperGroup

from pixelis.core.config import ConfigError, PixelisConfig, dump_config, load_config
from pixelis.core.errors import PixelisError
from pixelis.core.repro import enable_deterministic_mode, set_global_seed, write_run_manifest
from pixelis.core.rundir import fresh_run_dir, prepare_out_dir
from pixelis.core.tracing import configure_tracing, setup_logging

__all__ = [
    "ConfigOpt",
    "DeterministicOpt",
    "LogFormat",
    "OverwriteOpt",
    "LogFormatOpt",
    "LogLevelOpt",
    "OutOpt",
    "RunContext",
    "SeedOpt",
    "SetOpt",
    "command_group",
    "fail",
    "start_run",
]

_stderr = Console(stderr=True)


class LogFormat(StrEnum):
    """Console log formats."""

    text = "text"
    color = "color"
    json = "json"


SeedOpt = Annotated[int | None, typer.Option("--seed", help="Global seed (default: reproducibility.seed).")]
DeterministicOpt = Annotated[
    bool | None,
    typer.Option(
        "--deterministic/--no-deterministic",
        help="Deterministic torch algorithms and pinned threads (default: reproducibility.deterministic).",
    ),
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML config file (see configs/).")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="KEY=VALUE", help="Override a config value, e.g. sft.max_steps=10 (repeatable)."),
]
OutOpt = Annotated[Path | None, typer.Option(
    "--out", help="Run directory: config.yaml, run.json, logs, outputs (default: a new runs/<command>-<time>).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Clear a non-empty --out first (it is refused "
                                                                 "otherwise).")]
LogLevelOpt = Annotated[
    str | None, typer.Option("--log-level", help="DEBUG, INFO, WARNING, ... (default: logging.level).")
]
LogFormatOpt = Annotated[
    LogFormat | None, typer.Option("--log-format", help="Console log format (default: logging.format).")
]


@dataclass
class RunContext:
    """What a command gets from :func:`start_run`."""

    cfg: PixelisConfig
    out_dir: Path
    logger: logging.Logger
    seed: int


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``message`` as one red line on stderr and return the ``typer.Exit`` to raise."""
    _stderr.print(f"error: {message}", style="bold red", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(code)


class _ErrorsAsOneLine(TyperGroup):
    """The one place a :class:`PixelisError` (an ordinary mistake) becomes a red line and exit code 2."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except PixelisError as exc:
            raise fail(str(exc)) from None


def command_group(help: str) -> typer.Typer:
    """A ``typer.Typer`` command group whose commands report a :class:`PixelisError` as ``error: ...``, exit 2."""
    return typer.Typer(help=help, no_args_is_help=True, cls=_ErrorsAsOneLine, pretty_exceptions_show_locals=False)


def start_run(
    command: str,
    out: Path | None,
    config: Path | None,
    overrides: list[str],
    seed: int | None,
    deterministic: bool | None,
    log_level: str | None,
    log_format: str | None,
    overwrite: bool = False,
    resume: Path | None = None,
    resumable: bool = False,
) -> RunContext:
    """Load the config (CLI flags win over ``--set``, which wins over the file), then set up the run in ``out``.

    ``out=None`` picks a new ``runs/<command>-<time>`` directory. A non-empty ``out`` is refused unless
    ``overwrite`` (cleared first) or ``resume`` (the checkpoint the run continues from; its history is kept in
    ``run.json``; ``resumable`` commands say so in the refusal). Seeds everything, enables deterministic mode when asked, configures logging (console +
    ``out/<logging.file>``) and tracing, writes ``out/config.yaml`` and ``out/run.json``, and logs the manifest
    and system info. A bad config prints one red line and exits with code 2.
    """
    flags = {  # config key -> (flag, value given on the command line)
        "reproducibility.seed": ("--seed", seed),
        "reproducibility.deterministic": ("--deterministic", deterministic),
        "logging.level": ("--log-level", log_level),
        "logging.format": ("--log-format", str(log_format) if log_format is not None else None),
    }
    given = {key: flag_value for key, flag_value in flags.items() if flag_value[1] is not None}
    flag_overrides = [f"{key}={json.dumps(value)}" for key, (_, value) in given.items()]
    try:
        cfg = load_config(config, [*overrides, *flag_overrides])
    except ConfigError as exc:
        if exc.key in given:  # the flag was applied last, so the problem is its value
            flag, value = given[exc.key]
            raise fail(f"{flag} {value!r}: {exc.problem}") from None
        raise fail(str(exc)) from None

    out = Path(out) if out is not None else fresh_run_dir(command)
    # Under `accelerate launch` only rank 0 checks, clears and writes the run directory; other ranks log to the
    # console only, so nothing of theirs can make rank 0 see a non-empty directory.
    main_process = int(os.environ.get("RANK", "0")) == 0
    if main_process:
        prepare_out_dir(out, overwrite=overwrite, resume=resume is not None, resumable=resumable)
    repro = cfg.reproducibility
    set_global_seed(repro.seed)
    if repro.deterministic:
        enable_deterministic_mode(strict=repro.strict, num_threads=repro.torch_threads)
    elif repro.torch_threads is not None:
        torch.set_num_threads(repro.torch_threads)

    fmt = cfg.logging.format
    setup_logging(
        level=cfg.logging.level,
        log_file=out / cfg.logging.file if main_process else None,
        use_tracing=True,
        use_colors=fmt == "color",
        fmt=fmt,
    )
    configure_tracing(
        exporter=cfg.tracing.exporter,
        endpoint=cfg.tracing.otlp_endpoint,
        sample_ratio=cfg.tracing.sample_ratio,
        run_dir=out,
        service_name=cfg.tracing.service_name,
    )
    if main_process:
        dump_config(cfg, out / "config.yaml")
    manifest = write_run_manifest(out, repro.seed, repro.deterministic, cfg, sys.argv, extra={"command": command},
                                  resumed_from=resume, write=main_process)

    logger = logging.getLogger(f"pixelis.{command}")
    summary: dict[str, Any] = {k: v for k, v in manifest.items() if k not in ("system_info", "artifacts", "extra")}
    logger.info("run %s: %s", command, json.dumps({**summary, "out": str(out)}))
    logger.info("system info: %s", json.dumps(manifest["system_info"], default=str))
    return RunContext(cfg=cfg, out_dir=out, logger=logger, seed=repro.seed)
