"""The edbus settings of an Open edX service, read from Django settings, and its process-wide Bus.

Every setting has the ``EDBUS_`` prefix except openedx-events' own (``EVENT_BUS_TOPIC_PREFIX``). Defaults
and annotations live in ``edbus.contrib.django.settings.common``; this module reads them with the same
defaults so the adapter also works without the Django app installed.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from edbus.backends.base import Mode, StartAt
from edbus.bus.bus import Bus
from edbus.bus.health import DEFAULT_STALL_AFTER
from edbus.bus.retries import Backoff
from edbus.errors import ConfigError

__all__ = ["ConsumerOptions", "close_bus", "get_bus", "set_custom_attributes", "setting", "topic_prefix"]

log = logging.getLogger("edbus.openedx")

_lock = threading.Lock()
_bus: Bus | None = None


def setting(name: str, default: Any = None) -> Any:
    from django.conf import settings

    return getattr(settings, name, default)


def topic_prefix() -> str:
    """``EVENT_BUS_TOPIC_PREFIX`` joined as the Kafka and Redis implementations do: ``<prefix>-<topic>``."""
    prefix = setting("EVENT_BUS_TOPIC_PREFIX", "") or ""
    if not isinstance(prefix, str):
        raise ConfigError(f"EVENT_BUS_TOPIC_PREFIX must be a string, not {type(prefix).__name__}")
    return f"{prefix}-" if prefix else ""


def get_bus() -> Bus:
    """The process's Bus on ``EDBUS_URL`` (default: ``$EDBUS_URL``, else the embedded store's default
    path), with ``EVENT_BUS_TOPIC_PREFIX``; closed at interpreter exit."""
    global _bus
    with _lock:
        if _bus is None:
            url = setting("EDBUS_URL") or None
            retention = setting("EDBUS_RETENTION_SECONDS", 7 * 24 * 3600.0)
            _bus = Bus.from_url(url, source=setting("EDBUS_SOURCE", "openedx"), topic_prefix=topic_prefix(),
                                retention=retention)
            atexit.register(close_bus)
        return _bus


def close_bus() -> None:
    """Close the process's Bus (every send is durable when it returns: there is nothing to flush)."""
    global _bus
    with _lock:
        if _bus is not None:
            _bus.close()
            _bus = None


@functools.cache
def _attribute_setter() -> Callable[[str, Any], None] | None:
    """edx-django-utils' ``set_custom_attribute`` (to every backend in ``OPENEDX_TELEMETRY``: New Relic,
    OpenTelemetry, Datadog), or None in a service without edx-django-utils."""
    try:
        from edx_django_utils.monitoring import set_custom_attribute  # type: ignore[import-untyped]
    except ImportError:
        return None
    setter: Callable[[str, Any], None] = set_custom_attribute
    return setter


def set_custom_attributes(attributes: Mapping[str, Any]) -> None:
    """Monitoring attributes of the current transaction or span, as the Kafka and Redis event buses set
    theirs. Monitoring never fails a send or a handler: a backend that raises is logged."""
    setter = _attribute_setter()
    if setter is None:
        return
    try:
        for name, value in attributes.items():
            setter(name, value)
    except Exception:
        log.exception("edbus: edx-django-utils could not set the custom attributes %s", ", ".join(attributes))


def _number(options: Mapping[str, Any], name: str, default: Any, kind: type) -> Any:
    value = options.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        raise ConfigError(f"{name} (--extra, or the setting EDBUS_CONSUMER_{name.upper()}) must be a "
                          f"{'whole ' if kind is int else ''}number, not {value!r}")
    return kind(value)


@dataclasses.dataclass(frozen=True, slots=True)
class ConsumerOptions:
    """What ``consume_events --extra JSON`` may set, over the ``EDBUS_CONSUMER_*`` settings."""

    mode: Mode = Mode.KEY_ORDERED
    concurrency: int = 1
    max_attempts: int = 5
    backoff: Backoff = dataclasses.field(default_factory=Backoff)
    start: StartAt = dataclasses.field(default_factory=StartAt)  # where a new subscription starts
    replay_from: StartAt | None = None  # move the cursor there before consuming (offset_time)
    lease: float = 30.0
    max_events: int | None = None
    idle_timeout: float | None = None
    handler_timeout: float | None = None  # seconds a receiver may run before its event is released
    health_port: int | None = None  # serve /healthz and /readyz there
    metrics_port: int | None = None  # serve Prometheus metrics there (edbus[metrics])
    stall_after: float = DEFAULT_STALL_AFTER  # seconds without a loop turn before /healthz fails
    consumer_name: str | None = None  # this process's consumer name (as the Redis bus's --extra option)

    # the first six and the last four also come from EDBUS_CONSUMER_<KEY> settings; --extra wins
    KEYS = ("mode", "concurrency", "max_attempts", "backoff_base", "backoff_max", "start", "offset_time",
            "replay_from", "lease", "max_events", "idle_timeout", "consumer_name", "handler_timeout",
            "health_port", "stall_after", "metrics_port")
    _FROM_SETTINGS = (*KEYS[:6], *KEYS[-4:])

    @classmethod
    def from_settings(cls, extra: Mapping[str, Any]) -> ConsumerOptions:
        unknown = sorted(set(extra) - set(cls.KEYS))
        if unknown:
            raise ConfigError(f"unknown consume_events --extra option(s) {', '.join(unknown)}: "
                              f"the edbus consumer takes {', '.join(cls.KEYS)}")
        options = {**{k: setting(f"EDBUS_CONSUMER_{k.upper()}") for k in cls._FROM_SETTINGS}, **extra}
        options = {k: v for k, v in options.items() if v is not None}
        try:
            mode = Mode(options.get("mode", "key_ordered"))
        except ValueError:
            raise ConfigError(f"mode {options['mode']!r}: use key_ordered, shared or exclusive") from None
        replay = options.get("replay_from") or options.get("offset_time")
        backoff = Backoff(base=_number(options, "backoff_base", 0.5, float),
                          maximum=_number(options, "backoff_max", 300.0, float))
        made = cls(mode=mode, concurrency=_number(options, "concurrency", 1, int),
                   max_attempts=_number(options, "max_attempts", 5, int), backoff=backoff,
                   start=StartAt.parse(str(options.get("start", "earliest"))),
                   replay_from=StartAt.parse(str(replay)) if replay else None,
                   lease=_number(options, "lease", 30.0, float),
                   max_events=_number(options, "max_events", None, int),
                   idle_timeout=_number(options, "idle_timeout", None, float),
                   handler_timeout=_number(options, "handler_timeout", None, float),
                   health_port=_number(options, "health_port", None, int),
                   metrics_port=_number(options, "metrics_port", None, int),
                   stall_after=_number(options, "stall_after", DEFAULT_STALL_AFTER, float),
                   consumer_name=None if options.get("consumer_name") is None else str(options["consumer_name"]))
        if made.concurrency < 1 or made.max_attempts < 1 or made.lease <= 0:
            raise ConfigError("concurrency and max_attempts must be >= 1, lease > 0")
        for key in ("handler_timeout", "stall_after"):
            value = getattr(made, key)
            if value is not None and value <= 0:
                raise ConfigError(f"{key} (EDBUS_CONSUMER_{key.upper()}) must be a number of seconds > 0, "
                                  f"not {value!r}")
        for key in ("health_port", "metrics_port"):
            port = getattr(made, key)
            if port is not None and not 0 <= port <= 65535:
                raise ConfigError(f"{key} (EDBUS_CONSUMER_{key.upper()}) must be a port number (0-65535), "
                                  f"not {port!r}")
        return made
