"""Start `pixelis serve` as a child process and wait until it is healthy (for tests, benchmarks and scripts)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from pixelis.serve.server import SERVER_FILE


@dataclass
class ServerProcess:
    """A running `pixelis serve`: its process, run directory, base URL, model id and console log file."""

    proc: subprocess.Popen
    run_dir: Path
    url: str
    model: str
    log_path: Path

    def get(self, path: str) -> tuple[int, str]:
        """(status, body) of a GET; status 0 while nothing listens yet."""
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()
        except urllib.error.URLError:
            return 0, ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 120.0) -> int:
        """SIGTERM (the server finishes what is in flight) and wait; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)


def start_server(run_dir: Path, model_dir: Path, settings: Mapping[str, object] | None = None,
                 args: Sequence[str] = (), env: Mapping[str, str] | None = None,
                 timeout_s: float = 180.0) -> ServerProcess:
    """`pixelis serve --port 0 --out run_dir` with `--set` `settings` and extra `args`; returns once /health is 200.

    The console goes to ``run_dir``'s sibling ``<name>.out``. A server that exits or stays unhealthy raises
    RuntimeError with the end of that log.
    """
    sets = [a for key, value in (settings or {}).items() for a in ("--set", f"{key}={value}")]
    cmd = [sys.executable, "-m", "pixelis.cli", "serve", "--model", str(model_dir), "--port", "0", "--out",
           str(run_dir), *sets, *args]
    log_path = run_dir.with_name(run_dir.name + ".out")
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    deadline = time.monotonic() + timeout_s
    server = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"pixelis serve exited {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        if server is None and (run_dir / SERVER_FILE).is_file():
            info = json.loads((run_dir / SERVER_FILE).read_text(encoding="utf-8"))
            server = ServerProcess(proc, run_dir, info["url"], info["model"], log_path)
        if server is not None and server.get("/health")[0] == 200:
            return server
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"pixelis serve not healthy within {timeout_s:g} s:\n{log_path.read_text()[-3000:]}")
