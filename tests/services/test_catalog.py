"""The catalog replica kept from openedx-events events: equal to the source, idempotent, order-safe per
course run, rebuilt by replay, and bad input dead-lettered without touching other courses."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import uuid
from pathlib import Path
from typing import Any

import attrs
import pytest
from opaque_keys.edx.keys import CourseKey, UsageKey
from openedx_events.content_authoring.data import CourseCatalogData, CourseData, CourseScheduleData, XBlockData
from openedx_events.event_bus.avro.serializer import AvroSignalSerializer

from edbus import Bus, Envelope, Event, Mode, StartAt
from edbus.errors import ConfigError, DecodeError
from edbus_services.catalog import (
    CATALOG_SIGNALS,
    CatalogReplica,
    CatalogValidationError,
    SignalPublisher,
    producer_config,
    rebuild,
)
from edbus_services.catalog.db import CourseRow, course_row
from edbus_services.catalog.planner import PlannedEvent, plan_events
from edbus_services.catalog.signals import COURSE_CATALOG_INFO_CHANGED, COURSE_CREATED, XBLOCK_PUBLISHED

TOPIC = "catalog"
KEY = "course-v1:edX+DemoX+2024_T1"
START = dt.datetime(2024, 1, 15, 9, tzinfo=dt.UTC)
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
CHANGED = COURSE_CATALOG_INFO_CHANGED.event_type


def info(name: str = "Demonstration Course", key: str = KEY, **fields: Any) -> Any:
    fields.setdefault("schedule_data",
                      CourseScheduleData(start=START, pacing="instructor", end=START + dt.timedelta(weeks=8)))
    return CourseCatalogData(course_key=CourseKey.from_string(key), name=name, **fields)


def event(event_type: str, data: dict[str, Any], when: dt.datetime, event_id: str | None = None) -> Event[Any]:
    """An event as the replica's consumer hands it over: Avro data as plain dicts."""
    spec = CATALOG_SIGNALS[event_type]
    avro = AvroSignalSerializer(spec.signal).to_dict(data)
    envelope = Envelope(event_id or str(uuid.uuid4()), event_type, "openedx/cms/web", when, 0, "localhost", "10.5.0")
    first, attribute = spec.key_field.split(".")
    return Event(envelope, avro, str(getattr(data[first], attribute)), 1, TOPIC)


def publish_plan(bus: Bus, plan: list[PlannedEvent]) -> dict[str, CourseRow]:
    """Publish ``plan`` as Studio does (strictly increasing times per course); returns Studio's catalog."""
    publisher = SignalPublisher(bus)
    source: dict[str, CourseRow] = {}
    when = T0
    records = []
    for planned in plan:
        when += dt.timedelta(milliseconds=1)
        record = publisher.record(TOPIC, planned.event_type, planned.data, time=when)
        records.append(record)
        if planned.catalog_info is not None and not planned.poison:
            source[planned.course_key] = course_row(planned.catalog_info, record.id)
    for i in range(0, len(records), 200):
        publisher.publish(TOPIC, records[i:i + 200])
    return source


def consume(bus: Bus, replica: CatalogReplica, subscription: str = "replica", **options: Any) -> int:
    consumer = bus.consumer(TOPIC, subscription, mode=Mode.KEY_ORDERED, max_attempts=2, **options)
    replica.register(consumer)
    return consumer.run(idle_timeout=1.0, install_signals=False)


@pytest.fixture
def replica(tmp_path: Path):
    r = CatalogReplica(tmp_path / "replica.db")
    yield r
    r.close()


