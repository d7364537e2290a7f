"""The backend contract: storage and transport only, in three parts.

- ``Backend``, the core every backend implements: append records durably, hand them to named
  subscriptions under a lease, take acks, nacks and dead letters. Producing and consuming need nothing
  else.
- ``Administrable``, opted into: what operators ask (stats, reading a topic without a subscription,
  seek, redrive and purge of dead letters, deleting a subscription). ``administrable(backend)`` gives it
  or says in one line that the backend has none.
- ``RetentionCapable``, opted into by a backend that deletes old acked events itself
  (``retention_capable``); Pulsar leaves that to its broker.

A backend knows nothing of Avro, payload classes, retry policy or Django: the bus composes those on
top. Both backends (embedded SQLite and Pulsar) implement the core and ``Administrable``, the embedded
store ``RetentionCapable`` too, and pass one contract test suite (``tests/contract``).
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edbus.errors import ConfigError
from edbus.records import Message, Record  # re-exported: they live below both backends and events

if TYPE_CHECKING:
    from edbus.schema.registry import SchemaRegistry

__all__ = [
    "Administrable",
    "Backend",
    "Delivery",
    "ErrorInfo",
    "Message",
    "Mode",
    "Record",
    "RetentionCapable",
    "StartAt",
    "SubscriptionStats",
    "TopicStats",
    "administrable",
    "broker_retention",
    "check_sequence",
    "check_subscription",
    "dead_letter_headers",
    "dlq_topic",
    "retention_capable",
]


class Mode(enum.StrEnum):
    """How a subscription spreads events over its consumers."""

    KEY_ORDERED = "key_ordered"  # per-key order, keys spread over every consumer (Pulsar Key_Shared)
    SHARED = "shared"  # no order, maximum spread (Pulsar Shared)
    EXCLUSIVE = "exclusive"  # one active consumer, standbys take over (Pulsar Exclusive; standbys retry every 1 s)


@dataclasses.dataclass(frozen=True, slots=True)
class StartAt:
    """A position in a topic: ``earliest``, ``latest``, a time (epoch seconds) or an event id."""

    where: str = "earliest"  # earliest | latest | time | event
    time: float | None = None
    event_id: str | None = None

    @classmethod
    def parse(cls, text: str) -> StartAt:
        """``earliest``, ``latest``, an ISO-8601 time, or ``id:<event id>``."""
        import datetime as dt

        from edbus.errors import ConfigError

        if text in ("earliest", "latest"):
            return cls(text)
        if text.startswith("id:"):
            return cls("event", event_id=text[3:])
        try:
            when = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ConfigError(
                f"bad start position {text!r}: use earliest, latest, an ISO time or id:<event id>"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return cls("time", time=when.timestamp())


@dataclasses.dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why a delivery failed: kept in the attempt history and in the dead-letter record."""

    type: str
    message: str
    traceback: str = ""
    at: float = 0.0
    attempt: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


HISTORY_KEEP = 100  # failed attempts a delivery's history keeps: the first, a trim marker, the latest ones
# the history entry that stands for the failed attempts trimmed away; its ``attempt`` field is how many (so the
# count of failures, and with it ``Delivery.abandoned``, survives the trimming)
HISTORY_TRIMMED = "edbus.history.trimmed"


def add_failure(history: Sequence[ErrorInfo], error: ErrorInfo) -> tuple[ErrorInfo, ...]:
    """``history`` with ``error`` appended, kept to ``HISTORY_KEEP`` entries: the first failure, then a
    ``HISTORY_TRIMMED`` entry counting the failures dropped since, then the latest ones."""
    out = [*history, error]
    if len(out) <= HISTORY_KEEP:
        return tuple(out)
    first, rest = out[0], out[1:]
    dropped = 0
    if rest[0].type == HISTORY_TRIMMED:
        dropped, rest = rest[0].attempt, rest[1:]
    cut = len(rest) - (HISTORY_KEEP - 2)
    dropped += cut
    marker = ErrorInfo(HISTORY_TRIMMED, f"{dropped} failed attempt(s) after the first are not kept here", "",
                       error.at, dropped)
    return (first, marker, *rest[cut:])


def failures(history: Sequence[ErrorInfo]) -> int:
    """How many attempts failed (with an error), trimmed ones included."""
    if len(history) > 1 and history[1].type == HISTORY_TRIMMED:
        return len(history) - 1 + history[1].attempt  # the marker stands for its count, not for itself
    return len(history)


