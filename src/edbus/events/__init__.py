"""Event types, envelopes and the Avro codec."""

from edbus.events.avro_schema import PayloadCodec, is_payload_class
from edbus.events.codec import DEFAULT_MAX_EVENT_BYTES, Codec, envelope_from_headers
from edbus.events.types import Envelope, Event, EventType

__all__ = ["DEFAULT_MAX_EVENT_BYTES", "Codec", "Envelope", "Event", "EventType", "PayloadCodec",
           "envelope_from_headers", "is_payload_class"]
