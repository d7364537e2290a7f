"""``EventBusConsumer`` on edbus: ``EVENT_BUS_CONSUMER = "edbus.openedx.EdbusConsumer"``.

Each event is decoded with openedx-events' own deserializer and re-emitted as the same signal with the
producer's metadata (``send_event_with_custom_metadata``). Unlike the Kafka and Redis consumers, an event
whose receiver raised is not acknowledged: it is retried with backoff, then dead-lettered with the error.
An event that names no known signal, or does not decode, is dead-lettered at once with the reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from openedx_events.event_bus import EventBusConsumer
from openedx_events.exceptions import SenderValidationError
from openedx_events.tooling import load_all_signals, prepare_for_new_work_cycle

from edbus.bus.bus import Bus
from edbus.bus.health import serve_health
from edbus.bus.metrics import serve_bus_metrics
from edbus.bus.timeouts import StuckHandlerError, exit_for_supervisor
from edbus.errors import DecodeError
from edbus.events.types import Event
from edbus.openedx.config import ConsumerOptions, get_bus, set_custom_attributes, setting
from edbus.openedx.serialization import SignalCodec, metadata_from_envelope, signal_for_type

__all__ = ["ConsumerFatalError", "EdbusConsumer", "ReceiverError"]

log = logging.getLogger("edbus.openedx.consumer")


class ReceiverError(Exception):
    """One or more of a signal's receivers raised: the event is retried, then dead-lettered."""


class ConsumerFatalError(SystemExit):
    """The consumer cannot go on (bad options, store unusable). A ``SystemExit`` with code 1, so that
    openedx-events' ``consume_events`` command, which catches ``Exception`` and exits 0, exits 1."""

    def __init__(self, message: str) -> None:
        super().__init__(1)
        self.message = message

    def __str__(self) -> str:
        return self.message