@dataclasses.dataclass(frozen=True, slots=True)
class Delivery:
    """A message leased to one consumer of a subscription; ``handle`` is the backend's own."""

    message: Message
    subscription: str
    attempt: int  # 1 on first delivery
    history: tuple[ErrorInfo, ...]
    handle: Any = dataclasses.field(compare=False, repr=False)

    @property
    def abandoned(self) -> int:
        """Earlier deliveries that ended with no outcome (the consumer died or hung holding it)."""
        return max(0, self.attempt - 1 - failures(self.history))


@dataclasses.dataclass(frozen=True, slots=True)
class TopicStats:
    topic: str
    events: int
    bytes: int
    subscriptions: int


@dataclasses.dataclass(frozen=True, slots=True)
class SubscriptionStats:
    topic: str
    subscription: str
    mode: Mode
    backlog: int  # not yet acked, including in flight
    in_flight: int  # leased to a consumer right now
    dead_lettered: int
    oldest_unacked_age: float | None  # seconds
    consumers: int


_SUBSCRIPTION_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def check_subscription(name: str) -> str:
    """Subscription names have no dots, so ``<topic>.<subscription>.dlq`` names one pair only."""
    from edbus.errors import ConfigError

    if not name or len(name) > 100 or not set(name) <= _SUBSCRIPTION_OK:
        raise ConfigError(f"bad subscription name {name!r}: use letters, digits, '-' and '_'")
    return name


def check_sequence(sequence: object) -> int:
    """A producer's sequence number (``Record.sequence``): a whole number from 0 to 2**63-1."""
    from edbus.errors import ValidationError

    if isinstance(sequence, bool) or not isinstance(sequence, int) or not 0 <= sequence < 2**63:
        raise ValidationError(f"bad sequence {sequence!r}: use a whole number from 0 to 2**63-1")
    return sequence


def dlq_topic(topic: str, subscription: str) -> str:
    """The dead-letter topic of a subscription."""
    return f"{topic}.{subscription}.dlq"


def dead_letter_headers(delivery: Delivery, error: ErrorInfo) -> dict[str, str]:
    """The record's headers plus why it was dead-lettered: the same on every backend."""
    import json

    history = [*delivery.history, error]
    return {
        **delivery.message.record.headers,
        "edbus_dlq_topic": delivery.message.topic,
        "edbus_dlq_subscription": delivery.subscription,
        "edbus_dlq_position": delivery.message.position,
        "edbus_dlq_error_type": error.type,
        "edbus_dlq_error_message": error.message,
        "edbus_dlq_traceback": error.traceback,
        "edbus_dlq_attempts": str(delivery.attempt),
        "edbus_dlq_history": json.dumps([h.as_dict() for h in history]),
        "edbus_dlq_at": str(error.at),
    }


