"""The durable experience buffer of online test-time learning: what the engine learned from, searchable by query.

An `Experience` is one answered query: the chosen trajectory (its question, images and video are the query), the
voted answer with its confidence and votes, the query's embedding, the model version that answered and the trace
id of the request. `ExperienceBuffer` keeps experiences in one SQLite file and answers k-nearest-neighbour
queries over their embeddings with a faiss index (``IndexIDMap`` over ``IndexFlatIP``, or ``IndexHNSWFlat`` for
``index="hnsw"``; ids are the table's row ids). Embeddings are L2-normalised on add and on query, so the inner
product is the cosine similarity.

Durability. SQLite is the record of truth (WAL journal, ``synchronous=FULL``): `add` returns an id only after its
transaction committed, so an acknowledged experience survives a crash of the process and a power loss. The faiss
index is never written to disk; it is rebuilt from the table at `open` and kept in step on every add and
eviction, so a crash cannot leave the index and the table out of step. Use statistics written by `search`
(``use_count``, ``last_used_at``) are committed with ``synchronous=NORMAL``: they survive a process crash, and a
power loss may lose the latest of them (the next durable commit flushes them too).

Storage. Images (query images, video frames, tool observation images) are content-addressed: stored once as PNG
in the ``media`` table under the sha256 of their PNG bytes, and the trajectory is stored as the JSON of
`pixelis.core.trajectory.trajectory_to_dict` with every image replaced by its hash. An experience is identified
by `content_hash` (sha256 over the question and the PNG bytes of every query image and video frame): adding the
same query again returns the existing id. Decoded images are kept in a small LRU cache (by hash, so never
stale): decoding PNGs is most of the cost of returning experiences.

Concurrency. Any number of processes on one host may open the same file (WAL needs one host); a busy timeout of
30 s makes writers and readers wait for each other instead of failing. Each buffer sees what other processes
committed since its last look: `refresh` (called at the start of `search`, `len` and `add`) loads the rows added
since and drops the evicted ones, at the cost of one ``PRAGMA data_version`` when nothing changed. A buffer object
is safe to share between threads.

Retention. With ``max_rows`` set, an add that makes the buffer larger evicts, in the same transaction, the oldest
experiences (``eviction="age"``, by ``created_at``) or the least used (``"use"``, by ``use_count``, then age); the
experiences the call itself added go last. Images no longer referenced are deleted with them.

Interface (`ExperienceStore` is the protocol a server-database backend would implement)::

    buf = ExperienceBuffer.open(path, dim, index="flat", hnsw_m=32, max_rows=None, eviction="age",
                                read_only=False, verify=True, image_cache_mb=64)
    buf = ExperienceBuffer.from_config(path, dim, online_config)
    id = buf.add(experience)                 # durable when it returns; a duplicate returns the existing id
    ids = buf.add_many(experiences)          # bulk load: one transaction per `chunk` experiences
    hits = buf.search(embedding, k, min_similarity=-1.0, record_use=True)   # [Neighbour(experience, similarity)]
    buf.get(id)                              # the experience, or None (never stored, or evicted)
    buf.recent(n)                            # the n newest, newest first
    len(buf); buf.refresh(); buf.index_ids(); buf.close()                   # also a context manager

A file that is not a SQLite database, is corrupted, is another application's database, or holds embeddings of
another dimension raises one `BufferError` naming the file and what is wrong.

faiss notes: ``IndexHNSWFlat`` cannot remove vectors (``remove_ids not implemented``), so for ``index="hnsw"``
evicted ids are hidden from searches by an ``IDSelector`` and the graph is rebuilt once they exceed a tenth of it;
`index_ids` lists the live ids either way.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

# faiss logs a ModuleNotFoundError at INFO each time it falls back from a CPU-specific build: not an error.
logging.getLogger("faiss.loader").setLevel(logging.WARNING)

import faiss  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from pixelis.core.errors import PixelisError, describe
from pixelis.core.trajectory import Trajectory, trajectory_from_dict, trajectory_to_dict

if TYPE_CHECKING:
    from pixelis.core.config import OnlineConfig

__all__ = ["BufferError", "Experience", "ExperienceBuffer", "ExperienceStore", "Neighbour", "content_hash",
           "png_bytes"]

SCHEMA = "pixelis.experience_buffer"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 64
EVICTION_LOG_KEEP = 10_000  # eviction log entries kept for other processes' refresh; older ones force a full reload
IMAGE_CACHE_MB = 64

IndexKind = Literal["flat", "hnsw"]
Eviction = Literal["age", "use"]


class BufferError(PixelisError):  # noqa: A001 - shadows the builtin only inside this module's namespace
    """An experience buffer file that cannot be used (not SQLite, corrupted, foreign, other dim), or misuse of one."""


# ------------------------------------------------------------------------------------------- records

def png_bytes(image: Image.Image) -> bytes:
    """The PNG encoding of `image` (what the buffer stores and hashes)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _query_key(question: str, image_hashes: Sequence[str], video_hashes: Sequence[str] | None) -> str:
    key = {"question": question, "images": list(image_hashes),
           "video": None if video_hashes is None else list(video_hashes)}
    return _sha256(json.dumps(key, sort_keys=True, ensure_ascii=False).encode("utf-8"))


