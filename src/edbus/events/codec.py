"""The codec: payload objects to Avro binary and envelopes to headers, and back.

Headers follow the CloudEvents Kafka binary binding (``ce_<attribute>``, ``content-type``), the same names
the Kafka implementation of the Open edX event bus uses, plus ``ce_schemaversion``: the registry version
of the writer's schema, which a reader resolves against its own schema.
"""

from __future__ import annotations

import datetime as dt
import io
import socket
import threading
import uuid
from collections.abc import Mapping
from typing import Any

import fastavro

from edbus.backends.base import Message, Record
from edbus.errors import DecodeError, EventTooLargeError, NotFoundError, ValidationError
from edbus.events.types import Envelope, EventType
from edbus.schema.registry import SchemaRegistry

__all__ = ["Codec", "DEFAULT_MAX_EVENT_BYTES", "SOURCE_LIB", "envelope_from_headers"]

DEFAULT_MAX_EVENT_BYTES = 1024 * 1024
SOURCE_LIB = "edbus"
_UTC = dt.UTC


def envelope_from_headers(headers: Mapping[str, str]) -> Envelope:
    try:
        return Envelope(
            id=headers["ce_id"],
            type=headers["ce_type"],
            source=headers["ce_source"],
            time=dt.datetime.fromisoformat(headers["ce_time"]),
            minorversion=int(headers.get("ce_minorversion", "0")),
            sourcehost=headers.get("ce_sourcehost", ""),
            sourcelib=headers.get("ce_sourcelib", ""),
            traceparent=headers.get("traceparent"),
            schemaversion=int(headers.get("ce_schemaversion", "1")),
            specversion=headers.get("ce_specversion", "1.0"),
            datacontenttype=headers.get("content-type", "application/avro"),
        )
    except (KeyError, ValueError) as exc:
        raise DecodeError(f"bad envelope headers: {type(exc).__name__}: {exc}") from None


class Codec:
    """Encodes for one producer identity (``source``) and decodes with the registry's writer schemas."""

    def __init__(self, registry: SchemaRegistry, source: str = "edbus",
                 max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.registry = registry
        self.source = source
        self.max_event_bytes = max_event_bytes
        self._host = socket.gethostname()
        self._lock = threading.Lock()
        self._writers: dict[tuple[str, str], tuple[int, Any]] = {}
        self._parsed: dict[tuple[str, int], Any] = {}
        self._readers: dict[EventType[Any], Any] = {}

    # -- encoding ------------------------------------------------------------------------------
    def _writer(self, topic: str, event_type: EventType[Any]) -> tuple[int, Any]:
        found = self._writers.get((topic, event_type.name))
        if found is None:
            version = self.registry.register(topic, event_type.name, event_type.schema)
            found = (version, fastavro.parse_schema(event_type.schema))
            self._writers[(topic, event_type.name)] = found
        return found

    def encode(self, topic: str, event_type: EventType[Any], payload: Any, *, id: str | None = None,
               time: dt.datetime | None = None, traceparent: str | None = None) -> Record:
        """Validate and encode; raises ``ValidationError`` (or a subclass) before anything is stored."""
        data = event_type.codec.to_avro(payload, "")
        key = event_type.key_of(payload)
        version, parsed = self._writer(topic, event_type)
        buf = io.BytesIO()
        try:
            fastavro.schemaless_writer(buf, parsed, data)
        except (ValueError, TypeError, OverflowError) as exc:
            raise ValidationError(f"{event_type.name}: payload does not encode: {exc}") from None
        headers = {
            "ce_id": id or str(uuid.uuid4()),
            "ce_type": event_type.name,
            "ce_source": self.source,
            "ce_specversion": "1.0",
            "ce_time": (time or dt.datetime.now(_UTC)).isoformat(),
            "content-type": "application/avro",
            "ce_minorversion": str(event_type.minor_version),
            "ce_sourcehost": self._host,
            "ce_sourcelib": SOURCE_LIB,
            "ce_schemaversion": str(version),
        }
        if traceparent:
            headers["traceparent"] = traceparent
        record = Record(headers["ce_id"], event_type.name, key, headers, buf.getvalue())
        if record.size > self.max_event_bytes:
            raise EventTooLargeError(
                f"{event_type.name}: event is {record.size} bytes, over the {self.max_event_bytes}-byte limit")
        return record

    # -- decoding ------------------------------------------------------------------------------
    def writer_schema(self, event_type: str, version: int) -> Any:
        parsed = self._parsed.get((event_type, version))
        if parsed is None:
            parsed = fastavro.parse_schema(self.registry.get(event_type, version))
            self._parsed[(event_type, version)] = parsed
        return parsed

    def _read(self, message: Message, reader_schema: Any | None) -> tuple[Envelope, Any]:
        record = message.record
        envelope = envelope_from_headers(record.headers)
        if envelope.type != record.type:
            raise DecodeError(f"header ce_type {envelope.type!r} differs from the record type {record.type!r}")
        try:
            writer = self.writer_schema(envelope.type, envelope.schemaversion)
        except NotFoundError as exc:
            raise DecodeError(f"unknown event type or schema version: {exc}") from None
        buf = io.BytesIO(record.payload)
        try:
            data = fastavro.schemaless_reader(buf, writer, reader_schema)
        except Exception as exc:  # fastavro raises many types on bad bytes
            raise DecodeError(f"{envelope.type} v{envelope.schemaversion}: payload does not decode: "
                              f"{type(exc).__name__}: {exc}") from None
        if buf.tell() != len(record.payload):
            raise DecodeError(f"{envelope.type} v{envelope.schemaversion}: "
                              f"{len(record.payload) - buf.tell()} trailing bytes after the payload")
        return envelope, data

    def decode(self, message: Message, reader: EventType[Any]) -> tuple[Envelope, Any]:
        """Decode with the writer's schema and project onto the reader's payload class."""
        reader_schema = self._readers.get(reader)
        if reader_schema is None:
            reader_schema = fastavro.parse_schema(reader.schema)
            self._readers[reader] = reader_schema
        envelope, data = self._read(message, reader_schema)
        try:
            return envelope, reader.codec.from_avro(data)
        except Exception as exc:
            raise DecodeError(f"{envelope.type}: cannot build {reader.payload.__name__}: {exc}") from None

    def decode_dict(self, message: Message) -> tuple[Envelope, Any]:
        """Decode with the writer's schema only, into plain Avro data (for tools)."""
        return self._read(message, None)
