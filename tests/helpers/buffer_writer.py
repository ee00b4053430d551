"""Writer process of the experience-buffer crash tests: open a buffer and add experiences in a loop.

    python buffer_writer.py PATH START [--count N] [--dim D] [--max-rows R] [--eviction age|use] [--index flat|hnsw]
                            [--pause SECONDS]

Prints ``ready`` once the buffer is open, then ``ack <id> <query_id>`` (flushed) after each `add` returned, for
experiences START, START+1, ... (forever unless --count), `--pause` seconds apart. `make_experience(i)` is
deterministic, so the parent rebuilds what each acknowledged experience must look like.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from PIL import Image

from pixelis.core.trajectory import Observation, Step, ToolCall, Trajectory
from pixelis.online.buffer import Experience, ExperienceBuffer

DIM = 16


def image(seed: int, size: tuple[int, int] = (24, 16)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def make_experience(i: int, dim: int = DIM) -> Experience:
    """Experience number `i`: a query image, one zoom step with an observation image, a vote."""
    crop = image(1_000_000 + i, (12, 12))
    traj = Trajectory(
        id=f"t{i}",
        question=f"What is in region {i}?",
        images=[image(i)],
        steps=[Step(thought=f"zoom {i}", call=ToolCall("zoom_in", {"image": 0, "bbox": [0, 0, 8, 8 + i % 5]}),
                    observation=Observation(text=f"zoomed {i}", images=[crop], data={"scale": 2.0 + i}))],
        final_thought="done",
        answer=f"a{i}",
        metadata={"n": i},
    )
    emb = np.random.default_rng(i).standard_normal(dim).astype(np.float32)
    return Experience(query_id=f"q{i}", trajectory=traj, answer=f"a{i}", confidence=0.5 + (i % 5) / 10,
                      votes={f"a{i}": 3, "other": 1}, embedding=emb, model_version=i % 3, trace_id=f"{i:032x}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("start", type=int)
    ap.add_argument("--count", type=int, default=None)
    ap.add_argument("--dim", type=int, default=DIM)
    ap.add_argument("--max-rows", type=int, default=None)
    ap.add_argument("--eviction", default="age")
    ap.add_argument("--index", default="flat")
    ap.add_argument("--pause", type=float, default=0.0)
    args = ap.parse_args(argv)
    buf = ExperienceBuffer.open(args.path, args.dim, index=args.index, max_rows=args.max_rows,
                                eviction=args.eviction)
    print("ready", flush=True)
    i = args.start
    while args.count is None or i < args.start + args.count:
        exp = make_experience(i, args.dim)
        row_id = buf.add(exp)
        sys.stdout.write(f"ack {row_id} {exp.query_id}\n")
        sys.stdout.flush()
        time.sleep(args.pause)
        i += 1
    buf.close()
    print("done", flush=True)


if __name__ == "__main__":
    main()
