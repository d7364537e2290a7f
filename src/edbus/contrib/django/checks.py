"""The start-up check of the producer configuration: a mistake fails loudly when the service starts.

openedx-events itself only warns and then drops every event when ``EVENT_BUS_PRODUCER`` does not load,
and finds a bad ``event_key_field`` only when an event is sent.
"""

from __future__ import annotations

from typing import Any, get_args, get_origin

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string
from openedx_events.event_bus import EventBusProducer
from openedx_events.tooling import OpenEdxPublicSignal, load_all_signals

from edbus.bus.bus import check_topic
from edbus.errors import EdbusError
from edbus.openedx.config import close_bus, setting

__all__ = ["check_consumer_config", "check_key_field", "check_producer_config", "check_store_url"]


def check_key_field(signal: Any, path: str) -> None:
    """``path`` (``course.course_key``) must lead through the signal's data classes to a field."""
    parts = path.split(".")
    kind: Any = signal.init_data.get(parts[0])
    if kind is None:
        raise ImproperlyConfigured(f"EVENT_BUS_PRODUCER_CONFIG: event_key_field {path!r} of {signal.event_type}: "
                                   f"the signal's data has no {parts[0]!r} (it has {', '.join(signal.init_data)})")
    for part in parts[1:]:
        fields = {f.name: f.type for f in getattr(kind, "__attrs_attrs__", ())}
        if part not in fields:
            raise ImproperlyConfigured(
                f"EVENT_BUS_PRODUCER_CONFIG: event_key_field {path!r} of {signal.event_type}: "
                f"{getattr(kind, '__name__', kind)} has no field {part!r}"
                + (f" (it has {', '.join(fields)})" if fields else ""))
        kind = fields[part]
        if get_origin(kind) is not None and type(None) in get_args(kind):  # Optional[X]
            kind = next(a for a in get_args(kind) if a is not type(None))


def check_store_url() -> None:
    """``EDBUS_URL`` must be set, and an embedded store's path absolute: with the default (a path under
    each user's home) or a relative one, the LMS, Studio and the consumers could each use their own
    file, and every event would be published where no consumer reads."""
    url = setting("EDBUS_URL")
    if not url or not isinstance(url, str):
        raise ImproperlyConfigured("EDBUS_URL is not set: give every service the same store, e.g. "
                                   "EDBUS_URL = 'sqlite:////openedx/data/edbus/edbus.db'")
    if url.startswith("sqlite://") and not url.startswith("sqlite:////"):
        raise ImproperlyConfigured(f"EDBUS_URL {url!r} is a relative path: it depends on each process's "
                                   "working directory; use sqlite:////absolute/path.db")
    prefix = setting("EVENT_BUS_TOPIC_PREFIX")
    if prefix:
        try:
            check_topic(f"{prefix}-topic")
        except EdbusError:
            raise ImproperlyConfigured(f"EVENT_BUS_TOPIC_PREFIX {prefix!r}: use letters, digits, '-', '_' "
                                       "and '.'") from None


def check_consumer_config() -> None:
    """An ``EVENT_BUS_CONSUMER`` that does not load makes openedx-events run a stub consumer that
    consumes nothing and exits 0: refuse it at start-up instead."""
    path = setting("EVENT_BUS_CONSUMER")
    if path is None:
        return
    if not isinstance(path, str):
        raise ImproperlyConfigured(f"EVENT_BUS_CONSUMER must be a dotted path, not {path!r}")
    try:
        consumer = import_string(path)
    except Exception as exc:
        raise ImproperlyConfigured(f"EVENT_BUS_CONSUMER {path!r} does not load: {type(exc).__name__}: "
                                   f"{exc}") from exc
    if getattr(consumer, "__module__", "").startswith("edbus."):
        check_store_url()


def _load_producer(path: Any) -> Any:
    if not isinstance(path, str):
        raise ImproperlyConfigured(f"EVENT_BUS_PRODUCER must be a dotted path, not {path!r}")
    try:
        producer = import_string(path)()
    except EdbusError as exc:
        raise ImproperlyConfigured(f"EVENT_BUS_PRODUCER {path!r}: the store does not open: {exc}") from exc
    except Exception as exc:
        raise ImproperlyConfigured(f"EVENT_BUS_PRODUCER {path!r} does not load: {type(exc).__name__}: {exc}") from exc
    if not isinstance(producer, EventBusProducer):
        raise ImproperlyConfigured(f"EVENT_BUS_PRODUCER {path!r} returned {type(producer).__name__}, "
                                   "not an openedx_events.event_bus.EventBusProducer")
    return producer


def check_producer_config() -> None:
    """Raise ``ImproperlyConfigured`` when events configured to be sent would be dropped or refused."""
    config = setting("EVENT_BUS_PRODUCER_CONFIG", {}) or {}
    path = setting("EVENT_BUS_PRODUCER")
    enabled = {(event_type, topic): topic_config
               for event_type, topics in (config.items() if isinstance(config, dict) else ())
               for topic, topic_config in (topics.items() if isinstance(topics, dict) else ())
               if isinstance(topic_config, dict) and topic_config.get("enabled") is True}
    if not isinstance(config, dict):
        raise ImproperlyConfigured("EVENT_BUS_PRODUCER_CONFIG must be a dict of event type -> topic -> config")
    if path is None:
        if enabled:
            raise ImproperlyConfigured(
                f"EVENT_BUS_PRODUCER is not set but EVENT_BUS_PRODUCER_CONFIG enables {len(enabled)} "
                "event type/topic pair(s): every such event would be dropped. Set "
                "EVENT_BUS_PRODUCER = 'edbus.openedx.create_producer'.")
        return
    producer = _load_producer(path)
    if not type(producer).__module__.startswith("edbus."):
        return  # another implementation: its own rules
    check_store_url()
    try:
        producer.bus  # noqa: B018 - opens the store: a bad EDBUS_URL or an unwritable folder fails here
    except EdbusError as exc:
        raise ImproperlyConfigured(f"EVENT_BUS_PRODUCER {path!r}: the store (EDBUS_URL) does not open: {exc}") from exc
    finally:
        close_bus()  # no store connection may cross the fork of a pre-fork server: workers open their own
    load_all_signals()
    for (event_type, topic), topic_config in enabled.items():
        try:
            signal = OpenEdxPublicSignal.get_signal_by_type(event_type)
        except KeyError:
            raise ImproperlyConfigured(f"EVENT_BUS_PRODUCER_CONFIG: no OpenEdxPublicSignal has event type "
                                       f"{event_type!r} (misspelt, or newer than this openedx-events)") from None
        try:
            check_topic(topic)
        except EdbusError as exc:
            raise ImproperlyConfigured(f"EVENT_BUS_PRODUCER_CONFIG[{event_type!r}]: {exc}") from None
        key_field = topic_config.get("event_key_field")
        if not isinstance(key_field, str) or not key_field:
            raise ImproperlyConfigured(f"EVENT_BUS_PRODUCER_CONFIG[{event_type!r}][{topic!r}]: event_key_field "
                                       "must be a non-empty string")
        check_key_field(signal, key_field)