def content_hash(trajectory: Trajectory) -> str:
    """The dedup key of a query: sha256 over its question and the PNG bytes of every query image and video frame."""
    video = None if trajectory.video is None else [_sha256(png_bytes(im)) for im in trajectory.video]
    return _query_key(trajectory.question, [_sha256(png_bytes(im)) for im in trajectory.images], video)


@dataclass
class Experience:
    """One answered query: the chosen trajectory (whose question/images/video are the query) and how it was chosen.

    `embedding` is the query's 1-D float32 embedding (stored L2-normalised). `id`, `created_at`, `last_used_at`
    and `use_count` are filled in by the buffer; a `created_at` given to `add` is kept.
    """

    query_id: str
    trajectory: Trajectory
    answer: str
    confidence: float
    votes: dict[str, Any]
    embedding: np.ndarray
    model_version: int
    trace_id: str | None = None
    id: int | None = None
    created_at: float | None = None
    last_used_at: float | None = None
    use_count: int = 0

    @property
    def content_hash(self) -> str:
        """See the module function `content_hash`."""
        return content_hash(self.trajectory)


@dataclass
class Neighbour:
    """A stored experience and the cosine similarity of its embedding to the query."""

    experience: Experience
    similarity: float


@runtime_checkable
class ExperienceStore(Protocol):
    """What the online engine and worker need from an experience store (SQLite here; a server database later)."""

    def add(self, exp: Experience) -> int: ...

    def add_many(self, exps: Iterable[Experience], chunk: int = ...) -> list[int]: ...

    def search(self, embedding: np.ndarray, k: int, min_similarity: float = ..., *,
               record_use: bool = ...) -> list[Neighbour]: ...

    def get(self, id: int) -> Experience | None: ...

    def recent(self, n: int) -> list[Experience]: ...

    def refresh(self) -> None: ...

    def __len__(self) -> int: ...

    def close(self) -> None: ...


@dataclass
class _Encoded:
    """An experience as it goes into the table."""

    content_hash: str
    query_media: str  # JSON {"images": [...], "video": [...] | null}
    trajectory: str  # JSON with images replaced by media hashes
    votes: str
    media: dict[str, bytes] = field(default_factory=dict)  # hash -> PNG, every image the trajectory holds
    embedding: np.ndarray | None = None


# --------------------------------------------------------------------------------------------- schema

_SCHEMA_SQL = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE experiences (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    content_hash TEXT NOT NULL UNIQUE,
    query_id TEXT NOT NULL,
    embedding BLOB NOT NULL,
    model_version INTEGER NOT NULL,
    confidence REAL NOT NULL,
    created_at REAL NOT NULL,
    last_used_at REAL,
    use_count INTEGER NOT NULL DEFAULT 0,
    trace_id TEXT,
    answer TEXT NOT NULL,
    question TEXT NOT NULL,
    media TEXT NOT NULL,
    votes TEXT NOT NULL,
    trajectory TEXT NOT NULL
);
CREATE INDEX experiences_by_age ON experiences (created_at, id);
CREATE INDEX experiences_by_use ON experiences (use_count, created_at, id);
CREATE TABLE media (hash TEXT PRIMARY KEY, png BLOB NOT NULL);
CREATE TABLE experience_media (
    hash TEXT NOT NULL,
    experience_id INTEGER NOT NULL,
    PRIMARY KEY (hash, experience_id)
) WITHOUT ROWID;
CREATE INDEX experience_media_by_experience ON experience_media (experience_id);
CREATE TABLE evictions (seq INTEGER PRIMARY KEY AUTOINCREMENT, experience_id INTEGER NOT NULL);
"""
_TABLES = {"meta", "experiences", "media", "experience_media", "evictions"}
# Embedding first among the payload columns: loading the index reads it without walking the trajectory's pages.
_COLUMNS = ("id, query_id, embedding, model_version, confidence, created_at, last_used_at, use_count, trace_id, "
            "answer, votes, trajectory")


# --------------------------------------------------------------------------------------------- buffer

class _ImageCache:
    """Decoded images by media hash, least recently used out first, bounded in decoded bytes.

    Content-addressed, so never stale. Hands out copies: a caller may change its images freely.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes = max_bytes, 0
        self._images: OrderedDict[str, Image.Image] = OrderedDict()

    def get(self, h: str) -> Image.Image | None:
        image = self._images.get(h)
        if image is None:
            return None
        self._images.move_to_end(h)
        return image.copy()

    def put(self, h: str, image: Image.Image) -> None:
        size = _decoded_bytes(image)
        if size > self.max_bytes or h in self._images:
            return
        self._images[h] = image.copy()
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, old = self._images.popitem(last=False)
            self.bytes -= _decoded_bytes(old)

    def __contains__(self, h: str) -> bool:
        return h in self._images


