"""Realistic data for every openedx-events signal, derived from the signals' attrs data classes.

Values are chosen by type and field name (course keys, usage keys, library keys, emails, times...) and
are never empty or zero: openedx-events' deserializer replaces falsy values of fields that have a default
by the default, so an empty value would not round-trip through any event bus implementation.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any, get_args, get_origin

import attr
from ccx_keys.locator import CCXLocator
from opaque_keys.edx.keys import CourseKey, UsageKey
from opaque_keys.edx.locator import (
    LibraryCollectionLocator,
    LibraryContainerLocator,
    LibraryLocatorV2,
    LibraryUsageLocatorV2,
)

COURSE = "course-v1:edX+DemoX+2024_T1"
KEYS: dict[Any, Any] = {
    CourseKey: lambda n: CourseKey.from_string(f"course-v1:edX+DemoX{n}+2024_T1"),
    CCXLocator: lambda n: CCXLocator.from_string(f"ccx-v1:edX+DemoX+2024_T1+ccx@{n + 1}"),
    UsageKey: lambda n: UsageKey.from_string(f"block-v1:edX+DemoX+2024_T1+type@problem+block@p{n}"),
    LibraryLocatorV2: lambda n: LibraryLocatorV2.from_string(f"lib:edX:CSPROB{n}"),
    LibraryUsageLocatorV2: lambda n: LibraryUsageLocatorV2.from_string(f"lb:edX:CSPROB:problem:p{n}"),
    LibraryCollectionLocator: lambda n: LibraryCollectionLocator.from_string(f"lib-collection:edX:CSPROB:col{n}"),
    LibraryContainerLocator: lambda n: LibraryContainerLocator.from_string(f"lct:edX:CSPROB:unit:u{n}"),
    uuid.UUID: lambda n: uuid.UUID(int=0x5EED0000 + n, version=4),
    dt.datetime: lambda n: dt.datetime(2024, 3, 1, 12, 30, n % 60, 250000, tzinfo=dt.UTC),
}


def _string(name: str, n: int) -> str:
    lowered = name.lower()
    if "email" in lowered:
        return f"learner{n}@example.com"
    if "username" in lowered:
        return f"learner{n}"
    if lowered.endswith("url") or "uri" in lowered or lowered.endswith("link"):
        return f"https://courses.example.com/item/{n}"
    if "course" in lowered and ("key" in lowered or "id" in lowered):
        return COURSE
    if lowered.endswith("_id") or lowered == "id" or "uuid" in lowered:
        return str(uuid.UUID(int=0xC0FFEE00 + n, version=4))
    return f"{name.replace('_', ' ').title()} {n}"


def value_for(kind: Any, name: str, n: int) -> Any:
    origin = get_origin(kind)
    if origin is not None and type(None) in get_args(kind):
        kind = next(a for a in get_args(kind) if a is not type(None))
        origin = get_origin(kind)
    if kind in KEYS:
        return KEYS[kind](n)
    if hasattr(kind, "__attrs_attrs__"):
        return kind(**{f.name: value_for(f.type, f.name, n + i) for i, f in enumerate(attr.fields(kind))})
    if kind is bool:
        return True
    if kind is int:
        return 40 + n
    if kind is float:
        return 0.75 + n
    if kind is str:
        return _string(name, n)
    if kind is bytes:
        return b"\x01payload"
    if origin is list:
        (item,) = get_args(kind)
        return [value_for(item, name, n), value_for(item, name, n + 1)]
    if origin is dict and get_args(kind):  # openedx-events 11 types values: dict[str, bool], dict[str, list[str]]
        value = get_args(kind)[1]
        return {"first": value_for(value, name, n), "second": value_for(value, name, n + 1)}
    if kind is dict or origin is dict:
        return {"first": _string(name, n), "second": _string(name, n + 1)}
    raise TypeError(f"no realistic value for {kind!r} ({name})")


def signal_data(signal: Any, n: int = 1) -> dict[str, Any]:
    """Keyword arguments for ``signal.send_event``."""
    return {name: value_for(kind, name, n) for name, kind in signal.init_data.items()}


def key_field(signal: Any) -> str:
    """A period-delimited path to a string-like leaf of the signal's first data argument."""
    name, kind = next(iter(signal.init_data.items()))
    path = [name]
    while hasattr(kind, "__attrs_attrs__"):
        fields = attr.fields(kind)
        leaf = next((f for f in fields if not hasattr(f.type, "__attrs_attrs__")
                     and get_origin(f.type) not in (list, dict)), fields[0])
        path.append(leaf.name)
        kind = leaf.type
    return ".".join(path)


def serializable_signals() -> list[Any]:
    from openedx_events.tooling import KNOWN_UNSERIALIZABLE_SIGNALS, OpenEdxPublicSignal, load_all_signals

    load_all_signals()
    return sorted((s for s in OpenEdxPublicSignal.all_events() if s.event_type not in KNOWN_UNSERIALIZABLE_SIGNALS),
                  key=lambda s: s.event_type)


def as_json(signal: Any, data: dict[str, Any]) -> str:
    """The event data as openedx-events serializes it, as canonical JSON (for comparisons)."""
    from openedx_events.event_bus.avro.serializer import AvroSignalSerializer

    return json.dumps(AvroSignalSerializer(signal).to_dict(data), sort_keys=True)


def metadata_json(metadata: Any) -> str:
    return json.dumps(metadata.to_json_data(), sort_keys=True, default=str)
