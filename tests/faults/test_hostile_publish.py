"""Hostile input at publish: every payload or envelope argument that does not fit its event type is
refused with an ``edbus.errors`` error that names the field, before anything is stored."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from edbus import Bus, EventType
from edbus.errors import ValidationError
from tests.conftest import backend_url


class Level(enum.Enum):
    LOW = 1
    HIGH = 2


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
