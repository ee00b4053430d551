"""`pixelis serve`: load the agent (and with `--online` the engine and its update worker), run uvicorn, shut down
cleanly on SIGTERM.

SIGTERM (or Ctrl-C): uvicorn stops accepting connections and waits for the requests in flight; then the batcher
finishes and closes the experience buffer and the task queue (both SQLite, committed on every write), and the
update worker is given `serve.drain_timeout_s` to finish the queued updates before it is stopped itself (a task
it did not reach stays queued in RUN/online/tasks.db). The process exits 0.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from pixelis.agent import Agent, ModelPolicy
from pixelis.core.config import PixelisConfig, dump_config
from pixelis.core.errors import PixelisError
from pixelis.eval.runner import build_agent
from pixelis.model.load import load_policy
from pixelis.online.engine import InferenceEngine
from pixelis.online.tasks import TaskQueue
from pixelis.online.worker import WorkerProcess, write_spec
from pixelis.serve.app import create_app
from pixelis.serve.batcher import Batcher
from pixelis.serve.metrics import ServerMetrics

log = logging.getLogger("pixelis.serve")

API_KEY_ENV = "PIXELIS_API_KEY"
SERVER_FILE = "server.json"  # written into the run directory once the socket is bound: url, port, pid


class ServeError(PixelisError):
    """A server that must not start as asked (e.g. a public address without an API key)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ServerState:
    """What the app's endpoints share: config, model name, batcher, metrics, the API key, the update worker."""

    cfg: PixelisConfig
    model_dir: Path
    run_dir: Path
    online: bool
    api_key: str | None
    model_name: str = ""
    created: int = field(default_factory=lambda: int(time.time()))
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    worker: WorkerProcess | None = None
    batcher: Batcher = field(init=False)

    def __post_init__(self) -> None:
        self.model_name = self.cfg.serve.model_name or f"pixelis-{self.model_dir.resolve().name}"
        self.batcher = Batcher(self._load, self.cfg, self.metrics)

    @property
    def online_dir(self) -> Path:
        return self.run_dir / "online"

    def _load(self) -> tuple[Agent, InferenceEngine | None]:
        """Runs on the batcher thread, which then owns the model and the engine's SQLite connections."""
        cfg = self.cfg
        model, processor = load_policy(self.model_dir, dtype=cfg.model.dtype, device=cfg.model.device)
        model.eval()
        if not self.online:
            return build_agent(cfg, ModelPolicy(model, processor)), None
        self.online_dir.mkdir(parents=True, exist_ok=True)
        engine = InferenceEngine(cfg, model, processor, self.online_dir, learn=True)
        dump_config(cfg, self.online_dir / "config.yaml")
        write_spec(self.online_dir, self.model_dir, self.online_dir / "config.yaml", engine.embedder.dim)
        self.worker = WorkerProcess(self.online_dir)
        return engine.agent, engine

    def start(self) -> None:
        self.batcher.start()

    def shutdown(self) -> None:
        """After uvicorn answered the requests in flight: stop the batcher, drain and stop the update worker."""
        self.batcher.stop()
        if self.worker is None:
            return
        queue = TaskQueue(self.online_dir / "tasks.db")
        deadline = time.monotonic() + self.cfg.serve.drain_timeout_s
        while queue.counts()["pending"] and self.worker.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        counts = queue.counts()
        queue.close()
        code = self.worker.stop()
        log.info("update worker stopped (exit %d); updates %s", code, json.dumps(counts))


def check_binding(host: str, api_key: str | None) -> None:
    """Refuse a non-loopback address without an API key."""
    if not is_loopback(host) and not api_key:
        raise ServeError(f"--host {host} is not a loopback address: set an API key (--api-key or the {API_KEY_ENV} "
                         "environment variable) before serving beyond this machine")


def run_server(cfg: PixelisConfig, model_dir: Path, run_dir: Path, online: bool = False,
               api_key: str | None = None) -> None:
    """Serve until SIGTERM/SIGINT (see the module docstring); writes RUN/server.json once listening."""
    host, port = cfg.serve.host, cfg.serve.port
    check_binding(host, api_key)
    state = ServerState(cfg, model_dir, run_dir, online, api_key)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    port = sock.getsockname()[1]
    url = f"http://{host if family == socket.AF_INET else f'[{host}]'}:{port}"
    (run_dir / SERVER_FILE).write_text(json.dumps({"url": url, "port": port, "pid": os.getpid(),
                                                   "model": state.model_name, "online": online}), encoding="utf-8")
    log.info("serving %s on %s (%s)", state.model_name, url, "online learning" if online else "frozen weights")
    print(f"serving {state.model_name} on {url}", flush=True)
    config = uvicorn.Config(create_app(state), log_config=None, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=cfg.serve.request_timeout_s + 5)
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal that stopped it once it has shut down, which under the default handler
    # kills the process (exit -15); a handler that ignores it keeps the clean exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run(sockets=[sock])
    log.info("server stopped")
