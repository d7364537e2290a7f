"""The services' own SQLite databases (not the bus store): one file per service, a connection per thread.

Every service keeps its catalog rows in the same shape, so Studio's source of truth and the replica can
be compared row by row: ``(course_key, name, start_at, end_at, pacing, enrollment_start, enrollment_end,
hidden, invitation_only, last_event_id)``, times as ISO-8601 UTC strings.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

__all__ = ["COURSES_DDL", "COURSE_COLUMNS", "SERVICE_RUNS_DDL", "UPSERT_COURSE", "CourseRow", "Database",
           "GroupCommit", "course_row", "iso", "read_courses", "read_runs", "record_run"]

CourseRow = tuple[Any, ...]
T = TypeVar("T")

COURSES_DDL = """
CREATE TABLE IF NOT EXISTS courses(
    course_key TEXT PRIMARY KEY, name TEXT, start_at TEXT, end_at TEXT, pacing TEXT,
    enrollment_start TEXT, enrollment_end TEXT, hidden INTEGER, invitation_only INTEGER,
    last_event_id TEXT NOT NULL);
"""

SERVICE_RUNS_DDL = """
CREATE TABLE IF NOT EXISTS service_runs(
    name TEXT NOT NULL, pid INTEGER NOT NULL, processed INTEGER NOT NULL, acked INTEGER NOT NULL,
    retried INTEGER NOT NULL, dead_lettered INTEGER NOT NULL, duplicates INTEGER NOT NULL,
    started REAL NOT NULL, stopped REAL NOT NULL);
"""

UPSERT_COURSE = """
INSERT INTO courses(course_key, name, start_at, end_at, pacing, enrollment_start, enrollment_end, hidden,
                    invitation_only, last_event_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(course_key) DO UPDATE SET
    name=excluded.name, start_at=excluded.start_at, end_at=excluded.end_at, pacing=excluded.pacing,
    enrollment_start=excluded.enrollment_start, enrollment_end=excluded.enrollment_end,
    hidden=excluded.hidden, invitation_only=excluded.invitation_only, last_event_id=excluded.last_event_id
"""


def iso(when: dt.datetime | None) -> str | None:
    return None if when is None else when.astimezone(dt.UTC).isoformat()


def course_row(info: Any, event_id: str) -> CourseRow:
    """The catalog row an openedx-events ``CourseCatalogData`` stands for, last set by ``event_id``."""
    s = info.schedule_data
    return (str(info.course_key), info.name, iso(s.start), iso(s.end), s.pacing, iso(s.enrollment_start),
            iso(s.enrollment_end), int(info.hidden), int(info.invitation_only), event_id)


class Database:
    """One SQLite file in WAL mode; ``synchronous=FULL`` so a commit survives a power loss before the bus
    ack (``NORMAL``: it survives a crash of the process, not of the machine)."""

    def __init__(self, path: Path, ddl: str, synchronous: str = "FULL") -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous={synchronous!r}: FULL or NORMAL")
        self.path = path
        self.synchronous = synchronous
        self._local = threading.local()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._all: list[sqlite3.Connection] = []
        self.conn().executescript(ddl)

    def conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed when the block ends, rolled back if it raises."""
        conn = self.conn()
        with self._write_lock:  # this process's threads queue here
            _begin(conn)
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self.conn().execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


class _Pending(Generic[T]):
    __slots__ = ("done", "error", "fn", "result")

    def __init__(self, fn: Callable[[sqlite3.Connection], T]) -> None:
        self.fn = fn
        self.result: T | None = None
        self.error: BaseException | None = None
        self.done = False


class GroupCommit:
    """Writes of many handler threads committed together: one transaction (one fsync) for every write
    queued while the previous commit ran. ``run`` returns only once its write is committed.

    The first thread to find no commit running leads: it runs every queued write, each in a savepoint
    (a write that raises is undone alone and raises in its own thread), commits, and wakes the others.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._queue: list[_Pending[Any]] = []
        self._queue_lock = threading.Lock()
        self._leader = threading.Lock()

    def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        item: _Pending[T] = _Pending(fn)
        with self._queue_lock:
            self._queue.append(item)
        with self._leader:  # a leader before us may have committed our write already
            if not item.done:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._commit(batch)
        if item.error is not None:
            raise item.error
        return item.result  # type: ignore[return-value]

    def _commit(self, batch: list[_Pending[Any]]) -> None:
        try:
            with self.db.write() as conn:
                for item in batch:
                    conn.execute("SAVEPOINT item")
                    try:
                        item.result = item.fn(conn)
                    except Exception as exc:
                        conn.execute("ROLLBACK TO item")
                        item.error = exc
                    conn.execute("RELEASE item")
        except BaseException as exc:  # nothing of the batch was committed
            for item in batch:
                item.error = exc
        finally:
            for item in batch:
                item.done = True


def _begin(conn: sqlite3.Connection, timeout: float = 30.0) -> None:
    """BEGIN IMMEDIATE, retrying every 50-500 µs while another process writes: SQLite's busy handler
    would sleep 1, 2, 5, 10 … 100 ms between tries, which shows in the replica's p99 latency."""
    deadline = time.monotonic() + timeout
    pause = 50e-6
    conn.execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 500e-6)
    finally:
        conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")


COURSE_COLUMNS = ("course_key, name, start_at, end_at, pacing, enrollment_start, enrollment_end, hidden, "
                  "invitation_only, last_event_id")


def read_courses(db: Database, table: str = "courses") -> dict[str, CourseRow]:
    """Every course with catalog information, in the shape of ``course_row``."""
    return {row[0]: tuple(row) for row in db.query(f"SELECT {COURSE_COLUMNS} FROM {table} "
                                                    "WHERE last_event_id IS NOT NULL")}


def record_run(db: Database, name: str, pid: int, stats: dict[str, Any], duplicates: int, started: float,
               stopped: float) -> None:
    """What one service process did, from its bus metrics; written when it stops."""
    with db.write() as conn:
        conn.execute("INSERT INTO service_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (name, pid, stats.get("acked", 0) + stats.get("dead_lettered", 0), stats.get("acked", 0),
                      stats.get("retried", 0), stats.get("dead_lettered", 0), duplicates, started, stopped))


def read_runs(db: Database) -> list[dict[str, Any]]:
    cols = ("name", "pid", "processed", "acked", "retried", "dead_lettered", "duplicates", "started", "stopped")
    return [dict(zip(cols, row, strict=True)) for row in db.query(f"SELECT {', '.join(cols)} FROM service_runs")]
