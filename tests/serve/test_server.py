"""The live server through the official `openai` client: answers, choices, streaming, errors, tracing, metrics."""

import http.client
import json
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from PIL import Image

from pixelis.core.config import load_config
from pixelis.core.trajectory import read_jsonl

from serve_helpers import SERVE_SETTINGS, user_message

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def pixelis(completion):
    return completion.model_extra["pixelis"]


def ask(server, sample, **kw):
    return server.client().chat.completions.create(model=server.model, messages=user_message(
        sample.question, *sample.images), **kw)


def calls(view):
    return [(s["call"]["name"], s["call"]["arguments"]) if s["call"] else s["raw_text"] for s in view["steps"]]


def test_greedy_answer_and_trajectory_equal_pixelis_eval(plain_server, attribute_suite_dir, online_model_dir,
                                                         attribute_samples, tmp_path):
    from pixelis.eval.runner import run_evaluation

    cfg = load_config(None, [f"{k}={v}" for k, v in SERVE_SETTINGS.items()])
    run_evaluation(cfg, attribute_suite_dir, tmp_path / "eval", model_dir=online_model_dir, limit=1,
                   show_progress=False)
    expected = read_jsonl(tmp_path / "eval" / "predictions.jsonl")[0]
    raw = plain_server.client().chat.completions.with_raw_response.create(
        model=plain_server.model, messages=user_message(attribute_samples[0].question, *attribute_samples[0].images),
        temperature=0, extra_headers={"traceparent": PARENT})
    completion = raw.parse()
    ext = pixelis(completion)
    assert expected.num_tool_calls >= 1  # the SFT model calls tools, so the comparison covers them
    assert completion.choices[0].message.content == (expected.answer or "")
    view = ext["trajectories"][0]
    assert calls(view) == [(s.call.name, s.call.arguments) if s.call else s.raw_text for s in expected.steps]
    assert [s["observation"]["text"] for s in view["steps"]] == [s.observation.text for s in expected.steps]
    assert completion.choices[0].finish_reason == ("stop" if expected.answer is not None else "length")
    # the request continues the caller's trace, and says so in the header and the extension
    assert ext["trace_id"] == TRACE_ID and raw.headers["traceparent"].split("-")[1] == TRACE_ID
    assert ext["model_version"] == 0 and completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_seeded_choices_do_not_depend_on_what_they_are_batched_with(plain_server, attribute_samples):
    sampled = dict(temperature=0.9, seed=5, n=2)
    alone = ask(plain_server, attribute_samples[1], **sampled)
    assert len(alone.choices) == 2 and pixelis(alone)["seed"] == 5
    with ThreadPoolExecutor(3) as pool:
        together = [pool.submit(ask, plain_server, attribute_samples[1], **sampled),
                    pool.submit(ask, plain_server, attribute_samples[0], temperature=0.9, seed=6, n=2),
                    pool.submit(ask, plain_server, attribute_samples[2], temperature=0)]
        again = together[0].result()
        [f.result() for f in together]
    assert [calls(v) for v in pixelis(again)["trajectories"]] == [calls(v) for v in pixelis(alone)["trajectories"]]
    assert [c.message.content for c in again.choices] == [c.message.content for c in alone.choices]
    assert pixelis(again)["trace_id"] != pixelis(alone)["trace_id"]


def test_streaming_sends_the_steps_then_the_same_answer(plain_server, attribute_samples):
    sample = attribute_samples[2]
    settings = dict(temperature=0.7, seed=9)
    whole = ask(plain_server, sample, **settings)
    chunks = list(ask(plain_server, sample, stream=True, **settings))
    steps = [c.model_extra["pixelis"]["step"] for c in chunks
             if c.model_extra.get("pixelis") and "step" in c.model_extra["pixelis"]]
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert steps == pixelis(whole)["trajectories"][0]["steps"] and steps
    assert content == whole.choices[0].message.content
    final = chunks[-1]
    assert final.usage.completion_tokens == whole.usage.completion_tokens
    assert final.model_extra["pixelis"]["trajectories"] == pixelis(whole)["trajectories"]
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [whole.choices[0].finish_reason]


def test_errors_are_openai_errors_and_the_server_keeps_serving(plain_server, attribute_samples):
    client = plain_server.client()
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=plain_server.model, messages=[{"role": "user", "content": "no image"}])
    assert info.value.body["code"] == "no_image"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=user_message("q", attribute_samples[0].images[0]))
    status, _, err = plain_server.post(b'{"model": "x", "messages": [')
    assert status == 400 and err["error"]["code"] == "invalid_json" and "line 1" in err["error"]["message"]
    status, err = _announce_big_body(plain_server.url, 2_100_000)
    assert status == 413 and err["error"]["code"] == "body_too_large"
    huge = Image.new("RGB", (2100, 2000), (5, 5, 5))  # 4.2 Mpx, over serve.max_image_pixels, tiny as PNG
    body = json.dumps({"model": plain_server.model, "messages": user_message("q", huge)}).encode()
    status, _, err = plain_server.post(body)
    assert status == 400 and err["error"]["code"] == "image_too_large"
    status, _, err = plain_server.post(json.dumps({"model": plain_server.model, "messages": user_message(
        "q", attribute_samples[0].images[0]), "top_p": 7}).encode())
    assert status == 400 and err["error"]["param"] == "top_p"
    status, text = plain_server.get("/v1/nowhere")
    assert status == 404 and json.loads(text)["error"]["message"]
    assert plain_server.get("/health")[0] == 200
    assert ask(plain_server, attribute_samples[0], temperature=0).choices


def _announce_big_body(url, size):
    """Announce a body over serve.max_body_bytes, send only its start, and read the answer: the server refuses
    it from Content-Length without waiting for the rest (sending all of it could meet a closed socket)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.putrequest("POST", "/v1/chat/completions")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(size))
    conn.endheaders()
    conn.send(b'{"model": "x", "pad": "' + b"x" * 1000)
    response = conn.getresponse()
    try:
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_metrics_count_requests_tools_batches_and_latency(plain_server, attribute_samples):
    ask(plain_server, attribute_samples[0], temperature=0)
    status, text = plain_server.get("/metrics")
    assert status == 200
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    ok = lines['pixelis_requests_total{endpoint="/v1/chat/completions",status="200"}']
    assert float(ok) >= 1
    assert any(k.startswith('pixelis_tool_calls_total{outcome="ok",tool="get_properties"}') for k in lines)
    assert float(lines["pixelis_batch_size_count"]) >= 1 and float(lines["pixelis_request_latency_seconds_count"]) >= 1
    assert 'pixelis_requests_total{endpoint="/v1/chat/completions",status="400"}' in lines
    status, models = plain_server.get("/v1/models")
    assert json.loads(models)["data"][0]["id"] == plain_server.model
