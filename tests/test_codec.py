"""The codec, property-tested: any valid payload round-trips; any bytes either decode or raise
DecodeError (never another exception)."""

from __future__ import annotations

import datetime as dt
import uuid

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edbus.backends import Message, Record
from edbus.errors import DecodeError, EventTooLargeError, ValidationError
from edbus.events import Codec, EventType
from edbus.schema import CheckedSchemaRegistry
from tests.events import CATALOG_CHANGED, CourseInfo, Pacing, Schedule, course


class MemoryStorage:
    """Schema storage in memory: the codec is tested without any backend."""

    def __init__(self) -> None:
        self.rows: dict[str, list[tuple[int, str, float]]] = {}
        self.rules: dict[str, str] = {}

    def load_schema_versions(self, event_type: str) -> list[tuple[int, str, float]]:
        return list(self.rows.get(event_type, []))

    def insert_schema_version(self, event_type: str, version: int, schema_json: str) -> bool:
        self.rows.setdefault(event_type, []).append((version, schema_json, 0.0))
        return True

    def list_event_types(self) -> list[str]:
        return sorted(self.rows)

    def load_rule(self, topic: str) -> str | None:
        return self.rules.get(topic)

    def save_rule(self, topic: str, rule: str) -> None:
        self.rules[topic] = rule


codec = Codec(CheckedSchemaRegistry(MemoryStorage()))
times = st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(9000, 1, 1),
                     timezones=st.just(dt.UTC))
courses = st.builds(
    CourseInfo,
    course_key=st.text(min_size=1),
    name=st.text(),
    schedule=st.builds(Schedule, start=times, end=st.none() | times, pacing=st.sampled_from(Pacing)),
    tags=st.lists(st.text(), max_size=5),
    hidden=st.booleans(),
    run_id=st.none() | st.uuids(),
)


def message(record: Record) -> Message:
    return Message(record, "t", "1", 0.0)


@given(courses)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_any_valid_payload_round_trips_exactly(payload: CourseInfo) -> None:
    record = codec.encode("t", CATALOG_CHANGED, payload)
    envelope, decoded = codec.decode(message(record), CATALOG_CHANGED)
    assert decoded == payload
    assert envelope.id == record.id and record.key == payload.course_key


@given(st.binary(max_size=300))
@settings(max_examples=500)
def test_random_bytes_raise_decode_error_or_decode_to_a_payload_that_round_trips(data: bytes) -> None:
    base = codec.encode("t", CATALOG_CHANGED, CourseInfo("k", "n", Schedule(dt.datetime.now(dt.UTC))))
    try:
        _, decoded = codec.decode(message(Record(base.id, base.type, "k", base.headers, data)), CATALOG_CHANGED)
    except DecodeError:
        return
    # bytes that happen to be a valid payload: what came out is a real payload, not a half-read one
    assert isinstance(decoded, CourseInfo)
    again = codec.encode("t", CATALOG_CHANGED, decoded)
    assert codec.decode(message(again), CATALOG_CHANGED)[1] == decoded


@given(courses, st.data())
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_truncated_payloads_raise_decode_error(payload: CourseInfo, data: st.DataObject) -> None:
    record = codec.encode("t", CATALOG_CHANGED, payload)
    cut = data.draw(st.integers(min_value=0, max_value=len(record.payload) - 1))
    try:
        codec.decode(message(Record(record.id, record.type, "k", record.headers, record.payload[:cut])),
                     CATALOG_CHANGED)
    except DecodeError:
        return
    raise AssertionError("a truncated payload decoded")


@given(st.dictionaries(st.sampled_from(["ce_id", "ce_type", "ce_time", "ce_schemaversion", "x"]),
                       st.text(max_size=20)))
def test_wrong_envelope_headers_raise_decode_error(headers: dict[str, str]) -> None:
    record = codec.encode("t", CATALOG_CHANGED, CourseInfo("k", "n", Schedule(dt.datetime.now(dt.UTC))))
    with pytest.raises(DecodeError):  # no 20-character text is this event type's name: never a valid envelope
        codec.decode(message(Record(record.id, record.type, "k", headers, record.payload)), CATALOG_CHANGED)


def test_uuid_and_enum_and_datetime_survive_as_their_python_types() -> None:
    payload = CourseInfo("k", "n", Schedule(dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC), None, Pacing.SELF),
                         run_id=uuid.UUID(int=7))
    _, back = codec.decode(message(codec.encode("t", CATALOG_CHANGED, payload)), CATALOG_CHANGED)
    assert back.run_id == uuid.UUID(int=7) and back.schedule.pacing is Pacing.SELF
    assert back.schedule.start == dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)


