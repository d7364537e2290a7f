"""Publishing: validation before storage, size limit, idempotency, group commit, schema registry."""

from __future__ import annotations

import dataclasses
import datetime as dt

import attrs
import pytest

from edbus import Bus, EventType
from edbus.errors import ConfigError, EventTooLargeError, IncompatibleSchemaError, ValidationError
from tests.events import CATALOG_CHANGED, SEQ, CourseInfo, Schedule, Seq, course


def stored(bus: Bus, topic: str = "catalog") -> int:
    return sum(t.events for t in bus.backend.topics() if t.topic == topic)


def test_publish_returns_the_id_of_a_stored_event(bus: Bus) -> None:
    event_id = bus.publish("catalog", CATALOG_CHANGED, course(1))
    [(message, envelope, data)] = list(bus.read("catalog"))
    assert message.record.id == envelope.id == event_id
    assert message.record.key == "course-v1:edX+C1+2024_T1"
    assert envelope.type == CATALOG_CHANGED.name and envelope.specversion == "1.0"
    assert envelope.sourcelib == "edbus" and envelope.sourcehost and envelope.traceparent
    assert data["name"] == "Course 1"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (CourseInfo(5, "n", Schedule(dt.datetime.now(dt.UTC))), "course_key: expected str, got int"),  # type: ignore[arg-type]
        (CourseInfo("k", "n", "not a schedule"), "schedule: expected Schedule"),  # type: ignore[arg-type]
        (CourseInfo("k", "n", Schedule("2024")), "schedule.start: expected datetime"),  # type: ignore[arg-type]
        (CourseInfo("k", "n", Schedule(dt.datetime.now(dt.UTC)), tags=[1]), r"tags\[0\]: expected str"),  # type: ignore[list-item]
        ("a string", "expected CourseInfo"),
    ],
)
def test_invalid_payload_is_refused_with_the_field_and_nothing_is_stored(bus: Bus, payload: object,
                                                                        message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        bus.publish("catalog", CATALOG_CHANGED, payload)
    assert stored(bus) == 0


def test_integer_out_of_avro_long_range_is_refused(bus: Bus) -> None:
    with pytest.raises(ValidationError, match=r"n: expected int \(64-bit\)"):
        bus.publish("catalog", SEQ, Seq("k", 2**70))
    assert stored(bus) == 0


def test_missing_key_is_refused(bus: Bus) -> None:
    @dataclasses.dataclass
    class NoKey:
        key: str | None

    kind = EventType("org.openedx.test.nokey.made.v1", NoKey, key="key")
    with pytest.raises(ValidationError, match="key field 'key' is missing"):
        bus.publish("t", kind, NoKey(None))


def test_bad_event_type_names_and_unsupported_fields_are_refused() -> None:
    with pytest.raises(ConfigError, match="bad event type name"):
        EventType("CourseChanged", Seq)

    @attrs.frozen
    class Weird:
        x: set[int]

    with pytest.raises(ValidationError, match="unsupported field type"):
        EventType("org.openedx.test.weird.made.v1", Weird)


def test_oversized_event_is_refused_at_publish(tmp_path: object) -> None:
    bus = Bus.from_url(f"sqlite:///{tmp_path}/e.db", max_event_bytes=2048)
    with pytest.raises(EventTooLargeError, match="over the 2048-byte limit"):
        bus.publish("catalog", CATALOG_CHANGED, course(1, name="x" * 4096))
    assert stored(bus) == 0


def test_same_event_id_published_twice_is_stored_once(bus: Bus) -> None:
    bus.publish("catalog", CATALOG_CHANGED, course(1), id="fixed")
    bus.publish("catalog", CATALOG_CHANGED, course(1), id="fixed")
    assert stored(bus) == 1


def test_reusing_an_event_id_for_another_payload_is_refused_and_stores_nothing(bus: Bus) -> None:
    bus.publish("t", SEQ, Seq("k", 1), id="same")
    with pytest.raises(ValidationError, match="already in topic 't' with another payload"):
        bus.publish_many("t", [(SEQ, Seq("k", 2), "new"), (SEQ, Seq("k", 3), "same")])
    assert stored(bus, "t") == 1


def test_event_ids_do_not_repeat_when_the_application_seeds_random(bus: Bus) -> None:
    import random

    random.seed(42)
    first = bus.publish("t", SEQ, Seq("k", 1))
    random.seed(42)
    second = bus.publish("t", SEQ, Seq("k", 2))
    assert first != second and stored(bus, "t") == 2


def test_publish_many_is_all_or_nothing_when_one_payload_is_bad(bus: Bus) -> None:
    with pytest.raises(ValidationError):
        bus.publish_many("catalog", [(CATALOG_CHANGED, course(1)), (CATALOG_CHANGED, "bad")])
    assert stored(bus) == 0
    ids = bus.publish_many("catalog", [(CATALOG_CHANGED, course(i)) for i in range(50)] + [(SEQ, Seq("k", 1))])
    assert len(set(ids)) == 51 and stored(bus) == 51


def test_something_that_is_not_an_event_type_is_refused_with_a_clear_error_and_nothing_stored(bus: Bus) -> None:
    with pytest.raises(ValidationError, match="expected an EventType, got str 'course'"):
        bus.publish("catalog", "course", course(1))  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="expected an EventType, got list"):
        bus.publish_many("catalog", [(CATALOG_CHANGED, course(1)), ([CATALOG_CHANGED], course(2))])  # type: ignore[list-item]
    assert stored(bus) == 0


