"""Signal events to edbus records and back, with openedx-events' own Avro serialization.

The payload bytes are exactly what ``openedx_events.event_bus.avro.serializer`` writes (the same schema,
``schema_from_signal``), so they are interchangeable with the Kafka and Redis implementations' payloads.
Headers carry every ``EventsMetadata`` field under the Kafka implementation's names (``ce_id``, ``ce_type``,
``ce_source``, ``ce_time``, ``ce_minorversion``, ``ce_specversion``, ``sourcehost``, ``sourcelib``,
``content-type``, ``ce_datacontenttype``) plus edbus's own (``ce_sourcehost``, ``ce_sourcelib``,
``ce_schemaversion``), so ``edbus tail`` and the dead-letter tools decode these events too.
"""

from __future__ import annotations

import io
import threading
import uuid
from collections.abc import Mapping
from typing import Any

import fastavro
from openedx_events.data import EventsMetadata
from openedx_events.event_bus.avro.deserializer import AvroSignalDeserializer
from openedx_events.event_bus.avro.serializer import AvroSignalSerializer
from openedx_events.tooling import OpenEdxPublicSignal

from edbus.backends.base import Record
from edbus.errors import DecodeError, ValidationError
from edbus.events.types import Envelope
from edbus.schema.registry import SchemaRegistry

__all__ = ["SignalCodec", "event_key", "headers_from_metadata", "metadata_from_envelope", "signal_for_type"]


def signal_for_type(event_type: str) -> Any:
    """The ``OpenEdxPublicSignal`` of an event type; ``DecodeError`` when no signal has that type."""
    try:
        return OpenEdxPublicSignal.get_signal_by_type(event_type)
    except KeyError:
        raise DecodeError(f"no OpenEdxPublicSignal has event type {event_type!r} in this service "
                          "(openedx-events too old, or load_all_signals() not called)") from None


def event_key(event_data: Mapping[str, Any], event_key_field: str) -> str:
    """The value at a period-delimited path of the event data (``course.course_key``), as a string."""
    value: Any = event_data
    for part in event_key_field.split("."):
        value = value.get(part) if isinstance(value, Mapping) else getattr(value, part, None)
        if value is None:
            raise ValidationError(f"event_key_field {event_key_field!r}: {part!r} is missing or None "
                                  "in the event data")
    return str(value)


def _sourcelib_str(sourcelib: tuple[int, ...]) -> str:
    return ".".join(map(str, sourcelib))


def headers_from_metadata(metadata: Any, schema_version: int) -> dict[str, str]:
    sourcelib = _sourcelib_str(metadata.sourcelib)
    return {
        "ce_id": str(metadata.id),
        "ce_type": metadata.event_type,
        "ce_source": metadata.source,
        "ce_specversion": "1.0",
        "ce_time": metadata.time.isoformat(),
        "ce_minorversion": str(metadata.minorversion),
        "content-type": "application/avro",
        "ce_datacontenttype": "application/avro",
        "sourcehost": metadata.sourcehost,
        "sourcelib": sourcelib,
        "ce_sourcehost": metadata.sourcehost,
        "ce_sourcelib": sourcelib,
        "ce_schemaversion": str(schema_version),
    }


def _parse_sourcelib(text: str) -> tuple[int, ...] | None:
    """``"10.5.0"`` → ``(10, 5, 0)``; empty → ``()``; not a version (an event from an edbus tool, whose
    sourcelib is ``edbus``) → None, so openedx-events fills in its own version instead of refusing it."""
    if not text:
        return ()
    try:
        return tuple(int(part) for part in text.split("."))
    except ValueError:
        return None


def metadata_from_envelope(envelope: Envelope) -> Any:
    """The producer's ``EventsMetadata``, rebuilt from a decoded envelope; ``DecodeError`` if it is not one."""
    try:
        return EventsMetadata(
            event_type=envelope.type,
            id=uuid.UUID(envelope.id),
            minorversion=envelope.minorversion,
            source=envelope.source,
            sourcehost=envelope.sourcehost,  # as sent, even empty: never the consumer's own host
            time=envelope.time,
            sourcelib=_parse_sourcelib(envelope.sourcelib),
        )
    except (ValueError, TypeError) as exc:
        raise DecodeError(f"envelope of {envelope.id} is not openedx-events metadata: "
                          f"{type(exc).__name__}: {exc}") from None


class _SignalSchema:
    """One signal's serializer, deserializer and parsed Avro schema, built once."""

    def __init__(self, signal: Any) -> None:
        self.serializer = AvroSignalSerializer(signal)
        self.deserializer = AvroSignalDeserializer(signal)
        self.schema: dict[str, Any] = self.serializer.schema
        self.parsed = fastavro.parse_schema(self.schema)
        # topic -> version registered there; the registry caches it too, but by the schema's canonical text,
        # whose JSON encoding was ~5 % of a durable send (profiled)
        self.versions: dict[str, int] = {}


class SignalCodec:
    """Encodes signal events into records for one registry; decodes Avro dicts into signal data."""

    def __init__(self, registry: SchemaRegistry) -> None:
        self.registry = registry
        self._lock = threading.Lock()
        self._schemas: dict[str, _SignalSchema] = {}

    def _schema(self, signal: Any) -> _SignalSchema:
        found = self._schemas.get(signal.event_type)
        if found is None:
            with self._lock:
                found = self._schemas.get(signal.event_type) or _SignalSchema(signal)
                self._schemas[signal.event_type] = found
        return found

    def schema(self, signal: Any) -> dict[str, Any]:
        """The Avro schema openedx-events derives for ``signal``."""
        return self._schema(signal).schema

    def encode(self, topic: str, signal: Any, event_key_field: str, event_data: Mapping[str, Any],
               metadata: Any) -> Record:
        """A record for ``topic`` (the full, prefixed name); ``ValidationError`` if the data does not fit."""
        if metadata.event_type != signal.event_type:
            raise ValidationError(f"event_metadata.event_type {metadata.event_type!r} is not the signal's "
                                  f"{signal.event_type!r}")
        s = self._schema(signal)
        key = event_key(event_data, event_key_field)
        try:
            data = s.serializer.to_dict(event_data)
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, s.parsed, data)
        except Exception as exc:  # attrs, json and fastavro raise many types on bad data
            raise ValidationError(f"{signal.event_type}: event data does not serialize: "
                                  f"{type(exc).__name__}: {exc}") from None
        version = s.versions.get(topic)
        if version is None:
            version = s.versions[topic] = self.registry.register(topic, signal.event_type, s.schema)
        headers = headers_from_metadata(metadata, version)
        return Record(headers["ce_id"], signal.event_type, key, headers, buf.getvalue())

    def decode(self, signal: Any, avro_dict: Any) -> dict[str, Any]:
        """Signal data (attrs objects) from the Avro data; ``DecodeError`` when it does not fit the signal."""
        try:
            data: dict[str, Any] = self._schema(signal).deserializer.from_dict(avro_dict)
        except Exception as exc:
            raise DecodeError(f"{signal.event_type}: payload does not fit the signal's data: "
                              f"{type(exc).__name__}: {exc}") from None
        return data
