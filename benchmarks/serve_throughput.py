"""Serving throughput of `pixelis serve`: requests/s and p50/p95 latency at several concurrencies, batched vs not.

Starts two servers on loopback over the same checkpoint — one batching (`agent.batch_size` = the largest
concurrency) and one serving a request at a time (`agent.batch_size 1`) — and sends `--requests` chat
completions at each `--concurrency` to each, through the official `openai` client. Prints a table and the batching
speed-up (batched requests/s over one-at-a-time requests/s) per concurrency; `--json` writes the numbers.

Every request is the same amount of work: one turn of exactly `--tokens` generated tokens (the random tiny model
rarely ends a turn early; with `--model` pointing at a trained checkpoint the turns end when the model answers).

    .venv/bin/python benchmarks/serve_throughput.py                       # the xs tiny model, built offline
    .venv/bin/python benchmarks/serve_throughput.py --model runs/demo/sft/final --data runs/demo/data/test.jsonl \
        --turns 3 --tokens 96
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
from PIL import Image

from pixelis.core.trajectory import read_jsonl
from pixelis.model.tiny import build_tiny_model
from pixelis.serve.launch import start_server
from pixelis.serve.protocol import image_data_uri


def _queries(data: Path | None, count: int) -> list[list[dict]]:
    """Chat messages of `count` requests: a suite's questions and images in turn, else generated colour cards."""
    if data is not None:
        samples = read_jsonl(data)
        pairs = [(s.question, s.images[0]) for s in (samples[i % len(samples)] for i in range(count))]
    else:
        pairs = [(f"What colour is the object {i}?", Image.new("RGB", (64, 48), ((53 * i) % 256, (97 * i) % 256, 140)))
                 for i in range(count)]
    return [[{"role": "user", "content": [{"type": "text", "text": question},
                                          {"type": "image_url", "image_url": {"url": image_data_uri(image)}}]}]
            for question, image in pairs]


def _measure(url: str, model: str, queries: list[list[dict]], concurrency: int) -> dict[str, float]:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
    requests = len(queries) - 1  # the last one warms up
    calls: list[int] = []

    def one(i: int) -> float:
        started = time.perf_counter()
        answer = client.chat.completions.create(model=model, messages=queries[i], temperature=0.8, seed=i)
        calls.append(sum(v["tool_calls"] for v in answer.model_extra["pixelis"]["trajectories"]))
        return time.perf_counter() - started

    one(requests)  # warm-up
    calls.clear()
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = sorted(pool.map(one, range(requests)))
    wall = time.perf_counter() - started
    return {"requests_per_s": requests / wall, "p50_s": statistics.median(latencies),
            "p95_s": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))], "wall_s": wall,
            "tool_calls_per_request": sum(calls) / requests}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="Checkpoint to serve (default: a fresh xs tiny model).")
    parser.add_argument("--data", type=Path, help="Trajectory JSONL whose questions and images the requests ask "
                        "(default: generated colour cards).")
    parser.add_argument("--requests", type=int, default=32, help="Requests per concurrency level.")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--tokens", type=int, default=16, help="agent.max_new_tokens (per turn).")
    parser.add_argument("--turns", type=int, default=1, help="agent.max_turns.")
    parser.add_argument("--threads", type=int, default=2, help="Torch threads of the server.")
    parser.add_argument("--json", type=Path, help="Also write the numbers here.")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    model = args.model or build_tiny_model(work / "model", seed=0, size="xs")
    settings = {"model.device": "cpu", "agent.max_turns": args.turns, "agent.max_new_tokens": args.tokens,
                "agent.tool_prompt": "compact", "reproducibility.torch_threads": args.threads,
                "serve.max_queue": max(args.concurrency) * 2}
    queries = _queries(args.data, args.requests + 1)
    results: dict[str, dict[int, dict[str, float]]] = {}
    for mode, batch_size in (("batched", max(args.concurrency)), ("one_at_a_time", 1)):
        server = start_server(work / mode, model, {**settings, "agent.batch_size": batch_size})
        try:
            results[mode] = {c: _measure(server.url, server.model, queries, c) for c in args.concurrency}
        finally:
            server.stop()
    print(f"{'concurrency':>11} | {'mode':>13} | {'req/s':>6} | {'p50 s':>6} | {'p95 s':>6} | calls/req")
    for c in args.concurrency:
        for mode in results:
            r = results[mode][c]
            print(f"{c:>11} | {mode:>13} | {r['requests_per_s']:6.2f} | {r['p50_s']:6.2f} | {r['p95_s']:6.2f} | "
                  f"{r['tool_calls_per_request']:.2f}")
        speedup = results["batched"][c]["requests_per_s"] / results["one_at_a_time"][c]["requests_per_s"]
        print(f"{c:>11} | batching speed-up x{speedup:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"settings": settings, "requests": args.requests, "results": results},
                                        indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
