"""Sending catalog signal events the way edbus's openedx producer does, on a given Bus.

``EdbusProducer.send`` (``EVENT_BUS_PRODUCER = "edbus.openedx.create_producer"``) finds its Bus through
Django settings; a simulator, a test or a benchmark has a Bus of its own. Both encode with
``SignalCodec``: openedx-events' Avro serializer and the Kafka implementation's headers, so what is
published here is byte for byte what Studio publishes through edbus.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from openedx_events.data import EventsMetadata

from edbus import Bus
from edbus.backends import Record
from edbus.errors import StoreError
from edbus.openedx import SignalCodec
from edbus_services.catalog.signals import CATALOG_SIGNALS

__all__ = ["SignalPublisher", "publish_retrying"]

log = logging.getLogger("edbus.demo")

STUDIO_SOURCE = "openedx/cms/web"  # what openedx-events puts in ``source`` for Studio (SERVICE_VARIANT=cms)


class SignalPublisher:
    """Encodes catalog signal events into records and publishes them (one transaction per call)."""

    def __init__(self, bus: Bus, source: str = STUDIO_SOURCE) -> None:
        self.bus = bus
        self.codec = SignalCodec(bus.registry)
        self.source = source
        self.sourcehost = socket.gethostname()

    def record(self, topic: str, event_type: str, data: Mapping[str, Any], *, id: str | None = None,
               time: dt.datetime | None = None) -> Record:
        """One event of a catalog signal (``event_type``) with its data, e.g. ``{"catalog_info": ...}``;
        ``time`` is the event time (Studio: when the course was last edited), default now."""
        spec = CATALOG_SIGNALS[event_type]
        metadata = EventsMetadata(event_type=event_type, id=uuid.UUID(id) if id else uuid.uuid4(),
                                  time=time or dt.datetime.now(dt.UTC), source=self.source,
                                  sourcehost=self.sourcehost)
        return self.codec.encode(self.bus.topic(topic), spec.signal, spec.key_field, data, metadata)

    def publish(self, topic: str, records: Sequence[Record]) -> list[str]:
        """Store ``records`` durably, all or none; returns their ids. Retry a ``StoreError`` with the same
        records: their ids make the retry idempotent."""
        return self.bus.publish_encoded(topic, records)


def publish_retrying(bus: Bus, topic: str, records: Sequence[Record], attempts: int = 5) -> None:
    """Store ``records`` (encoded), retrying an unacknowledged append with the same records, whose ids make
    the retry idempotent; the last ``StoreError`` is raised after ``attempts``."""
    for attempt in range(1, attempts + 1):
        try:
            bus.publish_encoded(topic, records)
            return
        except StoreError as exc:  # not acknowledged
            if attempt == attempts:
                raise
            log.warning("publish of %d event(s) to %s not acknowledged (%s): retrying", len(records), topic, exc)
            time.sleep(0.05 * attempt)  # backoff before the retry
