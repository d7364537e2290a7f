"""The simulated Studio: keeps the source of truth of the catalog in its own database and publishes each
change to the bus.

Each batch of changes is first committed to Studio's database together with the event ids it will be
published under (its change log), then published with those ids, so a retried publish is idempotent and
the change log says exactly which events exist.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence

from edbus import Bus
from edbus.apps.catalog.db import COURSES_DDL, UPSERT_COURSE, Database, course_row
from edbus.apps.catalog.events import CatalogInfoChanged, CourseDeleted
from edbus.apps.catalog.planner import PlannedEvent, plan_events
from edbus.apps.catalog.service import ServiceProcess
from edbus.errors import StoreError

__all__ = ["STUDIO_DDL", "Studio", "run_studio"]

log = logging.getLogger("edbus.demo.studio")

STUDIO_DDL = COURSES_DDL + """
CREATE TABLE IF NOT EXISTS changes(
    seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,
    course_key TEXT NOT NULL, poison INTEGER NOT NULL, published REAL);
"""
_BATCH = 200


class Studio:
    """Studio's own database: the catalog (``courses``) and the change log (``changes``)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, batch: Sequence[tuple[str, PlannedEvent]]) -> None:
        """Apply a batch of changes to the catalog and log their event ids, in one transaction."""
        with self.db.write() as conn:
            for event_id, planned in batch:
                payload = planned.payload
                if not planned.poison:
                    if isinstance(payload, CatalogInfoChanged):
                        conn.execute(UPSERT_COURSE, course_row(payload.catalog_info, event_id))
                    elif isinstance(payload, CourseDeleted):
                        conn.execute("DELETE FROM courses WHERE course_key=?", (planned.course_key,))
                conn.execute("INSERT INTO changes(event_id, type, course_key, poison) VALUES (?, ?, ?, ?)",
                             (event_id, planned.event_type.name, planned.course_key, int(planned.poison)))

    def mark_published(self, event_ids: Sequence[str]) -> None:
        with self.db.write() as conn:
            conn.executemany("UPDATE changes SET published=? WHERE event_id=?",
                             [(time.time(), event_id) for event_id in event_ids])


def run_studio(service: ServiceProcess) -> int:
    """Publish the planned changes at ``config.rate`` events per second; returns how many were published."""
    config = service.config
    events = plan_events(config.courses, config.changes, config.poison, config.seed)
    studio = Studio(Database(config.studio_db, STUDIO_DDL))
    bus = config.open_bus("openedx/cms/studio-simulator")
    started = time.monotonic()
    sent = 0
    try:
        while sent < len(events) and not service.stopping.is_set():
            due = len(events) if config.rate <= 0 else int((time.monotonic() - started) * config.rate) + 1
            due = min(due, sent + _BATCH, len(events))
            if due <= sent:
                service.stopping.wait(min(0.05, (sent + 1) / config.rate - (time.monotonic() - started)))
                continue
            batch = [(str(uuid.uuid4()), planned) for planned in events[sent:due]]
            studio.record(batch)
            for event_id, planned in batch:
                _publish(bus, config.topic, event_id, planned)
            studio.mark_published([event_id for event_id, _ in batch])
            sent = due
    finally:
        bus.close()
        studio.db.close()
    log.info("published %d of %d events in %.1fs", sent, len(events), time.monotonic() - started)
    return sent


def _publish(bus: Bus, topic: str, event_id: str, planned: PlannedEvent, attempts: int = 5) -> None:
    for attempt in range(1, attempts + 1):
        try:
            bus.publish(topic, planned.event_type, planned.payload, id=event_id)
            return
        except StoreError as exc:  # not acknowledged: the same id makes the retry idempotent
            if attempt == attempts:
                raise
            log.warning("publish of %s not acknowledged (%s): retrying", event_id, exc)
            time.sleep(0.05 * attempt)
