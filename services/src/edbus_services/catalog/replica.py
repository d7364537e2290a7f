"""The catalog service: a replica of the course catalog, kept from openedx-events content-authoring events.

Course runs (``course-v1:Org+Number+Run``) are rows of ``course_runs``; a course (org and number) is the
set of its runs (``courses()``). What each event does, in one transaction:

- ``COURSE_CATALOG_INFO_CHANGED``: name, schedule, pacing, visibility replace the run's — only when the
  event is newer than the one that last set them, by (event time, event id). Studio stamps this event with
  the time the course was last edited, so a stale event (a redelivery after a lost ack, a replay, two
  publishes racing) can never undo a later change, and the replica converges to the same rows whatever
  the delivery order.
- ``COURSE_CREATED``, ``COURSE_RERUN_COMPLETED``, ``COURSE_IMPORT_COMPLETED``: the run exists (its
  earliest such time is kept).
- ``XBLOCK_PUBLISHED``: the run's content was published then (the latest time is kept); blocks of content
  libraries are ignored.

Every rule is idempotent, so a redelivered event changes nothing; ``applied_events`` also records each
event id once (with the time it was applied, for the propagation latency). An event that does not decode
is a ``DecodeError`` (dead-lettered at once); a catalog change the replica refuses (blank or overlong name,
a course ending before it starts, unknown pacing) is a ``CatalogValidationError``: retried, then
dead-lettered. Other event types on the topic are acknowledged and ignored.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from opaque_keys.edx.locator import CourseLocator
from openedx_events.event_bus.avro.deserializer import AvroSignalDeserializer

from edbus import Consumer, Event, Mode
from edbus.errors import DecodeError
from edbus_services.catalog.db import (
    COURSE_COLUMNS,
    SERVICE_RUNS_DDL,
    CourseRow,
    Database,
    GroupCommit,
    course_row,
    read_courses,
    record_run,
)
from edbus_services.catalog.service import REPLICA_SUBSCRIPTION, ServiceProcess
from edbus_services.catalog.signals import (
    CATALOG_SIGNALS,
    COURSE_CATALOG_INFO_CHANGED,
    XBLOCK_PUBLISHED,
)

__all__ = ["REPLICA_DDL", "CatalogReplica", "CatalogValidationError", "run_replica", "validate"]

log = logging.getLogger("edbus.catalog.replica")

REPLICA_DDL = SERVICE_RUNS_DDL + """
CREATE TABLE IF NOT EXISTS course_runs(
    course_key TEXT PRIMARY KEY, org TEXT NOT NULL, course TEXT NOT NULL, run TEXT NOT NULL,
    name TEXT, start_at TEXT, end_at TEXT, pacing TEXT, enrollment_start TEXT, enrollment_end TEXT,
    hidden INTEGER, invitation_only INTEGER,
    catalog_time INTEGER, last_event_id TEXT,    -- the catalog event that set the fields above (µs, id)
    created_at INTEGER, content_published_at INTEGER);
CREATE INDEX IF NOT EXISTS course_runs_course ON course_runs(org, course);
CREATE TABLE IF NOT EXISTS applied_events(
    event_id TEXT PRIMARY KEY, type TEXT NOT NULL, course_key TEXT NOT NULL, event_time REAL NOT NULL,
    applied_at REAL NOT NULL, consumer TEXT NOT NULL);
