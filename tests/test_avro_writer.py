"""The codec's own Avro writer writes, byte for byte, what fastavro writes — for random payloads of a
class with every field type payload classes can have."""

from __future__ import annotations

import datetime as dt
import io
import uuid
from typing import Any

import attrs
import fastavro
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edbus import EventType
from edbus.events.avro_writer import compile_writer
from tests.events import CATALOG_CHANGED, Level
from tests.test_codec import courses


@attrs.frozen
class Point:
    x: float
    label: str | None = None


@attrs.frozen
class Everything:
    text: str
    number: int
    ratio: float
    flag: bool
    blob: bytes
    when: dt.datetime
    day: dt.date
    ident: uuid.UUID
    level: Level
    maybe_text: str | None
    maybe_number: int | None
    maybe_when: dt.datetime | None
    maybe_point: Point | None
    words: list[str]
    points: list[Point]
    counts: dict[str, int]
    nested: dict[str, list[float | None]]
    fixed_tuple: tuple[int, ...]
    home: Point  # a second use of the record type: by name in the schema


EVERYTHING = EventType("org.openedx.test.avro.everything.v1", Everything)

texts = st.text(max_size=80)
longs = st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1),
                  st.sampled_from([0, 1, -1, 63, 64, -64, -65, 2**63 - 1, -(2**63)]))
doubles = st.floats(allow_nan=True, allow_infinity=True)
times = st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30),
                     timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=-5, minutes=-30))]))
points = st.builds(Point, doubles, st.none() | texts)
everything = st.builds(
    Everything, texts, longs, doubles, st.booleans(), st.binary(max_size=50), times,
    st.dates(min_value=dt.date(1, 1, 1)), st.uuids(), st.sampled_from(Level), st.none() | texts,
    st.none() | longs, st.none() | times, st.none() | points, st.lists(texts, max_size=5),
    st.lists(points, max_size=3), st.dictionaries(texts, longs, max_size=4),
    st.dictionaries(texts, st.lists(st.none() | doubles, max_size=3), max_size=3),
    st.lists(longs, max_size=4).map(tuple), points)


def assert_written_as_fastavro_writes(event_type: EventType[Any], payload: object) -> None:
    write = compile_writer(event_type.schema)
    assert write is not None
    data = event_type.codec.to_avro(payload)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(event_type.schema), data)
    assert write(data) == buf.getvalue()


@given(everything)
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_every_field_type_is_written_as_fastavro_writes_it(payload: Everything) -> None:
    assert_written_as_fastavro_writes(EVERYTHING, payload)


@given(courses)
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_the_catalog_event_is_written_as_fastavro_writes_it(payload: object) -> None:
    assert_written_as_fastavro_writes(CATALOG_CHANGED, payload)


def test_schemas_outside_what_payload_classes_compile_to_get_no_writer() -> None:
    def record(field_type: object) -> dict[str, object]:
        return {"type": "record", "name": "R", "fields": [{"name": "f", "type": field_type}]}

    assert compile_writer(record(["int", "string"])) is None  # a union of two non-null types
    assert compile_writer(record({"type": "fixed", "name": "F", "size": 4})) is None
    assert compile_writer(record("float")) is None
    assert compile_writer(record({"type": "bytes", "logicalType": "decimal", "precision": 4})) is None
    assert compile_writer(record("Unknown")) is None
    assert compile_writer(record("long")) is not None
