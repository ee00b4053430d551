"""Live `pixelis serve` subprocesses on loopback (port 0) and what the tests send them."""

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

import openai
import pytest

from pixelis.serve.protocol import image_data_uri

# The plain server's rollouts: as the online tests', greedy unless a request samples.
SERVE_SETTINGS = {"model.device": "cpu", "agent.max_turns": 3, "agent.max_new_tokens": 96,
                  "agent.tool_prompt": "compact", "agent.batch_size": 4, "reproducibility.torch_threads": 2,
                  "serve.max_body_bytes": 2_000_000}


@dataclass
class LiveServer:
    proc: subprocess.Popen
    run_dir: Path
    url: str
    model: str
    api_key: str | None = None

    def client(self, api_key=None, **kw) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key or self.api_key or "unused",
                             max_retries=0, timeout=kw.pop("timeout", 300), **kw)

    def get(self, path):
        """(status, body text) of a GET."""
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()
        except urllib.error.URLError:  # bound but not listening yet
            return 0, ""

    def post(self, body: bytes, headers=None):
        """(status, headers (case-insensitive), JSON body) of a raw POST to /v1/chat/completions."""
        req = urllib.request.Request(f"{self.url}/v1/chat/completions", data=body, method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                return r.status, r.headers, json.loads(r.read())
        except urllib.error.HTTPError as err:
            return err.code, err.headers, json.loads(err.read())

    def log(self) -> str:
        return (self.run_dir.parent / "serve.out").read_text(errors="replace")

    def stop(self, timeout=120) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


def start_server(tmp_dir: Path, model_dir: Path, settings: dict, *args: str, env=None,
                 timeout=180) -> LiveServer:
    """`pixelis serve --port 0` in a subprocess; returns once /health answers 200."""
    run_dir = tmp_dir / "run"
    sets = [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]
    cmd = [sys.executable, "-m", "pixelis.cli", "serve", "--model", str(model_dir), "--port", "0", "--out",
           str(run_dir), *sets, *args]
    out = open(tmp_dir / "serve.out", "wb")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    deadline = time.monotonic() + timeout
    server = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}:\n{(tmp_dir / 'serve.out').read_text()[-3000:]}")
        if server is None and (run_dir / "server.json").is_file():
            info = json.loads((run_dir / "server.json").read_text())
            server = LiveServer(proc, run_dir, info["url"], info["model"], (env or {}).get("PIXELIS_API_KEY"))
        if server is not None and server.get("/health")[0] == 200:
            return server
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"server not healthy within {timeout}s:\n{(tmp_dir / 'serve.out').read_text()[-3000:]}")


def user_message(question, *images):
    return [{"role": "user", "content": [{"type": "text", "text": question},
                                         *[{"type": "image_url", "image_url": {"url": image_data_uri(im)}}
                                           for im in images]]}]


@pytest.fixture(scope="session")
def attribute_samples(attribute_suite_dir):
    from pixelis.core.trajectory import read_jsonl

    return read_jsonl(attribute_suite_dir / "test.jsonl")


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory, online_model_dir):
    server = start_server(tmp_path_factory.mktemp("plain_server"), online_model_dir, SERVE_SETTINGS)
    yield server
    assert server.stop() == 0, server.log()[-3000:]