"""

_UPSERT_CATALOG = f"""
INSERT INTO course_runs(org, course, run, catalog_time, {COURSE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,
                                                                                  ?, ?, ?)
ON CONFLICT(course_key) DO UPDATE SET
    name=excluded.name, start_at=excluded.start_at, end_at=excluded.end_at, pacing=excluded.pacing,
    enrollment_start=excluded.enrollment_start, enrollment_end=excluded.enrollment_end, hidden=excluded.hidden,
    invitation_only=excluded.invitation_only, catalog_time=excluded.catalog_time,
    last_event_id=excluded.last_event_id
WHERE course_runs.catalog_time IS NULL
   OR (excluded.catalog_time, excluded.last_event_id) > (course_runs.catalog_time, course_runs.last_event_id)
"""
_UPSERT_CREATED = """
INSERT INTO course_runs(course_key, org, course, run, created_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT(course_key) DO UPDATE SET created_at=min(coalesce(course_runs.created_at, excluded.created_at),
                                                     excluded.created_at)
"""
_UPSERT_PUBLISHED = """
INSERT INTO course_runs(course_key, org, course, run, content_published_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT(course_key) DO UPDATE SET content_published_at=max(coalesce(course_runs.content_published_at,
                                                                        excluded.content_published_at),
                                                               excluded.content_published_at)
"""
MAX_NAME = 255
PACINGS = ("instructor", "self")


class CatalogValidationError(ValueError):
    """A catalog change the replica refuses to store."""


def validate(info: Any) -> None:
    """Refuse a ``CourseCatalogData`` the catalog must not show."""
    if not info.name or not info.name.strip():
        raise CatalogValidationError(f"{info.course_key}: the course name is blank")
    if len(info.name) > MAX_NAME:
        raise CatalogValidationError(f"{info.course_key}: the course name is over {MAX_NAME} characters")
    schedule = info.schedule_data
    if schedule.pacing not in PACINGS:
        raise CatalogValidationError(f"{info.course_key}: pacing {schedule.pacing!r} is not one of {PACINGS}")
    if schedule.end is not None and schedule.start is not None and schedule.end < schedule.start:
        raise CatalogValidationError(f"{info.course_key}: the course ends before it starts")


def _micros(event: Event[Any]) -> int:
    return round(event.envelope.time.timestamp() * 1_000_000)


def _is_course_run(key: Any) -> bool:
    return isinstance(key, CourseLocator) and key.run is not None


def _run_parts(course_key: Any) -> tuple[str, str, str, str]:
    if not _is_course_run(course_key):
        raise DecodeError(f"{course_key!r} is not the key of a course run")
    return str(course_key), course_key.org, course_key.course, course_key.run


class CatalogReplica:
    """The replica database and the handler that keeps it; safe to share between handler threads.

    ``durable=False`` commits with ``synchronous=NORMAL`` (a rebuild, restarted from scratch after a power
    loss); ``journal=False`` skips ``applied_events`` (no latency figures; idempotence does not need it).
    """

    def __init__(self, path: Path, consumer: str = "replica", *, durable: bool = True, journal: bool = True) -> None:
        self.db = Database(path, REPLICA_DDL, "FULL" if durable else "NORMAL")
        self.commits = GroupCommit(self.db)  # concurrent handlers share commits (fsyncs)
        self.consumer = consumer
        self.journal = journal
        self.duplicates = 0  # deliveries of events already applied (no effect)
        self.ignored = 0  # events of other types on the topic
        self.last_applied = 0.0  # time.monotonic() of the latest applied event
        self._lock = threading.Lock()
        self._deserializers: dict[str, Any] = {}

    def register(self, consumer: Consumer) -> None:
        """Handle every event of ``consumer``'s topic (the catalog's own and any other type)."""
        consumer.add_fallback(self.apply)

    def decode(self, event: Event[Any]) -> dict[str, Any] | None:
        """The signal data (openedx-events attrs objects) of a catalog event; None for another type."""
        spec = CATALOG_SIGNALS.get(event.type)
        if spec is None:
            return None
        deserializer = self._deserializers.get(event.type)
        if deserializer is None:
            deserializer = self._deserializers.setdefault(event.type, AvroSignalDeserializer(spec.signal))
        try:
            data: dict[str, Any] = deserializer.from_dict(event.data)
        except Exception as exc:  # opaque_keys, attrs and datetime raise many types on bad data
            raise DecodeError(f"{event.type} {event.id}: the data does not fit the signal: "
                              f"{type(exc).__name__}: {exc}") from None
        return data

    def apply(self, event: Event[Any]) -> bool:
        """Apply one event; False when it had been applied before (or is not a catalog event)."""
        data = self.decode(event)
        if data is not None and event.type == XBLOCK_PUBLISHED.event_type \
                and not _is_course_run(data["xblock_info"].usage_key.context_key):
            data = None  # a block of a content library, not of a course run: not the catalog's
        if data is None:
            with self._lock:
                self.ignored += 1
            return False
        when = _micros(event)
        if event.type == COURSE_CATALOG_INFO_CHANGED.event_type:
            info = data["catalog_info"]
            validate(info)
            _, org, course, run = _run_parts(info.course_key)
            sql, params = _UPSERT_CATALOG, (org, course, run, when, *course_row(info, event.id))
            course_key = str(info.course_key)
        elif event.type == XBLOCK_PUBLISHED.event_type:
            course_key, org, course, run = _run_parts(data["xblock_info"].usage_key.context_key)
            sql, params = _UPSERT_PUBLISHED, (course_key, org, course, run, when)
        else:  # created, rerun, imported
            course_key, org, course, run = _run_parts(data["course"].course_key)
            sql, params = _UPSERT_CREATED, (course_key, org, course, run, when)

        def write(conn: sqlite3.Connection) -> bool:
            if self.journal and conn.execute(
                    "INSERT OR IGNORE INTO applied_events VALUES (?, ?, ?, ?, ?, ?)",
                    (event.id, event.type, course_key, when / 1e6, time.time(), self.consumer)).rowcount == 0:
                return False
            conn.execute(sql, params)
            return True

        fresh = self.commits.run(write)
        with self._lock:
            self.last_applied = time.monotonic()
            if not fresh:
                self.duplicates += 1
        return fresh

    # -- reading ---------------------------------------------------------------------------------
    def courses(self) -> dict[str, CourseRow]:
        """Every course run with catalog information, as ``db.course_row`` rows (Studio's shape)."""
        return read_courses(self.db, "course_runs")

    def runs(self) -> dict[str, dict[str, Any]]:
        """Every known course run, with all its columns."""
        cursor = self.db.conn().execute("SELECT * FROM course_runs")
        names = [c[0] for c in cursor.description]
        return {row[0]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()}

    def catalog(self) -> dict[tuple[str, str], list[str]]:
        """Courses (org, number) and the keys of their runs, by start date."""
        out: dict[tuple[str, str], list[str]] = {}
        for org, course, key in self.db.query("SELECT org, course, course_key FROM course_runs "
                                              "ORDER BY org, course, start_at, course_key"):
            out.setdefault((org, course), []).append(key)
        return out

    def applied_ids(self) -> set[str]:
        return {row[0] for row in self.db.query("SELECT event_id FROM applied_events")}

    def latencies(self) -> list[float]:
        """Seconds from each applied event's time (when Studio published it) to its application."""
        return [row[0] for row in self.db.query("SELECT applied_at - event_time FROM applied_events")]

    def close(self) -> None:
        self.db.close()


def run_replica(service: ServiceProcess) -> int:
    """One process of the catalog service: a consumer of the key_ordered ``replica`` subscription."""
    config = service.config
    replica = CatalogReplica(config.replica_db, service.name)
    bus = config.open_bus("openedx/catalog/replica")
    try:
        consumer = bus.consumer(config.topic, REPLICA_SUBSCRIPTION, mode=Mode.KEY_ORDERED,
                                max_attempts=config.max_attempts, backoff=config.backoff, lease=config.lease,
                                name=service.name)
        replica.register(consumer)
        processed = service.consume(consumer)
        record_run(replica.db, service.name, os.getpid(), bus.metrics.snapshot(), replica.duplicates,
                   service.started, time.time())
        log.info("stopped after %d events (%d duplicates ignored)", processed, replica.duplicates)
        return processed
    finally:
        bus.close()
        replica.close()
