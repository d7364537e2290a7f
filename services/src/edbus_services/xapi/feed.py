"""The xAPI feed service: a named subscription on the learning-event topics, statements to an LRS in
batches, Caliper events to an optional sink.

Each event is transformed, submitted to a batch, and acknowledged only once its batch is stored: a crash
between the LRS's answer and the ack redelivers the event, which gives the same statement (deterministic
id), which the LRS stores once. Failures are settled by the bus's middleware:

- LRS unreachable, 5xx, 401/403/408/429 (``LrsUnavailableError``), Caliper sink failure (``SinkError``):
  retried with exponential backoff, then the dead-letter topic ``<topic>.<subscription>.dlq`` (redrive it
  with ``edbus dlq redrive`` once the LRS is back);
- a statement the LRS refuses with another 4xx (``LrsRejectedError``), or an event whose data does not
  fit its mapping (``UntransformableEventError``): dead-lettered at once, the LRS's answer in the record.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from edbus import Backoff, Bus, Event, Mode, Retries
from edbus.bus import Metrics, Tracing
from edbus.errors import ConfigError
from edbus_services.xapi.batcher import Batcher
from edbus_services.xapi.caliper import to_caliper
from edbus_services.xapi.errors import UntransformableEventError
from edbus_services.xapi.lrs import LrsClient, LrsConfig
from edbus_services.xapi.sinks import CaliperSink
from edbus_services.xapi.statements import XapiConfig, to_statement

__all__ = ["DEFAULT_TOPICS", "FeedOptions", "FeedReport", "XapiFeed"]

log = logging.getLogger("edbus_services.xapi")

# the certificate and badges topics are edx-platform's own (its default EVENT_BUS_PRODUCER_CONFIG); the
# enrollment and grade topics are added to that setting for the feed (docs/xapi.md)
DEFAULT_TOPICS = ("learning-course-enrollment-lifecycle", "learning-badges-lifecycle",
                  "learning-certificate-lifecycle", "learning-course-grade-lifecycle")


@dataclasses.dataclass(frozen=True, slots=True)
class FeedOptions:
    """``batch_size`` statements per POST; a batch leaves after ``linger`` seconds even when not full.
    Each topic's consumer runs ``batch_size`` handler threads (``shared`` mode: statements carry their own
    timestamps, so per-key order does not matter, and a course's events must not queue behind each other)."""

    topics: tuple[str, ...] = DEFAULT_TOPICS
    subscription: str = "xapi-feed"
    batch_size: int = 100
    linger: float = 0.05
    max_attempts: int = 20
    backoff: Backoff = dataclasses.field(default_factory=lambda: Backoff(base=1.0, maximum=60.0))
    start: str = "earliest"
    lease: float = 60.0

    def __post_init__(self) -> None:
        if not self.topics:
            raise ConfigError("the xAPI feed needs at least one topic")
        if self.batch_size < 1 or self.linger < 0 or self.max_attempts < 1:
            raise ConfigError("batch_size and max_attempts must be >= 1, linger >= 0")


@dataclasses.dataclass(frozen=True, slots=True)
class FeedReport:
    events: int          # events settled (acked or dead-lettered)
    statements: int      # statements sent to the LRS (a statement retried is counted again)
    batches: int
    caliper_events: int
    metrics: Mapping[str, Any]


class XapiFeed:
    """The feed on ``bus_url``'s store. ``after_send(statements, outcomes)`` runs after each LRS batch,
    before its events are acknowledged."""

    def __init__(self, bus_url: str | None, lrs: LrsConfig, *, options: FeedOptions | None = None,
                 xapi: XapiConfig | None = None, caliper_sink: CaliperSink | None = None,
                 after_send: Callable[[Sequence[Mapping[str, Any]], Sequence[BaseException | None]], None]
                 | None = None) -> None:
        self.options = options or FeedOptions()
        self.xapi = xapi or XapiConfig()
        self.bus = Bus.from_url(bus_url, middleware=[
            Tracing(), Metrics(), Retries(self.options.max_attempts, self.options.backoff)])
        self.metrics = self.bus.metrics
        self.lrs = LrsClient(lrs)
        try:
            self.consumers = [
                self.bus.consumer(topic, self.options.subscription, mode=Mode.SHARED, start=self.options.start,
                                  concurrency=self.options.batch_size, batch=self.options.batch_size,
                                  lease=self.options.lease)
                for topic in self.options.topics]
        except BaseException:
            self.bus.close()
            raise
        for consumer in self.consumers:
            consumer.add_fallback(self.handle)
        self._statements: Batcher[Mapping[str, Any]] = Batcher(
            self.lrs.store, _id, size=self.options.batch_size, linger=self.options.linger,
            name="xapi-lrs", after_send=after_send)
        self._caliper: Batcher[Mapping[str, Any]] | None = None
        if caliper_sink is not None:
            self._caliper = Batcher(caliper_sink.send, _id, size=self.options.batch_size,
                                    linger=self.options.linger, name="xapi-caliper")
        self._signalled = False

    def handle(self, event: Event[Any]) -> None:
        """Transform one event, send it with its batch, return once stored (raise to retry/dead-letter)."""
        try:
            statement = to_statement(self.xapi, event.type, event.data, event.envelope.time)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UntransformableEventError(f"{event.type} {event.id}: the data does not fit the xAPI mapping: "
                                            f"{type(exc).__name__}: {exc}") from exc
        if statement is None:
            return  # a type this feed does not map (topics carry other events too): ack it
        waits = [self._statements.submit(statement)]
        if self._caliper is not None:
            waits.append(self._caliper.submit(to_caliper(self.xapi, statement)))
        for future in waits:
            future.result()

    def run(self, *, idle_timeout: float | None = None) -> FeedReport:
        """Consume every topic until ``stop()``, SIGTERM/SIGINT, or ``idle_timeout`` idle seconds."""
        previous = self._install_signals()
        log.info("xAPI feed: subscription %s on %s, statements to %s in batches of %d",
                 self.options.subscription, ", ".join(c.topic for c in self.consumers),
                 self.lrs.config.statements_url, self.options.batch_size)
        processed = [0] * len(self.consumers)
        errors: list[BaseException] = []

        def consume(i: int) -> None:
            try:
                processed[i] = self.consumers[i].run(idle_timeout=idle_timeout, install_signals=False)
            except BaseException as exc:
                errors.append(exc)
                self.stop()

        threads = [threading.Thread(target=consume, args=(i,), name=f"xapi-{c.topic}")
                   for i, c in enumerate(self.consumers)]
        try:
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                if self._signalled:
                    self.stop()
                for t in threads:
                    t.join(0.2)  # short joins: the main thread must stay free to take signals
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if errors:
            raise errors[0]
        return self.report(sum(processed))

    def report(self, events: int) -> FeedReport:
        caliper = self._caliper.items if self._caliper is not None else 0
        return FeedReport(events, self._statements.items, self._statements.batches, caliper,
                          self.metrics.snapshot())

    def stop(self) -> None:
        """Take no new events; in-flight ones finish (their batches are sent) and are acknowledged."""
        for consumer in self.consumers:
            consumer.stop()

    def close(self) -> None:
        self._statements.close()
        if self._caliper is not None:
            self._caliper.close()
        self.bus.close()

    def __enter__(self) -> XapiFeed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous: dict[int, Any] = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda signum, frame: self._on_signal())
        return previous

    def _on_signal(self) -> None:
        # only a flag, as in the consumer runtime: the run loop turns it into stop()
        self._signalled = True


def _id(item: Mapping[str, Any]) -> str:
    return str(item["id"])
