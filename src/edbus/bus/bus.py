"""The Bus: the public entry point. Publishes typed events and builds consumers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from edbus.backends import Backend, Message, Mode, Record, StartAt, SubscriptionStats, TopicStats, open_backend
from edbus.backends.base import Administrable, administrable, check_sequence, check_subscription
from edbus.bus.consumer import Consumer
from edbus.bus.metrics import Metrics
from edbus.bus.middleware import Middleware, MiddlewareChain
from edbus.bus.retries import Backoff, Retries
from edbus.bus.tracing import Tracing
from edbus.errors import ConfigError, ValidationError
from edbus.events.codec import DEFAULT_MAX_EVENT_BYTES, Codec
from edbus.events.types import Envelope, EventType

if TYPE_CHECKING:
    from edbus.schema.registry import SchemaRegistry

__all__ = ["DEFAULT_RETENTION", "Bus", "check_topic"]

DEFAULT_RETENTION = 7 * 24 * 3600.0
_TOPIC_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def check_topic(topic: str) -> str:
    if not topic or len(topic) > 200 or not set(topic) <= _TOPIC_OK or topic.endswith(".dlq"):
        raise ConfigError(f"bad topic name {topic!r}: use letters, digits, '-', '_' and '.' "
                          "(and not the .dlq suffix of dead-letter topics)")
    return topic


class Bus:
    """Publish and consume typed events on a backend.

    ``Bus.from_url()`` opens ``$EDBUS_URL`` or the embedded store at its default path. The default
    middleware is ``[Tracing(), Metrics(), Retries()]``; ``bus.metrics`` is the chain's first Metrics
    instance (a new, unattached one when the given middleware has none).
    """

    def __init__(self, backend: Backend, *, source: str = "edbus", middleware: Sequence[Middleware] | None = None,
                 max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES, topic_prefix: str = "",
                 retention: float | None = DEFAULT_RETENTION) -> None:
        """``retention``: seconds an acked event is kept (None: forever); consumers enforce it."""
        if retention is not None and retention < 0:
            raise ConfigError("retention must be >= 0 seconds, or None to keep events forever")
        self.backend = backend
        self.retention = retention
        self.metrics = next((m for m in middleware or () if isinstance(m, Metrics)), Metrics())
        if middleware is None:
            middleware = [Tracing(), self.metrics, Retries()]
        self.middleware = MiddlewareChain(middleware)
        self.codec = Codec(backend.registry, source=source, max_event_bytes=max_event_bytes)
        self.topic_prefix = topic_prefix

    @classmethod
    def from_url(cls, url: str | None = None, *, create: bool = True, **options: Any) -> Bus:
        return cls(open_backend(url, create=create), **options)

    @property
    def registry(self) -> SchemaRegistry:
        return self.backend.registry

    def topic(self, name: str) -> str:
        return self.topic_prefix + check_topic(name)

    # -- publishing --------------------------------------------------------------------------
    def publish(self, topic: str, event_type: EventType[Any], payload: Any, *, id: str | None = None,
                time: dt.datetime | None = None, traceparent: str | None = None,
                sequence: int | None = None) -> str:
        """Validate, encode and store one event durably; returns its id once it is durable.

        Raises ``ValidationError`` (nothing stored), ``StoreError`` (not acknowledged: retry with
        the same ``id`` to make the retry idempotent), or what a middleware's ``before_publish`` raised
        to refuse the event (nothing stored). On Pulsar a retry from *another process* is
        recognised only with a named producer (URL ``producer=``) and the same ``sequence``, a number
        that grows with every new event of that producer (``Record.sequence``, docs/pulsar.md).
        """
        topic = self.topic(topic)
        record = self.codec.encode(topic, event_type, payload, id=id, time=time, traceparent=traceparent,
                                   sequence=sequence)
        self._append(topic, [record])
        return record.id

    def publish_many(self, topic: str,
                     events: Sequence[tuple[EventType[Any], Any] | tuple[EventType[Any], Any, str]
                                      | tuple[EventType[Any], Any, str, int]]) -> list[str]:
        """Store several events in one transaction (group commit): all of them or none.

        Each item is ``(event_type, payload)``, ``(event_type, payload, event_id)`` or
        ``(event_type, payload, event_id, sequence)`` (a named producer's sequence, see ``publish``).
        """
        topic = self.topic(topic)
        if not isinstance(events, Sequence):
            raise ValidationError("publish_many takes a sequence of (event_type, payload[, id[, sequence]]) tuples")
        items = [_publish_item(item) for item in events]
        records = self.codec.encode_many(topic, items, self.middleware.publish_headers(topic, len(items)))
        if records:
            self._append(topic, records)
        return [r.id for r in records]

    def publish_encoded(self, topic: str, records: Sequence[Record]) -> list[str]:
        """Store records made by ``bus.codec`` (``encode`` or ``encode_data``, for tools that have JSON
        rather than payload objects) in one transaction, through the publish middleware."""
        topic = self.topic(topic)
        if records:
            self._append(topic, records)
        return [r.id for r in records]

    def _append(self, topic: str, records: Sequence[Record]) -> None:
        for r in records:  # every publish path: a bad sequence is refused before anything is stored
            if r.sequence is not None:
                check_sequence(r.sequence)
        try:
            # a before_publish hook that raises stops the publish (fails closed); the after hooks still
            # see it, so a span or a timer opened before it is closed
            records = self.middleware.before_publish(topic, records)
            self.backend.append(topic, records)
        except BaseException as exc:
            self.middleware.after_publish(topic, records, exc)
            raise
        self.middleware.after_publish(topic, records, None)

    # -- consuming ---------------------------------------------------------------------------
    def consumer(self, topic: str, subscription: str, *, mode: str | Mode = Mode.KEY_ORDERED,
                 start: str | StartAt = "earliest", concurrency: int = 4, max_attempts: int | None = None,
                 backoff: Backoff | None = None, lease: float = 30.0, batch: int = 256,
                 name: str | None = None, handler_timeout: float | None = None) -> Consumer:
        """A consumer of a named subscription; register handlers, then ``run()``. ``handler_timeout``:
        seconds a handler may run before its event is released for retry (docs/operations.md)."""
        try:
            mode = Mode(mode)
        except ValueError:
            raise ConfigError(f"unknown mode {mode!r}: key_ordered, shared or exclusive") from None
        if isinstance(start, str):
            start = StartAt.parse(start)
        chain = self.middleware
        if max_attempts is not None or backoff is not None:  # this consumer's own retry policy
            chain = MiddlewareChain([m for m in chain.middleware if not isinstance(m, Retries)]
                                    + [Retries(max_attempts or 5, backoff)])
        return Consumer(self.backend, self.codec, self.topic(topic), check_subscription(subscription), mode=mode,
                        start=start, middleware=chain, concurrency=concurrency, lease=lease, batch=batch,
                        name=name, retention=self.retention, handler_timeout=handler_timeout)

    def read(self, topic: str, start: str | StartAt = "earliest", *, limit: int | None = None,
             batch: int = 500) -> Iterator[tuple[Message, Envelope, Any]]:
        """Read a topic without a subscription: (message, envelope, Avro data as dicts)."""
        topic = self.topic(topic) if not topic.endswith(".dlq") else self.topic_prefix + topic
        if isinstance(start, str):
            start = StartAt.parse(start)
        after: str | None = None
        seen = 0
        while limit is None or seen < limit:
            size = batch if limit is None else min(batch, limit - seen)
            messages = self.administration.read(topic, start, size, after)
            if not messages:
                return
            for m in messages:
                envelope, data = self.codec.decode_dict(m)
                yield m, envelope, data
            seen += len(messages)
            after = messages[-1].position

    # -- administration, in this bus's topic names (its prefix added) -------------------------------
    @property
    def administration(self) -> Administrable:
        """The backend's optional administration part (stats, read, seek, dead letters, unsubscribe);
        ``ConfigError`` in one line if the backend has none."""
        return administrable(self.backend)

    def topics(self) -> list[TopicStats]:
        """Every topic of the store with its event count and size (names as stored, prefix included)."""
        return self.administration.topics()

    def subscriptions(self, topic: str) -> list[SubscriptionStats]:
        """The subscriptions of ``topic`` with their backlog, in-flight and dead-lettered counts."""
        return self.administration.subscriptions(self.topic(topic))

    def seek(self, topic: str, subscription: str, to: str | StartAt) -> None:
        """Move a subscription's cursor (``earliest``, ``latest``, an ISO time or ``id:EVENT_ID``): replay or
        skip. Raises ``NotFoundError`` for a subscription that does not exist."""
        self.administration.seek(self.topic(topic), check_subscription(subscription),
                                 StartAt.parse(to) if isinstance(to, str) else to)

    def unsubscribe(self, topic: str, subscription: str) -> None:
        """Delete a subscription: its unacked events are no longer held for it."""
        self.administration.unsubscribe(self.topic(topic), check_subscription(subscription))

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _publish_item(item: object) -> tuple[EventType[Any], Any, str | None, int | None]:
    """One item of ``publish_many`` as the codec's ``encode_many`` takes it."""
    if isinstance(item, tuple):
        n = len(item)
        if n == 2:
            return item[0], item[1], None, None
        if n == 3:
            return item[0], item[1], item[2], None
        if n == 4:
            return item[0], item[1], item[2], item[3]
    raise ValidationError(f"publish_many: expected (event_type, payload[, id[, sequence]]), got {item!r:.80}")