# -- through the bus, on every backend -------------------------------------------------------------------
def test_replica_and_its_rebuild_by_replay_equal_the_source_after_random_creates_reruns_changes_and_publishes(
        bus: Bus, tmp_path: Path, replica: CatalogReplica):
    seed = random.randrange(1 << 30)
    plan = plan_events(courses=40, changes=500, poison=3, seed=seed)
    source = publish_plan(bus, plan)

    assert consume(bus, replica, backoff=None) == len(plan)

    assert replica.courses() == source, f"seed {seed}"
    assert len(replica.applied_ids()) == len(plan) - 3  # the poison changes were dead-lettered
    runs = replica.runs()
    assert set(runs) == {p.course_key for p in plan}
    assert all(r["created_at"] is not None for r in runs.values())  # every run got its created/rerun event
    published = {p.course_key for p in plan if p.event_type.endswith("xblock.published.v1")}
    assert {k for k, r in runs.items() if r["content_published_at"] is not None} == published
    reruns = [p.course_key for p in plan if p.event_type.endswith("rerun.completed.v1")]
    catalog = replica.catalog()
    assert all(k in catalog[(CourseKey.from_string(k).org, CourseKey.from_string(k).course)] for k in reruns)

    result = rebuild(bus, TOPIC, tmp_path / "rebuilt.db", subscription="rebuild", idle_timeout=1.0,
                     keep_subscription=False)

    assert result.events == len(plan) and result.runs == len(runs) and result.with_catalog_info == len(source)
    rebuilt = CatalogReplica(tmp_path / "rebuilt.db")
    try:
        assert rebuilt.courses() == source
        assert rebuilt.runs() == runs  # every column: created, content published, the event that set it
    finally:
        rebuilt.close()


def test_an_older_change_published_after_a_newer_one_does_not_overwrite_it(bus: Bus, replica: CatalogReplica):
    publisher = SignalPublisher(bus)
    newer = publisher.record(TOPIC, CHANGED, {"catalog_info": info("New name")}, time=T0 + dt.timedelta(seconds=1))
    older = publisher.record(TOPIC, CHANGED, {"catalog_info": info("Old name")}, time=T0)
    publisher.publish(TOPIC, [newer])
    publisher.publish(TOPIC, [older])  # e.g. two Studio workers racing: the older edit is sent last

    assert consume(bus, replica) == 2

    assert replica.courses()[KEY][1] == "New name" and replica.courses()[KEY][-1] == newer.id


def test_a_replay_of_the_whole_topic_changes_nothing(bus: Bus, replica: CatalogReplica):
    plan = plan_events(courses=10, changes=80, poison=0, seed=3)
    source = publish_plan(bus, plan)
    assert consume(bus, replica) == len(plan)
    runs = replica.runs()

    bus.backend.seek(bus.topic(TOPIC), "replica", StartAt("earliest"))
    assert consume(bus, replica) == len(plan)  # every event delivered again

    assert replica.duplicates == len(plan)
    assert replica.runs() == runs and replica.courses() == source


def test_bad_payloads_are_dead_lettered_and_other_courses_go_on(url: str, bus: Bus, replica: CatalogReplica):
    publisher = SignalPublisher(bus)
    other = "course-v1:MITx+6.002x+2024_T1"
    good = publisher.record(TOPIC, CHANGED, {"catalog_info": info()}, time=T0)
    undecodable = dataclasses.replace(good, id=str(uuid.uuid4()), payload=b"\xff\xfe not avro")
    bad_key = publisher.record(TOPIC, CHANGED, {"catalog_info": attrs.evolve(info(), course_key="not a course key")},
                               time=T0 + dt.timedelta(seconds=1))
    blank = publisher.record(TOPIC, CHANGED, {"catalog_info": info("  ")}, time=T0 + dt.timedelta(seconds=2))
    later = publisher.record(TOPIC, CHANGED, {"catalog_info": info("Renamed")}, time=T0 + dt.timedelta(seconds=3))
    elsewhere = publisher.record(TOPIC, CHANGED, {"catalog_info": info("Circuits", other)}, time=T0)
    created = publisher.record(TOPIC, COURSE_CREATED.event_type,
                               {"course": CourseData(course_key=CourseKey.from_string(other))}, time=T0)
    publisher.publish(TOPIC, [good, undecodable, bad_key, blank, later, created, elsewhere])

    assert consume(bus, replica, backoff=None) == 7

    published = {r.id for r in (good, undecodable, bad_key, blank, later, created, elsewhere)}
    assert published - replica.applied_ids() == {undecodable.id, bad_key.id, blank.id}
    stats = {s.subscription: s for s in bus.backend.subscriptions(bus.topic(TOPIC))}["replica"]
    assert stats.dead_lettered == 3 and stats.backlog == 0
    # the error of each: reading a topic on Pulsar needs a reader, and pulsar-client 3.5.0 crashes in
    # create_reader now and then (seen by the xAPI feed's tests), so only on the embedded store
    if url.startswith("sqlite"):
        dlq = f"{TOPIC}.replica.dlq"
        dead = {m.record.id: m.record.headers["edbus_dlq_error_type"].rsplit(".", 1)[-1]
                for m in bus.backend.read(dlq, StartAt("earliest"), 100)}
        assert dead == {undecodable.id: "DecodeError", bad_key.id: "DecodeError", blank.id: "CatalogValidationError"}
    courses = replica.courses()
    assert courses[KEY][1] == "Renamed"  # the events after the bad ones, same course, were applied
    assert courses[other][1] == "Circuits"


