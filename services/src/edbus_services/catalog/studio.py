"""The simulated Studio: keeps the source of truth of the catalog in its own database and publishes each
change to the bus as the openedx-events signal edx-platform sends for it, encoded as edbus's openedx
producer encodes it (``SignalPublisher``).

Each batch of changes is first committed to Studio's database together with the event ids it
will be published under (its change log), then published with those ids, so a retried publish is
idempotent and the change log says exactly which events exist. Like edx-platform, which stamps
``COURSE_CATALOG_INFO_CHANGED`` with the course's last edit time, Studio gives the events of one course
strictly increasing times: that is what the replica orders them by.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
import uuid
from collections.abc import Sequence

from edbus_services.catalog.db import COURSES_DDL, UPSERT_COURSE, Database, course_row
from edbus_services.catalog.planner import PlannedEvent, plan_events
from edbus_services.catalog.publisher import SignalPublisher, publish_retrying
from edbus_services.catalog.service import ServiceProcess

__all__ = ["STUDIO_DDL", "Change", "Studio", "run_studio"]

log = logging.getLogger("edbus.demo.studio")

STUDIO_DDL = COURSES_DDL + """
CREATE TABLE IF NOT EXISTS changes(
    seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,
    course_key TEXT NOT NULL, event_key TEXT NOT NULL, poison INTEGER NOT NULL, published REAL);
"""
_BATCH = 200


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """A planned event with the id it is published under."""

    event_id: str
    planned: PlannedEvent


class Studio:
    """Studio's own database: the catalog (``courses``) and the change log (``changes``)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._last: dict[str, dt.datetime] = {}  # each course's latest event time

    def event_time(self, course_key: str) -> dt.datetime:
        """Now, or just after the course's previous event time: strictly increasing per course."""
        now = dt.datetime.now(dt.UTC)
        last = self._last.get(course_key)
        if last is not None and now <= last:  # same microsecond (or a clock step back): still later
            now = last + dt.timedelta(microseconds=1)
        self._last[course_key] = now
        return now

    def record(self, batch: Sequence[PlannedEvent]) -> list[Change]:
        """Apply a batch of changes to the catalog and log their event ids, in one transaction."""
        changes = [Change(str(uuid.uuid4()), p) for p in batch]
        with self.db.write() as conn:
            for change in changes:
                planned = change.planned
                if not planned.poison and planned.catalog_info is not None:
                    conn.execute(UPSERT_COURSE, course_row(planned.catalog_info, change.event_id))
                conn.execute("INSERT INTO changes(event_id, type, course_key, event_key, poison) "
                             "VALUES (?, ?, ?, ?, ?)", (change.event_id, planned.event_type, planned.course_key,
                                                        planned.event_key, int(planned.poison)))
        return changes

    def mark_published(self, event_ids: Sequence[str]) -> None:
        with self.db.write() as conn:
            conn.executemany("UPDATE changes SET published=? WHERE event_id=?",
                             [(time.time(), event_id) for event_id in event_ids])


def run_studio(service: ServiceProcess) -> int:
    """Publish the planned changes at ``config.rate`` events per second; returns how many were published."""
    config = service.config
    events = plan_events(config.courses, config.changes, config.poison, config.seed)
    studio = Studio(Database(config.studio_db, STUDIO_DDL))
    bus = config.open_bus("openedx/cms/web")
    publisher = SignalPublisher(bus)
    started = time.monotonic()
    sent = 0
    try:
        while sent < len(events) and not service.stopping.is_set():
            due = len(events) if config.rate <= 0 else int((time.monotonic() - started) * config.rate) + 1
            due = min(due, sent + _BATCH, len(events))
            if due <= sent:
                service.stopping.wait(min(0.05, (sent + 1) / config.rate - (time.monotonic() - started)))
                continue
            changes = studio.record(events[sent:due])
            for change in changes:  # each stamped when it is sent, as Studio's send() does
                _publish(publisher, config.topic, change, studio.event_time(change.planned.course_key))
            studio.mark_published([change.event_id for change in changes])
            sent = due
    finally:
        bus.close()
        studio.db.close()
    log.info("published %d of %d events in %.1fs", sent, len(events), time.monotonic() - started)
    return sent


def _publish(publisher: SignalPublisher, topic: str, change: Change, when: dt.datetime, attempts: int = 5) -> None:
    """One event, as Studio's ``send()`` of one signal; an unacknowledged publish is retried (same id)."""
    record = publisher.record(topic, change.planned.event_type, change.planned.data, id=change.event_id,
                              time=when)
    publish_retrying(publisher.bus, topic, [record], attempts)
