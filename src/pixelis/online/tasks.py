"""The durable queue of update tasks between the inference engine and the update worker (one SQLite table).

The engine `enqueue`s a task (which experience to learn from, with what confidence, under which trace) and the
call returns only after the commit, so an acknowledged task survives any crash. The worker takes the oldest
pending task, and `finish` records the outcome (accepted with the weight version it produced, or rejected by the
corridor, with the measured KL) in one transaction. A task whose worker died mid-update is still pending and is
simply taken again.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixelis.core.errors import PixelisError

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY,
    experience_id INTEGER NOT NULL,
    query_id TEXT NOT NULL,
    confidence REAL NOT NULL,
    carrier TEXT NOT NULL,
    created_at REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    version INTEGER,
    result TEXT,
    finished_at REAL
)
"""
STATUSES = ("pending", "accepted", "rejected", "failed")


class TaskQueueError(PixelisError):
    """An unreadable or foreign task queue file."""


@dataclass
class UpdateTask:
    """One update to make: learn from experience `experience_id` with weight `confidence`."""

    id: int
    experience_id: int
    query_id: str
    confidence: float
    carrier: dict[str, str]  # W3C trace context of the request that produced it
    status: str = "pending"
    version: int | None = None
    result: dict[str, Any] | None = None


class TaskQueue:
    """`TaskQueue(path)`: enqueue (engine), next_pending / finish (worker), counts and waiting (replay)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(tasks)")}
        except sqlite3.DatabaseError as err:
            raise TaskQueueError(f"{self.path} is not a Pixelis task queue: {err}") from err
        if "experience_id" not in columns or "carrier" not in columns:
            raise TaskQueueError(f"{self.path} holds a 'tasks' table of another application")

    def enqueue(self, experience_id: int, query_id: str, confidence: float, carrier: dict[str, str]) -> int:
        """Add a pending task; returns its id once committed."""
        with self._db:
            cur = self._db.execute(
                "INSERT INTO tasks (experience_id, query_id, confidence, carrier, created_at) VALUES (?, ?, ?, ?, ?)",
                (experience_id, query_id, confidence, json.dumps(carrier), time.time()))
        return int(cur.lastrowid)

    def next_pending(self) -> UpdateTask | None:
        """The oldest pending task, or None."""
        row = self._db.execute("SELECT * FROM tasks WHERE status = 'pending' ORDER BY id LIMIT 1").fetchone()
        return None if row is None else self._task(row)

    def finish(self, task_id: int, status: str, version: int | None, result: dict[str, Any]) -> None:
        """Record a task's outcome (committed before returning)."""
        if status not in STATUSES[1:]:
            raise ValueError(f"status must be one of {STATUSES[1:]}, got {status!r}")
        with self._db:
            self._db.execute("UPDATE tasks SET status = ?, version = ?, result = ?, finished_at = ? WHERE id = ?",
                             (status, version, json.dumps(result, sort_keys=True), time.time(), task_id))

    def get(self, task_id: int) -> UpdateTask:
        row = self._db.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
        if row is None:
            raise KeyError(f"no task {task_id} in {self.path}")
        return self._task(row)

    def finished(self) -> list[UpdateTask]:
        """Every finished task, oldest first."""
        rows = self._db.execute("SELECT * FROM tasks WHERE status != 'pending' ORDER BY id").fetchall()
        return [self._task(r) for r in rows]

    def latest_version(self) -> int:
        """The highest weight version an accepted task produced (0: none)."""
        row = self._db.execute("SELECT MAX(version) FROM tasks WHERE status = 'accepted'").fetchone()
        return int(row[0] or 0)

    def counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT status, COUNT(*) FROM tasks GROUP BY status").fetchall()
        return {status: 0 for status in STATUSES} | {s: int(n) for s, n in rows}

    def wait_finished(self, task_id: int, timeout_s: float, alive: Any = None) -> UpdateTask:
        """Block until task `task_id` is finished; `alive()` returning False (a dead worker) raises early."""
        deadline = time.monotonic() + timeout_s
        while True:
            task = self.get(task_id)
            if task.status != "pending":
                return task
            if alive is not None and not alive():
                raise TaskQueueError(f"the update worker died before finishing task {task_id}")
            if time.monotonic() > deadline:
                raise TaskQueueError(f"task {task_id} was not finished within {timeout_s:.0f} s")
            time.sleep(0.05)

    def close(self) -> None:
        self._db.close()

    @staticmethod
    def _task(row: tuple[Any, ...]) -> UpdateTask:
        tid, exp_id, query_id, confidence, carrier, _, status, version, result, _ = row
        return UpdateTask(tid, exp_id, query_id, confidence, json.loads(carrier), status, version,
                          None if result is None else json.loads(result))
