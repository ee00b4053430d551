"""The durable experience buffer: crash safety under SIGKILL, concurrent readers, bad files, exact k-NN, retention."""

import importlib.util
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixelis.core.config import OnlineConfig
from pixelis.core.errors import PixelisError
from pixelis.core.trajectory import Observation, Step, ToolCall, ToolErrorInfo, Trajectory
from pixelis.online import buffer as buffer_module
from pixelis.online.buffer import BufferError, Experience, ExperienceBuffer, ExperienceStore, content_hash

WRITER = Path(__file__).resolve().parents[1] / "helpers" / "buffer_writer.py"
_spec = importlib.util.spec_from_file_location("buffer_writer", WRITER)
writer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(writer)
make_experience, DIM = writer.make_experience, writer.DIM


def _table_ids(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM experiences ORDER BY id")]


def _assert_consistent(buf: ExperienceBuffer) -> list[int]:
    """The faiss index holds exactly the table's ids; no image row is orphaned, no link dangles."""
    ids = _table_ids(buf.path)
    buf.refresh()
    assert buf.index_ids().tolist() == ids
    if buf.index_kind == "flat":
        assert buf.index.ntotal == len(ids)
    with sqlite3.connect(buf.path) as conn:
        orphans = conn.execute("SELECT COUNT(*) FROM media WHERE hash NOT IN (SELECT hash FROM experience_media)")
        assert orphans.fetchone()[0] == 0
        dangling = conn.execute("SELECT COUNT(*) FROM experience_media WHERE experience_id NOT IN "
                                "(SELECT id FROM experiences) OR hash NOT IN (SELECT hash FROM media)")
        assert dangling.fetchone()[0] == 0
    return ids


def _assert_same(stored: Experience, expected: Experience) -> None:
    assert stored.query_id == expected.query_id
    assert stored.answer == expected.answer
    assert stored.trajectory == expected.trajectory  # steps, calls, observations, images (pixels), metadata
    assert stored.votes == expected.votes
    assert stored.confidence == pytest.approx(expected.confidence)
    assert stored.model_version == expected.model_version and stored.trace_id == expected.trace_id
    e = expected.embedding / np.linalg.norm(expected.embedding)
    np.testing.assert_allclose(stored.embedding, e, rtol=1e-6, atol=1e-6)


class _Writer:
    """The helper writer process, its acknowledgements read by a thread."""

    def __init__(self, path: Path, start: int, *args: str):
        self.proc = subprocess.Popen([sys.executable, str(WRITER), str(path), str(start), *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.ready = threading.Event()
        self.acks: list[tuple[int, int]] = []  # (row id, experience number)
        self.done = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            parts = line.split()
            if parts == ["ready"]:
                self.ready.set()
            elif parts[:1] == ["ack"]:
                self.acks.append((int(parts[1]), int(parts[2][1:])))
            elif parts == ["done"]:
                self.done = True

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.wait()

    def wait(self, timeout: float = 60) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(timeout)
        self.stderr = self.proc.stderr.read()
        return rc


# ------------------------------------------------------------------------------------------ crashes

def test_every_acknowledged_add_survives_sigkill(tmp_path):
    path = tmp_path / "buf.sqlite"
    rng = random.Random(1234)
    acked: dict[int, int] = {}  # row id -> experience number
    start = 0
    for _ in range(10):
        w = _Writer(path, start)
        assert w.ready.wait(60), "writer did not open the buffer"
        time.sleep(rng.uniform(0.0, 0.35))
        w.kill()
        assert w.proc.returncode == -signal.SIGKILL, w.stderr
        for row_id, i in w.acks:
            assert acked.setdefault(row_id, i) == i  # a re-added (committed, unacknowledged) query keeps its id
        with ExperienceBuffer.open(path, DIM) as buf:
            ids = _assert_consistent(buf)
            assert set(acked) <= set(ids)
            for row_id, i in acked.items():
                _assert_same(buf.get(row_id), make_experience(i))
            numbers = [int(e.query_id[1:]) for e in buf.recent(len(ids))]
            assert len(numbers) == len(set(numbers)) == len(ids)  # no query twice
            assert max(numbers, default=-1) <= start + len(w.acks)  # at most one add committed unacknowledged
        # Resume after the last acknowledged one: one committed but unacknowledged add is deduplicated.
        start = max(acked.values(), default=-1) + 1
    assert len(acked) >= 10


def test_sigkill_during_eviction_keeps_table_and_index_in_step(tmp_path):
    path = tmp_path / "buf.sqlite"
    rng = random.Random(99)
    start = 0
    for _ in range(4):
        w = _Writer(path, start, "--max-rows", "12")
        assert w.ready.wait(60)
        time.sleep(rng.uniform(0.1, 0.4))
        w.kill()
        with ExperienceBuffer.open(path, DIM, max_rows=12) as buf:
            ids = _assert_consistent(buf)
            if ids:  # ids count the adds (no resumed query was a duplicate); age keeps the newest, contiguous
                assert ids == list(range(max(1, ids[-1] - 11), ids[-1] + 1))
            if w.acks:  # every acknowledged row still that new is there; at most one newer, unacknowledged
                assert w.acks[-1][0] <= ids[-1] <= w.acks[-1][0] + 1, (w.acks[-1], ids)
            for row_id, i in w.acks:
                if row_id >= ids[0]:
                    _assert_same(buf.get(row_id), make_experience(i))
        start += len(w.acks) + 1  # past a possibly committed, unacknowledged one


# -------------------------------------------------------------------------------------- concurrency

def test_readers_see_a_concurrent_writer(tmp_path):
    path = tmp_path / "buf.sqlite"
    ExperienceBuffer.open(path, DIM).close()
    reader = ExperienceBuffer.open(path, DIM)
    ro_reader = ExperienceBuffer.open(path, DIM, read_only=True)
    # paced, so the reads interleave with the writes even where the writer would outrun the reader's loop
    w = _Writer(path, 0, "--count", "120", "--pause", "0.01")
    counts, errors = [], []
    query_rng = np.random.default_rng(0)
    while w.proc.poll() is None:
        try:
            counts.append(len(reader))
            for buf in (reader, ro_reader):
                seen = len(buf)
                hits = buf.search(query_rng.standard_normal(DIM), 4)  # the reader writes use counts too
                assert min(4, seen) <= len(hits) <= 4
                assert all(h.experience.query_id == f"q{h.experience.id - 1}" for h in hits)
        except Exception as exc:  # noqa: BLE001 - collected and reported below
            errors.append(repr(exc))
            break
    assert w.wait() == 0, w.stderr
    assert not errors
    assert counts == sorted(counts), "a count decreased without eviction"
    assert len(reader) == len(ro_reader) == 120 and len(w.acks) == 120
    assert len(set(counts)) > 3, "the reader never ran while the writer wrote"
    _assert_consistent(reader)
    assert ro_reader.index_ids().tolist() == _table_ids(path)
    reader.close()
    ro_reader.close()


def test_other_buffers_see_evictions_and_catch_up_after_the_log_is_pruned(tmp_path, monkeypatch):
    path = tmp_path / "buf.sqlite"
    a = ExperienceBuffer.open(path, DIM, max_rows=5)
    b = ExperienceBuffer.open(path, DIM)
    c = ExperienceBuffer.open(path, DIM, index="hnsw")
    a.add_many(make_experience(i) for i in range(8))
    assert len(b) == len(c) == 5
    assert b.index_ids().tolist() == c.index_ids().tolist() == _table_ids(path) == [4, 5, 6, 7, 8]
    b.add(make_experience(100))  # b has no retention of its own, but sees a's rows and evictions
    assert len(a) == 6
    monkeypatch.setattr(buffer_module, "EVICTION_LOG_KEEP", 2)
    for i in range(8, 20):
        a.add(make_experience(i))
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM evictions").fetchone()[0] <= 3
    ids = _table_ids(path)
    for buf in (b, c):
        assert len(buf) == 5 and buf.index_ids().tolist() == ids
        hits = buf.search(make_experience(19).embedding, 5)
        assert {h.experience.id for h in hits} == set(ids)
    for buf in (a, b, c):
        buf.close()


# -------------------------------------------------------------------------------------- bad files

def _real_buffer(path: Path, n: int = 40) -> Path:
    with ExperienceBuffer.open(path, DIM) as buf:
        buf.add_many(make_experience(i) for i in range(n))
    return path


def test_random_bytes_are_refused(tmp_path):
    path = tmp_path / "noise.sqlite"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 8192, dtype=np.uint8).tobytes())
    with pytest.raises(BufferError, match=re.escape(str(path)) + ".*not a SQLite database"):
        ExperienceBuffer.open(path, DIM)
    assert issubclass(BufferError, PixelisError)


@pytest.mark.parametrize("keep", [0.9, 0.5, 0.1])
def test_truncated_buffer_is_refused(tmp_path, keep):
    data = _real_buffer(tmp_path / "real.sqlite").read_bytes()
    path = tmp_path / "truncated.sqlite"
    path.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(BufferError, match=re.escape(str(path)) + ".*corrupted"):
        ExperienceBuffer.open(path, DIM)


def test_damaged_pages_are_refused_at_open(tmp_path):
    data = bytearray(_real_buffer(tmp_path / "real.sqlite").read_bytes())
    rng = np.random.default_rng(3)
    for offset in rng.integers(4096, len(data) - 64, 8):
        data[offset:offset + 48] = rng.integers(0, 256, 48, dtype=np.uint8).tobytes()
    path = tmp_path / "damaged.sqlite"
    path.write_bytes(bytes(data))
    with pytest.raises(BufferError, match=re.escape(str(path)) + ".*corrupted"):
        ExperienceBuffer.open(path, DIM)


def test_foreign_sqlite_databases_are_refused(tmp_path):
    path = tmp_path / "app.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
    with pytest.raises(BufferError, match=re.escape(str(path)) + ".*not a Pixelis experience buffer.*users"):
        ExperienceBuffer.open(path, DIM)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute("INSERT INTO meta VALUES ('schema', 'someone.else')")
    with pytest.raises(BufferError, match=re.escape(str(other)) + ".*someone.else"):
        ExperienceBuffer.open(other, DIM)
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM users").fetchone()[0] == 0  # left untouched


def test_dim_mismatch_is_refused(tmp_path):
    path = _real_buffer(tmp_path / "real.sqlite", n=3)
    with pytest.raises(BufferError, match=re.escape(str(path)) + f".*holds {DIM}-dimensional.*but 32"):
        ExperienceBuffer.open(path, 32)
    with ExperienceBuffer.open(path, None) as buf:  # dim None reads the file's
        assert buf.dim == DIM and len(buf) == 3
        with pytest.raises(BufferError, match="shape"):
            buf.search(np.ones(32), 2)


def test_read_only_and_missing(tmp_path):
    with pytest.raises(BufferError, match="not found"):
        ExperienceBuffer.open(tmp_path / "missing.sqlite", DIM, read_only=True)
    path = _real_buffer(tmp_path / "real.sqlite", n=2)
    with ExperienceBuffer.open(path, DIM, read_only=True) as buf:
        assert buf.search(make_experience(0).embedding, 1)[0].experience.use_count == 0  # no use recorded
        with pytest.raises(BufferError, match="read-only"):
            buf.add(make_experience(5))


# ---------------------------------------------------------------------------------------------- k-NN

def _vector_experience(i: int, vec: np.ndarray) -> Experience:
    traj = Trajectory(id=f"v{i}", question=f"vector {i}", answer="x")
    return Experience(query_id=f"v{i}", trajectory=traj, answer="x", confidence=1.0, votes={}, embedding=vec,
                      model_version=0, trace_id=None)


def _brute_force(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = q @ v.T
    order = np.argsort(-sims, axis=1)[:, :k]
    return order + 1, np.take_along_axis(sims, order, axis=1)  # row ids start at 1


def test_flat_knn_equals_brute_force_cosine(tmp_path):
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((300, 24)).astype(np.float32) * rng.uniform(0.1, 10, (300, 1)).astype(np.float32)
    queries = rng.standard_normal((25, 24)).astype(np.float32)
    with ExperienceBuffer.open(tmp_path / "b.sqlite", 24) as buf:
        assert buf.add_many(_vector_experience(i, v) for i, v in enumerate(vectors)) == list(range(1, 301))
        ids, sims = _brute_force(vectors, queries, 10)
        for q, want_ids, want_sims in zip(queries, ids, sims):
            hits = buf.search(q, 10, record_use=False)
            assert [h.experience.id for h in hits] == want_ids.tolist()
            np.testing.assert_allclose([h.similarity for h in hits], want_sims, atol=1e-5)
        threshold = float(sims[0, 4])
        assert len(buf.search(queries[0], 10, min_similarity=threshold - 1e-6)) == 5


def test_hnsw_knn_has_high_recall_and_hides_evicted(tmp_path):
    rng = np.random.default_rng(8)
    vectors = rng.standard_normal((400, 24)).astype(np.float32)
    queries = rng.standard_normal((40, 24)).astype(np.float32)
    with ExperienceBuffer.open(tmp_path / "b.sqlite", 24, index="hnsw", hnsw_m=16) as buf:
        buf.add_many(_vector_experience(i, v) for i, v in enumerate(vectors))
        ids, _ = _brute_force(vectors, queries, 10)
        found = [{h.experience.id for h in buf.search(q, 10, record_use=False)} for q in queries]
        recall = np.mean([len(f & set(w.tolist())) / 10 for f, w in zip(found, ids)])
        assert recall >= 0.95, recall
    # Evictions: HNSW cannot remove, so evicted ids are hidden (and the graph rebuilt past a tenth).
    with ExperienceBuffer.open(tmp_path / "b.sqlite", 24, index="hnsw", max_rows=350) as buf:
        buf.add(_vector_experience(1000, rng.standard_normal(24)))
        assert len(buf) == 350 and buf.index_ids().tolist() == _table_ids(buf.path)
        assert buf.index.ntotal == 350  # 51 evicted > a tenth: rebuilt
        for i in range(1001, 1011):
            buf.add(_vector_experience(i, rng.standard_normal(24)))
        live = set(_table_ids(buf.path))
        assert buf.index.ntotal == 360 and buf.index_ids().tolist() == sorted(live)
        for q in vectors[:60]:  # the evicted rows' own vectors never come back
            assert {h.experience.id for h in buf.search(q, 10, record_use=False)} <= live


# ------------------------------------------------------------------------------ records and retention

def _image(seed: int, size=(20, 14), mode="RGB") -> Image.Image:
    im = Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    return im.convert(mode)


def test_trajectory_with_observation_images_round_trips_exactly(tmp_path):
    crop, mask = _image(2, (32, 32)), _image(3, (10, 10), "L")
    traj = Trajectory(
        id="t-1", question="Which object moves left?", images=[_image(1)],
        video=[_image(10 + f, (16, 12)) for f in range(3)] + [_image(10, (16, 12))],  # a repeated frame
        steps=[
            Step(thought="Wrong box first.", call=ToolCall("zoom_in", {"image": 0, "bbox": [90, 0, 90, 10]}),
                 observation=Observation(error=ToolErrorInfo("invalid_box", "empty box")), kind="trap"),
            Step(raw_text="<tool_call>{broken</tool_call>",
                 observation=Observation(error=ToolErrorInfo("malformed_call", "not JSON"))),
            Step(thought="Zoom.", call=ToolCall("zoom_in", {"image": 0, "bbox": [1, 2, 10, 12]}),
                 observation=Observation(text="Zoomed.", images=[crop, mask], data={"scale": 2.5, "box": [1, 2]}),
                 kind="correction"),
            Step(thought="Again.", call=ToolCall("track", {"frames": [0, 3]}),
                 observation=Observation(text="Track.", images=[crop], data={"path": [[1, 2], [3, 4]]})),
        ],
        final_thought="It moves left.", answer="the red one", target=None,
        metadata={"family": "track", "difficulty": "hard", "nested": {"a": [1, 2.5, None, True]}},
    )
    exp = Experience(query_id="q-1", trajectory=traj, answer="the red one", confidence=0.75,
                     votes={"the red one": 3, "the blue one": 1}, embedding=np.arange(1, DIM + 1, dtype=np.float32),
                     model_version=4, trace_id="ab" * 16)
    with ExperienceBuffer.open(tmp_path / "b.sqlite", DIM) as buf:
        row_id = buf.add(exp)
        stored = buf.get(row_id)
        _assert_same(stored, exp)
        assert stored.trajectory.video[3] == traj.video[0]
        assert stored.trajectory.steps[2].observation.images[1].mode == "L"
        assert stored.content_hash == exp.content_hash == content_hash(traj)
        assert stored.use_count == 0 and stored.created_at is not None and stored.id == row_id
        with sqlite3.connect(buf.path) as conn:  # every distinct image stored once
            assert conn.execute("SELECT COUNT(*) FROM media").fetchone()[0] == 1 + 3 + 2
    with ExperienceBuffer.open(tmp_path / "b.sqlite", DIM) as buf:
        _assert_same(buf.get(row_id), exp)
        assert buf.get(row_id + 1) is None


def test_duplicate_queries_are_stored_once(tmp_path):
    with ExperienceBuffer.open(tmp_path / "b.sqlite", DIM) as buf:
        first = buf.add(make_experience(1))
        again = make_experience(1)
        again.answer, again.embedding = "different", np.ones(DIM, np.float32)  # same question and pixels
        assert buf.add(again) == first
        copy = make_experience(1)
        copy.trajectory.images = [im.copy() for im in copy.trajectory.images]  # equal pixels, other objects
        assert buf.add(copy) == first
        other = make_experience(1)
        other.trajectory.question += " (rephrased)"
        assert buf.add(other) != first
        assert buf.add_many([make_experience(2), make_experience(2), make_experience(1)]) == [3, 3, first]
        assert len(buf) == 3 and buf.get(first).answer == "a1"
        _assert_consistent(buf)


def test_retention_by_age(tmp_path):
    with ExperienceBuffer.open(tmp_path / "b.sqlite", DIM, max_rows=5, eviction="age") as buf:
        for i in range(8):
            buf.add(make_experience(i))
        assert _assert_consistent(buf) == [4, 5, 6, 7, 8]
        assert [e.query_id for e in buf.recent(3)] == ["q7", "q6", "q5"]
        with sqlite3.connect(buf.path) as conn:  # the evicted rows' images went with them
            assert conn.execute("SELECT COUNT(*) FROM media").fetchone()[0] == 2 * 5
        assert buf.add_many(make_experience(i) for i in range(20, 27)) == list(range(9, 16))
        assert _assert_consistent(buf) == [11, 12, 13, 14, 15]  # one call over max_rows keeps its newest


def test_retention_by_use(tmp_path):
    with ExperienceBuffer.open(tmp_path / "b.sqlite", DIM, max_rows=4, eviction="use") as buf:
        ids = [buf.add(make_experience(i)) for i in range(4)]
        for row_id in (ids[0], ids[2], ids[0]):
            hit = buf.search(make_experience(row_id - 1).embedding, 1)
            assert hit[0].experience.id == row_id and hit[0].similarity == pytest.approx(1.0)
        assert buf.get(ids[0]).use_count == 2 and buf.get(ids[1]).use_count == 0
        buf.add(make_experience(10))  # least used, oldest first: ids[1]
        assert _assert_consistent(buf) == [ids[0], ids[2], ids[3], 5]
        buf.add(make_experience(11))  # ids[3] (unused, older than 5); the new row itself is never the victim
        assert _assert_consistent(buf) == [ids[0], ids[2], 5, 6]


def test_search_records_use(tmp_path):
    with ExperienceBuffer.open(tmp_path / "b.sqlite", DIM) as buf:
        buf.add_many(make_experience(i) for i in range(6))
        assert buf.search(make_experience(0).embedding, 3, min_similarity=2.0) == []
        before = time.time()
        hits = buf.search(make_experience(0).embedding, 3)
        assert len(hits) == 3 and hits[0].experience.id == 1
        assert [h.similarity for h in hits] == sorted((h.similarity for h in hits), reverse=True)
        assert all(h.experience.use_count == 1 and h.experience.last_used_at >= before for h in hits)
        buf.search(make_experience(0).embedding, 3, record_use=False)
        assert buf.get(1).use_count == 1 and buf.get(6).use_count == 0
        assert buf.search(make_experience(0).embedding, 50, record_use=False)[-1].experience.id in range(1, 7)


def test_interface_and_config(tmp_path):
    cfg = OnlineConfig(index="hnsw", hnsw_m=8, max_buffer=3, eviction="use")
    with ExperienceBuffer.from_config(tmp_path / "sub" / "b.sqlite", DIM, cfg) as buf:
        assert isinstance(buf, ExperienceStore)
        assert (buf.index_kind, buf.hnsw_m, buf.max_rows, buf.eviction) == ("hnsw", 8, 3, "use")
        buf.add_many(make_experience(i) for i in range(5))
        assert len(buf) == 3 and buf.recent(0) == []
    buf.close()  # twice is fine
    with pytest.raises(BufferError, match="closed"):
        len(buf)
    with ExperienceBuffer.open(tmp_path / "c.sqlite", DIM) as other:
        with pytest.raises(BufferError, match="non-finite"):
            other.add(_vector_experience(0, np.full(DIM, np.nan)))
        bad = make_experience(1)
        bad.votes = {"a": object()}
        with pytest.raises(BufferError, match="'q1': its votes cannot be stored as JSON"):
            other.add(bad)
        assert len(other) == 0
    assert os.path.isfile(tmp_path / "sub" / "b.sqlite")
