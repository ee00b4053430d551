"""Experience buffer: k-NN latency of `ExperienceBuffer.search` vs. raw faiss, and durable `add` throughput.

    .venv/bin/python benchmarks/buffer_knn.py                         # 100k and 1M vectors, dim 128, k 4
    .venv/bin/python benchmarks/buffer_knn.py --sizes 10000 100000    # smaller
    .venv/bin/python benchmarks/buffer_knn.py --index hnsw --sizes 100000

For each size a buffer is bulk-loaded through `ExperienceBuffer.add_many` (transactions of 10,000 rows; each row a
one-step trajectory whose query image is one of 1,000 distinct 32x32 PNGs) and reopened, as a process would find
it. Then the same queries go, interleaved one by one (in rotated order), to the raw faiss index (`buf.index.search`: the very index
and vectors the buffer holds) and to `buf.search` with and without recording use (`record_use`): p50/p90 over
`--queries` queries after a warm-up, and `ratio raw/buffer` (goal >= 0.90). The buffer's search includes
normalising the query, its refresh check, reading the k rows from SQLite and decoding their trajectories and images;
with `record_use` also one commit of the use counts. Measured three ways: a buffer opened with
`image_cache_mb=0` (every hit's PNGs decoded: the cold case), one with the default decoded-image cache (the
benchmark's rows share 1,000 images, so it is warm: the best case), and that one recording use.

`add` throughput: `--adds` single `add` calls (each its own durable transaction: WAL, synchronous=FULL) of
experiences with a 64x64 query image and a 32x32 tool observation image, against a baseline of the same number of
single-row INSERT+COMMIT transactions of the same bytes into a bare table under the same pragmas (interleaved
call by call; the baseline's PNGs are encoded beforehand, the buffer's `add` encodes its own).

Writes everything to `<work>/buffer_knn.json` (`--work`, default runs/bench); buffer files go to `<work>/buffer_knn/`
and are deleted afterwards unless `--keep`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path

import faiss
import numpy as np
from PIL import Image

from pixelis.core.trajectory import Observation, Step, ToolCall, Trajectory
from pixelis.online.buffer import Experience, ExperienceBuffer, png_bytes


def _image(rng: np.random.Generator, size: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


def _experiences(vectors: np.ndarray, pool: list[Image.Image], crops: list[Image.Image] | None = None,
                 start: int = 0):
    """Experiences start, start+1, ...: distinct questions, so none is a duplicate of another."""
    for i, vec in enumerate(vectors, start):
        obs = Observation(text=f"zoomed {i}", images=[] if crops is None else [crops[i % len(crops)]],
                          data={"scale": 2.0})
        traj = Trajectory(id=f"b{i}", question=f"benchmark query {i}: what is in the box?",
                          images=[pool[i % len(pool)]],
                          steps=[Step(thought="zoom in", call=ToolCall("zoom_in", {"image": 0, "bbox": [0, 0, 16, 16]}),
                                      observation=obs)],
                          final_thought="read it", answer=f"answer {i % 10}")
        yield Experience(query_id=f"q{i}", trajectory=traj, answer=f"answer {i % 10}", confidence=0.75,
                         votes={f"answer {i % 10}": 3, "other": 1}, embedding=vec, model_version=1,
                         trace_id=f"{i:032x}")


def _ms(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "mean_ms": float(a.mean())}


def bench_knn(work: Path, n: int, args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(args.seed)
    path = work / f"knn-{args.index}-{n}.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    pool = [_image(rng, 32) for _ in range(1000)]
    t = time.perf_counter()
    with ExperienceBuffer.open(path, args.dim, index=args.index, hnsw_m=args.hnsw_m) as buf:
        for start in range(0, n, 100_000):  # vectors drawn per part: 1M x 128 float32 is never held twice
            part = rng.standard_normal((min(100_000, n - start), args.dim)).astype(np.float32)
            assert buf.add_many(_experiences(part, pool, start=start), chunk=10_000)[-1] == start + len(part)
            print(f"  loaded {start + len(part):,}/{n:,} ({time.perf_counter() - t:.0f} s)", flush=True)
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    cold = ExperienceBuffer.open(path, args.dim, index=args.index, hnsw_m=args.hnsw_m, verify=False,
                                 image_cache_mb=0)  # every hit's images decoded from PNG
    open_s = time.perf_counter() - t
    t = time.perf_counter()
    ok = cold._conn.execute("PRAGMA quick_check(1)").fetchone()[0]
    verify_s = time.perf_counter() - t
    warm = ExperienceBuffer.open(path, args.dim, index=args.index, hnsw_m=args.hnsw_m, verify=False)
    assert ok == "ok" and len(cold) == len(warm) == n and cold.index.ntotal == n
    queries = rng.standard_normal((args.warmup + args.queries, args.dim)).astype(np.float32)
    calls = {
        "raw": lambda q: cold.index.search((q / np.linalg.norm(q))[None, :], args.k)[1][0].tolist(),
        "cold": lambda q: [h.experience.id for h in cold.search(q, args.k, record_use=False)],
        "warm": lambda q: [h.experience.id for h in warm.search(q, args.k, record_use=False)],
        "warm_use": lambda q: [h.experience.id for h in warm.search(q, args.k)],
    }
    times: dict[str, list[float]] = {key: [] for key in calls}
    order = list(calls)
    for j, q in enumerate(queries):
        found = {}
        for key in order[j % 4:] + order[:j % 4]:  # rotated: no variant always runs first
            t0 = time.perf_counter()
            found[key] = calls[key](q)
            if j >= args.warmup:
                times[key].append(time.perf_counter() - t0)
        assert all(ids == found["raw"] for ids in found.values())
    cold.close()
    warm.close()
    size_mb = path.stat().st_size / 2**20
    if not args.keep:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    stats = {key: _ms(v) for key, v in times.items()}
    return {"n": n, "index": args.index, "dim": args.dim, "k": args.k, "queries": args.queries,
            "load_s": load_s, "load_rows_per_s": n / load_s, "reopen_s": open_s, "quick_check_s": verify_s,
            "file_mb": size_mb, **stats,
            **{f"ratio_{key}": stats["raw"]["p50_ms"] / stats[key]["p50_ms"] for key in ("cold", "warm", "warm_use")}}


def bench_add(work: Path, args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(args.seed + 1)
    n = args.adds
    vectors = rng.standard_normal((n, args.dim)).astype(np.float32)
    pool = [_image(rng, 64) for _ in range(n)]
    crops = [_image(rng, 32) for _ in range(n)]
    exps = list(_experiences(vectors, pool, crops))
    path, base = work / "add.sqlite", work / "add-baseline.sqlite"
    for p in (path, base):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{p}{suffix}").unlink(missing_ok=True)
    # Baseline: the same bytes (trajectory JSON stand-in, both PNGs, the embedding), one durable commit per row.
    rows = [(json.dumps({"q": e.trajectory.question, "a": e.answer}) * 4, png_bytes(e.trajectory.images[0]),
             png_bytes(e.trajectory.steps[0].observation.images[0]), e.embedding.tobytes()) for e in exps]
    conn = sqlite3.connect(base, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, j TEXT, a BLOB, b BLOB, e BLOB)")
    lat, base_lat = [], []
    with ExperienceBuffer.open(path, args.dim) as buf:
        for e, row in zip(exps, rows):  # interleaved: load from other work hits both alike
            t0 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (j, a, b, e) VALUES (?, ?, ?, ?)", row)
            conn.execute("COMMIT")
            t1 = time.perf_counter()
            buf.add(e)
            t2 = time.perf_counter()
            base_lat.append(t1 - t0)
            lat.append(t2 - t1)
        assert len(buf) == n
    conn.close()
    add_s, base_s = sum(lat), sum(base_lat)
    if not args.keep:
        for p in (path, base):
            for suffix in ("", "-wal", "-shm"):
                Path(f"{p}{suffix}").unlink(missing_ok=True)
    return {"adds": n, "adds_per_s": n / add_s, "add": _ms(lat), "baseline_commits_per_s": n / base_s,
            "ratio_baseline_time_over_buffer_time": base_s / add_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--index", choices=["flat", "hnsw"], default="flat")
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--adds", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="faiss OpenMP threads (both sides)")
    ap.add_argument("--work", type=Path, default=Path("runs/bench"))
    ap.add_argument("--keep", action="store_true", help="keep the buffer files")
    args = ap.parse_args()
    faiss.omp_set_num_threads(args.threads)
    work = args.work / "buffer_knn"
    work.mkdir(parents=True, exist_ok=True)
    results = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "faiss": faiss.__version__, "sqlite": sqlite3.sqlite_version, "cpus": os.cpu_count(),
               "faiss_threads": faiss.omp_get_max_threads(), "knn": []}
    print(f"faiss {faiss.__version__}, SQLite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs, "
          f"faiss threads {faiss.omp_get_max_threads()}", flush=True)

    print(f"\nadd(): {args.adds} durable adds (WAL, synchronous=FULL)", flush=True)
    a = bench_add(work, args)
    results["add"] = a
    print(f"  buffer add       {a['adds_per_s']:8.0f} adds/s   (p50 {a['add']['p50_ms']:.2f} ms)")
    print(f"  bare commits     {a['baseline_commits_per_s']:8.0f} rows/s")
    print(f"  ratio baseline/buffer time = {a['ratio_baseline_time_over_buffer_time']:.2f}")

    for n in args.sizes:
        print(f"\nk-NN, {n:,} vectors, dim {args.dim}, index {args.index}, k {args.k}", flush=True)
        r = bench_knn(work, n, args)
        results["knn"].append(r)
        print(f"  bulk load {r['load_s']:.0f} s ({r['load_rows_per_s']:,.0f} rows/s), file {r['file_mb']:.0f} MB, "
              f"reopen {r['reopen_s']:.1f} s (+ quick_check {r['quick_check_s']:.1f} s)")
        print(f"  {'':40} {'p50 ms':>8} {'p90 ms':>8} {'raw/buffer':>10}")
        for name, key in (("raw faiss index.search", "raw"),
                          ("search, images decoded (no cache)", "cold"),
                          ("search, images from the cache", "warm"),
                          ("search, cache, record_use=True", "warm_use")):
            ratio = f"{r['ratio_' + key]:10.2f}" if key != "raw" else ""
            print(f"  {name:40} {r[key]['p50_ms']:8.3f} {r[key]['p90_ms']:8.3f} {ratio}")
        print("  (goal raw/buffer >= 0.90)", flush=True)

    out = args.work / "buffer_knn.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
