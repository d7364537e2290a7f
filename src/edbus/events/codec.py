"""The codec: payload objects to Avro binary and envelopes to headers, and back.

Headers follow the CloudEvents Kafka binary binding (``ce_<attribute>``, ``content-type``), the same names
the Kafka implementation of the Open edX event bus uses, plus ``ce_schemaversion``: the registry version
of the writer's schema, which a reader resolves against its own schema.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import fastavro
import fastavro.validation

from edbus._rng import rng as _rng
from edbus.errors import (
    DecodeError,
    EventTooLargeError,
    NotFoundError,
    UnknownEventTypeError,
    ValidationError,
)
from edbus.events.avro_schema import zero_width_array
from edbus.events.avro_writer import compile_writer
from edbus.events.types import Envelope, EventType
from edbus.records import Message, Record
from edbus.schema.registry import SchemaRegistry

__all__ = ["Codec", "DEFAULT_MAX_EVENT_BYTES", "ENVELOPE_HEADERS", "SOURCE_LIB", "envelope_from_headers",
           "new_event_id", "new_event_ids"]

DEFAULT_MAX_EVENT_BYTES = 1024 * 1024
# the headers the codec writes itself (middleware may add others, ``encode_many``'s ``headers``)
ENVELOPE_HEADERS = frozenset({"ce_id", "ce_type", "ce_source", "ce_specversion", "ce_time", "content-type",
                              "ce_minorversion", "ce_sourcehost", "ce_sourcelib", "ce_schemaversion"})
SOURCE_LIB = "edbus"
_UTC = dt.UTC
_TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")  # W3C trace context, version 00


def new_event_id() -> str:
    """A UUIDv7 (RFC 9562): time-ordered, so ids index cheaply and sort by creation time."""
    ms = time.time_ns() // 1_000_000
    rand = _rng.getrandbits(74)
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_event_ids(n: int) -> list[str]:
    """``n`` UUIDv7s of this millisecond, their random bits drawn at once (half the cost of ``n`` calls)."""
    head = f"{time.time_ns() // 1_000_000:012x}"
    prefix = f"{head[:8]}-{head[8:]}-7"
    bits = f"{_rng.getrandbits(80 * n):0{20 * n}x}" if n else ""
    out = []
    for j in range(0, 20 * n, 20):  # 20 hex digits each: 12 bits of rand_a, then 62 of rand_b (RFC 9562)
        variant = "89ab"[int(bits[j + 3], 16) & 3]  # the variant's bits 10, then two random bits
        out.append(f"{prefix}{bits[j:j + 3]}-{variant}{bits[j + 4:j + 7]}-{bits[j + 7:j + 19]}")
    return out


def envelope_from_headers(headers: Mapping[str, str]) -> Envelope:
    try:
        return Envelope(
            id=headers["ce_id"],
            type=headers["ce_type"],
            source=headers["ce_source"],
            time=_aware(dt.datetime.fromisoformat(headers["ce_time"])),
            minorversion=int(headers.get("ce_minorversion", "0")),
            sourcehost=headers.get("ce_sourcehost", ""),
            sourcelib=headers.get("ce_sourcelib", ""),
            traceparent=headers.get("traceparent"),
            schemaversion=int(headers.get("ce_schemaversion", "1")),
            specversion=headers.get("ce_specversion", "1.0"),
            datacontenttype=headers.get("content-type", "application/avro"),
        )
    except (KeyError, ValueError, TypeError) as exc:  # TypeError: a header value that is not a string
        raise DecodeError(f"bad envelope headers: {type(exc).__name__}: {exc}") from None


def _aware(when: dt.datetime) -> dt.datetime:
    """CloudEvents times carry an offset; one without (written by older producers) is UTC."""
    return when if when.tzinfo is not None else when.replace(tzinfo=_UTC)


def _check_envelope(id: object, time: object, traceparent: object) -> None:
    """Caller-given envelope attributes, refused before anything is stored (not at the backend)."""
    if id is not None and not (isinstance(id, str) and id and _is_text(id)):
        raise ValidationError(f"event id must be a non-empty string of valid Unicode, got {type(id).__name__}")
    if time is not None and not (isinstance(time, dt.datetime) and time.utcoffset() is not None):
        raise ValidationError("event time must be a datetime with a time zone (e.g. tzinfo=datetime.UTC), "
                              f"got {'a naive datetime' if isinstance(time, dt.datetime) else type(time).__name__}")
    if traceparent is not None and not (isinstance(traceparent, str) and _TRACEPARENT.match(traceparent)):
        shown = repr(traceparent[:80]) if isinstance(traceparent, str) else type(traceparent).__name__
        raise ValidationError(f"traceparent must be a W3C trace context (00-<32 hex>-<16 hex>-<2 hex>), got {shown}")


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclasses.dataclass(frozen=True, slots=True)
class _Writer:
    """What the events of one type on one topic share: the function writing their Avro data, and the
    envelope headers but their id and time (with ``size``, what those headers count in ``Record.size``)."""

    write: Callable[[Any], bytes]
    headers: dict[str, str]
    size: int


def _fastavro_writer(parsed: Any) -> Callable[[Any], bytes]:
    def write(data: Any) -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, data)
        return buf.getvalue()

    return write


class Codec:
    """Encodes for one producer identity (``source``) and decodes with the registry's writer schemas."""

    def __init__(self, registry: SchemaRegistry, source: str = "edbus",
                 max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.registry = registry
        self.source = source
        self.max_event_bytes = max_event_bytes
        self._host = socket.gethostname()
        self._lock = threading.Lock()
        self._writers: dict[tuple[str, EventType[Any]], _Writer] = {}
        self._parsed: dict[tuple[str, int], Any] = {}
        self._readers: dict[EventType[Any], Any] = {}

    # -- encoding ------------------------------------------------------------------------------
    def _writer(self, topic: str, event_type: EventType[Any]) -> _Writer:
        if not isinstance(event_type, EventType):
            raise ValidationError(f"expected an EventType, got {type(event_type).__name__} {event_type!r:.80}")
        found = self._writers.get((topic, event_type))
        if found is None:
            version = self.registry.register(topic, event_type.name, event_type.schema)
            write = compile_writer(event_type.schema) or _fastavro_writer(fastavro.parse_schema(event_type.schema))
            found = self._shared(event_type.name, event_type.minor_version, version, write)
            self._writers[(topic, event_type)] = found
        return found

    def _shared(self, type_name: str, minor_version: int, version: int, write: Callable[[Any], bytes]) -> _Writer:
        headers = {  # in the order they are written; ce_id and ce_time are set per event
            "ce_id": "",
            "ce_type": type_name,
            "ce_source": self.source,
            "ce_specversion": "1.0",
            "ce_time": "",
            "content-type": "application/avro",
            "ce_minorversion": str(minor_version),
            "ce_sourcehost": self._host,
            "ce_sourcelib": SOURCE_LIB,
            "ce_schemaversion": str(version),
        }
        return _Writer(write, headers, sum(len(k) + len(v) for k, v in headers.items()))

    def encode(self, topic: str, event_type: EventType[Any], payload: Any, *, id: str | None = None,
               time: dt.datetime | None = None, traceparent: str | None = None,
               sequence: int | None = None) -> Record:
        """Validate and encode; raises ``ValidationError`` (or a subclass) before anything is stored."""
        _check_envelope(id, time, traceparent)
        when = (time or dt.datetime.now(_UTC)).isoformat()
        extra = (("traceparent", (traceparent,)),) if traceparent else ()
        return self._encode(self._writer(topic, event_type), event_type, payload, id or new_event_id(), when, extra, 0,
                            sequence)

    def encode_many(self, topic: str, items: Sequence[tuple[EventType[Any], Any, str | None, int | None]],
                    headers: Mapping[str, Sequence[str]] | None = None) -> list[Record]:
        """Validate and encode ``(event_type, payload, id or None, sequence or None)`` items: what one
        ``encode`` per item would give, except that all of them carry the same time (this call's).
        ``headers``: more envelope headers, name → one value per item (the middleware's
        ``publish_headers``), counted in the size limit like the others."""
        when = dt.datetime.now(_UTC).isoformat()
        new_ids = iter(new_event_ids(sum(1 for item in items if item[2] is None)))
        extra = tuple(headers.items()) if headers else ()
        out = []
        last: tuple[EventType[Any], _Writer] | None = None  # the writer of the previous item's type
        for i, (event_type, payload, id, sequence) in enumerate(items):
            if id is None:
                id = next(new_ids)
            else:
                _check_envelope(id, None, None)
            if last is None or last[0] is not event_type:
                last = (event_type, self._writer(topic, event_type))
            out.append(self._encode(last[1], event_type, payload, id, when, extra, i, sequence))
        return out

    def _encode(self, writer: _Writer, event_type: EventType[Any], payload: Any, id: str, when: str,
                extra: Sequence[tuple[str, Sequence[str]]], index: int, sequence: int | None) -> Record:
        data = event_type.codec.to_avro(payload)
        key = event_type.key_of(payload)
        try:
            body = writer.write(data)
        except (ValueError, TypeError, OverflowError) as exc:
            raise ValidationError(f"{event_type.name}: payload does not encode: {exc}") from None
        return self._record(writer, event_type.name, key, body, id, when, extra, index, sequence)

    def _record(self, writer: _Writer, type_name: str, key: str | None, body: bytes, id: str, when: str,
                extra: Sequence[tuple[str, Sequence[str]]], index: int, sequence: int | None) -> Record:
        """The record of an encoded payload, within the size limit; ``extra``: more headers, each with
        its values, of which the ``index``th is this one's."""
        headers = writer.headers.copy()
        headers["ce_id"] = id
        headers["ce_time"] = when
        size = writer.size + len(id) + len(when) + len(body)  # Record.size, without summing every header
        for name, values in extra:
            value = headers[name] = values[index]
            size += len(name) + len(value)
        if size > self.max_event_bytes:
            raise EventTooLargeError(f"{type_name}: event is {size} bytes, over the {self.max_event_bytes}-byte limit")
        return Record(id, type_name, key, headers, body, sequence)

    def encode_data(self, topic: str, type_name: str, data: Any, *, key: str | None = None,
                    id: str | None = None) -> Record:
        """Encode plain data (e.g. parsed JSON) against the latest registered schema of ``type_name``;
        ISO-8601 strings are accepted for timestamps and dates. For tools: no payload class needed."""
        versions = self.registry.versions(type_name)
        if not versions:
            raise UnknownEventTypeError(f"unknown event type {type_name!r}: no schema registered")
        latest = versions[-1]
        _check_envelope(id, None, None)
        if key is not None and not (isinstance(key, str) and _is_text(key)):
            raise ValidationError(f"{type_name}: key must be a string of valid Unicode")
        parsed = self.writer_schema(type_name, latest.version)
        data = _from_json(latest.schema, data, {})
        buf = io.BytesIO()
        try:
            fastavro.validation.validate(data, parsed, raise_errors=True)
            fastavro.schemaless_writer(buf, parsed, data)
        except fastavro.validation.ValidationError as exc:
            raise ValidationError(f"{type_name}: data does not match schema version {latest.version}: "
                                  f"{'; '.join(str(e) for e in exc.errors)[:500]}") from None
        except RecursionError:  # the validator's message shows the value
            raise ValidationError(f"{type_name}: data nested too deeply for schema version "
                                  f"{latest.version}") from None
        except (ValueError, TypeError, OverflowError) as exc:  # e.g. lone surrogates in a string
            raise ValidationError(f"{type_name}: data does not encode with schema version {latest.version}: "
                                  f"{type(exc).__name__}: {str(exc)[:300]}") from None
        return self._record(self._shared(type_name, 0, latest.version, _fastavro_writer(parsed)), type_name, key,
                            buf.getvalue(), id or new_event_id(), dt.datetime.now(_UTC).isoformat(), (), 0, None)

    # -- decoding ------------------------------------------------------------------------------
    def writer_schema(self, event_type: str, version: int) -> Any:
        parsed = self._parsed.get((event_type, version))
        if parsed is None:
            if not 1 <= version < 2**31:  # from a header: never sent to a registry (Pulsar's answers 500)
                raise NotFoundError(f"no schema version {version} for event type {event_type!r}")
            schema = self.registry.get(event_type, version)
            unbounded = zero_width_array(schema)
            if unbounded is not None:
                raise DecodeError(f"{event_type} v{version}: writer schema refused: {unbounded}")
            parsed = fastavro.parse_schema(schema)
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


def _from_json(schema: Any, value: Any, names: dict[str, Any]) -> Any:
    """Turn JSON-friendly values into what fastavro writes: ISO strings into datetimes and dates."""
    if isinstance(schema, str):
        schema = names.get(schema, schema)
    if isinstance(schema, list):
        for branch in schema:
            b = names.get(branch, branch) if isinstance(branch, str) else branch
            if value is None and b == "null":
                return None
            if value is not None and b != "null":
                return _from_json(b, value, names)
        return value
    if not isinstance(schema, dict):
        return value
    kind = schema.get("type")
    if kind in ("record", "enum", "fixed"):
        names[schema["name"]] = schema
    logical = schema.get("logicalType")
    if isinstance(value, str) and logical in ("timestamp-micros", "timestamp-millis"):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValidationError(f"{value[:80]!r} is not an ISO-8601 time") from None
        parsed = _aware(parsed)
        try:
            parsed.astimezone(_UTC)
        except OverflowError:
            raise ValidationError(f"{value[:80]!r} is out of range in UTC") from None
        return parsed
    if isinstance(value, str) and logical == "uuid":
        try:
            uuid.UUID(value)
        except ValueError:
            raise ValidationError(f"{value[:80]!r} is not a UUID") from None
        return value
    if isinstance(value, str) and logical == "date":
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise ValidationError(f"{value[:80]!r} is not an ISO-8601 date") from None
    if kind == "record" and isinstance(value, dict):
        return {**value, **{f["name"]: _from_json(f["type"], value[f["name"]], names)
                            for f in schema["fields"] if f["name"] in value}}
    if kind == "array" and isinstance(value, list):
        return [_from_json(schema["items"], v, names) for v in value]
    if kind == "map" and isinstance(value, dict):
        return {k: _from_json(schema["values"], v, names) for k, v in value.items()}
    if isinstance(kind, (dict, list)):
        return _from_json(kind, value, names)
    return value