class EdbusConsumer(EventBusConsumer):
    """A consumer of ``topic`` in subscription ``group_id``; ``extra`` is ``consume_events --extra``.

    Options are checked when consuming starts, not here: openedx-events replaces a consumer whose
    constructor raises by a stub, which would hide the reason.
    """

    def __init__(self, topic: str, group_id: str, **extra: Any) -> None:
        self.topic = topic
        self.group_id = group_id
        self.extra: Mapping[str, Any] = extra
        self.consumer: Any = None
        self._codec: SignalCodec | None = None

    def emit(self, event: Event[Any]) -> None:
        """Re-emit one decoded event as its signal (the fallback handler of the edbus consumer)."""
        assert self._codec is not None
        self._prepare_work_cycle(event)
        # as the Kafka and Redis consumers: the peers' id and event_type, and edbus's own names
        set_custom_attributes({"edbus_topic": event.topic, "edbus_subscription": self.group_id,
                               "edbus_event_id": event.id, "edbus_event_type": event.type,
                               "edbus_attempt": event.attempt, "id": event.id, "event_type": event.type})
        signal = signal_for_type(event.type)
        data = self._codec.decode(signal, event.data)
        metadata = metadata_from_envelope(event.envelope)
        try:
            responses = signal.send_event_with_custom_metadata(metadata, **data)
        except SenderValidationError as exc:
            raise DecodeError(f"{event.type}: the data does not fit the signal: {exc}") from None
        failures = [(receiver, result) for receiver, result in responses or ()
                    if isinstance(result, BaseException)]
        if failures:
            names = "; ".join(f"{getattr(r, '__module__', '?')}.{getattr(r, '__qualname__', r)}: "
                              f"{type(e).__name__}: {e}" for r, e in failures)
            raise ReceiverError(f"{len(failures)} receiver(s) of {event.type} failed: {names}") from failures[0][1]

    def consume_indefinitely(self) -> None:
        """Consume until SIGTERM/SIGINT (or ``max_events`` / ``idle_timeout`` from ``--extra``).

        A fatal error is logged and raised as ``ConsumerFatalError`` (exit code 1); a store outage pauses
        and retries. A receiver past ``EDBUS_CONSUMER_HANDLER_TIMEOUT`` whose thread cannot be freed ends the
        process with status 75 (``edbus.bus.timeouts.EXIT_HANDLER_STUCK``) for its supervisor to restart it.
        ``EDBUS_CONSUMER_HEALTH_PORT`` serves /healthz and /readyz (docs/operations.md).
        """
        try:
            options = ConsumerOptions.from_settings(self.extra)
            load_all_signals()
            bus = get_bus()
            self._codec = SignalCodec(bus.registry)
            stop_metrics: Callable[[], None] | None = None
            if options.metrics_port is not None:
                # before bus.consumer(): a consumer takes the middleware the bus has when it is made; the
                # store gauges read the store through a bus of their own
                stats_bus = Bus.from_url(setting("EDBUS_URL") or None, create=False)
                try:
                    stop_serving = serve_bus_metrics(bus, options.metrics_port, stats_bus=stats_bus,
                                                     topics=[bus.topic(self.topic)])
                except BaseException:
                    stats_bus.close()
                    raise

                def stop_metrics() -> None:
                    stop_serving()
                    stats_bus.close()
            consumer = bus.consumer(self.topic, self.group_id, mode=options.mode, start=options.start,
                                    concurrency=options.concurrency, max_attempts=options.max_attempts,
                                    backoff=options.backoff, lease=options.lease, name=options.consumer_name,
                                    handler_timeout=options.handler_timeout)
            if options.replay_from is not None:
                bus.backend.subscribe(consumer.topic, self.group_id, options.mode, options.start)
                bus.administration.seek(consumer.topic, self.group_id, options.replay_from)
                log.info("edbus: subscription %s of %s moved to %s", self.group_id, consumer.topic,
                         options.replay_from)
            consumer.add_fallback(self.emit)
            consumer.health.stall_after = options.stall_after
            stop_health = None
            if options.health_port is not None:
                _, stop_health = serve_health(consumer.health, options.health_port)
            self.consumer = consumer
            log.info("edbus: consuming %s as subscription %s (%s, concurrency %d, max_attempts %d)",
                     consumer.topic, self.group_id, options.mode.value, options.concurrency, options.max_attempts)
            try:
                processed = consumer.run(max_events=options.max_events, idle_timeout=options.idle_timeout)
            finally:
                if stop_health is not None:
                    stop_health()
                if stop_metrics is not None:
                    stop_metrics()
            log.info("edbus: consumer of %s stopped after %d event(s)", consumer.topic, processed)
        except StuckHandlerError as exc:
            exit_for_supervisor(exc)  # a SystemExit would wait for the stuck thread for ever
        except Exception as exc:
            log.exception("edbus: the consumer of %s (subscription %s) stopped on a fatal error", self.topic,
                          self.group_id)
            raise ConsumerFatalError(f"edbus consumer: {type(exc).__name__}: {exc}") from exc

    def stop(self) -> None:
        """Stop consuming (from another thread): in-flight events finish and are acknowledged."""
        if self.consumer is not None:
            self.consumer.stop()

    def _prepare_work_cycle(self, event: Event[Any]) -> None:
        """``prepare_for_new_work_cycle()`` (stale DB connections), waiting out a database outage.

        A failure here is the service's infrastructure, not the event: counting it as a receiver failure
        would dead-letter events (and break per-key order) during a database restart. So the worker waits
        with backoff, holding the event (the runtime renews its lease), until the database is back or the
        consumer is stopping (then it counts as one failed attempt and is retried later).
        """
        pause = 0.5
        while True:
            try:
                prepare_for_new_work_cycle()
                return
            except Exception as exc:
                if self.consumer is not None and self.consumer.stopping:
                    raise ReceiverError(f"the service's database is unavailable: {type(exc).__name__}: "
                                        f"{exc}") from exc
                log.warning("edbus: preparing to handle %s failed (%s: %s); retrying in %.1f s", event.id,
                            type(exc).__name__, exc, pause)
                time.sleep(pause)
                pause = min(pause * 2, 30.0)
