"""Live `pixelis serve` subprocesses on loopback (port 0) and what the serve tests send them."""

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import openai

from pixelis.serve.launch import ServerProcess
from pixelis.serve.launch import start_server as launch
from pixelis.serve.protocol import image_data_uri

# The plain server's rollouts: as the online tests', greedy unless a request samples.
SERVE_SETTINGS = {"model.device": "cpu", "agent.max_turns": 3, "agent.max_new_tokens": 96,
                  "agent.tool_prompt": "compact", "agent.batch_size": 4, "reproducibility.torch_threads": 2,
                  "serve.max_body_bytes": 2_000_000}


@dataclass
class LiveServer:
    """A `pixelis serve` subprocess with the clients the tests use."""

    process: ServerProcess
    api_key: str | None = None

    def __getattr__(self, name):  # proc, run_dir, url, model, get, log, stop
        return getattr(self.process, name)

    def client(self, api_key=None, **kw) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key or self.api_key or "unused",
                             max_retries=0, timeout=kw.pop("timeout", 300), **kw)

    def post(self, body: bytes, headers=None):
        """(status, headers (case-insensitive), JSON body) of a raw POST to /v1/chat/completions."""
        req = urllib.request.Request(f"{self.url}/v1/chat/completions", data=body, method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                return r.status, r.headers, json.loads(r.read())
        except urllib.error.HTTPError as err:
            return err.code, err.headers, json.loads(err.read())


def start_server(tmp_dir: Path, model_dir: Path, settings: dict, *args: str, env=None) -> LiveServer:
    """`pixelis serve --port 0` in a subprocess, healthy."""
    return LiveServer(launch(tmp_dir / "run", model_dir, settings, args, env), (env or {}).get("PIXELIS_API_KEY"))


def user_message(question, *images):
    return [{"role": "user", "content": [{"type": "text", "text": question},
                                         *[{"type": "image_url", "image_url": {"url": image_data_uri(im)}}
                                           for im in images]]}]
