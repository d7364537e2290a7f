"""The catalog service: keeps a replica of the course catalog in its own database.

Each event is applied in one transaction together with its id in ``applied_events``: an event delivered
again (after a crash, a lease expiry or a redrive) finds its id there and has no second effect. The same
row records when the event was applied, which is how the demo measures propagation latency.

The replica validates what it is given: a blank or overlong course name, or a course that ends before it
starts, is refused with ``CatalogValidationError``; the bus retries it, then dead-letters it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from edbus import Consumer, Event, Mode
from edbus.apps.catalog.db import (
    COURSES_DDL,
    SERVICE_RUNS_DDL,
    UPSERT_COURSE,
    CourseRow,
    Database,
    course_row,
    read_courses,
    record_run,
)
from edbus.apps.catalog.events import (
    CATALOG_EVENT_TYPES,
    CatalogInfoChanged,
    CourseCatalogData,
    CourseCreated,
    CourseDeleted,
)
from edbus.apps.catalog.service import REPLICA_SUBSCRIPTION, ServiceProcess

__all__ = ["REPLICA_DDL", "CatalogReplica", "CatalogValidationError", "run_replica", "validate"]

log = logging.getLogger("edbus.demo.replica")

REPLICA_DDL = COURSES_DDL + SERVICE_RUNS_DDL + """
CREATE TABLE IF NOT EXISTS applied_events(
    event_id TEXT PRIMARY KEY, type TEXT NOT NULL, course_key TEXT NOT NULL, event_time REAL NOT NULL,
    applied_at REAL NOT NULL, consumer TEXT NOT NULL);
"""
MAX_NAME = 255


class CatalogValidationError(ValueError):
    """A catalog change the replica refuses to store."""


def validate(info: CourseCatalogData) -> None:
    if not info.name.strip():
        raise CatalogValidationError(f"{info.course_key}: the course name is blank")
    if len(info.name) > MAX_NAME:
        raise CatalogValidationError(f"{info.course_key}: the course name is over {MAX_NAME} characters")
    schedule = info.schedule_data
    if schedule.end is not None and schedule.end < schedule.start:
        raise CatalogValidationError(f"{info.course_key}: the course ends before it starts")


class CatalogReplica:
    """The replica database and the handlers that keep it; safe to share between handler threads."""

    def __init__(self, path: Path, consumer: str = "replica") -> None:
        self.db = Database(path, REPLICA_DDL)
        self.consumer = consumer
        self._lock = threading.Lock()
        self.duplicates = 0  # deliveries of events already applied (ignored)

    def register(self, consumer: Consumer) -> None:
        for event_type in CATALOG_EVENT_TYPES:
            consumer.add(event_type, self.apply)

    def apply(self, event: Event[Any]) -> bool:
        """Apply one event; False when it was already applied (then nothing changes)."""
        data = event.data
        if isinstance(data, CatalogInfoChanged):
            validate(data.catalog_info)
        with self.db.write() as conn:
            if conn.execute("SELECT 1 FROM applied_events WHERE event_id=?", (event.id,)).fetchone():
                with self._lock:
                    self.duplicates += 1
                return False
            if isinstance(data, CourseCreated):
                conn.execute("INSERT OR IGNORE INTO courses(course_key, last_event_id) VALUES (?, ?)",
                             (data.course.course_key, event.id))
            elif isinstance(data, CatalogInfoChanged):
                conn.execute(UPSERT_COURSE, course_row(data.catalog_info, event.id))
            elif isinstance(data, CourseDeleted):
                conn.execute("DELETE FROM courses WHERE course_key=?", (data.course.course_key,))
            else:
                raise TypeError(f"the replica does not handle {event.type}")
            conn.execute("INSERT INTO applied_events VALUES (?, ?, ?, ?, ?, ?)",
                         (event.id, event.type, event.key or "", event.envelope.time.timestamp(), time.time(),
                          self.consumer))
        return True

    def courses(self) -> dict[str, CourseRow]:
        return read_courses(self.db)

    def applied_ids(self) -> set[str]:
        return {row[0] for row in self.db.query("SELECT event_id FROM applied_events")}

    def latencies(self) -> list[float]:
        """Seconds from each applied event's time (set when Studio published it) to its application."""
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
        record_run(replica.db, service.name, os.getpid(), bus.metrics.snapshot(), replica.duplicates, service.started,
                   time.time())
        log.info("stopped after %d events (%d duplicates ignored)", processed, replica.duplicates)
        return processed
    finally:
        bus.close()
        replica.close()