def _decoded_bytes(image: Image.Image) -> int:
    return image.width * image.height * max(1, len(image.getbands()))


class ExperienceBuffer:
    """Experiences in one SQLite file with a faiss index over their embeddings (see the module docstring)."""

    def __init__(self, conn: sqlite3.Connection, path: Path, dim: int, *, index: IndexKind, hnsw_m: int,
                 max_rows: int | None, eviction: Eviction, read_only: bool, image_cache_mb: float):
        self._conn, self.path, self.dim = conn, path, dim
        self._images = _ImageCache(int(image_cache_mb * 2**20))
        self.index_kind, self.hnsw_m, self.max_rows, self.eviction = index, hnsw_m, max_rows, eviction
        self.read_only = read_only
        self._lock = threading.RLock()
        self._closed = False
        self.index: faiss.IndexIDMap = self._new_index()
        self._live: set[int] = set()  # ids in the table as of the last refresh
        self._dead: set[int] = set()  # hnsw only: ids still in the graph but evicted
        self._params: faiss.SearchParameters | None = None
        self._last_id = 0
        self._evict_seq = 0
        self._data_version: int | None = None

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: str | Path, dim: int | None, *, index: IndexKind = "flat", hnsw_m: int = 32,
             max_rows: int | None = None, eviction: Eviction = "age", read_only: bool = False,
             verify: bool = True, image_cache_mb: float = IMAGE_CACHE_MB) -> ExperienceBuffer:
        """Open the buffer at `path`, creating it (and its directory) when missing.

        `dim` is the embedding dimension; None takes the file's (an existing file only). An existing file must be
        a Pixelis experience buffer of that dimension, otherwise `BufferError` names the file and the problem.
        An empty SQLite database (e.g. left by a crash before the schema was committed) is initialised.
        `verify` runs SQLite's ``quick_check`` over the whole file first (it reads the file once), so a damaged
        page is reported at open rather than by a later search. Decoded images are kept in an LRU cache of
        `image_cache_mb` MiB (0: none): PNG decoding is most of the cost of returning experiences.
        """
        path = Path(path)
        if index not in ("flat", "hnsw"):
            raise BufferError(f"{path}: unknown index {index!r}; expected 'flat' or 'hnsw'")
        if eviction not in ("age", "use"):
            raise BufferError(f"{path}: unknown eviction {eviction!r}; expected 'age' or 'use'")
        if max_rows is not None and max_rows < 1:
            raise BufferError(f"{path}: max_rows must be at least 1, got {max_rows}")
        if dim is not None and dim < 1:
            raise BufferError(f"{path}: embedding dim must be at least 1, got {dim}")
        if path.is_dir():
            raise BufferError(f"{path}: is a directory, not an experience buffer file")
        if read_only and not path.is_file():
            raise BufferError(f"{path}: experience buffer not found (opened read-only)")
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
        conn = None
        try:
            if read_only:
                conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S,
                                       isolation_level=None, check_same_thread=False)
            else:
                conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                       check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            dim = _prepare(conn, path, dim, read_only)
            if verify:
                problem = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
                if problem != "ok":
                    raise BufferError(f"{path}: the experience buffer file is corrupted (SQLite quick_check: "
                                      f"{_short(problem)})")
            buf = cls(conn, path, dim, index=index, hnsw_m=hnsw_m, max_rows=max_rows, eviction=eviction,
                      read_only=read_only, image_cache_mb=image_cache_mb)
            buf._reload()
            return buf
        except BufferError:
            if conn is not None:
                conn.close()
            raise
        except (sqlite3.Error, ValueError, RuntimeError) as exc:
            if conn is not None:
                conn.close()
            raise BufferError(f"{path}: cannot open the experience buffer: {_explain(exc)}") from None

    @classmethod
    def from_config(cls, path: str | Path, dim: int | None, cfg: OnlineConfig, *,
                    read_only: bool = False) -> ExperienceBuffer:
        """`open` with the index, retention and eviction of an `online:` config section."""
        return cls.open(path, dim, index=cfg.index, hnsw_m=cfg.hnsw_m, max_rows=cfg.max_buffer,
                        eviction=cfg.eviction, read_only=read_only)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> ExperienceBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"ExperienceBuffer({str(self.path)!r}, dim={self.dim}, index={self.index_kind!r}, "
                f"rows={len(self._live)})")

    # ------------------------------------------------------------------ writing

    def add(self, exp: Experience) -> int:
        """Store `exp` and return its row id once the transaction committed; a stored query returns its id."""
        return self.add_many([exp])[0]

    def add_many(self, exps: Iterable[Experience], chunk: int = 1000) -> list[int]:
        """Store experiences in transactions of `chunk` rows (the bulk-load path); returns their ids in order.

        Each transaction is durable when it commits; if the process dies midway, the committed chunks stay.
        Retention runs once per transaction. An image object shared by several experiences of one chunk is
        encoded once.
        """
        self._writable()
        out: list[int] = []
        batch: list[Experience] = []
        for exp in exps:
            batch.append(exp)
            if len(batch) >= chunk:
                out.extend(self._add_batch(batch))
                batch = []
        if batch:
            out.extend(self._add_batch(batch))
        return out

    def _add_batch(self, exps: list[Experience]) -> list[int]:
        pngs: dict[int, tuple[str, bytes]] = {}  # id(image) -> (hash, PNG); `exps` keeps the images alive
        encoded = [self._encode(e, pngs) for e in exps]  # PNG encoding and JSON outside the write lock
        with self._lock, self._errors("cannot add to the experience buffer"):
            self._check_open()
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                version = self._conn.execute("PRAGMA data_version").fetchone()[0]
                if version != self._data_version:  # others committed: catch up under the write lock
                    self._sync()
                    self._data_version = version
                ids, new_ids, new_vecs = [], [], []
                now = time.time()
                for exp, enc in zip(exps, encoded):
                    row = self._conn.execute("SELECT id FROM experiences WHERE content_hash = ?",
                                             (enc.content_hash,)).fetchone()
                    if row is not None:
                        ids.append(row[0])
                        continue
                    new_id = self._insert(exp, enc, now)
                    ids.append(new_id)
                    new_ids.append(new_id)
                    new_vecs.append(enc.embedding)
                evicted = self._retain(len(self._live) + len(new_ids), new_ids[0]) if new_ids else []
                if evicted:  # read inside the transaction: a later eviction by another process stays unseen
                    evict_seq = self._conn.execute("SELECT MAX(seq) FROM evictions").fetchone()[0]
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            if new_ids:
                self._index_add(np.stack(new_vecs), new_ids)
                self._last_id = max(self._last_id, new_ids[-1])
            if evicted:
                self._index_remove(evicted)
                self._evict_seq = evict_seq
            return ids

    def _encode(self, exp: Experience, pngs: dict[int, tuple[str, bytes]]) -> _Encoded:
        traj = exp.trajectory
        media: dict[str, bytes] = {}

        def save(image: Image.Image) -> str:
            if id(image) not in pngs:
                data = png_bytes(image)
                pngs[id(image)] = (_sha256(data), data)
            h, data = pngs[id(image)]
            media[h] = data
            return h

        record = trajectory_to_dict(traj, save_image=save)
        images, video = record["images"], record["video"]
        return _Encoded(
            content_hash=_query_key(traj.question, images, video),
            query_media=json.dumps({"images": images, "video": video}),
            trajectory=self._json(record, f"experience {exp.query_id!r}: its trajectory"),
            votes=self._json(exp.votes, f"experience {exp.query_id!r}: its votes"),
            media=media,
            embedding=self._normalised(exp.embedding, f"experience {exp.query_id!r}: its embedding"),
        )

    def _json(self, value: Any, what: str) -> str:
        try:
            return json.dumps(value, ensure_ascii=False, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise BufferError(f"{self.path}: {what} cannot be stored as JSON: {describe(exc)}") from None

    def _insert(self, exp: Experience, enc: _Encoded, now: float) -> int:
        c = self._conn
        c.executemany("INSERT OR IGNORE INTO media (hash, png) VALUES (?, ?)", enc.media.items())
        cur = c.execute(
            "INSERT INTO experiences (content_hash, query_id, embedding, model_version, confidence, created_at, "
            "last_used_at, use_count, trace_id, answer, question, media, votes, trajectory) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (enc.content_hash, exp.query_id, enc.embedding.tobytes(), int(exp.model_version),
             float(exp.confidence), now if exp.created_at is None else float(exp.created_at), exp.last_used_at,
             int(exp.use_count), exp.trace_id, exp.answer, exp.trajectory.question, enc.query_media,
             enc.votes, enc.trajectory))
        new_id = cur.lastrowid
        c.executemany("INSERT INTO experience_media (hash, experience_id) VALUES (?, ?)",
                      [(h, new_id) for h in enc.media])
        return new_id

    def _retain(self, rows: int, first_new_id: int) -> list[int]:
        """Evict beyond `max_rows` (inside the write transaction); older rows before this call's own."""
        if self.max_rows is None or rows <= self.max_rows:
            return []
        order = "created_at, id" if self.eviction == "age" else "use_count, created_at, id"
        need = rows - self.max_rows
        victims = [r[0] for r in self._conn.execute(
            f"SELECT id FROM experiences WHERE id < ? ORDER BY {order} LIMIT ?", (first_new_id, need))]
        if len(victims) < need:  # one call added more than max_rows
            victims += [r[0] for r in self._conn.execute(
                f"SELECT id FROM experiences WHERE id >= ? ORDER BY {order} LIMIT ?",
                (first_new_id, need - len(victims)))]
        c = self._conn
        c.execute("CREATE TEMP TABLE IF NOT EXISTS victims (id INTEGER PRIMARY KEY)")
        c.execute("DELETE FROM temp.victims")
        c.executemany("INSERT INTO temp.victims (id) VALUES (?)", [(v,) for v in victims])
        c.execute("CREATE TEMP TABLE IF NOT EXISTS orphans (hash TEXT PRIMARY KEY)")
        c.execute("DELETE FROM temp.orphans")
        c.execute("INSERT OR IGNORE INTO temp.orphans SELECT hash FROM experience_media "
                  "WHERE experience_id IN (SELECT id FROM temp.victims)")
        c.execute("DELETE FROM experience_media WHERE experience_id IN (SELECT id FROM temp.victims)")
        c.execute("DELETE FROM experiences WHERE id IN (SELECT id FROM temp.victims)")
        c.execute("DELETE FROM media WHERE hash IN (SELECT hash FROM temp.orphans) "
                  "AND NOT EXISTS (SELECT 1 FROM experience_media AS l WHERE l.hash = media.hash)")
        c.execute("INSERT INTO evictions (experience_id) SELECT id FROM temp.victims ORDER BY id")
        c.execute("DELETE FROM evictions WHERE seq <= (SELECT MAX(seq) FROM evictions) - ?", (EVICTION_LOG_KEEP,))
        return victims

    # ------------------------------------------------------------------ reading

    def search(self, embedding: np.ndarray, k: int, min_similarity: float = -1.0, *,
               record_use: bool = True) -> list[Neighbour]:
        """The `k` stored experiences most similar (cosine) to `embedding`, best first, those >= `min_similarity`.

        Records the use of the returned ones (``use_count += 1``, ``last_used_at``) in one commit unless
        `record_use` is False or the buffer is read-only; the returned experiences show the recorded values.
        """
        if k < 1:
            raise BufferError(f"{self.path}: k must be at least 1, got {k}")
        query = self._normalised(embedding, "the query embedding")[None, :]
        with self._lock, self._errors("cannot search the experience buffer"):
            self._check_open()
            self._refresh()
            if not self._live:
                return []
            sims, ids = self.index.search(query, min(k, len(self._live)), params=self._search_params(k))
            hits = [(int(i), float(s)) for i, s in zip(ids[0], sims[0]) if i >= 0 and s >= min_similarity]
            if not hits:
                return []
            hit_ids = [i for i, _ in hits]
            write = record_use and not self.read_only
            if write:
                # Statistics, not records: committed without an fsync (see the module docstring).
                self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                if write:
                    self._conn.execute(
                        f"UPDATE experiences SET use_count = use_count + 1, last_used_at = ? "
                        f"WHERE id IN ({','.join('?' * len(hit_ids))})", (time.time(), *hit_ids))
                found = {e.id: e for e in self._fetch("id IN ({})".format(",".join("?" * len(hit_ids))), hit_ids)}
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            finally:
                if write:
                    self._conn.execute("PRAGMA synchronous = FULL")
            # An id missing from the table was evicted by another process since the refresh: skip it.
            return [Neighbour(found[i], s) for i, s in hits if i in found]

    def get(self, id: int) -> Experience | None:  # noqa: A002
        """The experience with row id `id`, or None when there is none (never stored, or evicted)."""
        with self._lock, self._errors("cannot read the experience buffer"):
            self._check_open()
            self._conn.execute("BEGIN")
            try:
                rows = self._fetch("id = ?", [int(id)])
            finally:
                self._conn.execute("COMMIT")
            return rows[0] if rows else None

    def recent(self, n: int) -> list[Experience]:
        """The `n` newest experiences (by `created_at`), newest first."""
        if n <= 0:
            return []
        with self._lock, self._errors("cannot read the experience buffer"):
            self._check_open()
            self._conn.execute("BEGIN")
            try:
                ids = [r[0] for r in self._conn.execute(
                    "SELECT id FROM experiences ORDER BY created_at DESC, id DESC LIMIT ?", (int(n),))]
                found = {e.id: e for e in self._fetch("id IN ({})".format(",".join("?" * len(ids))), ids)}
            finally:
                self._conn.execute("COMMIT")
            return [found[i] for i in ids]

    def __len__(self) -> int:
        with self._lock, self._errors("cannot read the experience buffer"):
            self._check_open()
            self._refresh()
            return len(self._live)

    def index_ids(self) -> np.ndarray:
        """The ids the faiss index can return (sorted int64), as of the last refresh; equal to the table's ids."""
        with self._lock:
            ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
            if self._dead:
                ids = ids[~np.isin(ids, np.fromiter(self._dead, np.int64, len(self._dead)))]
            return np.sort(ids)

    def refresh(self) -> None:
        """Load the experiences other processes added since the last look and drop the ones they evicted."""
        with self._lock, self._errors("cannot read the experience buffer"):
            self._check_open()
            self._refresh()

    # ------------------------------------------------------------------ internals

    def _fetch(self, where: str, params: Sequence[Any]) -> list[Experience]:
        """Experiences matching `where` with their images (call inside a transaction, for one snapshot)."""
        if not params:
            return []
        rows = self._conn.execute(f"SELECT {_COLUMNS} FROM experiences WHERE {where}", params).fetchall()
        if not rows:
            return []
        ids = [r[0] for r in rows]
        hashes = {h for (h,) in self._conn.execute(
            f"SELECT hash FROM experience_media WHERE experience_id IN ({','.join('?' * len(ids))})", ids)}
        missing = [h for h in hashes if h not in self._images]
        blobs = dict(self._conn.execute(
            f"SELECT hash, png FROM media WHERE hash IN ({','.join('?' * len(missing))})", missing)) if missing else {}
        return [self._experience(r, blobs) for r in rows]

    def _experience(self, row: tuple[Any, ...], blobs: dict[str, bytes]) -> Experience:
        (id_, query_id, emb, model_version, confidence, created_at, last_used_at, use_count, trace_id, answer,
         votes, traj_json) = row

        def open_image(h: str) -> Image.Image:
            cached = self._images.get(h)
            if cached is not None:
                return cached
            if h not in blobs:
                raise BufferError(f"{self.path}: experience {id_} refers to image {h[:16]}..., which is missing")
            with Image.open(io.BytesIO(blobs[h]), formats=["PNG"]) as img:
                img.load()
                image = img.copy()
            self._images.put(h, image)
            return image

        try:
            trajectory = trajectory_from_dict(json.loads(traj_json), open_image=open_image)
        except BufferError:
            raise
        except (PixelisError, ValueError, OSError) as exc:
            raise BufferError(f"{self.path}: experience {id_} cannot be read: {_explain(exc)}") from None
        return Experience(
            query_id=query_id, trajectory=trajectory, answer=answer, confidence=confidence,
            votes=json.loads(votes), embedding=np.frombuffer(emb, dtype=np.float32).copy(),
            model_version=model_version, trace_id=trace_id, id=id_, created_at=created_at,
            last_used_at=last_used_at, use_count=use_count)

    def _new_index(self) -> faiss.IndexIDMap:
        if self.index_kind == "hnsw":
            base = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            base.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            base.hnsw.efSearch = HNSW_EF_SEARCH
        else:
            base = faiss.IndexFlatIP(self.dim)
        return faiss.IndexIDMap(base)  # the Python wrapper keeps `base` alive with the map

    def _search_params(self, k: int) -> faiss.SearchParameters | None:
        if self.index_kind != "hnsw":
            return None
        if self._params is None or self._params.efSearch < k:
            sel = None
            if self._dead:
                self._dead_batch = faiss.IDSelectorBatch(np.fromiter(self._dead, np.int64, len(self._dead)))
                sel = self._dead_not = faiss.IDSelectorNot(self._dead_batch)  # referenced: faiss does not own them
            self._params = faiss.SearchParametersHNSW(efSearch=max(HNSW_EF_SEARCH, k))
            if sel is not None:
                self._params.sel = sel
        return self._params

    def _index_add(self, vectors: np.ndarray, ids: Sequence[int]) -> None:
        self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))
        self._live.update(int(i) for i in ids)

    def _index_remove(self, ids: Iterable[int]) -> None:
        gone = [int(i) for i in ids if int(i) in self._live]
        if not gone:
            return
        self._live.difference_update(gone)
        if self.index_kind == "flat":
            self.index.remove_ids(np.asarray(gone, dtype=np.int64))
            return
        self._dead.update(gone)  # IndexHNSWFlat cannot remove: hide them, rebuild when they are a tenth
        self._params = None
        if len(self._dead) > max(16, self.index.ntotal // 10):
            self._rebuild_hnsw()

    def _rebuild_hnsw(self) -> None:
        old = self.index
        ids = faiss.vector_to_array(old.id_map).astype(np.int64)
        vectors = old.index.reconstruct_n(0, old.ntotal) if old.ntotal else np.zeros((0, self.dim), np.float32)
        keep = ~np.isin(ids, np.fromiter(self._dead, np.int64, len(self._dead)))
        self.index = self._new_index()
        if keep.any():
            self.index.add_with_ids(np.ascontiguousarray(vectors[keep]), ids[keep])
        self._dead.clear()
        self._params = None

    def _reload(self) -> None:
        """Build the index from the whole table (at open)."""
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        self._conn.execute("BEGIN")
        try:
            self._load_all()
        finally:
            self._conn.execute("COMMIT")
        self._data_version = version

    def _load_all(self) -> None:
        """Rebuild the index from the table (inside a transaction)."""
        c = self._conn
        seq = c.execute("SELECT COALESCE(MAX(seq), 0) FROM evictions").fetchone()[0]
        ids, blobs = [], []
        for id_, emb in c.execute("SELECT id, embedding FROM experiences ORDER BY id"):
            ids.append(id_)
            blobs.append(emb)
        self.index, self._live, self._dead, self._params = self._new_index(), set(), set(), None
        self._add_blobs(ids, blobs)
        self._last_id = max(ids, default=0)
        self._evict_seq = seq

    def _add_blobs(self, ids: list[int], blobs: list[bytes]) -> None:
        for start in range(0, len(ids), 65_536):
            part = blobs[start:start + 65_536]
            vectors = np.frombuffer(b"".join(part), dtype=np.float32)
            if vectors.size != len(part) * self.dim:
                raise BufferError(f"{self.path}: stored embeddings are not all {self.dim}-dimensional float32")
            self._index_add(vectors.reshape(len(part), self.dim), ids[start:start + 65_536])

    def _refresh(self) -> None:
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self._data_version:
            return  # nobody else committed since the last look
        self._conn.execute("BEGIN")
        try:
            self._sync()
        finally:
            self._conn.execute("COMMIT")
        self._data_version = version

    def _sync(self) -> None:
        """Apply other processes' adds and evictions since the last look (inside a transaction: one snapshot)."""
        c = self._conn
        oldest = c.execute("SELECT MIN(seq) FROM evictions").fetchone()[0]
        if oldest is not None and oldest > self._evict_seq + 1:  # the log was pruned past what we saw
            self._load_all()
            return
        evicted = c.execute("SELECT seq, experience_id FROM evictions WHERE seq > ? ORDER BY seq",
                            (self._evict_seq,)).fetchall()
        new = c.execute("SELECT id, embedding FROM experiences WHERE id > ? ORDER BY id",
                        (self._last_id,)).fetchall()
        if new:
            self._add_blobs([r[0] for r in new], [r[1] for r in new])
            self._last_id = new[-1][0]
        if evicted:
            self._index_remove(r[1] for r in evicted)
            self._evict_seq = evicted[-1][0]

    def _normalised(self, embedding: np.ndarray, what: str) -> np.ndarray:
        v = np.asarray(embedding, dtype=np.float32)
        if v.shape != (self.dim,):
            raise BufferError(f"{self.path}: {what} has shape {tuple(v.shape)}; this buffer holds "
                              f"{self.dim}-dimensional embeddings")
        if not np.isfinite(v).all():
            raise BufferError(f"{self.path}: {what} holds non-finite values")
        norm = float(np.linalg.norm(v))
        return (v / norm).astype(np.float32) if norm > 0 else v.copy()

    def _writable(self) -> None:
        if self.read_only:
            raise BufferError(f"{self.path}: the experience buffer was opened read-only")

    def _check_open(self) -> None:
        if self._closed:
            raise BufferError(f"{self.path}: the experience buffer is closed")

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise BufferError(f"{self.path}: {what}: {_explain(exc)}") from None


# ------------------------------------------------------------------------------------------- helpers

def _short(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _explain(exc: BaseException) -> str:
    text = _short(describe(exc))
    if isinstance(exc, sqlite3.DatabaseError):
        msg = str(exc)
        if "file is not a database" in msg:
            return f"not a SQLite database ({text})"
        if "malformed" in msg or "corrupt" in msg:
            return f"the database file is corrupted ({text})"
    return text


def _prepare(conn: sqlite3.Connection, path: Path, dim: int | None, read_only: bool) -> int:
    """Check (or create) the schema and set the durability pragmas; returns the embedding dim."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables - {"sqlite_sequence"}:
        if read_only:
            raise BufferError(f"{path}: not a Pixelis experience buffer (an empty SQLite database)")
        if dim is None:
            raise BufferError(f"{path}: a new experience buffer needs the embedding dim")
        _set_wal(conn, path)
        conn.execute("BEGIN IMMEDIATE")
        try:
            again = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not again - {"sqlite_sequence"}:  # nobody else created it meanwhile
                for statement in _SCHEMA_SQL.strip().split(";\n"):
                    conn.execute(statement)
                conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                                 [("schema", SCHEMA), ("version", str(SCHEMA_VERSION)), ("dim", str(dim)),
                                  ("created_at", repr(time.time()))])
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        tables = _TABLES
    if "meta" not in tables:
        listed = ", ".join(sorted(tables - {"sqlite_sequence"})[:5])
        raise BufferError(f"{path}: not a Pixelis experience buffer (a SQLite database without its meta table; "
                          f"tables: {listed})")
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta"))
    except sqlite3.OperationalError as exc:
        raise BufferError(f"{path}: not a Pixelis experience buffer (its meta table is not ours: "
                          f"{describe(exc)})") from None
    if meta.get("schema") != SCHEMA:
        raise BufferError(f"{path}: not a Pixelis experience buffer (meta schema is {meta.get('schema')!r}, "
                          f"expected {SCHEMA!r})")
    version = meta.get("version", "")
    if not version.isdigit() or int(version) > SCHEMA_VERSION:
        raise BufferError(f"{path}: experience buffer schema version {version!r} is not supported "
                          f"(this Pixelis reads version {SCHEMA_VERSION})")
    missing = _TABLES - tables
    if missing:
        raise BufferError(f"{path}: experience buffer is incomplete: missing tables {sorted(missing)}")
    stored = meta.get("dim", "")
    if not stored.isdigit():
        raise BufferError(f"{path}: experience buffer has no valid embedding dim in its meta table ({stored!r})")
    if dim is not None and int(stored) != dim:
        raise BufferError(f"{path}: experience buffer holds {stored}-dimensional embeddings, but {dim} were asked "
                          f"for (was the embedder changed?); use another file")
    if not read_only:
        _set_wal(conn, path)
    conn.execute("PRAGMA synchronous = FULL")
    return int(stored)


def _set_wal(conn: sqlite3.Connection, path: Path) -> None:
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise BufferError(f"{path}: cannot switch the database to WAL journaling (journal_mode is {mode})")
