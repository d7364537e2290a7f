"""Stores made by earlier edbus versions keep working with this one (the store has no schema version:
each change must work with both the old and the new tables)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from edbus.backends import Mode, Record, StartAt
from edbus.backends.sqlite import SqliteBackend

# the events table as edbus made it before positions were kept by a trigger instead of AUTOINCREMENT
OLD_EVENTS = """
CREATE TABLE events(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL, id TEXT NOT NULL, type TEXT NOT NULL, key TEXT,
    headers TEXT NOT NULL, payload BLOB NOT NULL, size INTEGER NOT NULL, published_at REAL NOT NULL);
CREATE UNIQUE INDEX events_topic_id ON events(topic, id);
CREATE INDEX events_topic_seq ON events(topic, seq);
"""


def rec(i: int) -> Record:
    return Record(f"e{i}", "t.v1", None, {}, b"x")


def test_an_autoincrement_store_from_before_keeps_its_positions_unique_after_the_newest_events_go(
        tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_EVENTS)
    backend = SqliteBackend(path)
    try:
        backend.subscribe("t", "s", Mode.SHARED, StartAt())
        backend.append("t", [rec(i) for i in range(3)])
        backend.ack(backend.fetch("t", "s", "c", 10, 30))
        assert backend.enforce_retention(time.time() + 1) == 3
        backend.append("t", [rec(9)])
        assert [d.message.record.id for d in backend.fetch("t", "s", "c", 10, 30)] == ["e9"]
    finally:
        backend.close()


def test_a_new_store_keeps_one_placeholder_at_the_last_position_and_shows_it_nowhere(tmp_path: Path) -> None:
    backend = SqliteBackend(tmp_path / "new.db")
    try:
        backend.subscribe("t", "s", Mode.SHARED, StartAt())
        for round_ in range(3):  # the newest events deleted three times: still one placeholder
            backend.append("t", [rec(10 * round_ + i) for i in range(2)])
            backend.ack(backend.fetch("t", "s", "c", 10, 30))
            assert backend.enforce_retention(time.time() + 1) == 2
        backend.append("t", [rec(99)])
        assert [d.message.record.id for d in backend.fetch("t", "s", "c", 10, 30)] == ["e99"]
        assert [(t.topic, t.events) for t in backend.topics()] == [("t", 1)]
        with sqlite3.connect(tmp_path / "new.db") as db:
            assert db.execute("SELECT seq, id FROM events ORDER BY seq").fetchall() == [(6, "edbus:last-position"),
                                                                                         (7, "e99")]
    finally:
        backend.close()