class Backend(abc.ABC):
    """Storage and transport, the core: what producing and consuming need. Every method may raise
    ``edbus.errors.StoreError``."""

    url: str

    @property
    @abc.abstractmethod
    def registry(self) -> SchemaRegistry:
        """The schema registry this backend's events are checked against."""

    # -- producing ---------------------------------------------------------------------------
    @abc.abstractmethod
    def append(self, topic: str, records: Sequence[Record]) -> None:
        """Store records in order, durably, as one unit; returns only once they are durable.

        A record whose id is already in the topic is not stored again (idempotent retry). A backend that
        cannot look ids up (Pulsar) guarantees this within a process, and across processes for the
        records of a named producer that carry their ``sequence``.
        """

    # -- consuming ---------------------------------------------------------------------------
    @abc.abstractmethod
    def subscribe(self, topic: str, subscription: str, mode: Mode, start: StartAt) -> None:
        """Create the subscription if it does not exist (``start`` applies only then)."""

    @abc.abstractmethod
    def fetch(self, topic: str, subscription: str, consumer: str, limit: int,
              lease: float) -> list[Delivery]:
        """Lease up to ``limit`` deliverable messages to ``consumer`` for ``lease`` seconds.

        In ``key_ordered`` and ``exclusive`` modes a message is deliverable only when every earlier
        unacked message with its key is delivered with it: one consumer holds a key at a time.
        """

    @abc.abstractmethod
    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge: these messages are done for their subscription."""

    @abc.abstractmethod
    def nack(self, delivery: Delivery, delay: float, error: ErrorInfo | None) -> None:
        """Redeliver after ``delay`` seconds. ``error`` None releases it without counting an attempt."""

    def flush(self) -> None:  # noqa: B027 - a no-op for a backend that defers nothing
        """Make durable what ``nack`` changed in deliveries' attempt counts, if the backend defers it (to
        its next ``fetch``): the runtime calls it before running an event whose earlier holder died, so
        that the releases of its batch-mates are not counted as attempts if it kills this process too."""

    @abc.abstractmethod
    def dead_letter(self, delivery: Delivery, error: ErrorInfo) -> None:
        """Move the message to the subscription's dead-letter topic, with its error and history."""

    @abc.abstractmethod
    def extend(self, deliveries: Sequence[Delivery], lease: float) -> None:
        """Keep holding these deliveries for another ``lease`` seconds (long handlers)."""

    @abc.abstractmethod
    def wait(self, timeout: float) -> None:
        """Block until new messages may have arrived, or ``timeout`` seconds."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections and files."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Administrable(abc.ABC):
    """An optional part of the contract: what operators ask of a backend (the CLI's ``topics``,
    ``subscriptions``, ``tail``, ``replay``, ``dlq`` and ``unsubscribe``, the dashboard, the metrics
    exporter's backlog gauges, ``Bus.read``/``seek``). Every method may raise ``edbus.errors.StoreError``."""

    @abc.abstractmethod
    def unsubscribe(self, topic: str, subscription: str) -> None:
        """Delete a subscription, its cursor and unacked state (its dead letters stay until purged)."""

    # -- replay and readers ------------------------------------------------------------------
    @abc.abstractmethod
    def seek(self, topic: str, subscription: str, start: StartAt) -> None:
        """Move a subscription's cursor: everything from ``start`` on is delivered again."""

    @abc.abstractmethod
    def read(self, topic: str, start: StartAt, limit: int, after: str | None = None) -> list[Message]:
        """Read without a subscription, from ``start`` (or after position ``after``)."""

    # -- dead letters, stats -------------------------------------------------------------
    @abc.abstractmethod
    def redrive(self, topic: str, subscription: str, event_ids: Sequence[str] | None) -> int:
        """Give dead-lettered events (all, or these ids) back to the subscription; returns how many."""

    @abc.abstractmethod
    def purge_dead_letters(self, topic: str, subscription: str,
                           event_ids: Sequence[str] | None) -> int:
        """Delete dead-lettered events (all, or these ids); returns how many."""

    @abc.abstractmethod
    def topics(self) -> list[TopicStats]:
        """Every topic with its size."""

    @abc.abstractmethod
    def subscriptions(self, topic: str | None = None) -> list[SubscriptionStats]:
        """Every subscription (of one topic) with its backlog."""


def administrable(backend: Backend) -> Administrable:
    """``backend``'s administration; ``ConfigError`` in one line if it has none."""
    if isinstance(backend, Administrable):
        return backend
    raise ConfigError(f"{type(backend).__name__} has no administration (stats, read, seek, dead letters, "
                      "unsubscribe): use a backend that has, such as sqlite:// or pulsar://")


class RetentionCapable(abc.ABC):
    """An optional capability of a backend: it deletes old acked events itself when asked (the consumer's
    ``RetentionSweeper``, ``edbus retention``). A backend whose broker applies a retention policy of its own
    (Pulsar: the namespace's retention, docs/pulsar.md) does not have it: ``retention_capable`` tells."""

    @abc.abstractmethod
    def enforce_retention(self, older_than: float) -> int:
        """Delete events acked by every subscription and appended before ``older_than`` (epoch s); never an
        unacked or dead-lettered one. Returns how many."""


def retention_capable(backend: Backend) -> RetentionCapable | None:
    """``backend`` if it enforces retention itself; None if it leaves retention to its broker."""
    return backend if isinstance(backend, RetentionCapable) else None


def broker_retention(backend: Backend) -> str:
    """The one line said where retention is asked of a backend that leaves it to its broker."""
    return (f"{type(backend).__name__} leaves retention to its broker's own policy (on Pulsar the namespace's "
            "retention, docs/pulsar.md): nothing is deleted from here")
