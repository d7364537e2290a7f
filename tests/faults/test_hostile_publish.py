"""Hostile input at publish: every payload or envelope argument that does not fit its event type is
refused with an ``edbus.errors`` error that names the field, before anything is stored; whatever is
accepted decodes back to what was published. Fuzzed with hypothesis (derandomized, bounded)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from edbus import Bus, EventType
from edbus.errors import EdbusError, EventTooLargeError, ValidationError
from tests.conftest import backend_url
from tests.events import CATALOG_CHANGED, SEQ, Level, Seq, course

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@attrs.frozen
class Inner:
    label: str
    at: dt.datetime


@attrs.frozen
class Everything:
    """One field of every supported kind, for fuzzing."""

    key: str
    count: int
    ratio: float
    flag: bool
    blob: bytes
    at: dt.datetime
    day: dt.date
    ref: uuid.UUID
    level: Level
    inner: Inner
    tags: list[str]
    scores: dict[str, int]
    note: str | None = None


EVERYTHING = EventType("org.openedx.test.hostile.everything.made.v1", Everything, key="key")
FIELDS = [f.name for f in attrs.fields(Everything)]


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[Bus]:
    b = Bus.from_url(backend_url("sqlite", tmp_path))
    yield b
    b.close()


def stored(bus: Bus, topic: str = "t") -> int:
    return sum(t.events for t in bus.backend.topics() if t.topic == bus.topic(topic))


def valid(**changes: Any) -> Everything:
    base = Everything("k", 1, 0.5, True, b"\x00", dt.datetime(2024, 1, 1, tzinfo=dt.UTC), dt.date(2024, 1, 1),
                      uuid.UUID(int=1), Level.LOW, Inner("i", dt.datetime(2024, 1, 1, tzinfo=dt.UTC)), ["a"],
                      {"x": 1})
    return attrs.evolve(base, **changes)


# -- one test per bug found: each proves the refusal names the field and stores nothing ------------

def test_naive_datetime_in_a_payload_is_refused_naming_the_field(bus: Bus) -> None:
    # it used to be stored as if it were UTC, shifting a producer's local time without a word
    with pytest.raises(ValidationError, match=r"^inner\.at: naive datetime 2024-05-01T12:00:00: give it a time zone"):
        bus.publish("t", EVERYTHING, valid(inner=Inner("i", dt.datetime(2024, 5, 1, 12))))
    assert stored(bus) == 0


def test_datetime_out_of_range_in_utc_is_refused_so_no_consumer_gets_an_undecodable_event(bus: Bus) -> None:
    early = dt.datetime.min.replace(tzinfo=dt.timezone(dt.timedelta(hours=14)))  # year 0 in UTC
    with pytest.raises(ValidationError, match=r"^at: datetime 0001-01-01T00:00:00\+14:00 is out of range in UTC"):
        bus.publish("t", EVERYTHING, valid(at=early))
    late = dt.datetime.max.replace(tzinfo=dt.UTC)  # still fine: year 9999 in UTC
    bus.publish("t", EVERYTHING, valid(at=late))
    [(message, _, _)] = list(bus.read("t"))
    assert bus.codec.decode(message, EVERYTHING)[1].at == late


@pytest.mark.parametrize(("payload", "where"), [
    (valid(key="k\ud800"), r"^key: not valid Unicode: surrogates not allowed at index 1$"),
    (valid(tags=["ok", "\udfff"]), r"^tags\[1\]: not valid Unicode"),
    (valid(scores={"\ud83d": 1}), r"^scores\['\\ud83d'\]: not valid Unicode"),
    (valid(note="x" * 100 + "\ud800"), r"^note: not valid Unicode: surrogates not allowed at index 100$"),
])
def test_lone_surrogates_are_refused_naming_the_field(bus: Bus, payload: Everything, where: str) -> None:
    # the encoder used to fail with "payload does not encode" and no field; a surrogate id or key
    # reached the store as a UnicodeEncodeError
    with pytest.raises(ValidationError, match=where):
        bus.publish("t", EVERYTHING, payload)
    assert stored(bus) == 0


def test_int_too_large_for_a_double_is_refused_naming_the_field(bus: Bus) -> None:
    with pytest.raises(ValidationError, match=r"^ratio: int 1000.*0 is out of the range of a double$"):
        bus.publish("t", EVERYTHING, valid(ratio=10**400))  # used to escape as a raw OverflowError
    assert stored(bus) == 0


def test_deeply_nested_or_unprintable_values_are_refused_with_a_short_message(bus: Bus) -> None:
    deep: Any = "x"
    for _ in range(100_000):
        deep = [deep]

    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("repr bomb")

    # the refusal's own repr() used to raise RecursionError (or the hostile __repr__'s error)
    cases: list[tuple[Any, str]] = [
        (valid(tags=deep), r"^tags\[0\]: expected str, got list \[\[\[\[\.\.\.\]\]\]\]$"),
        (valid(inner=Hostile()), r"^inner: expected Inner, got Hostile <Hostile instance at 0x[0-9a-f]+>$"),
        (valid(scores={"a": "x" * 50_000_000}), r"^scores\['a'\]: expected int \(64-bit\), got str 'x{20,}\.\.\.x+'$"),
        (deep, r"^payload: expected Everything, got list"),
    ]
    for payload, where in cases:
        started = time.monotonic()
        with pytest.raises(ValidationError, match=where) as refused:
            bus.publish("t", EVERYTHING, payload)
        assert len(str(refused.value)) < 200 and time.monotonic() - started < 2
    assert stored(bus) == 0


@pytest.mark.parametrize(("options", "message"), [
    ({"id": 7}, "event id must be a non-empty string of valid Unicode, got int"),
    ({"id": ""}, "event id must be a non-empty string"),  # used to be replaced by a new id: retries duplicated
    ({"id": "a\ud800"}, "event id must be a non-empty string of valid Unicode"),  # a UnicodeEncodeError at the store
    ({"time": dt.datetime(2024, 1, 1)}, "event time must be a datetime with a time zone.*got a naive datetime"),
    ({"time": "2024-01-01"}, "event time must be a datetime with a time zone.*got str"),  # an AttributeError
    ({"traceparent": "\ud800"}, r"traceparent must be a W3C trace context.*got '\\ud800'"),  # was stored as is
    ({"traceparent": "00-xyz"}, "traceparent must be a W3C trace context"),
])
def test_bad_envelope_arguments_are_refused_before_the_store(bus: Bus, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        bus.publish("t", SEQ, Seq("k", 1), **options)
    assert stored(bus) == 0


def test_a_str_subclass_is_stored_as_plain_text_and_its_overrides_never_run(bus: Bus) -> None:
    class Sneaky(str):
        def encode(self, *args: Any, **kwargs: Any) -> bytes:
            raise RuntimeError("encode override ran")  # used to escape from the encoder

    bus.publish("t", SEQ, Seq("k", 1, Sneaky("p")))
    [(_, _, data)] = list(bus.read("t"))
    assert data["producer"] == "p"


@pytest.mark.parametrize(("data", "message"), [
    ({"key": "\ud800", "n": 1, "producer": ""}, "does not encode with schema version 1: UnicodeEncodeError"),
    ({"key": [[[["x"]]]] * 3, "n": 1, "producer": ""}, "data does not match schema version 1"),
    ("NESTED", "data nested too deeply for schema version 1"),  # was a RecursionError
])
def test_encode_data_refuses_hostile_json_with_a_validation_error(bus: Bus, data: Any, message: str) -> None:
    bus.publish("t", SEQ, Seq("k", 0))
    if data == "NESTED":
        data = {"key": "k", "n": 1, "producer": ""}
        for _ in range(50_000):
            data = {"key": data, "n": 1, "producer": ""}
    with pytest.raises(ValidationError, match=message):
        bus.codec.encode_data("t", SEQ.name, data)


def test_encode_data_refuses_what_a_typed_consumer_could_not_decode(bus: Bus) -> None:
    bus.publish("t", CATALOG_CHANGED, course(1))
    good = {"course_key": "k", "name": "n", "tags": [], "hidden": False, "run_id": None,
            "schedule": {"start": "2024-01-01T00:00:00Z", "end": None, "pacing": "SELF"}}
    bad = [({**good, "run_id": "not-a-uuid"}, "'not-a-uuid' is not a UUID"),
           ({**good, "schedule": {**good["schedule"], "start": "0001-01-01T00:00:00+14:00"}}, "out of range in UTC")]
    for data, message in bad:  # both used to be stored, then dead-lettered by every typed consumer
        with pytest.raises(ValidationError, match=message):
            bus.codec.encode_data("t", CATALOG_CHANGED.name, data)
    for key in ("\ud800", 5):
        with pytest.raises(ValidationError, match="key must be a string of valid Unicode"):
            bus.codec.encode_data("t", CATALOG_CHANGED.name, good, key=key)  # type: ignore[arg-type]
    bus.publish_encoded("t", [bus.codec.encode_data("t", CATALOG_CHANGED.name, good, key="k")])
    assert stored(bus) == 2


@attrs.frozen
class Nothing:
    pass


@dataclasses.dataclass
class Holder:
    key: str
    items: list[Nothing]


def test_an_array_of_items_that_encode_to_zero_bytes_is_refused_at_definition() -> None:
    # a few bytes could claim 2**62 such items: the decoder would build them until memory ran out
    with pytest.raises(ValidationError, match=r"Holder: items: an array whose items encode to zero bytes"):
        EventType("org.openedx.test.hostile.bomb.made.v1", Holder, key="key")


def test_a_payload_class_whose_field_types_cannot_be_resolved_is_a_validation_error() -> None:
    @dataclasses.dataclass
    class Local:
        key: str
        other: Unresolvable  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(ValidationError, match="cannot resolve the field types of Local: NameError"):
        EventType("org.openedx.test.hostile.local.made.v1", Local, key="key")  # was a bare NameError


# -- decisions, proven -----------------------------------------------------------------------------

def test_nan_and_infinities_are_valid_avro_doubles_and_round_trip(bus: Bus) -> None:
    """Avro doubles are IEEE 754: NaN and ±inf are values, not errors (as in openedx-events)."""
    for value in (math.nan, math.inf, -math.inf, -0.0, 5e-324):
        bus.publish("t", EVERYTHING, valid(ratio=value))
    got = [bus.codec.decode(m, EVERYTHING)[1].ratio for m, _, _ in bus.read("t")]
    assert math.isnan(got[0]) and got[1:3] == [math.inf, -math.inf]
    assert math.copysign(1, got[3]) == -1 and got[4] == 5e-324


def test_a_50_mb_string_is_refused_as_too_large_quickly_and_nothing_is_stored(bus: Bus) -> None:
    started = time.monotonic()
    with pytest.raises(EventTooLargeError, match=r"event is 5000\d{4} bytes, over the 1048576-byte limit"):
        bus.publish("t", SEQ, Seq("k", 1, "x" * 50_000_000))
    assert time.monotonic() - started < 5
    assert stored(bus) == 0


def test_the_size_limit_counts_payload_and_headers_to_the_byte(tmp_path: Path) -> None:
    bus = Bus.from_url(backend_url("sqlite", tmp_path), max_event_bytes=4096)
    probe = bus.codec.encode("t", SEQ, Seq("k", 1, "y" * 100), id="fixed-id-0")  # 2-byte length prefix
    room = 4096 - probe.size + 100
    assert bus.codec.encode("t", SEQ, Seq("k", 1, "y" * room), id="fixed-id-0").size == 4096
    with pytest.raises(EventTooLargeError, match="event is 4097 bytes, over the 4096-byte limit"):
        bus.publish("t", SEQ, Seq("k", 1, "y" * (room + 1)), id="fixed-id-0")
    with pytest.raises(EventTooLargeError):
        bus.publish("t", SEQ, Seq("k", 1), id="i" * 5000)  # headers count too
    assert stored(bus) == 0


# -- fuzzed: any value in any field -------------------------------------------------------------

aware = st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30),
                     timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=-12)),
                                                dt.timezone(dt.timedelta(hours=14, minutes=59))]))
texts = st.text(st.characters(codec=None, exclude_categories=()), max_size=30)  # surrogates included
clean = st.text(max_size=30)
anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts | st.binary(max_size=20)
    | st.datetimes() | aware | st.dates() | st.uuids() | st.sampled_from(Level),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts | st.integers(), inner, max_size=3),
    max_leaves=10)
right = {
    "key": st.text(min_size=1, max_size=20), "count": st.integers(-(2**63), 2**63 - 1),
    "ratio": st.floats(allow_nan=False), "flag": st.booleans(), "blob": st.binary(max_size=20), "at": aware,
    "day": st.dates(), "ref": st.uuids(), "level": st.sampled_from(Level),
    "inner": st.builds(Inner, clean, aware), "tags": st.lists(clean, max_size=4),
    "scores": st.dictionaries(clean, st.integers(-(2**63), 2**63 - 1), max_size=3), "note": st.none() | clean,
}


@st.composite
def payloads(draw: st.DrawFn) -> Everything:
    """Each field right, or (sometimes) anything at all."""
    values = {name: draw(anything if draw(st.sampled_from([False] * 9 + [True])) else right[name])
              for name in FIELDS}
    return Everything(**values)


@given(payloads())
@FUZZ
def test_any_payload_is_stored_and_decodes_back_or_is_refused_naming_a_field(bus: Bus, payload: Everything) -> None:
    before = stored(bus)
    try:
        event_id = bus.publish("t", EVERYTHING, payload)
    except ValidationError as exc:
        assert re.match(r"^[a-z_]+[.\[:]", str(exc)), exc  # starts with the field at fault
        assert str(exc).split(".")[0].split("[")[0].split(":")[0] in FIELDS
        assert stored(bus) == before
        event("refused")
        return
    except EdbusError as exc:  # e.g. EventTooLargeError: would be fine, but none is expected here
        raise AssertionError(f"unexpected {type(exc).__name__}: {exc}") from exc
    [message] = [m for m, _, _ in bus.read("t") if m.record.id == event_id]
    _, back = bus.codec.decode(message, EVERYTHING)
    # accepted ints in a float field come back as floats; tuples as lists
    assert back == attrs.evolve(payload, tags=list(payload.tags), ratio=float(payload.ratio))
    event("stored and decoded back")


# -- the shared Pulsar broker: the same refusals, nothing reaches the topic -----------------------

def test_hostile_payloads_are_refused_on_pulsar_and_nothing_reaches_the_topic(tmp_path: Path) -> None:
    with Bus.from_url(backend_url("pulsar", tmp_path)) as bus:
        hostile: list[tuple[Any, dict[str, Any], type[EdbusError]]] = [
            (valid(inner=Inner("i", dt.datetime(2024, 1, 1))), {}, ValidationError),
            (valid(key="\ud800"), {}, ValidationError),
            (valid(ratio=10**400), {}, ValidationError),
            (valid(count=2**63), {}, ValidationError),
            (valid(), {"id": "\udc80"}, ValidationError),
            (valid(), {"traceparent": "bad"}, ValidationError),
            (valid(note="x" * 6_000_000), {}, EventTooLargeError),  # over Pulsar's 5 MB default, too
        ]
        for payload, options, error in hostile:
            with pytest.raises(error):
                bus.publish("t", EVERYTHING, payload, **options)
        bus.publish("t", EVERYTHING, valid(key="after"))
        assert [m.record.key for m, _, _ in bus.read("t")] == ["after"]