# -- the replica's rules, event by event ------------------------------------------------------------------
def test_events_of_other_types_on_the_topic_are_ignored(replica: CatalogReplica):
    other = event(CHANGED, {"catalog_info": info()}, T0)
    other = dataclasses.replace(other, envelope=dataclasses.replace(
        other.envelope, type="org.openedx.learning.course.enrollment.created.v1"))

    assert replica.apply(other) is False

    assert replica.ignored == 1 and replica.runs() == {}


def test_content_published_in_a_course_counts_and_in_a_library_is_ignored(replica: CatalogReplica):
    course_block = UsageKey.from_string(f"block-v1:{KEY[len('course-v1:'):]}+type@vertical+block@unit1")
    library_block = UsageKey.from_string("lb:edX:demo-lib:html:intro")
    later = T0 + dt.timedelta(hours=1)

    for block, when in ((course_block, later), (course_block, T0), (library_block, later)):
        replica.apply(event(XBLOCK_PUBLISHED.event_type,
                            {"xblock_info": XBlockData(usage_key=block, block_type=block.block_type)}, when))

    assert replica.ignored == 1
    runs = replica.runs()
    assert list(runs) == [KEY] and runs[KEY]["content_published_at"] == round(later.timestamp() * 1e6)


def test_an_event_delivered_twice_is_applied_once(replica: CatalogReplica):
    changed = event(CHANGED, {"catalog_info": info()}, T0)

    assert replica.apply(changed) is True
    before = replica.runs()
    assert replica.apply(dataclasses.replace(changed, attempt=2)) is False

    assert replica.runs() == before and replica.duplicates == 1


def test_events_of_one_course_in_any_order_give_the_rows_of_the_published_order(tmp_path: Path):
    names = [f"Name {i}" for i in range(12)]
    events = [event(COURSE_CREATED.event_type, {"course": CourseData(course_key=CourseKey.from_string(KEY))}, T0)]
    events += [event(CHANGED, {"catalog_info": info(name, hidden=i % 2 == 1)}, T0 + dt.timedelta(seconds=i + 1))
               for i, name in enumerate(names)]
    in_order = CatalogReplica(tmp_path / "in-order.db")
    for e in events:
        in_order.apply(e)
    expected = in_order.runs()
    assert expected[KEY]["name"] == names[-1]
    for seed in range(5):
        shuffled = events[:]
        random.Random(seed).shuffle(shuffled)
        replica = CatalogReplica(tmp_path / f"shuffled-{seed}.db", journal=False)
        for e in shuffled + shuffled[:4]:  # and some delivered twice
            replica.apply(e)
        assert replica.runs() == expected, seed
        replica.close()
    in_order.close()


def test_the_replica_refuses_a_catalog_change_it_must_not_show(replica: CatalogReplica):
    replica.apply(event(CHANGED, {"catalog_info": info("Valid")}, T0))
    before = replica.runs()
    refused = [info("   "), info("x" * 300), info(schedule_data=CourseScheduleData(start=START, pacing="fast")),
               info(schedule_data=CourseScheduleData(start=START, pacing="self", end=START - dt.timedelta(days=1)))]

    for n, data in enumerate(refused, 1):
        with pytest.raises(CatalogValidationError):
            replica.apply(event(CHANGED, {"catalog_info": data}, T0 + dt.timedelta(seconds=n)))

    assert replica.runs() == before


