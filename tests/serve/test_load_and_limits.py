"""Load, API key, limits (timeout, full queue), binding and SIGTERM on live servers of the random tiny model."""

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from PIL import Image

from serve_helpers import start_server, user_message

KEY = "sk-test-pixelis"
QUICK = {"model.device": "cpu", "agent.max_turns": 1, "agent.max_new_tokens": 8, "agent.tool_prompt": "compact",
         "reproducibility.torch_threads": 2}


def image(i):
    return Image.new("RGB", (48, 40), ((37 * i) % 256, (91 * i) % 256, 120))


@pytest.fixture(scope="module")
def load_server(tmp_path_factory, tiny_model_dir):
    server = start_server(tmp_path_factory.mktemp("load_server"), tiny_model_dir,
                          {**QUICK, "agent.batch_size": 16, "serve.max_wait_ms": 20},
                          env={"PIXELIS_API_KEY": KEY})
    yield server
    server.stop()


def test_64_requests_at_concurrency_16_all_answered_with_distinct_traces(load_server):
    client = load_server.client()

    def one(i):
        raw = client.chat.completions.with_raw_response.create(
            model=load_server.model, messages=user_message(f"What colour is box {i}?", image(i)), temperature=0.8,
            seed=i)
        return raw.headers["traceparent"], raw.parse()

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(64)))
    assert len(results) == 64
    traces = {c.model_extra["pixelis"]["trace_id"] for _, c in results}
    assert len(traces) == 64
    assert {h.split("-")[1] for h, _ in results} == traces
    assert [c.model_extra["pixelis"]["seed"] for _, c in results] == list(range(64))
    _, text = load_server.get("/metrics")
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert float(lines['pixelis_requests_total{endpoint="/v1/chat/completions",status="200"}']) >= 64
    # requests were batched: more rollouts than generation steps
    assert float(lines["pixelis_batch_size_sum"]) > float(lines["pixelis_batch_size_count"])


def test_api_key_is_required(load_server):
    with pytest.raises(openai.AuthenticationError):
        load_server.client(api_key="sk-wrong").models.list()
    status, _, err = load_server.post(b"{}")
    assert status == 401 and err["error"]["code"] == "invalid_api_key"
    assert [m.id for m in load_server.client().models.list()] == [load_server.model]
    assert load_server.get("/health")[0] == 200  # health and metrics stay open to probes


def test_a_public_address_without_a_key_is_refused(tiny_model_dir, tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if k != "PIXELIS_API_KEY"}
    proc = subprocess.run([sys.executable, "-m", "pixelis.cli", "serve", "--model", str(tiny_model_dir), "--host",
                           "0.0.0.0", "--out", str(tmp_path / "run")], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 2
    assert "not a loopback address" in proc.stderr and "Traceback" not in proc.stderr


def test_sigterm_finishes_the_request_in_flight_and_exits_0(load_server):
    results = []
    thread = threading.Thread(target=lambda: results.append(load_server.client().chat.completions.create(
        model=load_server.model, messages=user_message("last one?", image(1)), max_tokens=8)))
    thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # wait until the server holds the request
        _, text = load_server.get("/metrics")
        if "pixelis_queue_requests 1.0" in text:
            break
        time.sleep(0.01)
    assert load_server.stop() == 0
    thread.join(60)
    assert results and results[0].choices and "server stopped" in load_server.log()


def test_timeout_gets_504_and_a_full_queue_429_with_retry_after(tmp_path, tiny_model_dir):
    # The batcher waits 2 s for company before starting a batch: longer than the 1 s timeout, so the first
    # request is still held (filling the one-request queue) when the second comes, and then times out.
    server = start_server(tmp_path, tiny_model_dir, {**QUICK, "serve.max_wait_ms": 2000, "serve.request_timeout_s": 1,
                                                     "serve.max_queue": 1, "serve.retry_after_s": 3})
    body = ('{"model": "%s", "messages": %s}' % (server.model, __import__("json").dumps(
        user_message("a long one", image(2))))).encode()
    slow = []
    thread = threading.Thread(target=lambda: slow.append(server.post(body)))
    thread.start()
    time.sleep(0.5)
    status, headers, err = server.post(body)
    assert status == 429 and headers["Retry-After"] == "3" and err["error"]["code"] == "queue_full"
    thread.join(60)
    status, _, err = slow[0]
    assert status == 504 and err["error"]["type"] == "timeout"
    # the timed-out request no longer holds the queue, and the server still answers
    assert server.get("/health")[0] == 200
    assert server.post(body)[0] != 429
    assert server.stop() == 0
