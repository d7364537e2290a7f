"""Event types, envelopes and the events handlers receive."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from edbus.errors import ConfigError, ValidationError
from edbus.events.avro_schema import PayloadCodec

__all__ = ["Envelope", "Event", "EventType"]

P = TypeVar("P")

# org.openedx.<domain>.<subject>.<action>.v<N>; other reverse-domain prefixes are allowed for plugins.
_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){3,}\.v[1-9][0-9]*$")


@dataclasses.dataclass(frozen=True, eq=False)
class EventType(Generic[P]):
    """A versioned event type: name (major version in it), minor version, payload class and key field.

    ``key`` is a dotted path into the payload (``"catalog_info.course_key"``); events with the same key
    are delivered in order. ``None`` means no key (no ordering between events of this type).
    """

    name: str
    payload: type[P]
    key: str | None = None
    minor_version: int = 0
    codec: PayloadCodec = dataclasses.field(init=False, repr=False)
    key_of: Callable[[P], str | None] = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(
                f"bad event type name {self.name!r}: expected org.openedx.<domain>.<subject>.<action>.v<N>"
            )
        if self.minor_version < 0:
            raise ConfigError(f"{self.name}: minor_version must be >= 0")
        codec = PayloadCodec(self.payload, root_name=self.name.rsplit(".v", 1)[0].replace(".", "_"))
        object.__setattr__(self, "codec", codec)
        object.__setattr__(self, "key_of", _key_getter(self.name, self.key))

    @property
    def major_version(self) -> int:
        return int(self.name.rsplit(".v", 1)[1])

    @property
    def schema(self) -> dict[str, Any]:
        return self.codec.schema

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EventType) and (other.name, other.payload, other.key) == (
            self.name, self.payload, self.key)

    def __hash__(self) -> int:
        return hash((self.name, self.payload, self.key))


def _key_getter(type_name: str, path: str | None) -> Callable[[Any], str | None]:
    if path is None:
        return lambda payload: None
    parts = path.split(".")

    def get(payload: Any) -> str | None:
        value = payload
        for part in parts:
            value = getattr(value, part, None)
            if value is None:
                raise ValidationError(f"{type_name}: key field {path!r} is missing or None")
        return str(value)

    return get


@dataclasses.dataclass(frozen=True, slots=True)
class Envelope:
    """CloudEvents 1.0 attributes plus Open edX's extensions and edbus's schema version."""

    id: str
    type: str
    source: str
    time: dt.datetime
    minorversion: int
    sourcehost: str
    sourcelib: str
    traceparent: str | None = None
    schemaversion: int = 1
    specversion: str = "1.0"
    datacontenttype: str = "application/avro"


@dataclasses.dataclass(frozen=True, slots=True)
class Event(Generic[P]):
    """What a handler receives: the envelope, the decoded payload, its key and delivery attempt (1-based)."""

    envelope: Envelope
    data: P
    key: str | None
    attempt: int
    topic: str

    @property
    def id(self) -> str:
        return self.envelope.id

    @property
    def type(self) -> str:
        return self.envelope.type