def test_data_that_does_not_fit_the_signal_is_a_decode_error(replica: CatalogReplica):
    bad = event(CHANGED, {"catalog_info": info()}, T0)
    bad.data["catalog_info"]["course_key"] = "not a key"

    with pytest.raises(DecodeError, match="does not fit the signal"):
        replica.apply(bad)


def test_a_rebuild_needs_a_new_subscription_and_an_empty_replica(tmp_path: Path):
    with Bus.from_url(f"sqlite:///{tmp_path / 'bus.db'}") as bus:
        bus.backend.subscribe(bus.topic(TOPIC), "live", Mode.KEY_ORDERED, StartAt())
        with pytest.raises(ConfigError, match="exists"):
            rebuild(bus, TOPIC, tmp_path / "new.db", subscription="live")
        (tmp_path / "used.db").write_text("rows")
        with pytest.raises(ConfigError, match="empty replica"):
            rebuild(bus, TOPIC, tmp_path / "used.db", subscription="rebuild")


def test_the_producer_config_routes_every_catalog_signal_to_one_topic_with_its_key_field():
    config = producer_config("prod-catalog")

    assert set(config) == set(CATALOG_SIGNALS)
    assert {topic for routes in config.values() for topic in routes} == {"prod-catalog"}
    assert config[CHANGED]["prod-catalog"]["event_key_field"] == "catalog_info.course_key"  # as edx-platform


def test_the_catalog_service_command_keeps_a_replica(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from edbus_services.catalog.consume import main

    url = f"sqlite:///{tmp_path / 'bus.db'}"
    with Bus.from_url(url) as bus:
        source = publish_plan(bus, plan_events(courses=5, changes=20, poison=0, seed=5))
    args = [TOPIC, "catalog-replica", "--url", url, "--idle-exit", "1"]

    assert main([*args, "--db", ""]) == 1
    assert "--db (or $EDBUS_CATALOG_DB) is required" in capsys.readouterr().err
    assert main([*args, "--db", str(tmp_path / "replica.db")]) == 0

    replica = CatalogReplica(tmp_path / "replica.db")
    try:
        assert replica.courses() == source
    finally:
        replica.close()


def test_the_demos_rebuild_check_compares_every_column_with_the_live_replica(tmp_path: Path):
    from edbus_services.catalog import DemoConfig
    from edbus_services.catalog.report import check_rebuild

    config = DemoConfig(url=f"sqlite:///{tmp_path / 'bus.db'}", workdir=str(tmp_path), topic=TOPIC)
    with Bus.from_url(config.url) as bus:
        publish_plan(bus, plan_events(courses=8, changes=40, poison=0, seed=9))
        live = CatalogReplica(config.replica_db)
        consume(bus, live)
        with live.db.write() as conn:  # one column of one run differs from what the events say
            conn.execute("UPDATE course_runs SET content_published_at = 1 WHERE rowid = 3")
        live.close()

        check = check_rebuild(config, bus)

        assert check.events > 40 and not check.equal
        config.path("replica-rebuilt.db").unlink()
        with CatalogReplica(config.replica_db).db.write() as conn:
            conn.execute("DELETE FROM course_runs")
        assert not check_rebuild(config, bus).equal


def test_group_commit_undoes_only_the_write_that_raises_and_raises_it_in_its_own_thread(tmp_path: Path):
    import threading

    from edbus_services.catalog.db import Database, GroupCommit

    db = Database(tmp_path / "g.db", "CREATE TABLE t(n INTEGER PRIMARY KEY);")
    commits = GroupCommit(db)
    errors: dict[int, BaseException] = {}
    start = threading.Barrier(16)

    def write(n: int) -> None:
        def insert(conn: Any) -> int:
            conn.execute("INSERT INTO t VALUES (?)", (n,))
            if n % 5 == 0:
                raise ValueError(n)  # after its insert: the savepoint must undo it
            return n
        start.wait()
        try:
            assert commits.run(insert) == n
        except ValueError as exc:
            errors[n] = exc

    threads = [threading.Thread(target=write, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(errors) == [0, 5, 10, 15]
    assert [r[0] for r in db.query("SELECT n FROM t ORDER BY n")] == [n for n in range(16) if n % 5]
    db.close()
