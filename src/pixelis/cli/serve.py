"""`pixelis serve`: the agent behind an OpenAI-compatible chat-completions API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pixelis.cli.common import (ConfigOpt, DeterministicOpt, LogFormatOpt, LogLevelOpt, OutOpt, OverwriteOpt, SeedOpt,
                                SetOpt, start_run)


def serve(
    model: Annotated[Path, typer.Option("--model", help="Checkpoint dir to serve, e.g. RUN_SFT/final.")],
    host: Annotated[str | None, typer.Option("--host", help="Address to bind (serve.host; default 127.0.0.1). "
                                                            "Anything but loopback needs an API key.")] = None,
    port: Annotated[int | None, typer.Option("--port", help="TCP port (serve.port; default 8000; 0: any free "
                                                            "port, written to RUN/server.json).")] = None,
    online: Annotated[bool, typer.Option("--online", help="Learn from traffic: the online engine votes over "
                                                          "online.n_samples rollouts per request and an update "
                                                          "worker publishes new weight versions.")] = False,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="PIXELIS_API_KEY", show_envvar=True,
                                                help="Require Authorization: Bearer KEY on /v1/*.")] = None,
    out: OutOpt = None,
    overwrite: OverwriteOpt = False,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    seed: SeedOpt = None,
    deterministic: DeterministicOpt = None,
    log_level: LogLevelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Serve the agent (policy + pixel tools) over the OpenAI chat-completions API until SIGTERM.

    Endpoints: POST /v1/chat/completions (streaming too), GET /v1/models, GET /health, GET /metrics. The run
    directory gets config.yaml, run.json, logs, traces, server.json (url, port, pid) and, with --online, the
    buffer, task queue, weight versions and the worker's log under RUN/online/.
    """
    from pixelis.model.load import checkpoint_dir
    from pixelis.serve.server import run_server

    checkpoint = checkpoint_dir(model)  # a wrong --model fails before anything starts
    flags = [f"serve.{key}={value}" for key, value in (("host", host), ("port", port)) if value is not None]
    run = start_run("serve", out, config, [*(overrides or []), *flags], seed, deterministic, log_level, log_format,
                    overwrite=overwrite)
    run_server(run.cfg, checkpoint, run.out_dir, online=online, api_key=api_key)
