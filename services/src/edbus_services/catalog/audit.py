"""The audit service: an independent subscription that records every catalog event it receives.

It refuses nothing (poison events included, of any type: it does not decode them) and records each event
once (``INSERT OR IGNORE`` on the event id), in the order it got them, so the demo can check that the
events of each key arrived in the order Studio published them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from edbus import Consumer, Event, Mode
from edbus_services.catalog.db import SERVICE_RUNS_DDL, Database, record_run
from edbus_services.catalog.service import AUDIT_SUBSCRIPTION, ServiceProcess

__all__ = ["AUDIT_DDL", "AuditLog", "run_audit"]

log = logging.getLogger("edbus.demo.audit")

AUDIT_DDL = SERVICE_RUNS_DDL + """
CREATE TABLE IF NOT EXISTS audit_log(
    seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,
    course_key TEXT NOT NULL, event_time REAL NOT NULL, recorded_at REAL NOT NULL, attempt INTEGER NOT NULL,
    consumer TEXT NOT NULL);
"""


class AuditLog:
    def __init__(self, path: Path, consumer: str = "audit") -> None:
        self.db = Database(path, AUDIT_DDL)
        self.consumer = consumer
        self.duplicates = 0
        self._lock = threading.Lock()

    def register(self, consumer: Consumer) -> None:
        consumer.add_fallback(self.record)

    def record(self, event: Event[Any]) -> bool:
        """Record one event; False when it was already recorded."""
        with self.db.write() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO audit_log(event_id, type, course_key, event_time, recorded_at, attempt, "
                "consumer) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (event.id, event.type, event.key or "", event.envelope.time.timestamp(), time.time(), event.attempt,
                 self.consumer))
        if cursor.rowcount == 0:
            with self._lock:
                self.duplicates += 1
            return False
        return True

    def count(self) -> int:
        return int(self.db.query("SELECT count(*) FROM audit_log")[0][0])

    def sequences(self) -> dict[str, list[str]]:
        """Each key's event ids in the order they were recorded."""
        out: dict[str, list[str]] = {}
        for key, event_id in self.db.query("SELECT course_key, event_id FROM audit_log ORDER BY seq"):
            out.setdefault(key, []).append(event_id)
        return out

    def close(self) -> None:
        self.db.close()


def run_audit(service: ServiceProcess) -> int:
    """The audit process: the only consumer of the ``audit`` subscription (exclusive mode)."""
    config = service.config
    audit = AuditLog(config.audit_db, service.name)
    bus = config.open_bus("openedx/catalog/audit")
    try:
        consumer = bus.consumer(config.topic, AUDIT_SUBSCRIPTION, mode=Mode.EXCLUSIVE,
                                max_attempts=config.max_attempts, backoff=config.backoff, name=service.name)
        audit.register(consumer)
        processed = service.consume(consumer)
        record_run(audit.db, service.name, os.getpid(), bus.metrics.snapshot(), audit.duplicates, service.started,
                   time.time())
        log.info("stopped after %d events", processed)
        return processed
    finally:
        bus.close()
        audit.close()
