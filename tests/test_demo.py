"""``edbus demo`` end to end (separate processes), and the catalog services' guarantees one by one."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edbus import Bus, Envelope, Event, EventType, StartAt
from edbus.apps.catalog import (
    COURSE_CATALOG_INFO_CHANGED,
    COURSE_CREATED,
    COURSE_DELETED,
    TOPIC,
    AuditLog,
    CatalogInfoChanged,
    CatalogReplica,
    CatalogValidationError,
    CourseCatalogData,
    CourseCreated,
    CourseData,
    CourseDeleted,
    CoursePacing,
    CourseScheduleData,
    DemoConfig,
)
from edbus.apps.catalog.planner import POISON_NAME, plan_events
from edbus.apps.catalog.report import compare_catalogs
from edbus.apps.catalog.runner import DemoFailed, run_demo
from edbus.cli.demo import demo

KEY = "course-v1:edX+DemoX+2024_T1"
START = dt.datetime(2024, 1, 15, 9, tzinfo=dt.UTC)


def demo_processes(marker: Path) -> list[int]:
    """Pids of live demo worker processes whose command line mentions ``marker`` (their work directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"edbus.apps.catalog.worker" in cmdline and str(marker).encode() in cmdline:
                found.append(int(entry.name))
    return found


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return sorted(conn.execute(sql).fetchall())


def catalog_info(name: str = "Demonstration Course", key: str = KEY, hidden: bool = False) -> CourseCatalogData:
    schedule = CourseScheduleData(START, CoursePacing.INSTRUCTOR, START + dt.timedelta(weeks=8))
    return CourseCatalogData(key, name, schedule, hidden=hidden)


def event(event_type: EventType[Any], payload: Any, event_id: str | None = None, attempt: int = 1) -> Event[Any]:
    envelope = Envelope(event_id or str(uuid.uuid4()), event_type.name, "tests", dt.datetime.now(dt.UTC), 0,
                        "localhost", "edbus")
    return Event(envelope, payload, event_type.key_of(payload), attempt, TOPIC)


# -- the demo, end to end -------------------------------------------------------------------------------
def test_demo_exits_zero_with_replica_equal_to_source_poison_dead_lettered_and_no_process_left(tmp_path: Path):
    workdir = tmp_path / "run"
    result = CliRunner().invoke(demo, ["--workdir", str(workdir), "--courses", "30", "--changes", "300",
                                       "--poison", "3", "--rate", "0", "--timeout", "25"])

    assert result.exit_code == 0, result.output
    assert re.search(r"replica equals source\s+yes", result.output)
    assert re.search(r"dead letters\s+3 in course-catalog\.replica\.dlq", result.output)
    assert re.search(r"result\s+OK", result.output)
    # the databases say the same as the summary
    courses = "SELECT * FROM courses"
    assert rows(workdir / "replica.db", courses) == rows(workdir / "studio.db", courses)
    assert len(rows(workdir / "studio.db", courses)) >= 30
    poison = {r[0] for r in rows(workdir / "studio.db", "SELECT event_id FROM changes WHERE poison=1")}
    with Bus.from_url(f"sqlite:///{workdir / 'bus.db'}", create=False) as bus:
        dead = [m.record.id for m, _, _ in bus.read("course-catalog.replica.dlq")]
    assert len(poison) == 3 and sorted(dead) == sorted(poison)
    published = rows(workdir / "studio.db", "SELECT count(*) FROM changes")[0][0]
    assert rows(workdir / "audit.db", "SELECT count(*) FROM audit_log")[0][0] == published
    assert demo_processes(workdir) == []


def test_replica_killed_mid_run_is_replaced_and_the_replica_still_equals_the_source(tmp_path: Path):
    config = DemoConfig(url=f"sqlite:///{tmp_path / 'bus.db'}", workdir=str(tmp_path), courses=20, changes=400,
                        poison=2, rate=300.0, lease=1.0)

    report = run_demo(config, timeout=25, chaos=True)

    assert report.killed == ["replica-1"] and report.exit_codes["replica-1"] == -9
    assert report.exit_codes["replica-3"] == 0  # the replacement
    assert report.replica_equal and report.applied_exactly_once and report.dead_letters_ok
    assert report.ok
    assert demo_processes(tmp_path) == []


def test_demo_refuses_a_workdir_holding_an_earlier_run(tmp_path: Path):
    (tmp_path / "replica.db").touch()

    result = CliRunner().invoke(demo, ["--workdir", str(tmp_path)])

    assert result.exit_code == 2
    assert "earlier run" in result.output


def test_demo_refuses_a_store_whose_topic_already_has_events(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'bus.db'}"
    with Bus.from_url(url) as bus:
        bus.publish(TOPIC, COURSE_CREATED, CourseCreated(CourseData(KEY)))

    result = CliRunner().invoke(demo, ["--url", url, "--workdir", str(tmp_path / "run")])

    assert result.exit_code == 1
    assert "already has 1 events" in result.output
    assert demo_processes(tmp_path) == []


def test_a_consumer_failing_at_start_fails_the_run_and_kills_every_process(tmp_path: Path):
    config = DemoConfig(url=f"sqlite:///{tmp_path / 'bus.db'}", workdir=str(tmp_path), courses=5, changes=10,
                        backoff_base=-1.0)  # the consumers refuse this backoff (ConfigError) and exit 1

    with pytest.raises(DemoFailed, match="exited with status 1"):
        run_demo(config, timeout=20)

    assert demo_processes(tmp_path) == []


def test_the_deadline_stops_the_run_and_kills_every_process(tmp_path: Path):
    config = DemoConfig(url=f"sqlite:///{tmp_path / 'bus.db'}", workdir=str(tmp_path), courses=5, changes=5000,
                        rate=50.0)

    with pytest.raises(DemoFailed, match="not finished after 3s"):
        run_demo(config, timeout=3)

    assert demo_processes(tmp_path) == []


# -- the replica: idempotent, validating ----------------------------------------------------------------
@pytest.fixture
def replica(tmp_path: Path):
    r = CatalogReplica(tmp_path / "replica.db")
    yield r
    r.close()


def test_replica_applies_an_event_delivered_twice_only_once(replica: CatalogReplica):
    created = event(COURSE_CREATED, CourseCreated(CourseData(KEY)))
    changed = event(COURSE_CATALOG_INFO_CHANGED, CatalogInfoChanged(catalog_info()))

    assert replica.apply(created) is True
    assert replica.apply(changed) is True
    before = replica.courses()
    assert replica.apply(dataclasses.replace(changed, attempt=2)) is False  # redelivered

    assert replica.courses() == before
    assert replica.applied_ids() == {created.id, changed.id}
    assert replica.duplicates == 1


def test_a_redelivered_older_event_does_not_undo_a_later_change(replica: CatalogReplica):
    first = event(COURSE_CATALOG_INFO_CHANGED, CatalogInfoChanged(catalog_info("Old name")))
    second = event(COURSE_CATALOG_INFO_CHANGED, CatalogInfoChanged(catalog_info("New name")))
    replica.apply(first)
    replica.apply(second)

    assert replica.apply(first) is False  # e.g. its ack was lost, and it came back after the newer one

    assert replica.courses()[KEY][1] == "New name"
    assert replica.courses()[KEY][-1] == second.id


def test_a_redelivered_delete_after_a_recreate_has_no_effect(replica: CatalogReplica):
    replica.apply(event(COURSE_CATALOG_INFO_CHANGED, CatalogInfoChanged(catalog_info())))
    deleted = event(COURSE_DELETED, CourseDeleted(CourseData(KEY)))
    replica.apply(deleted)
    assert KEY not in replica.courses()
    replica.apply(event(COURSE_CATALOG_INFO_CHANGED, CatalogInfoChanged(catalog_info("Back again"))))

    assert replica.apply(deleted) is False

    assert replica.courses()[KEY][1] == "Back again"


def test_replica_refuses_a_blank_course_name_and_records_nothing(replica: CatalogReplica):
    replica.apply(event(COURSE_CATALOG_INFO_CHANGED, CatalogInfoChanged(catalog_info("Valid"))))
    before = replica.courses()
    poison = event(COURSE_CATALOG_INFO_CHANGED, CatalogInfoChanged(catalog_info(POISON_NAME)))

    with pytest.raises(CatalogValidationError, match="blank"):
        replica.apply(poison)

    assert replica.courses() == before
    assert poison.id not in replica.applied_ids()


def test_replaying_the_replica_subscription_from_the_start_changes_nothing(tmp_path: Path, replica: CatalogReplica):
    with Bus.from_url(f"sqlite:///{tmp_path / 'bus.db'}") as bus:
        planned = plan_events(courses=10, changes=60, poison=0, seed=1)
        for p in planned:
            bus.publish(TOPIC, p.event_type, p.payload)
        consumer = bus.consumer(TOPIC, "replica")
        replica.register(consumer)
        assert consumer.run(idle_timeout=0.3, install_signals=False) == len(planned)
        after_first_pass = replica.courses()

        bus.backend.seek(bus.topic(TOPIC), "replica", StartAt("earliest"))  # every event delivered again
        again = bus.consumer(TOPIC, "replica")
        replica.register(again)
        assert again.run(idle_timeout=0.3, install_signals=False) == len(planned)

    assert replica.duplicates == len(planned)
    assert replica.courses() == after_first_pass
    assert len(replica.applied_ids()) == len(planned)


def test_audit_records_each_event_once_in_arrival_order(tmp_path: Path):
    audit = AuditLog(tmp_path / "audit.db")
    events = [event(COURSE_CREATED, CourseCreated(CourseData(KEY))),
              event(COURSE_CATALOG_INFO_CHANGED, CatalogInfoChanged(catalog_info(POISON_NAME))),
              event(COURSE_DELETED, CourseDeleted(CourseData(KEY)))]
    for e in [*events, events[0]]:
        audit.record(e)

    assert audit.count() == 3
    assert audit.sequences() == {KEY: [e.id for e in events]}
    audit.close()


# -- Studio's plan and the comparison -------------------------------------------------------------------
def test_studio_plan_is_deterministic_with_real_course_keys_and_the_requested_poison():
    plan = plan_events(courses=20, changes=200, poison=4, seed=7)

    assert plan == plan_events(courses=20, changes=200, poison=4, seed=7)
    assert [p.payload.catalog_info.name for p in plan if p.poison] == [POISON_NAME] * 4
    assert all(re.fullmatch(r"course-v1:[A-Za-z]+\+[\w.]+\+\w+", p.course_key) for p in plan)
    first_event_of = {}
    for p in plan:
        first_event_of.setdefault(p.course_key, p.event_type)
    assert set(first_event_of.values()) == {COURSE_CREATED}  # every course is created before anything else


def test_compare_catalogs_lists_missing_unexpected_and_differing_courses():
    row = (KEY, "Name", "2024-01-15T09:00:00+00:00", None, "instructor", None, None, 0, 0, "e1")
    other = ("course-v1:MITx+6.002x+2024_T1", *row[1:])

    diff = compare_catalogs({KEY: row, other[0]: other}, {KEY: (*row[:1], "Renamed", *row[2:])})

    assert diff == [f"{other[0]}: missing from the replica", f"{KEY}: name 'Name' != 'Renamed'"]
    assert compare_catalogs({KEY: row}, {KEY: row}) == []
