"""Bytes and headers on the wire: what openedx-events' own serializer writes, under the Kafka names."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

from openedx_events.data import EventsMetadata
from openedx_events.event_bus.avro.serializer import serialize_event_data_to_bytes

from edbus import Bus
from edbus.openedx.serialization import SignalCodec, metadata_from_envelope
from tests.openedx.signal_data import key_field, serializable_signals, signal_data

KAFKA_HEADERS = {"ce_id", "ce_type", "ce_source", "ce_specversion", "ce_time", "ce_minorversion", "sourcehost",
                 "sourcelib", "content-type", "ce_datacontenttype"}


def _metadata(signal: object) -> EventsMetadata:
    return EventsMetadata(event_type=signal.event_type, id=uuid.uuid1(), minorversion=2,  # type: ignore[attr-defined]
                          source="openedx/lms/web", sourcehost="lms-7d9f", sourcelib=(10, 5, 0),
                          time=dt.datetime(2024, 3, 1, 12, 0, 1, 123456, tzinfo=dt.UTC))


def test_payload_bytes_are_openedx_events_own_and_headers_carry_every_metadata_field(tmp_path: Path) -> None:
    with Bus.from_url(f"sqlite:///{tmp_path}/bus.db") as bus:
        codec = SignalCodec(bus.registry)
        for signal in serializable_signals():
            data, metadata = signal_data(signal), _metadata(signal)
            record = codec.encode("t", signal, key_field(signal), data, metadata)
            assert record.payload == serialize_event_data_to_bytes(data, signal), signal.event_type
            assert set(record.headers) >= KAFKA_HEADERS
            assert record.headers["sourcelib"] == "10.5.0" and record.headers["ce_minorversion"] == "2"
            assert record.id == str(metadata.id)


def test_metadata_rebuilt_from_the_stored_envelope_equals_the_producers(tmp_path: Path) -> None:
    signal = serializable_signals()[0]
    with Bus.from_url(f"sqlite:///{tmp_path}/bus.db") as bus:
        metadata = _metadata(signal)
        record = SignalCodec(bus.registry).encode("t", signal, key_field(signal), signal_data(signal), metadata)
        bus.publish_encoded("t", [record])
        ((_, envelope, _),) = list(bus.read("t"))
        assert metadata_from_envelope(envelope) == metadata


def test_metadata_keeps_empty_source_fields_and_accepts_an_edbus_tool_sourcelib() -> None:
    import datetime as dt
    import uuid as uuid_module

    from edbus.events.types import Envelope
    from edbus.openedx.serialization import metadata_from_envelope

    def envelope(sourcehost: str, sourcelib: str) -> Envelope:
        return Envelope(str(uuid_module.uuid4()), "org.openedx.content_authoring.course.catalog_info.changed.v1",
                        "openedx/cms/web", dt.datetime.now(dt.UTC), 0, sourcehost, sourcelib)

    empty = metadata_from_envelope(envelope("", ""))
    assert empty.sourcehost == "" and empty.sourcelib == ()
    tool = metadata_from_envelope(envelope("studio-1", "edbus"))  # from `edbus publish`: no version
    assert tool.sourcehost == "studio-1" and isinstance(tool.sourcelib, tuple)
