"""``EventBusProducer`` on edbus: ``EVENT_BUS_PRODUCER = "edbus.openedx.create_producer"``.

Every send sets the edx-django-utils custom attributes ``edbus_topic``, ``edbus_event_id`` and
``edbus_event_type`` on the current transaction (when edx-django-utils is installed). A failed send is
logged with the event's id, type, topic and metadata, never its data: event data may be personal (a
learner's name or email). ``EDBUS_LOG_FAILED_PAYLOADS = True`` adds the data and the error's own message
(which may quote the data) to that log line, for a service whose logs may hold it.
"""

from __future__ import annotations

import functools
import logging
import traceback
from collections.abc import Mapping
from typing import Any

from openedx_events.event_bus import EventBusProducer

from edbus.bus.bus import Bus
from edbus.errors import (
    AccessError,
    ConfigError,
    EventTooLargeError,
    NotFoundError,
    SchemaError,
    StoreError,
    UnknownEventTypeError,
    redact,
)
from edbus.openedx.config import get_bus, set_custom_attributes, setting, topic_prefix
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
        event_type = getattr(signal, "event_type", str(signal))
        event_id = getattr(event_metadata, "id", "?")
        full_topic = topic
        try:
            full_topic = topic_prefix() + topic
            set_custom_attributes({"edbus_topic": full_topic, "edbus_event_id": str(event_id),
                                   "edbus_event_type": event_type})
            bus = self.bus  # opening the store may fail too: logged below like any failed send
            record = self.codec.encode(bus.topic(topic), signal, event_key_field, event_data, event_metadata)
            bus.publish_encoded(topic, [record])
        except Exception as exc:
            # openedx-events calls send() through send_robust, which swallows this exception: the log is
            # then all that is left, so it carries what is needed to send the event again (its metadata),
            # but the event data only where the service opted in
            if setting("EDBUS_LOG_FAILED_PAYLOADS", False) is True:
                log.exception("edbus: could not send %s %s to topic %s; event data: %s; metadata: %s",
                              event_type, event_id, full_topic, _describe(event_data),
                              _describe_metadata(event_metadata))
            else:
                log.error("edbus: could not send %s %s to topic %s: %s; metadata: %s (event data not logged: "
                          "EDBUS_LOG_FAILED_PAYLOADS = True logs it)\n%s", event_type, event_id, full_topic,
                          _error_without_data(exc), _describe_metadata(event_metadata), _frames(exc))
            raise

    def prepare_for_shutdown(self) -> None:
        """Nothing to flush: every ``send`` is durable when it returns. The store stays open: the Bus is
        shared by every thread (and a consumer) of the process, and closing it under them would lose
        their events."""


# errors whose messages edbus writes without event data in them (a refused credential, a full store, ...)
_DATA_FREE_ERRORS = (StoreError, AccessError, ConfigError, EventTooLargeError, UnknownEventTypeError, NotFoundError,
                     SchemaError)


def _error_without_data(exc: BaseException) -> str:
    """The error's type, and its message when edbus wrote it without event data (a payload that does not
    serialize is described by its serializer, which may quote the data)."""
    if isinstance(exc, _DATA_FREE_ERRORS):
        return f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"
    return f"{type(exc).__module__}.{type(exc).__qualname__} (its message may quote the event data: not logged)"


def _frames(exc: BaseException) -> str:
    """Where the error happened (the traceback's frames, not its message)."""
    return "Traceback (most recent call last):\n" + "".join(traceback.format_tb(exc.__traceback__)).rstrip()


def _describe(value: Any) -> str:
    try:
        return repr(value)[:20_000]
    except Exception as exc:  # a broken __repr__ must not hide the send error
        return f"<unprintable: {type(exc).__name__}>"


def _describe_metadata(metadata: Any) -> str:
    """The envelope (id, type, time, source, ...): never event data."""
    try:
        return redact(str(metadata.to_json()))
    except Exception:
        return f"<{type(metadata).__name__} without to_json()>"


@functools.lru_cache(maxsize=1)
def create_producer() -> EdbusProducer:
    """The process's producer (cached), on the Bus of ``EDBUS_URL``; the value of ``EVENT_BUS_PRODUCER``."""
    return EdbusProducer()