def test_event_ids_differ_between_forked_processes_and_after_random_seed() -> None:
    import os
    import random

    from edbus.events.codec import new_event_id

    read, write = os.pipe()
    random.seed(1)
    pid = os.fork()
    if pid == 0:  # the child: one id, through the pipe
        os.write(write, new_event_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    random.seed(1)
    assert new_event_id() != child


def test_a_reader_whose_payload_class_has_another_name_decodes_nested_records() -> None:
    @attrs.frozen
    class CatalogInfoAsTheReaderCallsIt:  # the reader's own class: another name, same fields
        course_key: str
        name: str
        schedule: Schedule
        tags: list[str] = attrs.field(factory=list)
        hidden: bool = False
        run_id: uuid.UUID | None = None

    reader = EventType(CATALOG_CHANGED.name, CatalogInfoAsTheReaderCallsIt, key="course_key")
    payload = course(3)
    _, decoded = codec.decode(message(codec.encode("t", CATALOG_CHANGED, payload)), reader)
    assert decoded == CatalogInfoAsTheReaderCallsIt(**attrs.asdict(payload, recurse=False))
    assert [f["type"]["name"] for f in CATALOG_CHANGED.schema["fields"] if f["name"] == "schedule"] \
        == ["Schedule"]


@given(st.lists(st.tuples(courses, st.none() | st.uuids().map(str)), min_size=1, max_size=8))
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_encode_many_gives_what_encode_gives_except_one_shared_time(items: list[tuple[CourseInfo, str | None]]) -> None:
    many = codec.encode_many("t", [(CATALOG_CHANGED, p, i, n) for n, (p, i) in enumerate(items)])
    assert len({r.headers["ce_time"] for r in many}) == 1
    for n, ((payload, given_id), record) in enumerate(zip(items, many, strict=True)):
        one = codec.encode("t", CATALOG_CHANGED, payload, id=given_id, sequence=n)
        assert (record.type, record.key, record.payload, record.sequence) == (one.type, one.key, one.payload, n)
        assert record.id == given_id if given_id else record.id != one.id
        assert record.headers["ce_id"] == record.id
        assert {k: v for k, v in record.headers.items() if k not in ("ce_id", "ce_time")} \
            == {k: v for k, v in one.headers.items() if k not in ("ce_id", "ce_time")}
        assert list(record.headers) == list(one.headers)  # the same headers, written in the same order


@given(courses, st.none() | st.just("00-" + "a" * 32 + "-" + "b" * 16 + "-01"))
@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
def test_the_size_limit_counts_exactly_what_record_size_counts(payload: CourseInfo, traceparent: str | None) -> None:
    size = codec.encode("t", CATALOG_CHANGED, payload, traceparent=traceparent).size
    at_limit = Codec(codec.registry, max_event_bytes=size)
    assert at_limit.encode("t", CATALOG_CHANGED, payload, traceparent=traceparent).size == size
    with pytest.raises(EventTooLargeError, match=f"event is {size} bytes, over the {size - 1}-byte limit"):
        Codec(codec.registry, max_event_bytes=size - 1).encode("t", CATALOG_CHANGED, payload, traceparent=traceparent)


def test_encode_many_refuses_a_batch_with_one_bad_payload_or_id_with_a_clear_error() -> None:
    good = course(1)
    with pytest.raises(ValidationError, match="expected CourseInfo, got str"):
        codec.encode_many("t", [(CATALOG_CHANGED, good, None, None), (CATALOG_CHANGED, "not a course", None, None)])
    with pytest.raises(ValidationError, match="event id must be a non-empty string"):
        codec.encode_many("t", [(CATALOG_CHANGED, good, None, None), (CATALOG_CHANGED, good, "", None)])


@given(st.integers(min_value=0, max_value=300))
@settings(max_examples=50)
def test_event_ids_drawn_at_once_are_distinct_uuid7s_of_this_millisecond(n: int) -> None:
    import time

    from edbus.events.codec import new_event_ids

    before = time.time_ns() // 1_000_000
    ids = new_event_ids(n)
    after = time.time_ns() // 1_000_000
    assert len(ids) == n == len(set(ids))
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert before <= parsed.int >> 80 <= after


def test_a_batch_outside_a_handler_gets_a_new_trace_per_event_and_inside_one_joins_its_trace() -> None:
    import re

    from edbus.bus.tracing import Tracing, _current

    valid = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-01$")
    records = codec.encode_many("t", [(CATALOG_CHANGED, course(i), None, None) for i in range(50)])
    traced = Tracing().before_publish("t", records)
    parents = [r.headers["traceparent"] for r in traced]
    assert all(valid.match(p) for p in parents) and len({p.split("-")[1] for p in parents}) == 50
    token = _current.set(parents[0])
    try:
        children = [r.headers["traceparent"] for r in Tracing().before_publish("t", records)]
    finally:
        _current.reset(token)
    assert all(valid.match(c) and c.split("-")[1] == parents[0].split("-")[1] for c in children)
    assert len({c.split("-")[2] for c in children}) == 50
    assert Tracing().before_publish("t", traced) == traced  # a traceparent given is kept


def test_headers_given_to_encode_many_are_written_per_event_and_count_in_the_size_limit() -> None:
    items = [(CATALOG_CHANGED, course(i), None, None) for i in range(3)]
    records = codec.encode_many("t", items, {"x-team": ["a", "bb", "ccc"]})
    assert [r.headers["x-team"] for r in records] == ["a", "bb", "ccc"]
    biggest = max(r.size for r in records)
    assert Codec(codec.registry, max_event_bytes=biggest).encode_many("t", items, {"x-team": ["a", "bb", "ccc"]})
    with pytest.raises(EventTooLargeError):
        Codec(codec.registry, max_event_bytes=biggest - 1).encode_many("t", items, {"x-team": ["a", "bb", "ccc"]})