def test_publish_many_takes_caller_chosen_ids_and_stores_a_retried_batch_once(bus: Bus) -> None:
    batch = [(SEQ, Seq("k", n), f"id-{n}") for n in range(3)]
    assert bus.publish_many("t", batch) == ["id-0", "id-1", "id-2"]
    bus.publish_many("t", batch)
    assert stored(bus, "t") == 3
    with pytest.raises(ValidationError, match="expected"):
        bus.publish_many("t", [(SEQ,)])  # type: ignore[list-item]


def test_a_sequence_is_kept_with_the_event_and_a_bad_one_is_refused_before_anything_is_stored(bus: Bus) -> None:
    bus.publish("t", SEQ, Seq("k", 1), id="a", sequence=0)
    assert bus.publish_many("t", [(SEQ, Seq("k", 3), "c", 3), (SEQ, Seq("k", 4), "d", 4)]) == ["c", "d"]
    record = dataclasses.replace(bus.codec.encode(bus.topic("t"), SEQ, Seq("k", 2), id="b"), sequence=2**63 - 1)
    assert bus.publish_encoded("t", [record]) == ["b"]
    for bad in (-1, 2**63, 1.5, True, "3"):
        with pytest.raises(ValidationError, match="bad sequence"):
            bus.publish("t", SEQ, Seq("k", 3), id="e", sequence=bad)  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="bad sequence"):
            bus.publish_many("t", [(SEQ, Seq("k", 5), "f", 5), (SEQ, Seq("k", 6), "g", bad)])  # type: ignore[list-item]
        with pytest.raises(ValidationError, match="bad sequence"):
            bus.publish_encoded("t", [dataclasses.replace(record, id="e", sequence=bad)])  # type: ignore[arg-type]
    assert stored(bus, "t") == 4  # nothing of a publish with a bad sequence


def test_bad_topic_names_are_refused(bus: Bus) -> None:
    for topic in ("", "has space", "x.s.dlq"):
        with pytest.raises(ConfigError, match="bad topic name"):
            bus.publish(topic, SEQ, Seq("k", 1))


# -- schema evolution ---------------------------------------------------------------------------

@attrs.frozen
class V1:
    key: str
    title: str


@attrs.frozen
class V2Added:
    key: str
    title: str
    subtitle: str | None = None


@attrs.frozen
class V2Removed:
    key: str


NAME = "org.openedx.test.doc.changed.v1"


def test_forward_rule_refuses_removing_a_required_field_and_names_it(bus: Bus) -> None:
    bus.publish("docs", EventType(NAME, V1, key="key"), V1("a", "t"))
    with pytest.raises(IncompatibleSchemaError, match=r"FORWARD.*'title'"):
        bus.publish("docs", EventType(NAME, V2Removed, key="key"), V2Removed("a"))
    assert stored(bus, "docs") == 1


def test_adding_an_optional_field_is_a_new_version_and_old_and_new_readers_both_decode(bus: Bus) -> None:
    v1, v2 = EventType(NAME, V1, key="key"), EventType(NAME, V2Added, key="key")
    bus.publish("docs", v1, V1("a", "old"))
    bus.publish("docs", v2, V2Added("b", "new", "sub"))
    assert [v.version for v in bus.registry.versions(NAME)] == [1, 2]
    messages = [m for m, _, _ in bus.read("docs")]
    assert [bus.codec.decode(m, v2)[1] for m in messages] == [V2Added("a", "old", None), V2Added("b", "new", "sub")]
    assert [bus.codec.decode(m, v1)[1] for m in messages] == [V1("a", "old"), V1("b", "new")]


def test_backward_rule_refuses_a_new_required_field(bus: Bus) -> None:
    @attrs.frozen
    class V2Required:
        key: str
        title: str
        body: str

    from edbus import Rule

    bus.registry.set_rule("docs", Rule.BACKWARD)
    bus.publish("docs", EventType(NAME, V1, key="key"), V1("a", "t"))
    with pytest.raises(IncompatibleSchemaError, match=r"BACKWARD.*'body'.*no default"):
        bus.publish("docs", EventType(NAME, V2Required, key="key"), V2Required("a", "t", "b"))


def test_a_version_registered_through_a_lax_topic_is_still_checked_on_a_strict_one(bus: Bus) -> None:
    from edbus import Rule

    bus.publish("strict", EventType(NAME, V1, key="key"), V1("a", "t"))
    bus.registry.set_rule("lax", Rule.NONE)
    bus.publish("lax", EventType(NAME, V2Removed, key="key"), V2Removed("a"))
    with pytest.raises(IncompatibleSchemaError, match="'title'"):
        bus.publish("strict", EventType(NAME, V2Removed, key="key"), V2Removed("b"))
