"""``EventBusProducer`` on edbus: ``EVENT_BUS_PRODUCER = "edbus.openedx.create_producer"``."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

from openedx_events.event_bus import EventBusProducer

from edbus.bus.bus import Bus
from edbus.openedx.config import get_bus
from edbus.openedx.serialization import SignalCodec

__all__ = ["EdbusProducer", "create_producer"]

log = logging.getLogger("edbus.openedx.producer")


class EdbusProducer(EventBusProducer):
    """Sends signal events to the bus. ``send`` returns once the event is durable (on disk in the embedded
    store), and raises when it is not: unlike the Kafka and Redis producers, a failure is never only logged.
    """

    def __init__(self) -> None:
        self._codec: tuple[Bus, SignalCodec] | None = None

    @property
    def bus(self) -> Bus:
        """The process's Bus, opened on first use (so a pre-fork server opens it in each worker)."""
        return get_bus()

    @property
    def codec(self) -> SignalCodec:
        bus = get_bus()
        found = self._codec
        if found is None or found[0] is not bus:
            found = self._codec = (bus, SignalCodec(bus.registry))
        return found[1]

    def send(self, *, signal: Any, topic: str, event_key_field: str, event_data: Mapping[str, Any],
             event_metadata: Any) -> None:
        """Send one event to ``topic`` (without the ``EVENT_BUS_TOPIC_PREFIX``, which is added here)."""
        bus = self.bus
        full_topic = bus.topic(topic)
        try:
            record = self.codec.encode(full_topic, signal, event_key_field, event_data, event_metadata)
            bus.publish_encoded(topic, [record])
        except Exception:
            # openedx-events calls send() through send_robust, which swallows this exception: the log is
            # then all that is left, so it carries everything needed to send the event again
            log.exception("edbus: could not send %s %s to topic %s; event data: %s; metadata: %s",
                          getattr(signal, "event_type", signal), getattr(event_metadata, "id", "?"),
                          full_topic, _describe(event_data), _describe_metadata(event_metadata))
            raise

    def prepare_for_shutdown(self) -> None:
        """Nothing to flush: every ``send`` is durable when it returns. The store stays open: the Bus is
        shared by every thread (and a consumer) of the process, and closing it under them would lose
        their events."""


def _describe(value: Any) -> str:
    try:
        return repr(value)[:20_000]
    except Exception as exc:  # a broken __repr__ must not hide the send error
        return f"<unprintable: {type(exc).__name__}>"


def _describe_metadata(metadata: Any) -> str:
    try:
        return str(metadata.to_json())
    except Exception:
        return _describe(metadata)


@functools.lru_cache(maxsize=1)
def create_producer() -> EdbusProducer:
    """The process's producer (cached), on the Bus of ``EDBUS_URL``; the value of ``EVENT_BUS_PRODUCER``."""
    return EdbusProducer()
