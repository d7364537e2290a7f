"""What the demo found: counts, replica == source, per-course order, dead letters and latency.

Everything is read back from where it was recorded: Studio's change log and catalog, the replica's and
the audit's own databases (including the runs each process recorded when it stopped) and the bus store.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

from edbus import Bus
from edbus.backends import dlq_topic
from edbus.bus.metrics import percentile
from edbus_services.catalog.audit import AuditLog
from edbus_services.catalog.db import CourseRow, Database, read_courses, read_runs
from edbus_services.catalog.rebuild import rebuild
from edbus_services.catalog.replica import CatalogReplica
from edbus_services.catalog.service import AUDIT_SUBSCRIPTION, REPLICA_SUBSCRIPTION, DemoConfig, ServiceFigures
from edbus_services.catalog.signals import (
    COURSE_CATALOG_INFO_CHANGED,
    COURSE_CREATED,
    COURSE_RERUN_COMPLETED,
    XBLOCK_PUBLISHED,
)
from edbus_services.catalog.studio import STUDIO_DDL

__all__ = ["REBUILD_SUBSCRIPTION", "DeadLetter", "DemoReport", "RebuildCheck", "SubscriptionReport", "build_report",
           "check_rebuild", "compare_catalogs"]

REBUILD_SUBSCRIPTION = "replica-rebuild"

_LABELS = {COURSE_CREATED.event_type: "created", COURSE_RERUN_COMPLETED.event_type: "rerun",
           COURSE_CATALOG_INFO_CHANGED.event_type: "changed", XBLOCK_PUBLISHED.event_type: "published"}
_FIELDS = ("course_key", "name", "start", "end", "pacing", "enrollment_start", "enrollment_end", "hidden",
           "invitation_only", "last_event_id")


@dataclasses.dataclass(frozen=True)
class SubscriptionReport:
    name: str
    mode: str
    processes: int
    recorded: int  # events with an effect in the service's database
    deliveries: int  # events its processes finished: acked or dead-lettered
    retries: int
    duplicates: int  # deliveries of events already applied, ignored
    dead_lettered: int
    backlog: int


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    event_id: str
    course_key: str
    error_type: str  # the exception's class name
    error: str
    attempts: int


@dataclasses.dataclass(frozen=True)
class RebuildCheck:
    events: int
    seconds: float
    runs: int
    equal: bool  # every row and column equal to the live replica's


def check_rebuild(config: DemoConfig, bus: Bus) -> RebuildCheck:
    """Rebuild the replica by replaying the topic through a new subscription (deleted after) into a new
    file, and compare it with the live replica."""
    path = config.path("replica-rebuilt.db")
    result = rebuild(bus, config.topic, path, subscription=REBUILD_SUBSCRIPTION, idle_timeout=0.5,
                     max_attempts=config.max_attempts, keep_subscription=False)
    live, rebuilt = CatalogReplica(config.replica_db), CatalogReplica(path)
    try:
        return RebuildCheck(result.events, result.seconds, result.runs, live.runs() == rebuilt.runs())
    finally:
        live.close()
        rebuilt.close()


@dataclasses.dataclass
class DemoReport:
    planned: int
    published: int
    by_type: dict[str, int]
    poison_ids: set[str]
    replica: SubscriptionReport
    audit: SubscriptionReport
    source_courses: int
    replica_courses: int
    mismatches: list[str]
    applied_exactly_once: bool
    order_preserved: bool
    dead_letters: list[DeadLetter]
    latency_p50: float
    latency_p99: float
    latency_max: float
    rebuild: RebuildCheck | None = None  # the replica rebuilt by replay, compared with the live one
    duration: float = 0.0
    exit_codes: dict[str, int | None] = dataclasses.field(default_factory=dict)
    left_running: int = 0
    killed: list[str] = dataclasses.field(default_factory=list)  # SIGKILLed on purpose (chaos)
    services: list[tuple[str, ServiceFigures]] = dataclasses.field(default_factory=list)  # the other services

    @property
    def replica_equal(self) -> bool:
        """Every course row identical (fields and the event that last set it), and every valid change
        applied exactly once."""
        return not self.mismatches and self.applied_exactly_once

    @property
    def dead_letters_ok(self) -> bool:
        ids = [d.event_id for d in self.dead_letters]
        return len(ids) == len(set(ids)) and set(ids) == self.poison_ids

    @property
    def audit_complete(self) -> bool:
        return self.audit.recorded == self.published

    @property
    def clean_shutdown(self) -> bool:
        return self.left_running == 0 and all(code == 0 for name, code in self.exit_codes.items()
                                              if name not in self.killed)

    @property
    def ok(self) -> bool:
        return (self.published == self.planned and self.replica_equal and self.dead_letters_ok
                and self.audit_complete and self.order_preserved and self.clean_shutdown
                and (self.rebuild is None or self.rebuild.equal)
                and all(figures.ok for _, figures in self.services))


def compare_catalogs(source: dict[str, CourseRow], replica: dict[str, CourseRow]) -> list[str]:
    """Differences between two catalogs, one line each: missing, unexpected or differing courses."""
    out = [f"{key}: missing from the replica" for key in sorted(source.keys() - replica.keys())]
    out += [f"{key}: in the replica, not in the source" for key in sorted(replica.keys() - source.keys())]
    for key in sorted(source.keys() & replica.keys()):
        diff = [f"{name} {a!r} != {b!r}" for name, a, b in zip(_FIELDS, source[key], replica[key], strict=True)
                if a != b]
        if diff:
            out.append(f"{key}: " + "; ".join(diff))
    return out


def _subscription(bus: Bus, config: DemoConfig, name: str, db: Database, recorded: int,
                  mode: str) -> SubscriptionReport:
    runs = read_runs(db)
    stats = {s.subscription: s for s in bus.subscriptions(config.topic)}.get(name)
    return SubscriptionReport(
        name=name, mode=mode, processes=len(runs), recorded=recorded,
        deliveries=sum(r["processed"] for r in runs), retries=sum(r["retried"] for r in runs),
        duplicates=sum(r["duplicates"] for r in runs),
        dead_lettered=stats.dead_lettered if stats else 0, backlog=stats.backlog if stats else -1)


def _dead_letters(bus: Bus, config: DemoConfig) -> list[DeadLetter]:
    out = []
    for message, _, _ in bus.read(dlq_topic(config.topic, REPLICA_SUBSCRIPTION)):
        headers: Any = message.record.headers
        out.append(DeadLetter(message.record.id, message.record.key or "",
                              headers.get("edbus_dlq_error_type", "?").rsplit(".", 1)[-1],
                              headers.get("edbus_dlq_error_message", ""), int(headers.get("edbus_dlq_attempts", "0"))))
    return out


def build_report(config: DemoConfig, bus: Bus, planned: int) -> DemoReport:
    studio = Database(config.studio_db, STUDIO_DDL)
    replica = CatalogReplica(config.replica_db)
    audit = AuditLog(config.audit_db)
    try:
        changes = studio.query("SELECT event_id, type, event_key, poison FROM changes ORDER BY seq")
        by_type = dict(collections.Counter(_LABELS.get(row[1], row[1]) for row in changes))
        poison_ids = {row[0] for row in changes if row[3]}
        source_order: dict[str, list[str]] = {}
        for event_id, _, key, _ in changes:
            source_order.setdefault(key, []).append(event_id)
        source, copy = read_courses(studio), replica.courses()
        applied = replica.applied_ids()
        latencies = replica.latencies()
        topic = {t.topic: t for t in bus.topics()}.get(bus.topic(config.topic))
        return DemoReport(
            planned=planned, published=topic.events if topic else 0, by_type=by_type, poison_ids=poison_ids,
            replica=_subscription(bus, config, REPLICA_SUBSCRIPTION, replica.db, len(applied), "key_ordered"),
            audit=_subscription(bus, config, AUDIT_SUBSCRIPTION, audit.db, audit.count(), "exclusive"),
            source_courses=len(source), replica_courses=len(copy), mismatches=compare_catalogs(source, copy),
            applied_exactly_once=applied == {row[0] for row in changes if not row[3]},
            order_preserved=audit.sequences() == source_order,
            dead_letters=_dead_letters(bus, config),
            latency_p50=percentile(latencies, 50), latency_p99=percentile(latencies, 99),
            latency_max=max(latencies, default=0.0))
    finally:
        studio.close()
        replica.close()
        audit.close()

